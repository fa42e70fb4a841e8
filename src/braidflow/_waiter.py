"""One acquirer queued on a limiter: an asyncio task (a future) or a thread (an event).

`braidflow.Limiter` and the store-backed `braidflow.SharedLimiter` queue
their waiters as `Waiter` objects and wake them with `Waiter.wake`, from
any thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

__all__ = ["Waiter", "resolve"]


def resolve(future: asyncio.Future[None]) -> None:
    """Wake a task waiting on ``future`` (a no-op once it is done)."""
    if not future.done():
        future.set_result(None)


class Waiter:
    """One queued acquirer: an asyncio task (future) or a thread (event).

    A waiter that gives up is only marked ``gone`` and skipped when it reaches
    the head of the queue, so leaving the queue costs O(1) however long it is.
    ``blocked``: it waits while holding slots, registered with the deadlock
    check; ``ahead``: it does not wait for the waiters ahead of it, but takes
    free slots as they come (see `Limiter._enqueue`);
    ``failure``: the error its wait ends with (a deadlock found later);
    ``claim``: a weighted acquirer's `braidflow._weights.Claim` (``None``: a
    plain one, one slot), for an attempt of ``node`` on item ``index``;
    ``stop``: what may end its wait early (a durable run's drain, for an
    attempt that has not begun: see `braidflow.Limiter._stop_waits`), or ``None``.
    """

    __slots__ = (
        "ahead",
        "blocked",
        "claim",
        "event",
        "failure",
        "future",
        "gone",
        "index",
        "loop",
        "node",
        "stop",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = None
        self.event: threading.Event | None = None
        self.gone = False
        self.blocked = False
        self.ahead = False
        self.failure: BaseException | None = None
        self.claim: Any = None
        self.node: Any = None
        self.index: int | None = None
        self.stop: Any = None

    def arm(self) -> None:
        """Prepare a fresh wake-up for the next wait (called under the limiter's lock)."""
        if self.loop is not None:
            self.future = self.loop.create_future()
        else:
            self.event = threading.Event()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        future, loop = self.future, self.loop
        if future is None or loop is None or future.done():
            return
        if asyncio._get_running_loop() is loop:
            future.set_result(None)
        else:
            loop.call_soon_threadsafe(resolve, future)
