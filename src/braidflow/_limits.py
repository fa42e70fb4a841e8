"""Limiter: one shareable limit on work in flight and on starts per period.

A limiter is an object, not a number copied into each node: every node,
node copy and sub-flow that holds the same ``Limiter`` counts against the
same limit. It serves asyncio tasks and worker threads alike.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from ._errors import InvalidParameterError, RunError

__all__ = [
    "Clock",
    "Limiter",
    "LimiterStatistics",
    "acquire_all",
    "acquire_all_blocking",
    "ordered",
    "release_all",
]


class Clock(Protocol):
    """The time source a limiter reads and sleeps on (swap it in tests)."""

    def now(self) -> float:
        """Return the current time in seconds, monotonic."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the event loop."""
        ...

    def sleep_blocking(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...


class _SystemClock:
    def now(self) -> float:
        # The event loop's clock when there is one (monotonic by default, and
        # the one a virtual-time test loop advances), else the monotonic clock.
        loop = asyncio._get_running_loop()
        return loop.time() if loop is not None else time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_blocking(self, seconds: float) -> None:
        time.sleep(seconds)


_SYSTEM_CLOCK = _SystemClock()
_order = itertools.count()


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a :class:`Limiter`.

    Attributes:
        in_flight: Holders right now.
        waiting: Tasks or threads queued for a slot right now.
        peak_in_flight: The most holders seen at once since creation.
        acquired: Acquisitions since creation.
    """

    in_flight: int
    waiting: int
    peak_in_flight: int
    acquired: int


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Waiter:
    """One queued acquirer: an asyncio task (future) or a thread (event)."""

    __slots__ = ("event", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] | None = None
        self.event: threading.Event | None = None

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
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            future.set_result(None)
        else:
            loop.call_soon_threadsafe(_resolve, future)


class Limiter:
    """A limit on concurrent holders and on acquisitions per period, shareable.

    Pass it to nodes as ``limits=[limiter]``: each exec attempt of each item
    holds every limiter of its node for the attempt's duration. The same
    object given to many nodes, node copies or parallel sub-flows is one
    limit. Waiters are served first come, first served. It can also be held
    directly with ``async with limiter:`` or, from a thread, ``with limiter:``.

    The rate limit is a sliding window: at most ``rate`` acquisitions start
    within any ``per`` seconds. A fractional rate such as ``rate=0.5`` means
    one acquisition per ``per / rate`` seconds.

    Args:
        max_concurrent: Most holders at once, or ``None`` for no bound.
        rate: Most acquisitions per ``per`` seconds, or ``None`` for no rate limit.
        per: Length of the rate window in seconds.
        name: A label for statistics, errors and traces.
        clock: Time source; tests pass ``braidflow.testing.VirtualClock``.

    Raises:
        InvalidParameterError: ``max_concurrent < 1``, ``rate <= 0`` or ``per <= 0``.
    """

    def __init__(
        self,
        max_concurrent: int | None = None,
        *,
        rate: float | None = None,
        per: float = 1.0,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        label = f"Limiter {name!r}" if name else "Limiter"
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool)
            or not isinstance(max_concurrent, int)
            or max_concurrent < 1
        ):
            raise InvalidParameterError(
                f"{label}: max_concurrent={max_concurrent!r} must be an int >= 1, "
                "or None for no bound",
                node=name,
            )
        if rate is not None and (isinstance(rate, bool) or not rate > 0):
            raise InvalidParameterError(
                f"{label}: rate={rate!r} must be > 0 acquisitions per {per} s, "
                "or None for no rate limit",
                node=name,
            )
        if not per > 0:
            raise InvalidParameterError(f"{label}: per={per!r} must be > 0 seconds", node=name)
        self.name = name
        self.max_concurrent = max_concurrent
        self.rate = rate
        self.per = per
        self._clock: Clock = clock if clock is not None else _SYSTEM_CLOCK
        # The window holds at most `capacity` start times spread over `period`.
        self._capacity: int | None = None
        self._period = per
        if rate is not None:
            if float(rate).is_integer():
                self._capacity = int(rate)
            else:
                self._capacity, self._period = 1, per / rate
        self._order = next(_order)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._peak = 0
        self._acquired = 0
        self._waiters: deque[_Waiter] = deque()
        self._starts: deque[float] = deque()

    def __repr__(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name!r}")
        if self.max_concurrent is not None:
            parts.append(f"max_concurrent={self.max_concurrent}")
        if self.rate is not None:
            parts.append(f"rate={self.rate}, per={self.per}")
        return f"Limiter({', '.join(parts)})"

    def statistics(self) -> LimiterStatistics:
        """Return a consistent snapshot of the limiter's counters."""
        with self._lock:
            return LimiterStatistics(
                in_flight=self._in_flight,
                waiting=len(self._waiters),
                peak_in_flight=self._peak,
                acquired=self._acquired,
            )

    # -- the one rule, under the lock ---------------------------------------

    def _try_take(self, now: float) -> float:
        """Take a slot if allowed. Return 0 if taken, -1 if blocked on the
        concurrency bound, or the seconds until the rate window has room."""
        if self.max_concurrent is not None and self._in_flight >= self.max_concurrent:
            return -1.0
        capacity = self._capacity
        if capacity is not None:
            starts = self._starts
            period = self._period
            while starts and starts[0] + period <= now:
                starts.popleft()
            if len(starts) >= capacity:
                return max(starts[0] + period - now, 1e-9)
            starts.append(now)
        self._in_flight += 1
        self._acquired += 1
        if self._in_flight > self._peak:
            self._peak = self._in_flight
        return 0.0

    def _wake_head(self) -> None:
        if self._waiters:
            self._waiters[0].wake()

    def _leave(self, waiter: _Waiter) -> None:
        with self._lock:
            was_head = bool(self._waiters) and self._waiters[0] is waiter
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            if was_head:
                self._wake_head()

    # -- waiting: one queue discipline for tasks and threads ------------------

    def _enqueue(self, loop: asyncio.AbstractEventLoop | None) -> _Waiter | None:
        """Take a slot at once if nobody is queued and one is free; else join the queue."""
        with self._lock:
            if not self._waiters and self._try_take(self._clock.now()) == 0.0:
                return None
            waiter = _Waiter(loop)
            self._waiters.append(waiter)
            return waiter

    def _turns(self, waiter: _Waiter) -> Iterator[float]:
        """Drive one queued waiter: yield -1 to wait for a wake-up (armed), or the
        seconds to sleep until the rate window has room; end once the slot is taken."""
        while True:
            with self._lock:
                if self._waiters[0] is waiter:
                    wait = self._try_take(self._clock.now())
                    if wait == 0.0:
                        self._waiters.popleft()
                        self._wake_head()
                        return
                else:
                    wait = -1.0
                if wait < 0:
                    waiter.arm()
            yield wait

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now and nobody is queued; never waits."""
        with self._lock:
            return not self._waiters and self._try_take(self._clock.now()) == 0.0

    async def acquire(self) -> None:
        """Wait for a slot (FIFO) and take it. Cancelling the wait takes nothing."""
        waiter = self._enqueue(asyncio.get_running_loop())
        if waiter is None:
            return
        try:
            for wait in self._turns(waiter):
                if wait < 0:
                    await waiter.future  # type: ignore[misc]
                else:
                    await self._clock.sleep(wait)
        except BaseException:
            self._leave(waiter)
            raise

    def release(self) -> None:
        """Give back a slot taken by :meth:`acquire` or :meth:`acquire_blocking`.

        Raises:
            RunError: If nothing is held.
        """
        with self._lock:
            if self._in_flight <= 0:
                raise RunError(f"{self!r}: release() called more times than acquire()")
            self._in_flight -= 1
            self._wake_head()

    async def __aenter__(self) -> Limiter:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def acquire_blocking(self) -> None:
        """Block the calling thread until a slot is free (FIFO) and take it."""
        waiter = self._enqueue(None)
        if waiter is None:
            return
        try:
            for wait in self._turns(waiter):
                if wait < 0:
                    waiter.event.wait()  # type: ignore[union-attr]
                else:
                    self._clock.sleep_blocking(wait)
        except BaseException:
            self._leave(waiter)
            raise

    def __enter__(self) -> Limiter:
        self.acquire_blocking()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def ordered(limiters: Sequence[Limiter]) -> tuple[Limiter, ...]:
    """Sort limiters into the one global order every holder acquires them in,
    so two nodes sharing two limiters can never deadlock each other."""
    return tuple(sorted(limiters, key=lambda limiter: limiter._order))


async def acquire_all(limiters: Sequence[Limiter]) -> None:
    """Acquire every limiter in order; on cancellation give back what was taken."""
    taken = 0
    try:
        for limiter in limiters:
            if not limiter.try_acquire():
                await limiter.acquire()
            taken += 1
    except BaseException:
        release_all(limiters[:taken])
        raise


def acquire_all_blocking(limiters: Sequence[Limiter]) -> None:
    """Thread version of :func:`acquire_all`."""
    taken = 0
    try:
        for limiter in limiters:
            limiter.acquire_blocking()
            taken += 1
    except BaseException:
        release_all(limiters[:taken])
        raise


def release_all(limiters: Sequence[Limiter]) -> None:
    """Release limiters in the reverse of the order they were taken."""
    for limiter in reversed(limiters):
        limiter.release()
