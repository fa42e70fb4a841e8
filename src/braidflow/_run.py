"""The per-run context: one object per top-level run, reached through a context variable.

A `Run` holds the run's id and observers (later its store and resume
state); nested flows, batch items and worker threads see the same run. The
path of names down to the running node lives beside it. ``PendingRun`` is the
awaitable ``run(shared)`` returns where an event loop is already running.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine, Generator, Sized
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._durable import (
    NO_ANSWER,
    STEP,
    TOUCHED,
    Durable,
    Interrupted,
    TrackingDict,
    describe_graph,
)
from ._errors import InvalidParameterError, ResumeError, Suspended, add_note, describe_error
from ._events import Event, make_event
from ._store import Store, this_owner
from ._threads import enter_run, leave_run
from ._wiring import display_names

if TYPE_CHECKING:
    from ._node import BaseNode

__all__ = [
    "ITEM",
    "PATH",
    "RESUME_HINT",
    "RUN",
    "PendingRun",
    "Run",
    "RunScope",
    "StepScope",
    "observe_items",
    "observed",
    "observers_of",
]

RUN: ContextVar[Run | None] = ContextVar("braidflow_run", default=None)
# Set only while a run is observed: the names down to the running node, and
# the batch item being run.
PATH: ContextVar[tuple[str, ...]] = ContextVar("braidflow_path", default=())
ITEM: ContextVar[int | None] = ContextVar("braidflow_item", default=None)

# The words of the note a failed durable run's error gets that say how to
# resume it in Python (the command line, which says its own, drops that note).
RESUME_HINT = "fix the cause and resume it with flow.resume("

Deliver = Callable[[Event], None]


def observers_of(observers: Any, owner: BaseNode) -> tuple[tuple[Any, Deliver], ...]:
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


class Run:
    """One run of a node or flow: its id and its observers.

    Observers are called synchronously, in the order events happen, on the
    thread where each happened. One that raises is reported once, as a
    warning naming it, and dropped for the rest of the run.
    """

    __slots__ = ("_id", "_names", "durable", "observers")

    def __init__(self, observers: tuple[tuple[Any, Deliver], ...]) -> None:
        self._id: str | None = uuid.uuid4().hex if observers else None
        self._names: dict[int, dict[int, str]] = {}
        self.observers = observers
        self.durable: Durable | None = None  # set for a run with a store

    def names_in(self, start: Any) -> dict[int, str]:
        """Display names of the graph starting at ``start`` (computed once per run)."""
        names = self._names.get(id(start))
        if names is None:
            names = self._names[id(start)] = display_names(start)
        return names

    @property
    def id(self) -> str:
        """The run's unique id (made when first asked for)."""
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    def emit(
        self,
        kind: str,
        node: str,
        path: tuple[str, ...],
        item: int | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        error: BaseException | None = None,
        data: Any = None,
        at: float | None = None,
    ) -> None:
        """Build an event (happening now, or ``at`` a monotonic time) and hand
        it to every observer still listening."""
        observers = self.observers
        if not observers:
            return
        event = make_event(
            kind,
            self._id or self.id,
            node,
            path,
            time.monotonic() if at is None else at,
            item,
            attempt,
            duration,
            error,
            data,
        )
        for observer, deliver in observers:
            try:
                deliver(event)
            except Exception as failure:
                self._drop(observer, failure)

    def _drop(self, observer: Any, failure: Exception) -> None:
        # Replacing the tuple is atomic, so threads delivering at the same time
        # see either the old set or the new one.
        remaining = tuple(pair for pair in self.observers if pair[0] is not observer)
        if len(remaining) == len(self.observers):
            return  # another thread dropped it already
        self.observers = remaining
        warnings.warn(
            f"braidflow: observer {observer!r} raised {failure!r}; it is dropped for the "
            "rest of this run",
            RuntimeWarning,
            stacklevel=2,
        )


def observed() -> Run | None:
    """The running run, if anyone observes it; else ``None`` (nothing to build)."""
    run = RUN.get()
    if run is not None and run.observers:
        return run
    return None


class StepScope:
    """A node's step while its run is observed: ``node_start`` now, ``node_end``
    (and ``error``, if it failed) at `end`, with the path set between."""

    __slots__ = ("name", "path", "run", "started", "token")

    def __init__(self, run: Run, name: str, path: tuple[str, ...]) -> None:
        self.run = run
        self.name = name
        self.path = path
        self.token = PATH.set(path)
        self.started = now = time.monotonic()
        run.emit("node_start", name, path, None, None, None, None, None, now)

    def end(self, error: BaseException | None = None) -> None:
        PATH.reset(self.token)
        run = self.run
        if error is not None and not isinstance(error, asyncio.CancelledError):
            run.emit("error", self.name, self.path, error=error)
        now = time.monotonic()
        run.emit("node_end", self.name, self.path, None, None, now - self.started, error, None, now)


class _ItemScope:
    """One batch item while its run is observed: ``item_start`` now, then
    ``item_end`` (and ``error``) at `end`. For a batch flow the item's
    path element is ``name[index]``, so its sub-flow's nodes are told apart."""

    __slots__ = ("index", "item_token", "name", "path", "path_token", "run", "started")

    def __init__(
        self, run: Run, name: str, path: tuple[str, ...], index: int, flow: bool, data: Any
    ) -> None:
        self.run, self.name, self.path, self.index = run, name, path, index
        self.item_token = ITEM.set(index)
        self.path_token = PATH.set((*path[:-1], f"{name}[{index}]")) if flow else None
        self.started = now = time.monotonic()
        run.emit("item_start", name, path, index, None, None, None, data, now)

    def end(self, error: BaseException | None = None) -> None:
        ITEM.reset(self.item_token)
        if self.path_token is not None:
            PATH.reset(self.path_token)
        run = self.run
        if error is not None and not isinstance(error, asyncio.CancelledError):
            run.emit("error", self.name, self.path, item=self.index, error=error)
        now = time.monotonic()
        run.emit(
            "item_end", self.name, self.path, self.index, None, now - self.started, error, None, now
        )


def observe_items(run: Run, node: BaseNode, run_item: Any, items: Any, is_async: bool) -> Any:
    """Wrap a batch runner's per-item function so each item emits its events."""
    name = node._display_name()
    path = PATH.get() or (name,)
    flow = node._bf_is_flow
    total = len(items) if isinstance(items, Sized) and not hasattr(items, "__next__") else None
    data = {"total": total} if total is not None else None
    if is_async:

        async def observed_item_async(item: Any, index: int) -> Any:
            scope = _ItemScope(run, name, path, index, flow, data)
            try:
                value = await run_item(item, index)
            except BaseException as error:
                scope.end(error)
                raise
            scope.end()
            return value

        return observed_item_async

    def observed_item(item: Any, index: int) -> Any:
        scope = _ItemScope(run, name, path, index, flow, data)
        try:
            value = run_item(item, index)
        except BaseException as error:
            scope.end(error)
            raise
        scope.end()
        return value

    return observed_item


class _EventRecorder:
    """Keeps a durable run's events in its store (``record_events=True``)."""

    def __init__(self, store: Any, run_id: str) -> None:
        from .tracing._jsonl import event_line  # stdlib only, like this module

        self.store, self.run_id = store, run_id
        self.buffer: list[str] = []
        self.lock = threading.Lock()
        self.line = event_line

    def __repr__(self) -> str:
        return "<the store's event log>"

    def on_event(self, event: Event) -> None:
        text = self.line(event)
        with self.lock:
            self.buffer.append(text)
            if event.kind != "run_end" and len(self.buffer) < 500:
                return
            batch, self.buffer = self.buffer, []
        self.store.add_events(self.run_id, batch)


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
        "durable",
        "node",
        "observers",
        "record_events",
        "resuming",
        "run",
        "run_id",
        "shared",
        "started",
        "step",
        "step_token",
        "store",
        "token",
        "touched_token",
        "working",
    )

    def __init__(
        self,
        node: BaseNode,
        shared: Any,
        observers: Any,
        *,
        store: Any = None,
        run_id: str | None = None,
        record_events: bool = False,
        resuming: bool = False,
        answer: Any = NO_ANSWER,
    ) -> None:
        self.node = node
        self.shared = shared
        self.observers = observers_of(observers, node)
        describe = node._describe()
        if store is not None and not isinstance(store, Store):
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
        if (run_id is not None or record_events) and store is None:
            raise InvalidParameterError(
                f"{describe}: run_id= and record_events= are for durable runs; pass store= too",
                node=node._display_name(),
            )
        if store is not None and not resuming and not isinstance(shared, dict):
            raise InvalidParameterError(
                f"{describe}: a durable run needs shared to be a dict, got {type(shared).__name__}",
                node=node._display_name(),
            )
        self.store: Store | None = store
        self.run_id = run_id
        self.record_events = record_events
        self.resuming = resuming
        self.answer = answer
        self.durable: Durable | None = None
        self.working = shared

    def __enter__(self) -> Any:
        enter_run()
        observers = self.observers
        try:
            if self.store is not None:
                self.durable, self.working = self._open_durable()
                if self.record_events:
                    recorder = _EventRecorder(self.store, self.durable.run_id)
                    observers = (*observers, (recorder, recorder.on_event))
        except BaseException:
            leave_run()
            raise
        run = self.run = Run(observers)
        run.durable = self.durable
        self.step_token: Token[str] | None = None
        self.touched_token: Token[set[Any]] | None = None
        if self.durable is not None:
            run._id = self.durable.run_id
            self.step_token = STEP.set(f"0:{self.node._display_name()}")
            self.touched_token = TOUCHED.set(set())
        self.token: Token[Run | None] = RUN.set(run)
        self.step: StepScope | None = None
        if run.observers:
            name = self.node._display_name()
            self.started = time.monotonic()
            run.emit("run_start", name, (name,))
            self.step = StepScope(run, name, (name,))
        return self.working

    def _open_durable(self) -> tuple[Durable, Any]:
        store, node = self.store, self.node
        assert store is not None
        name = node._display_name()
        graph = describe_graph(node)
        if self.resuming:
            assert self.run_id is not None
            durable = Durable(store, self.run_id)
            record, recorded_graph, initial, rows = store.claim(self.run_id, this_owner())
            try:
                if recorded_graph != graph:
                    raise ResumeError(
                        f"run {self.run_id!r} was recorded with another graph: "
                        f"{_first_difference(recorded_graph, graph)}; resume it with the flow "
                        "as it was when the run started",
                        node=name,
                    )
                shared = durable.rebuild(initial, rows)
                if self.answer is not NO_ANSWER:
                    if record.status != "waiting" or durable.asked is None:
                        raise ResumeError(
                            f"run {self.run_id!r} is {record.status}, not waiting for input; "
                            "resume it without input=",
                            node=name,
                        )
                    durable.answer(self.answer)
            except BaseException:
                # Nothing ran: the run is left as it was, to be resumed properly.
                store.finish(
                    self.run_id,
                    record.status,
                    node=record.node,
                    error=record.error,
                    prompt=record.prompt,
                    ended=record.ended,
                )
                raise
            return durable, shared
        run_id = self.run_id or uuid.uuid4().hex
        durable = Durable(store, run_id)
        tracked = TrackingDict(self.shared)
        initial = durable.initial(tracked, name)
        store.create_run(run_id, name, graph, initial, this_owner())
        return durable, tracked

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            step = self.step
            if step is not None:
                step.end(error)
                duration = time.monotonic() - self.started
                self.run.emit("run_end", step.name, step.path, duration=duration, error=error)
        finally:
            RUN.reset(self.token)
            if self.step_token is not None:
                STEP.reset(self.step_token)
            if self.touched_token is not None:
                TOUCHED.reset(self.touched_token)
            leave_run()
        if self.durable is not None:
            self._close_durable(error)

    def _close_durable(self, error: BaseException | None) -> None:
        durable, store = self.durable, self.store
        assert durable is not None
        assert store is not None
        run_id = durable.run_id
        try:
            durable.flush()  # items that finished last
        except BaseException:
            if error is None:
                raise
        if not self.resuming:  # the caller's dict gets what the run did
            final = dict(dict.items(self.working))
            dict.clear(self.shared)
            dict.update(self.shared, final)
        if error is None:
            store.finish(run_id, "completed")
            return
        if isinstance(error, Interrupted):
            durable.write([durable.ask_row(error)])
            store.finish(run_id, "waiting", node=error.where, prompt=error.prompt)
            raise Suspended(
                f"run {run_id!r} is waiting for input at {error.where!r}: {error.prompt!r}; "
                f"resume it with flow.resume({run_id!r}, store=..., input=answer)",
                run_id=run_id,
                node=error.where,
                prompt=error.prompt,
            ) from None
        status = "failed" if isinstance(error, Exception) else "interrupted"
        where = durable.where_failed(error)
        store.finish(run_id, status, node=where, error=describe_error(error, whole=True))
        if isinstance(error, Exception):
            add_note(
                error,
                f"run {run_id!r} is stored as {status} in {store!r}; {RESUME_HINT}"
                f"{run_id!r}, store=...)",
            )


def _first_difference(recorded: str, now: str) -> str:
    """The first line where two graph descriptions differ, said in words."""
    before, after = recorded.splitlines(), now.splitlines()
    for old, new in zip(before, after, strict=False):
        if old != new:
            return f"it had {old!r} where the flow now has {new!r}"
    if len(before) > len(after):
        return f"it had {before[len(after)]!r}, which the flow no longer has"
    return f"the flow now also has {after[len(before)]!r}"


class PendingRun(Coroutine[Any, Any, Any]):
    """A run of an async node or flow that starts when awaited.

    Returned by ``flow.run(shared)`` (and ``flow.resume(...)``) where an event
    loop is already running, so the form ``await flow.run(shared)`` of
    PocketFlow's early docs works (also at a notebook's top level). It is a
    coroutine: ``await`` it, or pass it to ``asyncio.create_task`` or
    ``asyncio.gather``. The result is that of ``run_async`` (``resume_async``).
    """

    __slots__ = ("_coroutine", "_node", "_start_run")

    def __init__(self, node: BaseNode, start: Callable[[], Coroutine[Any, Any, Any]]) -> None:
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


_NEVER_STARTED = _closed()
_NEVER_STARTED.close()
