"""Helpers for testing flows: a virtual clock to move time by hand, and a task-leak check.

Nothing here is needed to run flows; import it from your tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from ._threads import thread_limiter

__all__ = ["VirtualClock", "other_tasks"]

# How long (real seconds) an autojump waits for braidflow's threads running
# code before it moves the clock anyway.
THREAD_GRACE = 0.1


class _Timer:
    """A callback due at a virtual time, on an event loop; `cancel` calls it off.
    A sleeper's timer (``sleeper``) lets an autojump clock move; a deadline's does not."""

    __slots__ = ("callback", "cancelled", "deadline", "loop", "sleeper")

    def __init__(
        self,
        deadline: float,
        callback: Callable[[], None],
        loop: asyncio.AbstractEventLoop,
        sleeper: bool = False,
    ) -> None:
        self.deadline = deadline
        self.callback = callback
        self.loop = loop
        self.sleeper = sleeper
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that moves only when `advance` is called.

    Give it to a run (``flow.run(shared, clock=clock)``) to drive its retry
    waits, backoff and timeouts, or to a `braidflow.Limiter` (``clock=``)
    to drive its rate window, and test them without waiting real seconds:
    whatever waits on this clock waits until a test advances it past its
    deadline. `sleepers` tells how many are waiting, so a test can wait for
    them to get there before it moves time; `slept` lists every sleep asked
    for, in order.

    Args:
        start: The initial reading in seconds.
        autojump: Move the clock forward by itself when something sleeps on
            it (a retry's wait, a rate window): sleeps take no real time, and
            `slept` tells what they were. As trio's ``MockClock`` does, the
            clock jumps once its event loop has nothing left to run (every
            task waits), and to the earliest deadline it holds: sleeps that
            overlap in time move it by the longest of them, not their sum,
            and a timeout fires only if it would have in real time. While
            braidflow's threads run code for the loop, the jump waits for
            them (up to `THREAD_GRACE` real seconds). A deadline (a timeout)
            does not move the clock by itself: with no sleep, it waits for
            `advance`. A thread's own sleep moves the clock at once: the
            clock cannot tell that another thread is about to sleep too.
    """

    def __init__(self, start: float = 0.0, *, autojump: bool = False) -> None:
        self._now = start
        self._autojump = autojump
        self._timers: list[_Timer] = []
        self._condition = threading.Condition()
        self._blocked = 0
        self._watched: set[asyncio.AbstractEventLoop] = set()  # loops an autojump watches
        # How many of braidflow's threads were still at work when an autojump
        # last waited a whole THREAD_GRACE for them: not waited for again.
        self._outwaited: float = 0
        self.slept: list[float] = []

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g})"

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks, threads and timers are waiting on this clock right now."""
        with self._condition:
            return sum(1 for timer in self._timers if not timer.cancelled) + self._blocked

    async def sleep(self, seconds: float) -> None:
        """Sleep until the clock has been advanced by ``seconds``."""
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        timer = _Timer(self._now + seconds, lambda: _wake(future), loop, sleeper=True)
        with self._condition:
            self._timers.append(timer)
            watch = self._autojump and loop not in self._watched
            if watch:
                self._watched.add(loop)
        if watch:
            loop.call_soon(_jump_when_idle, self, loop)
        try:
            await future
        finally:
            timer.cancel()

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread until the clock has been advanced by ``seconds``."""
        self.slept.append(seconds)
        if self._autojump:
            self.advance(seconds)
            return
        with self._condition:
            deadline = self._now + seconds
            self._blocked += 1
            try:
                self._condition.wait_for(lambda: self._now >= deadline)
            finally:
                self._blocked -= 1

    def call_later(self, seconds: float, callback: Callable[[], None]) -> Any:
        """Call ``callback`` on the running loop once the clock has been
        advanced by ``seconds``; return a handle whose ``cancel()`` calls it off."""
        timer = _Timer(self._now + seconds, callback, asyncio.get_running_loop())
        with self._condition:
            self._timers.append(timer)
        return timer

    def wait_blocking(self, event: threading.Event, seconds: float) -> bool:
        """Block until ``event`` is set (True) or the clock has been advanced by
        ``seconds`` (False; with ``autojump``, at once if it is not set)."""
        if self._autojump and not event.is_set():
            self.advance(seconds)
            return event.is_set()
        return self.wait_until_blocking(event, self._now + seconds)

    def wait_until_blocking(self, event: threading.Event, deadline: float) -> bool:
        """Block until ``event`` is set (True) or the clock reads ``deadline``
        (False), for a sync exec's ``timeout=``: the clock does not move by
        itself for it, autojump or not; `advance` moves it, or a sleep on an
        autojump clock (the exec's own, say: then it ends late, False)."""
        with self._condition:
            self._blocked += 1
            try:
                while self._now < deadline:
                    if event.is_set():
                        return True
                    # The event is set by another thread without telling this
                    # condition: look again every few milliseconds.
                    self._condition.wait(0.005)
                return False
            finally:
                self._blocked -= 1

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper whose time has come."""
        self._move(lambda: self._now + seconds)

    def _jump(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Move the clock to its earliest deadline, if a task of ``loop`` sleeps
        on it; return whether one still does (the loop is watched again)."""

        def earliest() -> float:
            live = [timer for timer in self._timers if not timer.cancelled]
            if any(timer.sleeper for timer in live):
                return max(self._now, min(timer.deadline for timer in live))
            return self._now

        self._move(earliest)
        with self._condition:
            again = any(
                timer.sleeper and timer.loop is loop and not timer.cancelled
                for timer in self._timers
            )
            if not again:
                self._watched.discard(loop)
            return again

    def _move(self, to: Callable[[], float]) -> None:
        """Move the clock to the time ``to()`` reads (under the lock) and wake
        every sleeper whose time has come."""
        with self._condition:
            self._now = to()
            due = [timer for timer in self._timers if timer.deadline <= self._now]
            self._timers = [timer for timer in self._timers if timer.deadline > self._now]
            self._condition.notify_all()
        for timer in due:
            if not timer.cancelled:
                timer.loop.call_soon_threadsafe(_fire, timer)


def _jump_when_idle(
    clock: VirtualClock, loop: asyncio.AbstractEventLoop, busy_since: float | None = None
) -> None:
    """An autojump clock's watch on a loop: jump once the loop has nothing else
    to run (other clocks' watches aside), else look again after what it has.

    While braidflow's threads run code (an item's sync ``exec``), the loop
    waits for them without waiting on the clock: the jump waits too, for at
    most `THREAD_GRACE` real seconds (a thread may wait for what a sleeper
    will do), as trio's ``autojump_threshold`` does."""
    ready = tuple(getattr(loop, "_ready", ()))  # asyncio's callbacks to run now (a copy:
    # other threads add to it)
    if any(getattr(handle, "_callback", None) is not _jump_when_idle for handle in ready):
        loop.call_soon(_jump_when_idle, clock, loop)
        return
    busy = thread_limiter().statistics().in_flight
    if busy > clock._outwaited:  # threads at work that no grace has been spent on yet
        now = time.monotonic()
        busy_since = now if busy_since is None else busy_since
        if now - busy_since < THREAD_GRACE:
            loop.call_later(0.001, _jump_when_idle, clock, loop, busy_since)
            return
        # Still at work after a whole grace (a thread abandoned at its timeout,
        # or one that waits for a sleeper): not waited for again at each jump.
        clock._outwaited = busy
    elif busy < clock._outwaited:
        clock._outwaited = busy
    if clock._jump(loop):
        loop.call_soon(_jump_when_idle, clock, loop)


def _fire(timer: _Timer) -> None:
    if not timer.cancelled:
        timer.callback()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def other_tasks() -> set[asyncio.Task[object]]:
    """Return the tasks of the running loop other than the current one.

    After a flow has finished or raised, this should be empty: braidflow
    leaves no task behind.
    """
    current = asyncio.current_task()
    return {task for task in asyncio.all_tasks() if task is not current and not task.done()}
