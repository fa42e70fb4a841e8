"""Starting and ending a top-level run: its `Run`, run events, its durable side.

`RunScope` opens a run for ``run``/``run_async``/``resume`` (checking
the run's options first) and closes it: the run's first and last events,
the durable run recorded or claimed, its end recorded. ``PendingRun`` is
the awaitable ``run(shared)`` returns where an event loop is already running.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable, Coroutine, Generator
from contextvars import Token
from types import TracebackType
from typing import Any

from ._budget import check_budget, close_budget, open_budget
from ._clock import SYSTEM_CLOCK
from ._context import RUN, STATE, STEP, Run, StepAt
from ._errors import InvalidParameterError, StateError, add_note, has_note
from ._events import Event
from ._options import UNSET, check_durability
from ._state_table import check_nodes
from ._threads import enter_run, leave_run
from ._usage import Spend, enclosing
from .durable import NO_ANSWER, DurableRun, EventRecorder, claim_run, close_run, start_run
from .durable._drain import CUT_SHORT, DrainStop
from .durable._history import EVENTS_KEY
from .engine import drive_async, drive_sync, run_node_async, run_node_sync
from .engine._async import failure_of
from .engine._observe import StepScope
from .engine._walk import node_walk
from .stores._base import Store

__all__ = [
    "PendingRun",
    "RunScope",
    "observers_of",
    "run_top_async",
    "run_top_sync",
    "shared_argument",
]

Deliver = Callable[[Event], None]


def observers_of(observers: Any, owner: Any) -> tuple[tuple[Any, Deliver], ...]:
    """Check ``observers=`` before a run starts; pair each with how to call it.

    Raises:
        InvalidParameterError: For an observer that is neither callable nor
            has an ``on_event`` method, naming it.
    """
    if observers is None:
        return ()
    if hasattr(observers, "on_event") or callable(observers):
        observers = (observers,)
    try:
        given = tuple(observers)
    except TypeError:
        given = (observers,)
    paired = []
    for observer in given:
        on_event = getattr(observer, "on_event", None)
        if callable(on_event):
            paired.append((observer, on_event))
        elif callable(observer):
            paired.append((observer, observer))
        else:
            raise InvalidParameterError(
                f"{owner._describe()}: observer {observer!r} is neither callable nor has an "
                "on_event(event) method",
                node=owner._display_name(),
            )
    return tuple(paired)


class RunScope:
    """A top-level run, from ``run``/``run_async``/``resume``: makes the
    `Run`; while it is observed emits ``run_start`` and ``run_end``
    around the node's own step; with a store, records the run and how it ended.

    Entering returns the ``shared`` the run works on: the caller's dict, or
    in a durable run a tracking copy (written back to the caller's dict when
    the run ends) or, resuming, the store rebuilt from the checkpoints.
    """

    __slots__ = (
        "answer",
        "answers",
        "budget",
        "budget_open",
        "clock",
        "durability",
        "durable",
        "instance",
        "metadata",
        "migrate",
        "node",
        "observers",
        "record_events",
        "rename",
        "resuming",
        "root",
        "run",
        "run_id",
        "shared",
        "started",
        "state",
        "state_token",
        "step",
        "step_token",
        "store",
        "token",
        "working",
    )

    def __init__(
        self,
        node: Any,
        shared: Any,
        observers: Any,
        *,
        store: Any = None,
        run_id: str | None = None,
        record_events: bool | None = False,
        metadata: Any = None,
        clock: Any = None,
        resuming: bool = False,
        answer: Any = NO_ANSWER,
        answers: dict[str, Any] | None = None,
        migrate: Any = None,
        rename: Any = None,
        budget: Any = None,
        durability: str | None = None,
    ) -> None:
        self.node = node
        # A typed flow's run: on a dict of the instance's fields, if given one
        # (written back to it when the run ends).
        self.state = state = getattr(node, "_bf_state", None)
        self.instance = None
        if state is not None and not resuming:  # checked before anything starts
            check_nodes(node)
            shared, self.instance = state.store_of(shared, node)
            state.check(shared, node)
        self.shared = shared
        self.observers = observers_of(observers, node)
        describe = node._describe()
        if store is not None and not _is_store(store):
            raise InvalidParameterError(
                f"{describe}: store={store!r} is not a braidflow Store; pass SQLiteStore(path) "
                "(from braidflow.stores) or another Store",
                node=node._display_name(),
            )
        if run_id is not None and (not isinstance(run_id, str) or not run_id):
            raise InvalidParameterError(
                f"{describe}: run_id={run_id!r} must be a non-empty string",
                node=node._display_name(),
            )
        if (
            run_id is not None or record_events or metadata is not None or durability is not None
        ) and store is None:
            raise InvalidParameterError(
                f"{describe}: run_id=, record_events=, metadata= and durability= are for "
                "durable runs; pass store= too",
                node=node._display_name(),
            )
        self.durability = "sync" if durability is None else check_durability(node, durability)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidParameterError(
                f"{describe}: metadata={metadata!r} must be a dict of JSON values",
                node=node._display_name(),
            )
        if store is not None and not resuming and not isinstance(shared, dict):
            raise InvalidParameterError(
                f"{describe}: a durable run needs shared to be a dict, got {type(shared).__name__}",
                node=node._display_name(),
            )
        if clock is not None and not callable(getattr(clock, "call_later", None)):
            raise InvalidParameterError(
                f"{describe}: clock={clock!r} is not a clock (it needs now, sleep, "
                "sleep_blocking, call_later and wait_blocking); use "
                "braidflow.testing.VirtualClock() or leave it out",
                node=node._display_name(),
            )
        self.store: Store | None = store
        self.run_id = run_id
        self.record_events = record_events
        self.metadata = metadata
        self.clock = clock if clock is not None else SYSTEM_CLOCK
        if migrate is not None and not callable(migrate):
            raise InvalidParameterError(
                f"{describe}: migrate={migrate!r} must be a function that takes shared (a dict)",
                node=node._display_name(),
            )
        self.budget = check_budget(budget, node, store is not None)
        self.resuming = resuming
        self.answer = answer
        self.answers = answers
        self.migrate = migrate
        self.rename = rename
        self.durable: DurableRun | None = None
        self.working = shared

    def _check_resumed(self, shared: Any) -> None:
        """A typed flow's rebuilt (and migrated) store, given the defaults of
        keys it lacks (a field added to the type since the run began) and
        checked against its state type before the run goes on, as a run's
        store when it starts; nothing to do for an untyped one."""
        if self.state is not None:
            self.state.store_of(shared, self.node)
            self.state.check(shared, self.node)

    def __enter__(self) -> Any:
        enter_run()
        self.token: Token[Run | None] | None = None
        self.step_token: Token[StepAt] | None = None
        self.budget_open = False  # open_budget() was called: close_budget() is due
        self.root: StepAt | None = None  # a durable run's own: what its flow's prep and post touch
        self.state_token: Token[Any] | None = None
        self.step: StepScope | None = None
        try:
            return self._open()
        except BaseException as error:
            self._undo(error)
            raise

    def _open(self) -> Any:
        observers = self.observers
        store = self.store
        if store is not None:
            if self.resuming:
                assert self.run_id is not None
                self.durable, self.working = claim_run(
                    store,
                    self.node,
                    self.run_id,
                    self.answer,
                    self.migrate,
                    self.rename,
                    self.durability,
                    self.answers,
                    self._check_resumed,
                )
            else:
                metadata = self.metadata
                if self.record_events:  # and the resumes keep them too
                    metadata = {**(metadata or {}), EVENTS_KEY: True}
                self.durable, self.working = start_run(
                    store, self.node, self.shared, self.run_id, metadata, self.durability
                )
            if self.record_events is None:  # a resume: as the run's first part did
                self.record_events = self.durable.record_events
            elif self.record_events and self.resuming and not self.durable.record_events:
                store.set_metadata(self.durable.run_id, {EVENTS_KEY: True})
            if self.record_events:
                recorder = EventRecorder(store, self.durable.run_id)
                observers = (*observers, (recorder, recorder.on_event))
        run = self.run = Run(observers, self.clock, self.node)
        run.enclosing = enclosing()  # started inside another run's node: its usage counts there
        run.durable = self.durable
        before = self.durable.spent_before if self.durable is not None else None
        if self.budget is not None or before is not None:
            run.spend = Spend(self.budget) if before is None else Spend(self.budget, before)
        if self.budget is not None:
            open_budget()
            self.budget_open = True
        if self.durable is not None:
            run.id = self.durable.run_id
            self.durable.drain.bind(run.task)
            self.root = StepAt(f"0:{self.node._display_name()}", set())
            self.step_token = STEP.set(self.root)
        self.token = RUN.set(run)
        if run.observers:
            name = self.node._display_name()
            self.started = time.monotonic()
            run.emit("run_start", node=name, path=(name,))
            self.step = StepScope(run, name, (name,))
        state = self.state
        if state is None:
            return self.working
        # The flow (its own prep and post too) works on the state's view.
        self.state_token = STATE.set(state)
        return state.view(self.working)

    def _undo(self, error: BaseException) -> None:
        """The run could not start after all: undo what opening it did, and
        record a durable run that was opened as ended by ``error`` (even if
        Ctrl-C lands meanwhile)."""
        try:
            self._leave()
        finally:
            if self.durable is not None:
                close_run(self.durable, error)

    def _leave(self) -> None:
        """Put the context back as it was before the run (its variables,
        its budget), and leave the run's threads (`leave_run`)."""
        if self.state_token is not None:
            STATE.reset(self.state_token)
        if self.token is not None:
            RUN.reset(self.token)
        if self.budget_open:
            close_budget()
        if self.step_token is not None:
            STEP.reset(self.step_token)
        leave_run()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        durable = self.durable
        outcome = error  # how the run ends: what stopped it, or what stopped its end
        try:
            try:
                if durable is not None:
                    durable.drain.end()  # from here its grace period stops nothing
                step = self.step
                if step is not None:
                    step.end(error)
                    duration = time.monotonic() - self.started
                    self.run.emit(
                        "run_end", node=step.name, path=step.path, duration=duration, error=error
                    )
            finally:
                self._leave()
        except BaseException as late:  # Ctrl-C as an observer took run_end, threads ended...
            if durable is None:
                raise
            # The drain's own SIGINT, sent as the run stopped, stopped nothing of it.
            if not durable.drain.cut_short(late):
                outcome = late
        if durable is None:
            self._write_back(error)
            return
        try:
            try:
                durable.spend = self.run.spend
                if outcome is None and self.root is not None and self.root.touched:
                    # What the run's own flow's prep and post wrote: no step holds it.
                    outcome = self._own_unfit()
                    if outcome is None:
                        durable.run_done(self.working, self.root)
                if not self.resuming:  # the caller's dict gets what the run did
                    final = dict(dict.items(self.working))
                    dict.clear(self.shared)
                    dict.update(self.shared, final)
            except BaseException as late:  # a value that cannot be stored, a Ctrl-C...
                outcome = late
            # However the run ended, the store is told and the run released.
            close_run(durable, outcome)  # (raises Suspended, Drained for a stop)
        except BaseException as ended:  # how the run ends now: the caller gets it
            self._write_back(ended)
            raise
        self._write_back(outcome)
        if outcome is not error:
            assert outcome is not None
            raise outcome

    def _own_unfit(self) -> StateError | None:
        """In a durable run of a flow that validates its state, the refusal
        of what its own ``post`` left (checked as a step is before it is
        recorded, by `StateType.check_step`), or ``None`` if it fits; the
        caller's dict still gets what the run did, as after a refused step."""
        state = self.state
        if state is None or not state.validate:
            return None
        assert self.root is not None
        working = self.working
        try:
            state.check_step(working, working.touched(self.root.touched), self.node, "post")
        except StateError as error:
            return error
        return None

    def _write_back(self, outcome: BaseException | None) -> None:
        """Bring the dataclass or model instance the run was given (if any)
        up to date. A run that ends with an exception (a failure,
        `Suspended`, `Drained`, a cancellation: ``outcome``) ends with it
        still: a write-back that fails is a note on it, never raised in its
        place; a run that succeeded raises the write-back's error.
        """
        instance = self.instance
        if instance is None:
            return
        assert self.state is not None
        try:
            self.state.write_back(self.shared, instance, self.node)
        except Exception as failure:
            if outcome is None:
                raise
            add_note(
                outcome,
                str(failure)
                if isinstance(failure, StateError)
                else f"{self.node._describe()}: the {self.state.name} it was given could not "
                f"be brought up to date with what the run did: {failure!r}",
            )


def shared_argument(node: Any, shared: Any, legacy: dict[str, Any]) -> Any:
    """The shared store given to ``run``: its one positional argument, or
    early PocketFlow's ``shared_storage=``.

    Raises:
        TypeError: For no shared store, or another keyword.
    """
    if legacy:
        if shared is UNSET and list(legacy) == ["shared_storage"]:
            return legacy["shared_storage"]
        raise TypeError(
            f"{node._describe()}: run() takes the shared store as its one argument, "
            f"got unexpected keyword(s) {sorted(legacy)}"
        )
    if shared is UNSET:
        raise TypeError(f"{node._describe()}: run() needs the shared store, e.g. run({{}})")
    return shared


def warn_unreachable_successors(node: Any, flow_kind: str) -> None:
    """PocketFlow's warning for a node run on its own that has successors."""
    for successor in node.successors.values():
        if successor is not None:
            warnings.warn(f"Node won't run successors. Use {flow_kind}.", stacklevel=3)
            return


def run_top_sync(node: Any, scope: RunScope) -> Any:
    """Run ``node`` as a whole run, synchronously; return its action. (A
    node's durable run is a walk of one step, which records it: `node_walk`.)"""
    with scope as shared:
        try:
            if scope.durable is None or node._bf_is_flow:
                return run_node_sync(node, shared)
            return drive_sync(node_walk(node, shared))
        except KeyboardInterrupt as stop:
            durable = scope.durable
            if durable is not None and durable.drain.cut_short(stop):
                # The drain's grace period ended (its own SIGINT stopped what
                # ran): the run is drained, as an async one's cancel says.
                raise DrainStop(CUT_SHORT) from None
            raise
        except Exception as error:
            stopped = _stop_iteration(error)
            _label(node, stopped or error)
            if stopped is not None:
                raise stopped from stopped.__cause__
            raise


async def run_top_async(node: Any, scope: RunScope) -> Any:
    """Run ``node`` as a whole run on the event loop; return its action. (A
    node's durable run is a walk of one step, which records it: `node_walk`.)"""
    with scope as shared:
        try:
            if scope.durable is None or node._bf_is_flow:
                return await run_node_async(node, shared, False)
            return await drive_async(node_walk(node, shared))
        except BaseException as error:
            durable = scope.durable
            if (
                durable is not None
                and isinstance(error, asyncio.CancelledError)
                and durable.drain.cut_short(error)
            ):  # the drain's grace period ended: what ran was stopped, the run is drained
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise DrainStop(CUT_SHORT) from None
            failure = failure_of(error, node, None)
            if isinstance(failure, Exception):
                _label(node, failure)
            if failure is error:
                raise
            raise failure from error


def _stop_iteration(error: BaseException) -> StopIteration | None:
    """The ``StopIteration`` a node raised, if ``error`` is what Python made
    of it as it left the engine's generators (PEP 479: a ``RuntimeError``
    caused by it): a sync run's caller gets it as PocketFlow's does. (An
    async run cannot raise it: a coroutine's is a ``RuntimeError`` too, in
    PocketFlow as here.)"""
    cause = error.__cause__
    if (
        type(error) is RuntimeError
        and isinstance(cause, StopIteration)
        and str(error) == "generator raised StopIteration"
    ):
        return cause
    return None


def _label(node: Any, error: BaseException) -> None:
    if not has_note(error):
        add_note(error, f"raised in {node._describe()}")


class PendingRun(Coroutine[Any, Any, Any]):
    """A run of an async node or flow that starts when awaited.

    Returned by ``flow.run(shared)`` (and ``flow.resume(...)``) where an event
    loop is already running, so the form ``await flow.run(shared)`` of
    PocketFlow's early docs works (also at a notebook's top level). It is a
    coroutine: ``await`` it, or pass it to ``asyncio.create_task`` or
    ``asyncio.gather``. The result is that of ``run_async`` (``resume_async``).
    """

    __slots__ = ("_coroutine", "_node", "_start_run")

    def __init__(self, node: Any, start: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._node = node
        self._start_run = start
        self._coroutine: Coroutine[Any, Any, Any] | None = None

    def _start(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._start_run()
        return self._coroutine

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    def send(self, value: Any) -> Any:
        """Start or go on with the run (the coroutine protocol, for event loops)."""
        return self._start().send(value)

    def throw(self, *exc_info: Any) -> Any:
        """Raise an exception inside the run (the coroutine protocol)."""
        return self._start().throw(*exc_info)

    def close(self) -> None:
        """Stop the run, or make sure it never starts (the coroutine protocol)."""
        if self._coroutine is None:
            self._coroutine = _NEVER_STARTED
        else:
            self._coroutine.close()

    def __repr__(self) -> str:
        state = "not started" if self._coroutine is None else "started"
        return f"<PendingRun of {self._node._describe()}, {state}: await it>"

    def __del__(self) -> None:
        if self._coroutine is None:
            warnings.warn(
                f"{self._node._describe()}.run(shared) was never awaited, so the run did "
                "not happen; inside async code (or a notebook) write "
                "`await flow.run(shared)` or `await flow.run_async(shared)`",
                RuntimeWarning,
                stacklevel=2,
            )


async def _closed() -> None:
    """Stands in for the coroutine of a run closed before it started."""


_STORE_TYPES: set[type] = set()  # the classes whose instances were found to be stores


def _is_store(store: Any) -> bool:
    """Whether ``store`` is a `Store` (checked once per class: the protocol's
    check looks at every method, and costs more than a short durable run)."""
    if type(store) in _STORE_TYPES:
        return True
    if isinstance(store, Store):
        _STORE_TYPES.add(type(store))
        return True
    return False


_NEVER_STARTED = _closed()
_NEVER_STARTED.close()
