"""The run state: the `Run` and every context variable the engine keeps, in one place.

A top-level run makes one `Run` (its id, observers, clock, durable
side); nested flows, batch items, branches and worker threads see the same
one. Where the running code is (its path, item, checkpoint position,
attempt, held limits) lives in a few context variables beside it, which each
item's task and each thread sees on its own; nothing about a run is kept on
node instances, which concurrent items share.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ._after_fork import reset_in_children
from ._clock import SYSTEM_CLOCK, Clock
from ._events import Event, make_event
from ._wiring import display_names

__all__ = [
    "ATTEMPT",
    "CLAIMS",
    "GATES",
    "HELD",
    "ITEM",
    "PATH",
    "RUN",
    "HANDED_DOWN",
    "STATE",
    "STEP",
    "AttemptState",
    "ItemAt",
    "Run",
    "HandedDown",
    "RemoteExec",
    "StepAt",
    "current_item",
    "observed",
    "run_clock",
]

Deliver = Callable[[Event], None]


class Run:
    """One top-level run of a node or flow: its id, observers, clock,
    durable side (a `braidflow.durable` run, for a run with a store) and
    spending (usage reported, budget).

    Observers are called synchronously, in the order events happen, on the
    thread where each happened. One that raises is reported once, as a
    warning naming it, and dropped for the rest of the run (a
    ``CancelledError`` too; while the run is being cancelled, one is taken
    for that cancellation and ignored).
    """

    __slots__ = (
        "_id",
        "_names",
        "cancelling_at_start",
        "clock",
        "durable",
        "enclosing",
        "observers",
        "spend",
        "task",
        "top",
    )

    def __init__(
        self,
        observers: tuple[tuple[Any, Deliver], ...],
        clock: Clock = SYSTEM_CLOCK,
        top: Any = None,
    ) -> None:
        self.top = top  # the node or flow the run was started on (for advice in errors)
        self._id: str | None = uuid.uuid4().hex if observers else None
        self._names: dict[int, dict[int, str]] = {}
        self.observers = observers
        self.clock = clock
        self.durable: Any = None  # a durable.DurableRun, for a run with a store
        # Usage reported and the budget (a braidflow._budget.Spend), once either exists.
        self.spend: Any = None
        # A run started inside another run's node: that run, and where in it
        # (see braidflow._usage.enclosing): what this run uses counts there too.
        self.enclosing: Any = None
        # The task a run on an event loop started in, and how many cancellations
        # it had taken by then: only more than those cancel the run. One asked
        # and not delivered yet (Ctrl-C as the run was set up, its store
        # record made) is the run's: it lands at the run's first await.
        self.task: asyncio.Task[Any] | None = None
        self.cancelling_at_start = 0
        loop = asyncio._get_running_loop()
        if loop is not None:
            task = asyncio.current_task(loop)
            if task is not None:
                self.task = task
                pending = getattr(task, "_must_cancel", False) is True
                self.cancelling_at_start = task.cancelling() - pending

    @property
    def id(self) -> str:
        """The run's unique id (made when first asked for)."""
        if self._id is None:
            self._id = uuid.uuid4().hex
        return self._id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    def names_in(self, start: Any) -> dict[int, str]:
        """Display names of the graph starting at ``start`` (computed once per run)."""
        names = self._names.get(id(start))
        if names is None:
            names = self._names[id(start)] = display_names(start)
        return names

    def emit(
        self,
        kind: str,
        *,
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
            except asyncio.CancelledError as failure:
                # asyncio delivers no cancellation inside sync code: this one is
                # the observer's own, a failure like any other. Unless the run
                # is being cancelled (its task was asked to): then it is taken
                # for that cancellation handed on, and the observer is kept.
                # Either way it goes no further: the run stops at its next
                # await, as asked of its task, and raised from here it would
                # cut short every other observer's events (no run_end).
                task = self.task
                if task is None or task.cancelling() <= self.cancelling_at_start:
                    self._drop(observer, failure)

    def _drop(self, observer: Any, failure: BaseException) -> None:
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


class AttemptState:
    """Which node is executing which item, and on which attempt (0-based).
    One per attempt, so code an attempt left running (a thread abandoned
    to a timeout) keeps its own number; ``loop``: the first attempt's, the
    same for all the attempts of one exec."""

    __slots__ = ("attempt", "item_index", "loop", "node")

    def __init__(
        self, node: Any, item_index: int | None, attempt: int = 0, loop: Any = None
    ) -> None:
        self.node = node
        self.item_index = item_index
        self.attempt = attempt
        self.loop = self if loop is None else loop

    def next(self) -> AttemptState:
        """The state of the attempt after this one."""
        return AttemptState(self.node, self.item_index, self.attempt + 1, self.loop)


class ItemAt:
    """In `ITEM`, for a task that runs item after item of one batch (a bounded
    worker of a durable batch): the item it is at, moved on in place rather
    than set anew per item, and whether the item before waits for its commit."""

    __slots__ = ("batch", "index", "queued")

    def __init__(self, batch: Any, index: int) -> None:
        self.batch = batch
        self.index = index
        self.queued = False


class _Unrecorded(set[Any]):
    """Outside a durable run's steps nothing is recorded: adding is a no-op."""

    def add(self, key: Any) -> None:
        pass


class StepAt:
    """The checkpoint position of the running code in a durable run: the key
    its checkpoints belong to (``0:job/2:review``, ``...[3]`` for a batch
    flow's parameter set, ``.../b1:name`` for a branch), and the keys of
    ``shared`` its step has touched (what the step's checkpoint holds)."""

    __slots__ = ("key", "touched")

    def __init__(self, key: str, touched: set[Any]) -> None:
        self.key = key
        self.touched = touched


class WalkStepAt(StepAt):
    """A step of a flow's walk: its key (``frame/position:name``) made when
    asked for, which a step that starts no items, asks nothing and fails in
    nothing never is. Made by `object.__new__` and its slots set (``frame``,
    ``position``, ``name``, ``touched``): a step's start costs less so."""

    __slots__ = ("frame", "name", "position")
    frame: str
    position: int
    name: str

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"{self.frame}/{self.position}:{self.name}"


class RemoteExec:
    """In `REMOTE`, for an exec an executor runs away from its run (a Ray
    task): where it runs (for messages), whether the run is observed, and
    what the exec sends back with its outcome, in the order it happened:
    ``("usage", Usage)`` for each report, ``("emit", packed)`` for each
    ``emit`` while the run is observed (``packed`` made by ``pack``, so that
    data that cannot travel fails at the ``emit`` call)."""

    __slots__ = ("observed", "pack", "sent", "where")

    def __init__(self, where: str, observed: bool, pack: Callable[[Any], Any]) -> None:
        self.where = where
        self.observed = observed
        self.pack = pack
        self.sent: list[tuple[str, Any]] = []


class HandedDown:
    """What an enclosing flow hands to the code it runs: the executor its
    batch nodes default to, and ``shared`` for a class's own ``_exec`` (which
    PocketFlow calls without it)."""

    __slots__ = ("executor", "shared")

    def __init__(self, executor: Any, shared: Any) -> None:
        self.executor = executor
        self.shared = shared


# The run, for every task and thread of it.
RUN: ContextVar[Run | None] = ContextVar("braidflow_run", default=None)
# An exec an executor runs away from its run (a Ray task): where it runs, and
# the usage it reports and data it emits, sent back with its outcome and
# counted (emitted) in the run then.
REMOTE: ContextVar[RemoteExec | None] = ContextVar("braidflow_remote", default=None)
# The display names down to the running node (set only while a run is observed).
PATH: ContextVar[tuple[str, ...]] = ContextVar("braidflow_path", default=())
# The batch item being run: its index (set while a run is observed or durable).
ITEM: ContextVar[int | ItemAt | None] = ContextVar("braidflow_item", default=None)
# Where checkpoints belong (set only in durable runs).
STEP: ContextVar[StepAt] = ContextVar(
    "braidflow_step",
    default=StepAt("", _Unrecorded()),  # noqa: B039 - immutable in effect: it records nothing
)
# The exec attempt running now (set while a retry, timeout or limiter applies).
ATTEMPT: ContextVar[AttemptState | None] = ContextVar("braidflow_attempt", default=None)
# The holding record of the innermost exec attempt this code runs inside (what
# it holds, its node and item, and the record of the attempt around it), or
# None; see _deadlock.hold. A limiter that must make such code wait checks that
# the wait could end, instead of deadlocking.
HELD: ContextVar[list[Any] | None] = ContextVar("braidflow_held", default=None)
# The bounds (max_concurrency) of the parallel stages enclosing this code, as
# limiters, outermost first. An exec attempt that may be abandoned in a thread
# (sync code under a timeout) holds them too, so the abandoned thread keeps
# counting against each bound until it really ends.
GATES: ContextVar[tuple[Any, ...]] = ContextVar("braidflow_gates", default=())
# The weighted limiters' claims of the running exec attempt (set only for a
# node with weighted limits): what the usage it reports corrects.
CLAIMS: ContextVar[tuple[Any, ...] | None] = ContextVar("braidflow_claims", default=None)
# The state type of the innermost typed flow this code runs in (its joins' rules,
# its branches' views), or None: set only by flows made with state=.
STATE: ContextVar[Any] = ContextVar("braidflow_state", default=None)
# What the enclosing flow hands down (its executor; shared for an _exec override).
HANDED_DOWN: ContextVar[HandedDown | None] = ContextVar("braidflow_stage", default=None)
# A child made by os.fork in a node's code is in no run: the run is its parent's.
reset_in_children(RUN, REMOTE, PATH, ITEM, STEP, ATTEMPT, HELD, GATES, CLAIMS, STATE, HANDED_DOWN)


def observed() -> Run | None:
    """The running run, if anyone observes it; else ``None`` (nothing to build)."""
    run = RUN.get()
    if run is not None and run.observers:
        return run
    return None


def run_clock() -> Clock:
    """The running run's clock (the system's outside a run)."""
    run = RUN.get()
    return run.clock if run is not None else SYSTEM_CLOCK


def current_item() -> int | None:
    """The index of the batch item being run, if the run keeps it."""
    item = ITEM.get()
    if type(item) is ItemAt:
        return item.index
    return item  # type: ignore[return-value]
