"""The node classes: their options, the phases users write, and how a run starts.

One engine runs every node kind. A class says only whether it is async and
how it batches (none, sequential, parallel); which user methods to call is
decided once per class (``_plan``), the lifecycle is ``_lifecycle`` and each
item's attempts are run by ``_attempt``.
"""

from __future__ import annotations

import asyncio
import math
import threading
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._attempt import own_cancellation
from ._batch import (
    ON_ERROR_CHOICES,
    PARALLEL,
    SEQUENTIAL,
    SINGLE,
)
from ._clock import Clock
from ._context import ATTEMPT, PATH, current_item, observed
from ._errors import InvalidParameterError, add_note, has_note
from ._events import Event
from ._lifecycle import Lifecycle
from ._limits import Limiter, ordered
from ._plan import Plan, default, has_plain_copy
from ._policy import Retry
from ._run import PendingRun, RunScope
from ._stream import stream_events
from ._wiring import Successors, Wirable, changed
from .durable import NO_ANSWER
from .stores._base import Store
from .viz import to_mermaid

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchNode",
    "Node",
    "ParallelBatchNode",
]


PrepT = TypeVar("PrepT")
ExecT = TypeVar("ExecT")
ItemT = TypeVar("ItemT")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


class BaseNode(Lifecycle, Wirable):
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
    _bf_batch: ClassVar[str] = SINGLE
    _bf_plan: ClassVar[Plan]
    _bf_plain_copy: ClassVar[bool] = True
    _bf_is_flow: ClassVar[bool] = False
    # A plain node (not a batch, not a flow, no _exec override): the hot path.
    _bf_single_exec: ClassVar[bool] = True
    _bf_hooked: ClassVar[bool] = False  # the class defines a lifecycle hook
    _bf_plain: ClassVar[bool] = True  # a plain node with no hooks: the hot path

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
    _bf_limits: tuple[Limiter, ...] = ()
    _bf_offload: bool | None = None
    _bf_on_error: str = "raise"
    _bf_executor: Any = None

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
        self._configure_batch(max_concurrency, on_error)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._bf_plan = plan = Plan(cls)
        cls._bf_plain_copy = has_plain_copy(cls)
        cls._bf_single_exec = (
            cls._bf_batch == SINGLE and not cls._bf_is_flow and not plan.custom_exec
        )
        cls._bf_hooked = plan.hooked
        cls._bf_plain = cls._bf_single_exec and not plan.hooked

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
        observed (``Summarize#2``), else the plain name."""
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

    # -- configuration ----------------------------------------------------------

    def _configure_batch(self, max_concurrency: Any, on_error: Any) -> None:
        parallel = self._bf_batch == PARALLEL
        if max_concurrency is not UNSET:
            if max_concurrency is not None and not parallel:
                raise InvalidParameterError(
                    f"{self._describe()}: max_concurrency applies to parallel batch kinds "
                    "(AsyncParallelBatchNode, AsyncParallelBatchFlow, ParallelBatchNode)",
                    node=self._display_name(),
                )
            self.max_concurrency = max_concurrency
        limit = self.max_concurrency
        if limit is not None and not parallel:
            raise InvalidParameterError(
                f"{self._describe()}: max_concurrency={limit!r} is set, but "
                f"{type(self).__name__} is not a parallel batch kind, so nothing would "
                "bound; use AsyncParallelBatchNode, AsyncParallelBatchFlow or ParallelBatchNode",
                node=self._display_name(),
            )
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidParameterError(
                f"{self._describe()}: max_concurrency={limit!r} must be an int >= 1, "
                "or None for no bound",
                node=self._display_name(),
            )
        if on_error is UNSET:
            # A class attribute of the same name works too, if it is a policy name
            # (a method called on_error is a lifecycle hook, not a policy).
            declared = getattr(type(self), "on_error", "raise")
            on_error = declared if isinstance(declared, str) else "raise"
        if on_error not in ON_ERROR_CHOICES:
            raise InvalidParameterError(
                f"{self._describe()}: on_error={on_error!r} is not one of "
                f"{', '.join(map(repr, ON_ERROR_CHOICES))}",
                node=self._display_name(),
            )
        if on_error != "raise" and not parallel:
            raise InvalidParameterError(
                f"{self._describe()}: on_error applies to parallel batch kinds; "
                "sequential batches stop at the first failure",
                node=self._display_name(),
            )
        self._bf_on_error = on_error

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

    def _warn_unreachable_successors(self, flow_kind: str) -> None:
        for successor in self.successors.values():
            if successor is not None:
                warnings.warn(f"Node won't run successors. Use {flow_kind}.", stacklevel=3)
                return

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

        Raises:
            InvalidParameterError: For an observer that can receive nothing,
                or a bad store option, before the run starts.
            Suspended: If a node called ``braidflow.interrupt``.
        """
        shared = self._shared_argument(shared, legacy)
        scope = RunScope(
            self,
            shared,
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            metadata=metadata,
            clock=clock,
        )
        if self._bf_async:
            self._warn_unreachable_successors("AsyncFlow")
            if asyncio._get_running_loop() is None:
                return asyncio.run(self._run_top_async(scope))
            return PendingRun(self, lambda: self._run_top_async(scope))
        self._warn_unreachable_successors("Flow")
        return self._run_top_sync(scope)

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
        **legacy: Any,
    ) -> Any:
        """Run this node (or flow) once on ``shared`` inside a running event loop.

        A synchronous node or flow runs too: its limiters are awaited on the
        loop, and its blocking code runs in a thread if it asks to be offloaded.
        The options are those of `run`.
        """
        shared = self._shared_argument(shared, legacy)
        scope = RunScope(
            self,
            shared,
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            metadata=metadata,
            clock=clock,
        )
        self._warn_unreachable_successors("AsyncFlow")
        return await self._run_top_async(scope)

    def resume(
        self,
        run_id: str,
        *,
        store: Store,
        input: Any = NO_ANSWER,
        observers: Any = None,
        record_events: bool = False,
        clock: Clock | None = None,
    ) -> Any:
        """Resume a stored run of this flow; return its final ``shared``.

        ``shared`` is rebuilt from the store; every step, batch item and branch
        that finished is skipped, and the run goes on from where it stopped
        (a batch in progress runs only its missing items; its ``prep`` runs
        again to get them). For a run waiting at an ``interrupt``, ``input`` is
        what that ``interrupt(...)`` call returns this time. Returns an
        awaitable inside a running event loop, as `run` does.

        Raises:
            StoreError: For an unknown or completed run, or one that another
                live process is running.
            ResumeError: If the flow's graph changed since the run was recorded,
                or a batch's ``prep`` gives other items than it did.
            Suspended: If the run stops again at an ``interrupt``.
        """
        scope = self._resume_scope(run_id, store, input, observers, record_events, clock)
        if self._bf_async:
            if asyncio._get_running_loop() is None:
                return asyncio.run(self._resume_top_async(scope))
            return PendingRun(self, lambda: self._resume_top_async(scope))
        self._run_top_sync(scope)
        return dict(dict.items(scope.working))

    async def resume_async(
        self,
        run_id: str,
        *,
        store: Store,
        input: Any = NO_ANSWER,
        observers: Any = None,
        record_events: bool = False,
        clock: Clock | None = None,
    ) -> Any:
        """Resume a stored run inside a running event loop; see `resume`."""
        scope = self._resume_scope(run_id, store, input, observers, record_events, clock)
        return await self._resume_top_async(scope)

    def _resume_scope(
        self,
        run_id: Any,
        store: Any,
        answer: Any,
        observers: Any,
        record_events: bool,
        clock: Clock | None,
    ) -> RunScope:
        if store is None:
            raise InvalidParameterError(
                f"{self._describe()}: resume() needs the store the run was recorded in",
                node=self._display_name(),
            )
        return RunScope(
            self,
            None,
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            clock=clock,
            resuming=True,
            answer=answer,
        )

    async def _resume_top_async(self, scope: RunScope) -> Any:
        await self._run_top_async(scope)
        return dict(dict.items(scope.working))

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
        nobody observes the run."""
        run = observed()
        if run is None:
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

    def to_mermaid(self) -> str:
        """This flow's graph (or this node and what follows it) as a mermaid
        flowchart: actions on edges, loops drawn once, nested flows as
        subgraphs, batch and parallel kinds marked, explicit ends shown."""
        return to_mermaid(self)

    def _shared_argument(self, shared: Any, legacy: dict[str, Any]) -> Any:
        if legacy:
            if shared is UNSET and list(legacy) == ["shared_storage"]:
                return legacy["shared_storage"]
            raise TypeError(
                f"{self._describe()}: run() takes the shared store as its one argument, "
                f"got unexpected keyword(s) {sorted(legacy)}"
            )
        if shared is UNSET:
            raise TypeError(f"{self._describe()}: run() needs the shared store, e.g. run({{}})")
        return shared

    def _run_top_sync(self, scope: RunScope) -> Any:
        with scope as shared:
            try:
                return self._run(shared)
            except Exception as error:
                self._label_top_error(error)
                raise

    async def _run_top_async(self, scope: RunScope) -> Any:
        with scope as shared:
            try:
                if self._bf_async:
                    return await self._run_async(shared)
                offload = self._bf_offload
                if offload is None:
                    offload = bool(self._bf_limits)
                if not offload and self._bf_single_exec and self._is_simple():
                    return self._run(shared)
                return await self._run_in_loop(shared, offload)
            except Exception as error:
                self._label_top_error(error)
                raise
            except asyncio.CancelledError as cancel:
                stray = own_cancellation(self, cancel, None)
                self._label_top_error(stray)
                raise stray from cancel

    def _label_top_error(self, error: BaseException) -> None:
        if not has_note(error):
            add_note(error, f"raised in {self._describe()}")


BaseNode._bf_plan = Plan(BaseNode)


def _check_number(node: BaseNode, option: str, value: Any, minimum: float, strict: bool) -> None:
    """Refuse anything but a real number above ``minimum`` (``nan`` included)."""
    bad = isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
    if not bad:
        bad = value <= minimum if strict else value < minimum
    if bad:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise InvalidParameterError(
            f"{node._describe()}: {option}={value!r} must be a number {bound}",
            node=node._display_name(),
        )


_LONGEST_WAIT = float(threading.TIMEOUT_MAX)


class Node(BaseNode, Generic[PrepT, ExecT]):
    """A synchronous node with retries: ``prep`` -> ``exec`` (retried) -> ``post``.

    Generic in what ``prep`` returns and ``exec`` returns, for type checkers:
    ``class Greet(Node[str, str])``. Unparameterized, both are ``Any``.

    Args:
        max_retries: How many times ``exec`` may run in all (PocketFlow's
            meaning: 1 is a single attempt). Must be >= 1.
        wait: Seconds to sleep between attempts. Must be >= 0.
        name: A label for errors, traces and graphs; default: the class name.
        retry: A `Retry` policy (backoff, jitter, which errors), instead
            of ``max_retries``/``wait``.
        timeout: Seconds each exec attempt may take; a late attempt fails
            with `NodeTimeoutError` (a ``TimeoutError``) and is retried
            like any failure. Sync ``exec`` code is timed in a worker thread.
        limits: `Limiter` objects (or one) that every exec attempt holds.
        offload: Run this sync node in a worker thread when inside an
            ``AsyncFlow``, so the event loop stays live. ``None``: the flow decides.
        executor: For batch kinds: where each item's ``exec`` runs, e.g.
            ``braidflow.executors.RayExecutor()``; ``prep``, ``post``, limits,
            retries, timeouts and events stay here. ``None``: in this process
            (or the flow's executor, if it has one).

    Raises:
        InvalidParameterError: For a value that cannot work, naming the node.
    """

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        limits: Limiter | Iterable[Limiter] | None = None,
        offload: bool | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
        executor: Any = None,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency, on_error=on_error)
        if executor is not None:
            self._bf_executor = check_executor(self, executor)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
            raise InvalidParameterError(
                f"{self._describe()}: max_retries={max_retries!r} must be an int >= 1 "
                "(it counts attempts: 1 means run exec once, no retry)",
                node=self._display_name(),
            )
        _check_number(self, "wait", wait, 0, strict=False)
        if wait == math.inf:
            raise InvalidParameterError(
                f"{self._describe()}: wait=inf would never retry; give a finite number of seconds",
                node=self._display_name(),
            )
        self.max_retries = max_retries
        self.wait = wait
        if retry is not None:
            if not isinstance(retry, Retry):
                raise InvalidParameterError(
                    f"{self._describe()}: retry={retry!r} must be a braidflow.Retry",
                    node=self._display_name(),
                )
            if max_retries != 1 or wait != 0:
                raise InvalidParameterError(
                    f"{self._describe()}: give either retry=Retry(...) or max_retries/wait, "
                    "not both",
                    node=self._display_name(),
                )
            self._bf_retry = retry
            self.max_retries = retry.attempts
            self.wait = retry.delay
        if timeout is not None:
            _check_number(self, "timeout", timeout, 0, strict=True)
            if timeout != math.inf:  # infinity: no timeout at all
                # Beyond what a thread can wait for is forever anyway.
                self._bf_timeout = min(float(timeout), _LONGEST_WAIT)
        if limits is not None:
            self._bf_limits = self._check_limits(limits)
        if offload is not None:
            if self._bf_async and offload:
                raise InvalidParameterError(
                    f"{self._describe()}: offload=True is for synchronous nodes; an async "
                    "node already yields to the event loop while it awaits",
                    node=self._display_name(),
                )
            self._bf_offload = bool(offload)

    def _check_limits(self, limits: Limiter | Iterable[Limiter]) -> tuple[Limiter, ...]:
        if isinstance(limits, Limiter):
            return (limits,)
        try:
            found = tuple(limits)
        except TypeError:
            found = (limits,)  # type: ignore[assignment]
        for limiter in found:
            if not isinstance(limiter, Limiter):
                raise InvalidParameterError(
                    f"{self._describe()}: limits must be Limiter objects, got {limiter!r}",
                    node=self._display_name(),
                )
        if len({id(limiter) for limiter in found}) < len(found):
            twice = next(limiter for limiter in found if found.count(limiter) > 1)
            raise InvalidParameterError(
                f"{self._describe()}: limits lists {twice!r} more than once; an attempt "
                "holds each limiter once, so give each one once",
                node=self._display_name(),
            )
        return ordered(found)

    if TYPE_CHECKING:  # the typed view of the phases; the engine's are in BaseNode

        def prep(self, shared: Any) -> PrepT: ...
        def exec(self, prep_res: PrepT) -> ExecT: ...
        def post(self, shared: Any, prep_res: PrepT, exec_res: ExecT) -> str | None: ...
        def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT: ...


def check_executor(node: BaseNode, executor: Any) -> Any:
    """The ``executor=`` of a batch node or a flow, checked where it is given."""
    if not callable(getattr(executor, "prepare", None)):
        raise InvalidParameterError(
            f"{node._describe()}: executor={executor!r} is not an executor (it needs a "
            "prepare(node, method) method); use braidflow.executors.RayExecutor(...) or "
            "InProcessExecutor()",
            node=node._display_name(),
        )
    if node._bf_batch == SINGLE and not node._bf_is_flow:
        raise InvalidParameterError(
            f"{node._describe()}: executor= runs a batch's items elsewhere; "
            f"{type(node).__name__} has no items (use a batch node, or give the executor "
            "to the flow)",
            node=node._display_name(),
        )
    return executor


class BatchNode(Node[Any, Any], Generic[ItemT, ExecT]):
    """A node whose ``prep`` returns items; ``exec`` runs once per item, in order.

    ``prep`` may return a list, any iterable or generator (read lazily), or
    ``None`` for no items. ``post`` receives the list of results. Generic in
    the item type and the per-item result: ``BatchNode[str, int]``.
    """

    _bf_batch = SEQUENTIAL

    if TYPE_CHECKING:

        def prep(self, shared: Any) -> Iterable[ItemT] | None: ...
        def exec(self, prep_res: ItemT) -> ExecT: ...
        def post(self, shared: Any, prep_res: Any, exec_res: list[ExecT]) -> str | None: ...
        def exec_fallback(self, prep_res: ItemT, exc: Exception) -> ExecT: ...


class ParallelBatchNode(BatchNode[ItemT, ExecT]):
    """A synchronous batch node whose items run in a bounded thread pool.

    For sync SDK calls: ``max_concurrency`` threads at most (default:
    ``min(32, cpu_count + 4)``), results in input order, ``on_error`` as for
    `AsyncParallelBatchNode`.
    """

    _bf_batch = PARALLEL


class AsyncNode(Node[PrepT, ExecT]):
    """A node whose phases may be coroutines, run by an ``AsyncFlow``.

    Each phase may be written as ``prep_async``/``exec_async``/``post_async``
    or as plain ``prep``/``exec``/``post``, with ``async def`` or ``def``;
    the choice is read once per class. The fallback is
    ``exec_fallback_async`` (or ``exec_fallback``, or the older
    ``process_after_fail``). For type checkers, the ``_async`` names carry
    the ``PrepT``/``ExecT`` types; the plain names may be either kind.
    """

    _bf_async = True

    if TYPE_CHECKING:

        def prep(self, shared: Any) -> Any: ...
        def exec(self, prep_res: Any) -> Any: ...
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any: ...
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any: ...
        async def prep_async(self, shared: Any) -> PrepT: ...
        async def exec_async(self, prep_res: PrepT) -> ExecT: ...
        async def post_async(self, shared: Any, prep_res: PrepT, exec_res: ExecT) -> str | None: ...
        async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT: ...


class _AsyncBatchTyping(Generic[ItemT, ExecT]):
    """The typed view of the async batch kinds' phases (type checkers only)."""

    if TYPE_CHECKING:

        async def prep_async(
            self, shared: Any
        ) -> Iterable[ItemT] | AsyncIterable[ItemT] | None: ...
        async def exec_async(self, prep_res: ItemT) -> ExecT: ...
        async def post_async(
            self, shared: Any, prep_res: Any, exec_res: list[ExecT]
        ) -> str | None: ...
        async def exec_fallback_async(self, prep_res: ItemT, exc: Exception) -> ExecT: ...


class AsyncBatchNode(_AsyncBatchTyping[ItemT, ExecT], AsyncNode[Any, Any], BatchNode[Any, Any]):
    """An async batch node: items one at a time; ``prep`` may also return an async iterator."""

    _bf_batch = SEQUENTIAL


class AsyncParallelBatchNode(
    _AsyncBatchTyping[ItemT, ExecT], AsyncNode[Any, Any], BatchNode[Any, Any]
):
    """An async batch node whose items run concurrently in a task group.

    Options (keywords, or class attributes of the same name):
        max_concurrency: Most items in flight at once; ``None`` = no bound.
            Input (a list, generator or async iterator) is read only as fast
            as this allows, so memory does not grow with the input's length.
        on_error: ``"raise"`` (default): the first failure (after retries and
            fallback) cancels the other items and propagates once they have
            stopped. ``"collect"``: every item runs; ``post`` receives results
            in input order with `Failure` objects for failed items.
    """

    _bf_batch = PARALLEL
