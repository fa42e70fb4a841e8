"""`BaseNode`: what every node and flow is: its name, options, phases, hooks and entry points.

A class says only whether it is async and how it batches (none, one after
another, at once); which user methods serve each phase is decided once
per class (``_plan``). How it runs is the engine's: the entry points start
a run (``_run``), and the engine calls back the class's exec stage
(``_stage``) and PocketFlow's internal names (``_run``, ``_exec``...)
where a class overrides them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterable
from typing import Any, ClassVar

from . import _budget as budgets
from ._budget import Budget
from ._clock import Clock
from ._context import ATTEMPT, HANDED_DOWN, PATH, REMOTE, current_item, observed
from ._errors import InvalidParameterError
from ._events import Event
from ._limits import Limiter
from ._options import UNSET, check_max_concurrency, check_on_error
from ._own_loop import run_on_new_loop
from ._plan import Plan, check_setup, default
from ._policy import Retry
from ._run import (
    PendingRun,
    RunScope,
    run_top_async,
    run_top_sync,
    shared_argument,
    warn_unreachable_successors,
)
from ._stored import StoredRuns
from ._stream import stream_events
from ._usage import Usage, report, usage_of
from ._weights import Weighted
from ._wiring import Successors, Wirable, changed
from .engine import drive_async, drive_sync, node_stage, node_step_sync
from .engine._async import node_step as node_step_async
from .engine._attempts import attempts
from .stores._base import Store
from .viz import to_mermaid

__all__ = ["BaseNode"]


class BaseNode(Wirable, StoredRuns):
    """The engine behind every node and flow: the prep -> exec -> post lifecycle.

    Subclass one of the presets (`Node`, `AsyncNode`, the batch
    kinds, the flows) rather than this class. A node reads the shared store
    in ``prep``, does its work in ``exec`` (pure and retryable), and writes
    back in ``post``, whose return value is the action that picks the next
    node. ``self.params`` holds the parameters a flow hands to this run.

    Args:
        name: A label used in errors, traces and graphs; defaults to the class name.
    """

    # What kind of node this is: set by the presets, read by the engine.
    _bf_async: ClassVar[bool] = False
    _bf_batch: ClassVar[str] = "single"  # or "sequential", "parallel", "branches"
    _bf_is_flow: ClassVar[bool] = False
    _bf_plan: ClassVar[Plan]  # what the class defines, decided once: see _plan

    # PocketFlow's options, and max_concurrency: public and read at run time,
    # so a subclass may set them in its body or in its __init__.
    max_retries: int = 1
    wait: float = 0
    max_concurrency: int | None = None
    # Policies set through the constructor. They live under private names so
    # that a user's own `self.timeout`, `self.limits` or `self.retry` (common in
    # PocketFlow code), or a KayGraph-style `on_error` hook method, never
    # changes how braidflow runs the node.
    _bf_retry: Retry | None = None
    _bf_timeout: float | None = None
    _bf_limits: tuple[Limiter | Weighted, ...] = ()
    _bf_weighted: tuple[Limiter, ...] = ()  # its limiters, if weighted ones are among its limits
    _bf_offload: bool | None = None
    _bf_on_error: str = "raise"
    _bf_executor: Any = None
    _bf_strict: bool = False  # durability="sync": checkpointed before the run goes on
    _bf_cache: Any = None  # a braidflow.Cache, or None
    # A retry, timeout, limiter or cache was given: no fast path.
    _bf_policy: bool = False

    def __init__(
        self,
        *,
        name: str | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
    ) -> None:
        self.params: dict[str, Any] = {}
        self.successors: dict[str, BaseNode | None] = Successors()
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidParameterError(
                    f"{type(self).__name__}: name={name!r} must be a non-empty string"
                )
            self.name = name
        parallel = self._bf_batch == "parallel"
        if max_concurrency is not UNSET:
            self.max_concurrency = check_max_concurrency(self, max_concurrency, parallel=parallel)
        else:
            check_max_concurrency(self, self.max_concurrency, parallel=parallel)
        if on_error is UNSET:
            # An attribute of the same name works too (on the class, or set
            # before this call), if it is a policy name (a method called
            # on_error is a lifecycle hook, not a policy). One set after this
            # call is read where the stage runs (_options.on_error_of).
            declared = getattr(self, "on_error", "raise")
            on_error = declared if isinstance(declared, str) else "raise"
        self._bf_on_error = check_on_error(self, on_error, parallel=parallel)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._bf_plan = Plan(cls)
        check_setup(cls)

    # -- identity -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's label: the ``name=`` it was given, or its class name."""
        return self.__dict__.get("_bf_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_bf_name"] = value
        changed()

    def _display_name(self) -> str:
        """The name in events and errors: unique within its graph while a run is
        observed or durable (``Summarize#2``), else the plain name."""
        return self.__dict__.get("_bf_display") or str(self.name)

    def _describe(self) -> str:
        """``node 'Fetch'``, or ``flow 'Main' (AsyncFlow)`` when named apart from its class."""
        kind = "flow" if self._bf_is_flow else "node"
        cls = type(self).__name__
        name = self._display_name()
        return f"{kind} {name!r}" if name == cls else f"{kind} {name!r} ({cls})"

    def __repr__(self) -> str:
        name = self.__dict__.get("_bf_name")
        return f"<{type(self).__name__}{f' {name!r}' if name else ''}>"

    @property
    def cur_retry(self) -> int:
        """The 0-based number of the exec attempt running now, for this item.

        Correct per item even when items run concurrently: it is read from
        the running item's context, not from a field the items share.
        """
        state = ATTEMPT.get()
        if state is not None and state.node is self:
            return state.attempt
        value: int = self.__dict__.get("_bf_cur_retry", 0)
        return value

    @cur_retry.setter
    def cur_retry(self, value: int) -> None:
        self.__dict__["_bf_cur_retry"] = value

    @default
    def set_params(self, params: dict[str, Any]) -> None:
        """Set the parameters for this run (a flow calls it on each step's copy)."""
        self.params = params

    # -- the phases users override ------------------------------------------------

    @default
    def prep(self, shared: Any) -> Any:
        """Read what ``exec`` needs from the shared store. Default: ``None``."""
        return None

    @default
    def exec(self, prep_res: Any) -> Any:
        """Do the work; for batch kinds, for one item. Pure and retryable. Default: ``None``."""
        return None

    @default
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Write results to the shared store and return the next action. Default: ``None``."""
        return None

    @default
    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        """Called when the last attempt failed: return a result, or raise. Default: re-raise."""
        raise exc

    @default
    async def prep_async(self, shared: Any) -> Any:
        """Async form of `prep` (async nodes only)."""
        return None

    @default
    async def exec_async(self, prep_res: Any) -> Any:
        """Async form of `exec` (async nodes only)."""
        return None

    @default
    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Async form of `post` (async nodes only)."""
        return None

    @default
    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        """Async form of `exec_fallback` (async nodes only). Default: re-raise."""
        raise exc

    # -- KayGraph's lifecycle hooks ------------------------------------------------

    @default
    def before_prep(self, shared: Any) -> Any:
        """Hook called before ``prep``. Default: nothing. May be ``async def``
        in async kinds."""
        return None

    @default
    def after_exec(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Hook called after the exec stage, before ``post``. Default: nothing."""
        return None

    @default
    def on_error(self, shared: Any, error: Exception) -> Any:
        """Hook called when the node fails in any phase, after exec's retries and
        fallback. Return True to swallow the error: the node then ends with
        action ``None``. Default: False."""
        return False

    # -- entry points ---------------------------------------------------------------

    def run(
        self,
        shared: Any = UNSET,
        *,
        observers: Any = None,
        store: Store | None = None,
        run_id: str | None = None,
        record_events: bool = False,
        metadata: dict[str, Any] | None = None,
        clock: Clock | None = None,
        budget: Budget | None = None,
        durability: str | None = None,
        **legacy: Any,
    ) -> Any:
        """Run this node (or flow) once on ``shared`` and return its action.

        A synchronous node or flow runs to completion and returns its action.
        An async one, called from plain synchronous code, runs to completion
        on a new event loop; called where an event loop is already running
        (inside ``async def``, or at a notebook's top level), it returns an
        awaitable instead: write ``await flow.run(shared)``. Successors are not
        followed; put the node in a flow for that. (Early PocketFlow spelled
        the argument ``shared_storage=``; that keyword is accepted too.)

        Args:
            shared: The shared store.
            observers: Objects with an ``on_event(event)`` method, or callables,
                that receive the run's `Event` objects as they happen.
            store: Make the run durable: record it in this `Store`
                (``SQLiteStore(path)``) as it goes, so that it can be resumed
                after a crash, a failure or an ``interrupt``. ``shared`` must
                then be a dict; it is updated when the run ends.
            run_id: The durable run's id; default: a new unique one (errors,
                `Suspended`, events and ``store.runs()`` carry it).
            record_events: Keep the run's events in the store too.
            metadata: A dict of JSON values to keep with a durable run's
                record (``RunRecord.metadata``): a tenant, a request id...
            clock: The clock retry waits and timeouts read (default: the
                system's); tests pass ``braidflow.testing.VirtualClock()``
                and move time by hand.
            budget: The most the run may spend on LLM calls (a `Budget`: tokens,
                cost), counted from what nodes report with `report_usage`.
            durability: What a durable run's checkpoints cost it, and what a
                crash may lose: ``"sync"`` (the default: each step and item
                is in the store before the run goes on), ``"async"`` (written
                in batches, every 50 ms or 1,024 rows; a crash may lose the
                last batch, done again on resume) or ``"exit"`` (kept in memory, written
                when the run ends, fails, drains or suspends; a kill loses the
                run's progress). A node's ``durability="sync"`` holds for it.

        Raises:
            InvalidParameterError: For an observer that can receive nothing,
                or a bad store option, before the run starts.
            Suspended: If a node called ``braidflow.interrupt`` (or a budget suspends).
            BudgetExceeded: If the budget was reached (before the next call).
        """
        scope = RunScope(
            self,
            shared_argument(self, shared, legacy),
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            metadata=metadata,
            clock=clock,
            budget=budget,
            durability=durability,
        )
        if self._bf_async:
            warn_unreachable_successors(self, "AsyncFlow")
            if asyncio._get_running_loop() is None:
                return run_on_new_loop(lambda: run_top_async(self, scope))
            return PendingRun(self, lambda: run_top_async(self, scope))
        warn_unreachable_successors(self, "Flow")
        return run_top_sync(self, scope)

    async def run_async(
        self,
        shared: Any = UNSET,
        *,
        observers: Any = None,
        store: Store | None = None,
        run_id: str | None = None,
        record_events: bool = False,
        metadata: dict[str, Any] | None = None,
        clock: Clock | None = None,
        budget: Budget | None = None,
        durability: str | None = None,
        **legacy: Any,
    ) -> Any:
        """Run this node (or flow) once on ``shared`` inside a running event loop.

        A synchronous node or flow runs too: its limiters are awaited on the
        loop, and its blocking code runs in a thread if it asks to be offloaded.
        The options are those of `run`.
        """
        scope = RunScope(
            self,
            shared_argument(self, shared, legacy),
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            metadata=metadata,
            clock=clock,
            budget=budget,
            durability=durability,
        )
        warn_unreachable_successors(self, "AsyncFlow")
        return await run_top_async(self, scope)

    def stream(self, shared: Any, **options: Any) -> AsyncIterator[Event]:
        """Run on ``shared`` and yield the run's events as they happen.

        ``async for event in flow.stream(shared): ...`` works for sync and
        async nodes and flows; ``options`` are those of `run_async`. If
        the run fails, its error is raised from the iterator after the
        ``run_end`` event. Leaving early (``break``, then closing the iterator,
        e.g. with ``contextlib.aclosing``) or cancelling the consumer cancels
        the run: no task is left and nothing is written to ``shared`` after.
        """
        return stream_events(self, shared, options)

    def emit(self, data: Any) -> None:
        """Send ``data`` to the run's observers as an ``emit`` event (LLM tokens
        as they stream in, say). Callable from any phase; costs nothing when
        nobody observes the run. From an exec an executor runs elsewhere (a
        Ray task), the data is sent back with the item's outcome and emitted
        then, in order, after the attempt.

        Raises:
            InvalidParameterError: In an exec run elsewhere, for data that
                cannot be sent back (it cannot be pickled).
        """
        run = observed()
        if run is None:
            remote = REMOTE.get()
            if remote is not None and remote.observed:
                try:
                    remote.sent.append(("emit", remote.pack(data)))
                except Exception as error:
                    raise InvalidParameterError(
                        f"{self._describe()}: emit() was given data that cannot be sent back "
                        f"from {remote.where} to its run ({type(error).__name__}: {error}); "
                        "emit plain data (text, numbers, lists, dicts)",
                        node=self._display_name(),
                    ) from error
            return
        state = ATTEMPT.get()
        attempt = state.attempt if state is not None and state.node is self else None
        run.emit(
            "emit",
            node=self._display_name(),
            path=PATH.get(),
            item=current_item(),
            attempt=attempt,
            data=data,
        )

    def report_usage(
        self,
        usage: Usage | None = None,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float | None = None,
        model: str | None = None,
    ) -> None:
        """Report what an LLM call made in ``exec`` used (a `Usage`, or its parts):
        it corrects the attempt's weighted limits, counts in the run's budget
        and stored record, and reaches observers as a ``usage`` event."""
        report(self, usage_of(usage, input_tokens, output_tokens, cost, model, self))

    def to_mermaid(self, *, observed: Iterable[Any] | None = None) -> str:
        """This flow's graph (or this node and what follows it) as a mermaid
        flowchart: actions on edges, loops drawn once, nested flows as
        subgraphs, batch and parallel kinds marked, explicit ends shown; and,
        if the flow or its nodes declare a state type, the table of its keys
        (type, merge rule, the nodes that read and write each) as comments.

        Args:
            observed: The steps of a stored run of this flow
                (``flow.history(run_id, store=store)``): the table is drawn
                for an untyped flow too, and the keys each step changed
                count as written by its node.
        """
        return to_mermaid(self, observed=observed)

    # -- what the engine calls back -------------------------------------------------

    def _stage(self, shared: Any, prep_result: Any, offload: bool) -> Generator[Any, Any, Any]:
        """This class's exec stage, as the engine's steps: one item's exec
        attempts, or a batch's items. Flows and forks have their own."""
        return node_stage(self, shared, prep_result, offload)

    def _is_simple(self) -> bool:
        """No policy applies to an attempt: no retry, timeout, limiter or cache."""
        return (
            self._bf_retry is None
            and self.max_retries == 1
            and self._bf_timeout is None
            and not self._bf_limits
            and not budgets.active
            and self._bf_cache is None
        )

    @default
    def _run(self, shared: Any) -> Any:
        """PocketFlow's name for running this node's phases synchronously; return
        the action. A subclass may override it and call ``super()._run(shared)``."""
        return node_step_sync(self, shared)

    @default
    async def _run_async(self, shared: Any) -> Any:
        """Async form of `_run`, for async kinds (and a sync node on the loop)."""
        return await node_step_async(self, shared, False)

    @default
    def _exec(self, prep_res: Any) -> Any:
        """PocketFlow's name for the exec stage (retries included). A subclass may
        override it, e.g. to cache, and call ``super()._exec(prep_res)``; for
        async kinds that returns an awaitable."""
        handed = HANDED_DOWN.get()
        shared = handed.shared if handed is not None else None
        steps = self._stage(shared, prep_res, False)
        if self._bf_async:
            return drive_async(steps)
        return drive_sync(steps)


@default
def exec_one(node: Any, prep_res: Any) -> Any:
    """PocketFlow's ``Node._exec``: one item's exec attempts (retries, the
    fallback), whatever the node's kind. The single kinds' ``_exec``, so a
    batch class of one's own reaches it per item as PocketFlow's do:
    ``super(BatchNode, self)._exec(item)``, ``AsyncNode._exec(self, item)``."""
    handed = HANDED_DOWN.get()
    shared = handed.shared if handed is not None else None
    steps = attempts(node, prep_res, None, shared, False, None)
    return drive_async(steps) if node._bf_async else drive_sync(steps)


BaseNode._bf_plan = Plan(BaseNode)
BaseNode.__init__._bf_sets_up = True  # type: ignore[attr-defined]
