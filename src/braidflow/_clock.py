"""Time for the engine and the limiters: a ``Clock`` to read, sleep on and set deadlines with.

Retry waits, timeouts and rate windows all read one clock: the system's by
default, or one a test moves by hand (``braidflow.testing.VirtualClock``),
given to a run (``run(shared, clock=...)``) or to a ``Limiter``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "Deadline", "TimedOut", "sleep_or_wake"]

# The longest a thread can wait in one call; longer is forever anyway.
LONGEST_WAIT = float(threading.TIMEOUT_MAX)


class Clock(Protocol):
    """The time source the engine and limiters read, sleep on and set deadlines with."""

    def now(self) -> float:
        """Return the current time in seconds, monotonic."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Any:
        """Call ``callback`` on the running event loop's thread after
        ``seconds``; return a handle whose ``cancel()`` calls it off."""
        ...

    def wait_blocking(self, event: threading.Event, seconds: float) -> bool:
        """Block the calling thread until ``event`` is set (True) or ``seconds``
        pass (False)."""
        ...


async def sleep_or_wake(clock: Clock, seconds: float, woken: asyncio.Future[None]) -> None:
    """Sleep ``seconds`` on ``clock``, or less: until ``woken`` is done."""
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()


class SystemClock:
    """The real clock: the event loop's time where there is one, else the monotonic clock."""

    def __repr__(self) -> str:
        return "SystemClock()"

    def now(self) -> float:
        """Return the loop's time (the monotonic clock by default), or the monotonic clock."""
        loop = asyncio._get_running_loop()
        return loop.time() if loop is not None else time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)

    def sleep_blocking(self, seconds: float) -> None:
        """``time.sleep``, capped at the longest wait a thread can make."""
        time.sleep(min(seconds, LONGEST_WAIT))

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Any:
        """``loop.call_later`` on the running loop."""
        return asyncio.get_running_loop().call_later(min(seconds, LONGEST_WAIT), callback)

    def wait_blocking(self, event: threading.Event, seconds: float) -> bool:
        """``event.wait(seconds)``."""
        return event.wait(min(seconds, LONGEST_WAIT))


SYSTEM_CLOCK = SystemClock()


class TimedOut(Exception):
    """A deadline passed: private to the engine, which turns it into the
    node's ``NodeTimeoutError``. A type of its own, so that a ``TimeoutError``
    raised by the user's own code is never mistaken for the engine's."""

    def __init__(self, abandoned: bool = False, raised: Exception | None = None) -> None:
        super().__init__()
        self.abandoned = abandoned  # a thread was left running (it holds its slots)
        self.raised = raised  # what the late code raised instead of its cancellation


class Deadline:
    """``async with Deadline(clock, seconds):`` cancels the body when the clock
    passes the deadline, and raises `TimedOut` in place of that cancellation
    (``asyncio.timeout``'s rules, on any clock). A body that catches the
    cancellation times out all the same (unlike ``asyncio.timeout``): what it
    returns late is dropped, an error it raises instead is kept on the
    `TimedOut` (``raised``, and its cause). A cancellation from outside stays
    a cancellation."""

    __slots__ = ("_cancelling", "_clock", "_done", "_expired", "_handle", "_seconds", "_task")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._seconds = seconds
        self._expired = False
        self._done = False

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = self._clock.call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        if not self._done:
            self._expired = True
            self._task.cancel()

    async def __aexit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        self._done = True
        self._handle.cancel()
        if not self._expired or self._task.uncancel() > self._cancelling:
            return
        if exc_type is None:  # it caught the cancellation and returned, late
            raise TimedOut
        if exc_type is asyncio.CancelledError:
            raise TimedOut from exc
        if isinstance(exc, Exception):  # its own error in place of the cancellation
            raise TimedOut(raised=exc) from exc
