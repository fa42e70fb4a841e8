"""The per-run context: one object per top-level run, reached through a context variable.

A :class:`Run` holds the run's id and observers (later its store and resume
state); nested flows, batch items and worker threads see the same run. The
path of names down to the running node lives beside it. ``PendingRun`` is the
awaitable ``run(shared)`` returns where an event loop is already running.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Callable, Coroutine, Generator, Sized
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import InvalidParameterError
from ._events import Event, make_event
from ._threads import enter_run, leave_run
from ._wiring import display_names

if TYPE_CHECKING:
    from ._node import BaseNode

__all__ = [
    "ITEM",
    "PATH",
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

    __slots__ = ("_id", "_names", "observers")

    def __init__(self, observers: tuple[tuple[Any, Deliver], ...]) -> None:
        self._id: str | None = uuid.uuid4().hex if observers else None
        self._names: dict[int, dict[int, str]] = {}
        self.observers = observers

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
    (and ``error``, if it failed) at :meth:`end`, with the path set between."""

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
    ``item_end`` (and ``error``) at :meth:`end`. For a batch flow the item's
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


class RunScope:
    """A top-level run, from ``run``/``run_async``: makes the :class:`Run`, and
    while it is observed emits ``run_start`` and ``run_end`` around the node's
    own step."""

    __slots__ = ("node", "observers", "run", "started", "step", "token")

    def __init__(self, node: BaseNode, observers: Any) -> None:
        self.node = node
        self.observers = observers_of(observers, node)

    def __enter__(self) -> Run:
        enter_run()
        run = self.run = Run(self.observers)
        self.token: Token[Run | None] = RUN.set(run)
        self.step: StepScope | None = None
        if run.observers:
            name = self.node._display_name()
            self.started = time.monotonic()
            run.emit("run_start", name, (name,))
            self.step = StepScope(run, name, (name,))
        return run

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
            leave_run()


class PendingRun(Coroutine[Any, Any, Any]):
    """A run of an async node or flow that starts when awaited.

    Returned by ``flow.run(shared)`` where an event loop is already running,
    so the form ``await flow.run(shared)`` of PocketFlow's early docs works
    (also at a notebook's top level). It is a coroutine: ``await`` it, or
    pass it to ``asyncio.create_task`` or ``asyncio.gather``. The result is
    the run's last action, as from ``run_async``.
    """

    __slots__ = ("_coroutine", "_node", "_observers", "_shared")

    def __init__(self, node: BaseNode, shared: Any, observers: Any = None) -> None:
        self._node = node
        self._shared = shared
        self._observers = observers
        self._coroutine: Coroutine[Any, Any, Any] | None = None

    def _start(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._node._run_top_async(self._shared, self._observers)
        return self._coroutine

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    def send(self, value: Any) -> Any:
        return self._start().send(value)

    def throw(self, *exc_info: Any) -> Any:
        return self._start().throw(*exc_info)

    def close(self) -> None:
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
