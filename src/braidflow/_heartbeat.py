"""The heartbeat threads that renew leases (a store's runs, a shared limiter's
slots): one loop for all, that ends once there is nothing to renew.

A heartbeat holds its owner by a weak reference only, and waits on the
owner's `Wake` between beats: the owner sets it when it is closed, and the
weak reference when the owner is gone, so the thread never outlives what it
renews. At a beat with nothing to renew (the last run or slot let go since)
it ends too, and the next lease taken starts a new one: not at the moment
the last one is let go, which would start and end a thread per run (about
half a millisecond a durable run) or per slot.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Protocol, TypeVar

__all__ = ["Renewing", "Wake", "start_heartbeat"]


class Wake:
    """What a heartbeat waits on between beats: `set` makes it look now.

    Not a `threading.Event`, whose ``set`` takes a lock: the garbage
    collector runs a weak reference's callback wherever it happens to run,
    in the middle of another ``set`` of the same thread, or at exit while
    the heartbeat, stopped, holds the lock; ``set`` here never waits.
    """

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()  # put() never blocks

    def set(self) -> None:
        self._queue.put(None)

    def wait(self, timeout: float) -> None:
        """Return when set (each `set` since the last return counts once) or
        after ``timeout`` seconds."""
        try:
            self._queue.get(timeout=timeout)
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            return


class Renewing(Protocol):
    """The owner of a heartbeat."""

    def _idle(self) -> bool:
        """Whether there is nothing to renew (nothing held, or closed): if so,
        forget the heartbeat (the next lease taken starts another)."""
        ...


R = TypeVar("R", bound=Renewing)


def start_heartbeat(
    owner: R,
    wake: Wake,
    every: float,
    renew: Callable[[R], object],
    name: str,
    end: Callable[[], object] | None = None,
) -> threading.Thread:
    """Start a thread that calls ``renew(owner)`` every ``every`` seconds,
    until ``owner._idle()`` (asked at each beat, and whenever ``wake`` is
    set: the owner closed) or ``owner`` is gone, then ``end()``; it holds
    ``renew``, ``end`` and ``wake``, never ``owner`` while it waits.
    ``renew`` deals with its own failures (a database down now: the next
    beat tries again)."""
    ref = weakref.ref(owner, lambda _: wake.set())
    thread = threading.Thread(
        target=_beat, args=(ref, wake, every, renew, end), name=name, daemon=True
    )
    thread.start()
    return thread


def _beat(
    ref: weakref.ref[R],
    wake: Wake,
    every: float,
    renew: Callable[[R], object],
    end: Callable[[], object] | None,
) -> None:
    try:
        due = monotonic() + every
        while True:
            wake.wait(max(due - monotonic(), 0.0))  # (a wake after it: the next wait's)
            owner = ref()
            if owner is None or owner._idle():
                return
            if monotonic() >= due:
                renew(owner)
                due = monotonic() + every
            del owner  # not held while waiting: a dropped owner ends the thread
    finally:
        if end is not None:
            end()
