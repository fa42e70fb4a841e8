"""Events of a run, as observers receive them.

An `Event` says what happened (its ``kind``), to which node, where in
the graph (``path``) and when. Events are built only when a run has
observers: a run nobody observes pays nothing for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = ["EVENT_KINDS", "Event", "Observer", "make_event"]

EVENT_KINDS: Final = (
    "run_start",
    "run_end",
    "node_start",
    "node_end",
    "item_start",
    "item_end",
    "retry",
    "error",
    "limiter_wait_start",
    "limiter_wait",
    "emit",
    "usage",
    "branch_start",
    "branch_end",
    "cache_hit",
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened during a run.

    Attributes:
        kind: One of ``run_start``, ``run_end``, ``node_start``, ``node_end``,
            ``item_start``, ``item_end``, ``retry``, ``error``,
            ``limiter_wait_start``, ``limiter_wait``, ``emit``, ``usage``,
            ``branch_start``, ``branch_end``, ``cache_hit``. ``cache_hit``: a node (or a batch's
            item) took its result from its result cache, and exec did not
            run. An attempt that finds a limiter full emits
            ``limiter_wait_start``, then ``limiter_wait`` once it holds its
            slots; a wait cut short (the run cancelled) ends with the item's or
            step's end event instead.
        run_id: The run's id (``run_start`` gives it first).
        node: The display name of the node (for run events, the node or flow
            the run started from). Two different nodes with one name in one
            graph are told apart by a suffix: ``Summarize``, ``Summarize#2``.
        path: The display names from the outermost flow down to this node. A
            run of a batch flow's sub-flow appears as ``"name[3]"`` for
            parameter set 3, so concurrent sub-flows have distinct paths.
        time: ``time.monotonic()`` when the event happened, in seconds.
        item: The batch item's (or parameter set's) index, or ``None``.
        attempt: The 0-based exec attempt (``retry``: the one that failed),
            or ``None``.
        duration: Seconds, on ``*_end`` events and ``limiter_wait``.
        error: The exception on ``error`` and on failed ``*_end`` events (a
            ``CancelledError`` if the run was cancelled; a ``DrainStop`` for
            what a drain stopped, at a safe point or past its grace
            period), else ``None``.
        data: For ``emit``, what the node emitted; for ``retry``,
            ``{"delay": seconds}``; for ``limiter_wait_start`` and
            ``limiter_wait``, ``{"limiters": [names]}`` (those waited for);
            for ``usage`` (a node's ``report_usage``), the call's
            ``input_tokens``, ``output_tokens``, ``cost``, ``model`` and ``calls``;
            for ``item_start`` of a batch whose input has a length (a list, a
            range), ``{"total": n}``; for ``cache_hit``, ``{"key": key}``
            (the key the result is kept under); else ``None``.
    """

    kind: str
    run_id: str
    node: str
    path: tuple[str, ...]
    time: float
    item: int | None = None
    attempt: int | None = None
    duration: float | None = None
    error: BaseException | None = None
    data: Any = None


class _Building:
    """An event under construction: the same slots as `Event`, but
    writable, so the engine fills them at the speed of a plain class and then
    makes the object an ``Event`` (a frozen dataclass's ``__init__`` goes
    through ``object.__setattr__`` field by field, three times slower)."""

    __slots__ = Event.__slots__

    def __init__(
        self,
        kind: str,
        run_id: str,
        node: str,
        path: tuple[str, ...],
        time: float,
        item: int | None,
        attempt: int | None,
        duration: float | None,
        error: BaseException | None,
        data: Any,
    ) -> None:
        self.kind = kind
        self.run_id = run_id
        self.node = node
        self.path = path
        self.time = time
        self.item = item
        self.attempt = attempt
        self.duration = duration
        self.error = error
        self.data = data


def make_event(
    kind: str,
    run_id: str,
    node: str,
    path: tuple[str, ...],
    time: float,
    item: int | None = None,
    attempt: int | None = None,
    duration: float | None = None,
    error: BaseException | None = None,
    data: Any = None,
) -> Event:
    """``Event(...)``, built the fast way; the result is an ordinary frozen Event."""
    event: Any = _Building(kind, run_id, node, path, time, item, attempt, duration, error, data)
    event.__class__ = Event
    return event  # type: ignore[no-any-return]


class Observer(Protocol):
    """What ``run(shared, observers=[...])`` accepts, besides a plain callable."""

    def on_event(self, event: Event) -> None:
        """Receive one event of the run, in the order events happen."""
        ...
