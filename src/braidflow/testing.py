"""Helpers for testing flows: a virtual clock for limiters, and a task-leak check.

Nothing here is needed to run flows; import it from your tests.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["VirtualClock", "other_tasks"]


class VirtualClock:
    """A clock that moves only when `advance` is called.

    Give it to a `braidflow.Limiter` (``clock=``) to test rate limits
    without waiting real seconds: tasks that must wait for the rate window
    sleep on this clock until a test advances it past their deadline.

    Args:
        start: The initial reading in seconds.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None], asyncio.AbstractEventLoop]] = []
        self._condition = threading.Condition()

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks or threads are sleeping on this clock right now."""
        with self._condition:
            return len(self._sleepers) + self._blocked

    _blocked = 0

    async def sleep(self, seconds: float) -> None:
        """Sleep until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._condition:
            self._sleepers.append((self._now + seconds, future, loop))
        try:
            await future
        finally:
            with self._condition:
                self._sleepers = [entry for entry in self._sleepers if entry[1] is not future]

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread until the clock has been advanced by ``seconds``."""
        with self._condition:
            deadline = self._now + seconds
            self._blocked += 1
            try:
                self._condition.wait_for(lambda: self._now >= deadline)
            finally:
                self._blocked -= 1

    def advance(self, seconds: float) -> None:
        """Move the clock forward and wake every sleeper whose time has come."""
        with self._condition:
            self._now += seconds
            due = [entry for entry in self._sleepers if entry[0] <= self._now]
            self._condition.notify_all()
        for _, future, loop in due:
            loop.call_soon_threadsafe(_wake, future)


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
