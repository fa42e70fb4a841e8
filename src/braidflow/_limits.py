"""Limiter: one shareable limit on work in flight and on starts per period.

A limiter is an object, not a number copied into each node: every node,
node copy and sub-flow that holds the same ``Limiter`` counts against the
same limit. It serves asyncio tasks and threads alike, first come first served
(code nested in an attempt that holds it goes ahead, and so do the waiters of a
cycle through queue order: see `Limiter._enqueue`).
It counts calls, or units (tokens) once a node uses it `Limiter.weighted`.

The engine holds a limit through four methods, and nothing else of it:
``try_acquire()`` (take a slot if one is free now, never wait), then, if none
was, ``await _acquire_queued(...)`` or ``_acquire_queued_blocking(...)`` (wait
in line and take one), and ``release()``; a durable run's drain ends the
waits of attempts that have not begun through ``_stop_waits``. A limit that
keeps its slots elsewhere (`SharedLimiter`, in a database every process uses)
overrides those; the queue in this process and the deadlock check come with
the class.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._after_fork import remade_in_children
from ._clock import SYSTEM_CLOCK, Clock, sleep_or_wake
from ._context import HELD
from ._deadlock import block, holds, refuse_dead_waits, unblock
from ._errors import InvalidParameterError, RunError
from ._options import check_number
from ._waiter import Waiter
from ._weights import Weighted, expire_units, take_units

__all__ = [
    "Limiter",
    "LimiterStatistics",
]


_order = itertools.count()


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """A snapshot of a `Limiter`.

    A limiter used `weighted <Limiter.weighted>` counts units: then
    ``in_flight`` and ``peak_in_flight`` are units held (each plain holder
    holds one), and ``in_window`` the units taken in the rate window now.

    Attributes:
        in_flight: Holders (units) right now.
        waiting: Tasks or threads queued for a slot right now.
        peak_in_flight: The most holders (units) seen at once since creation.
        acquired: Acquisitions since creation.
        in_window: Acquisitions (units) in the current rate window; 0
            without a rate limit.
    """

    in_flight: float
    waiting: int
    peak_in_flight: float
    acquired: int
    in_window: float = 0


class Limiter:
    """A limit on concurrent holders and on acquisitions per period, shareable.

    Pass it to nodes as ``limits=[limiter]``: each exec attempt of each item
    holds every limiter of its node for the attempt's duration. The same
    object given to many nodes, node copies or parallel sub-flows is one
    limit. Waiters are served first come, first served, tasks and threads in
    one queue, except that a request made by code nested in an attempt that
    holds the limiter takes free slots ahead of the queue (those ahead may
    wait for the slots its attempt holds), and so does a request that those
    ahead wait for through other limiters (see `braidflow.LimiterDeadlock`);
    waiting tasks wait on the event loop without blocking it. It can also be
    held directly with ``async with limiter:`` or, from a thread,
    ``with limiter:``.

    The rate limit is a sliding window: at most ``rate`` acquisitions start
    within any ``per`` seconds. A fractional ``rate`` above 1 is held to that
    rule exactly, so ``rate=2.5, per=1`` allows 2 starts in any second (a third
    would make 3 > 2.5); write ``rate=5, per=2`` for 5 starts in any 2 s. Used
    `weighted`, it counts units the same way, so they have the whole rate:
    5 starts of weight 0.5 in any second of ``rate=2.5, per=1``. A rate
    below 1 means one start (one unit) per ``per / rate`` seconds
    (``rate=0.5, per=1``: one start in any 2 s).

    Args:
        max_concurrent: Most holders at once, or ``None`` for no bound.
            Can be changed later by assigning ``limiter.max_concurrent``.
        rate: Most acquisitions per ``per`` seconds, or ``None`` for no rate limit.
        per: Length of the rate window in seconds (1 if not given; only
            with ``rate``).
        name: A label for statistics, errors and traces.
        clock: Time source; tests pass ``braidflow.testing.VirtualClock``.

    Raises:
        InvalidParameterError: A value of the wrong type, ``max_concurrent < 1``,
            ``rate <= 0`` or ``per <= 0``, a value that is not finite, or
            ``per`` without ``rate``.
    """

    def __init__(
        self,
        max_concurrent: int | None = None,
        *,
        rate: float | None = None,
        per: float | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise InvalidParameterError(f"Limiter: name={name!r} must be a non-empty string")
        label = f"Limiter {name!r}" if name else "Limiter"
        self.name = name
        self._lock = threading.Lock()
        self._max: int | None = self._check_max(label, max_concurrent)
        if per is None:
            per = 1.0
        elif rate is None:  # Limiter(60, per=60), meant as 60 a minute: no rate at all
            raise InvalidParameterError(
                f"{label}: per={per!r} is the length of the rate window, but no rate= is "
                f"given, so nothing would be limited per {per!r} s; for N calls per {per!r} s "
                f"write Limiter(rate=N, per={per!r}) (max_concurrent= bounds the calls "
                "running at once), or leave per= out",
                node=name,
            )
        per = check_number(
            per, f"{label}: per={per!r}", "a finite number of seconds > 0", node=name, above=0
        )
        if rate is not None:
            rate = check_number(
                rate,
                f"{label}: rate={rate!r}",
                f"a finite number > 0 of acquisitions per {per} s, or None for no rate limit",
                node=name,
                above=0,
            )
        self.rate = rate
        self.per = per
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        # The window holds starts of at most `capacity` units (a plain call is
        # one) within any `period`: a start fits if the units in the window and
        # its own come to at most that, so plain calls make floor(rate) of a
        # fractional rate, and weighted units use all of it.
        self._capacity: float | None = None
        self._period = per
        if rate is not None:
            if rate >= 1:
                self._capacity = rate
            else:
                self._capacity, self._period = 1.0, per / rate
        self._order = next(_order)
        self._in_flight = 0
        self._peak = 0
        self._acquired = 0
        self._waiters: deque[Waiter] = deque()
        self._waiting = 0  # waiters in the queue that are not gone
        self._ahead: list[Waiter] = []  # those among them that go ahead
        # Start times in the rate window; once the limiter counts units, each
        # an entry [time, units] instead, ``_used`` their sum.
        self._starts: deque[Any] = deque()  # (plain: floats)
        self._counts_units = False
        self._used = 0.0
        remade_in_children(self)

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: the holders and waiters were threads
        and tasks of the parent, none of which is here to give a slot back or
        take its turn; the child's are its own. (The rate window keeps the
        starts it saw: they happened.)"""
        self._lock = threading.Lock()  # a thread of the parent may have held it
        self._in_flight = 0
        self._peak = 0
        self._acquired = 0
        self._waiters = deque()
        self._waiting = 0
        self._ahead = []

    def _check_max(self, label: str, value: Any) -> int | None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidParameterError(
                f"{label}: max_concurrent={value!r} must be an int >= 1, or None for no bound",
                node=self.name,
            )
        return value

    @property
    def max_concurrent(self) -> int | None:
        """Most holders at once (``None``: no bound). Assign to change it; raising
        it wakes waiters at once, lowering it lets current holders finish."""
        return self._max

    @max_concurrent.setter
    def max_concurrent(self, value: int | None) -> None:
        value = self._check_max(f"Limiter {self.name!r}" if self.name else "Limiter", value)
        with self._lock:
            lowered = value is not None and (self._max is None or value < self._max)
            self._max = value
            if lowered and self._waiting:
                self._refuse_too_many()
            self._wake_next()
        if lowered:  # fewer slots may leave nested holders waiting for each other
            refuse_dead_waits()

    def __repr__(self) -> str:
        parts = []
        if self.name:
            parts.append(f"name={self.name!r}")
        if self._max is not None:
            parts.append(f"max_concurrent={self._max}")
        if self.rate is not None:
            parts.append(f"rate={self.rate:g}, per={self.per:g}")
        return f"Limiter({', '.join(parts)})"

    def statistics(self) -> LimiterStatistics:
        """Return a consistent snapshot of the limiter's counters."""
        with self._lock:
            window: float = 0
            if self._capacity is not None:
                if self._counts_units:
                    expire_units(self, self._clock.now())
                    window = self._used
                else:
                    now, starts, period = self._clock.now(), self._starts, self._period
                    while starts and starts[0] + period <= now:
                        starts.popleft()
                    window = len(starts)
            return LimiterStatistics(
                in_flight=self._in_flight,
                waiting=self._waiting,
                peak_in_flight=self._peak,
                acquired=self._acquired,
                in_window=window,
            )

    def weighted(self, weight: Any, *, by: Any = "tokens") -> Weighted:
        """This limiter counting units (tokens, say) rather than calls, for a
        node's ``limits=``: each exec attempt takes ``weight`` units of it
        (a number, or a function of the item). See `braidflow.Weighted`.

        Raises:
            InvalidParameterError: For a bad ``weight`` or ``by``.
        """
        return Weighted(self, weight, by)

    # -- the one rule, under the lock ---------------------------------------

    def _try_take(self) -> float:
        """Take a slot if allowed. Return 0 if taken, -1 if blocked on the
        concurrency bound, or the seconds until the rate window has room."""
        if self._counts_units:  # a weighted acquisition happened: one unit
            return take_units(self, 1.0, None)
        if self._max is not None and self._in_flight >= self._max:
            return -1.0
        capacity = self._capacity
        if capacity is not None:
            now = self._clock.now()
            starts = self._starts
            period = self._period
            while starts and starts[0] + period <= now:
                starts.popleft()
            if len(starts) + 1 > capacity:  # (the units rule of `take_units`, each start one)
                return max(float(starts[0]) + period - now, 1e-9)
            starts.append(now)
        in_flight = self._in_flight = self._in_flight + 1
        self._acquired += 1
        if in_flight > self._peak:
            self._peak = in_flight
        return 0.0

    def _head(self) -> Waiter | None:
        """The first waiter still queued, dropping those that left."""
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if not head.gone:
                return head
            waiters.popleft()
        return None

    def _wake_next(self) -> None:
        """Wake the waiters that may take slots now: the head, and the waiters
        that go ahead (which do not wait for it)."""
        if self._waiting:
            head = self._head()
            if head is not None:
                head.wake()
            for waiter in self._ahead:
                waiter.wake()

    def _leave(self, waiter: Waiter) -> None:
        with self._lock:
            if waiter.gone:
                return
            was_head = self._head() is waiter
            waiter.gone = True
            self._waiting -= 1
            if waiter.ahead:
                self._ahead.remove(waiter)
            if waiter.blocked:
                unblock(waiter)
            if was_head:
                self._wake_next()

    def _refuse_too_many(self) -> None:
        """After the bound was lowered: fail each queued weighted request for
        more units than it now allows (it would wait forever, and everyone
        behind it too). Under the lock."""
        for waiter in self._waiters:
            claim = waiter.claim
            if claim is None or waiter.gone:
                continue
            weighted = claim.weighted
            problem = weighted.too_many(claim.units)
            if problem is not None:
                waiter.failure = weighted.refusal(
                    claim.units, "the weight", problem, waiter.node, waiter.index
                )
                waiter.wake()

    def _stop_waits(self, stop: Any, error: Callable[[], BaseException]) -> None:
        """End the queued waits that ``stop`` may end (a durable run's drain,
        for its attempts that have not begun: `_enqueue` told it of this
        limiter, ``stop.waiting_at(self)``): each raises an ``error()`` of its
        own, takes nothing and leaves the queue. Safe from any thread."""
        with self._lock:
            for waiter in self._waiters:
                if waiter.stop is stop and not waiter.gone and waiter.failure is None:
                    waiter.failure = error()
                    waiter.wake()

    def _let_ahead(self, waiter: Waiter) -> None:
        """Let a queued waiter take free slots ahead of the queue: the deadlock
        check found those ahead of it waiting for it (through slots that code
        waiting for it holds), so they could not be served before it anyway."""
        with self._lock:
            if not waiter.gone and not waiter.ahead:
                waiter.ahead = True
                self._ahead.append(waiter)
                waiter.wake()

    def _refuse(self, waiter: Waiter, error: BaseException) -> None:
        """End a queued waiter's wait with ``error`` (a deadlock found after it began)."""
        with self._lock:
            if not waiter.gone:
                waiter.failure = error
                waiter.wake()

    # -- waiting: one queue discipline for tasks and threads ------------------

    def _enqueue(
        self,
        loop: asyncio.AbstractEventLoop | None,
        taken: tuple[Any, ...] = (),
        node: Any = None,
        index: int | None = None,
        claim: Any = None,
        stop: Any = None,
    ) -> Waiter | None:
        """Take a slot at once if nobody is queued and one is free; else join the queue.

        A nested request (code inside an attempt that holds this limiter asks)
        waits for no one ahead of it: they may wait for the slots its attempt
        holds, which it gives back only once the request is served. It takes
        slots as soon as they are free; an unrelated request keeps its place,
        unless the deadlock check lets it ahead (those ahead of it wait, through
        other limiters, for slots held by code that waits for it: see
        `_let_ahead`).

        ``taken``, ``node``, ``index``: an attempt of ``node`` (on item ``index``)
        asks, which holds ``taken`` of its node's limiters already (limiters,
        or the claims of weighted ones). ``claim``: a weighted acquisition's
        `braidflow._weights.Claim` (``None``: one slot). ``stop``: what may end
        the wait early (the run's drain), told of it: see `_stop_waits`.

        Raises:
            LimiterDeadlock: If the code asking holds slots (it runs inside an
                attempt holding limiters, or holds ``taken``) and the wait could
                never end: every slot that could serve it is held by such code,
                waiting as well.
        """
        # A Ctrl-C (KeyboardInterrupt) lands between two bytecodes, and a
        # lock's release is one of the places it can: the handler below gives
        # back a slot taken here and takes a queued waiter out again, or the
        # caller, never told of them, would leak the slot or leave a waiter
        # in the queue that no one serves, blocking everyone behind it.
        took = False
        waiter: Waiter | None = None
        try:
            with self._lock:
                if not self._waiting:
                    took = (self._try_take() if claim is None else claim.take()) == 0.0
                    if took:
                        return None
                holding = HELD.get()
                nested = holding is not None and holds(self, holding)
                if nested and self._waiting:
                    took = (self._try_take() if claim is None else claim.take()) == 0.0
                    if took:
                        return None  # ahead of the queue
                queued = Waiter(loop)
                queued.claim = claim
                queued.node, queued.index = node, index
                # Counted, then named `waiter` with no call between (no Ctrl-C
                # can land there): once named, `_leave` undoes it, wherever the
                # steps below stopped.
                self._waiting += 1
                waiter = queued
                if nested:
                    waiter.ahead = True
                    self._ahead.append(waiter)
                # Queued before it registers, so that a check sees who waits ahead of it.
                self._waiters.append(waiter)
                if stop is not None:  # a drain may end the wait: see `_stop_waits`
                    waiter.stop = stop
                    waiter.failure = stop.waiting_at(self)
                if holding is None and not taken:
                    return waiter
                # Hold and wait: the rare path.
                let_ahead = block(self, waiter, holding, taken, node, index, not nested)
                waiter.blocked = True
            for limiter, other in let_ahead:  # a cycle through queue order: rare
                limiter._let_ahead(other)
            return waiter
        except BaseException:  # a deadlock found, or a Ctrl-C
            if took:
                self._give_back(claim)
            elif waiter is not None:
                self._leave(waiter)
            raise

    def _turn(self, waiter: Waiter) -> float:
        """One step of a queued waiter: 0 once the slot is taken (the waiter has
        left the queue), -1 to wait for a wake-up (armed), or seconds to sleep
        until the rate window has room. Only the head may take a slot, and a
        waiter that goes ahead wherever it is in the queue.

        Raises:
            LimiterDeadlock: If a deadlock was found since it began waiting.
        """
        with self._lock:
            if waiter.failure is not None:
                raise waiter.failure
            first = self._head() is waiter
            if first or waiter.ahead:
                claim = waiter.claim
                wait = self._try_take() if claim is None else claim.take()
                if wait == 0.0:
                    waiter.gone = True  # (one further back: dropped at the head)
                    self._waiting -= 1
                    if waiter.ahead:
                        self._ahead.remove(waiter)
                    if waiter.blocked:
                        unblock(waiter)
                    if first:
                        self._waiters.popleft()
                        self._wake_next()
                    return 0.0
            else:
                wait = -1.0
            waiter.arm()  # (a sleep for the window ends early on a wake: units given back)
            return wait

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now and nobody is queued ahead (no
        one is, of a nested request: see `_enqueue`); never waits."""
        took = False
        try:
            with self._lock:
                took = (not self._waiting or holds(self)) and self._try_take() == 0.0
        except BaseException:  # a Ctrl-C as the lock was let go: see `_enqueue`
            if took:
                Limiter.release(self)
            raise
        return took

    async def _acquire_queued(
        self, taken: tuple[Limiter, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """Wait in line on the event loop and take a slot, for an attempt of
        ``node`` (on item ``index``) that holds ``taken`` already: what the
        engine does once `try_acquire` found none free. ``stop``: what may
        end the wait early (the run's drain: see `_stop_waits`), or ``None``.

        Raises:
            LimiterDeadlock: If the wait could never end (see `acquire`).
            DrainStop: If ``stop`` ended the wait.
        """
        await self._wait(taken, node, index, None, stop)

    def _acquire_queued_blocking(
        self, taken: tuple[Limiter, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """`_acquire_queued` for a thread: block it until a slot is taken."""
        self._wait_blocking(taken, node, index, None, stop)

    async def acquire(self) -> None:
        """Wait on the event loop for a slot (FIFO) and take it.

        Cancelling the wait takes nothing and frees the waiter's place.

        Raises:
            LimiterDeadlock: If the wait could never end (code nested in exec
                attempts that hold slots, each waiting for the others).
        """
        await self._wait()

    async def _wait(
        self,
        taken: tuple[Any, ...] = (),
        node: Any = None,
        index: int | None = None,
        claim: Any = None,
        stop: Any = None,
    ) -> None:
        """Take a slot (``claim``'s units) at once if `_enqueue` may, else wait
        in line on the loop until it is taken. One function from the call that
        queues to the end of the wait: a Ctrl-C between the two would leave a
        waiter in the queue that no one serves."""
        waiter = None
        try:
            waiter = self._enqueue(asyncio.get_running_loop(), taken, node, index, claim, stop)
            if waiter is None:
                return
            while (wait := self._turn(waiter)) != 0.0:
                if wait < 0:
                    await waiter.future  # type: ignore[misc]
                else:  # until the window has room, or sooner if units come back to it
                    await sleep_or_wake(self._clock, wait, waiter.future)  # type: ignore[arg-type]
        except BaseException:
            if waiter is not None:
                self._stop_waiting(waiter)
            raise

    def _stop_waiting(self, waiter: Waiter) -> None:
        """The wait of ``waiter`` ended with an error (a cancel, a deadlock, a
        Ctrl-C): it leaves the queue. If it took its slot as the error came (a
        Ctrl-C as `_turn` let go of the lock), that slot is given back, and what
        `_turn` had still to do is done. (``gone`` is set only by the waiter's
        own `_turn`, when it takes, and `_leave`, which comes after this.)"""
        if not waiter.gone:
            self._leave(waiter)
            return
        with self._lock:
            if waiter in self._ahead:
                self._ahead.remove(waiter)
            if waiter.blocked:
                unblock(waiter)  # (a second time is a no-op)
        self._give_back(waiter.claim)  # (wakes the next waiter)

    def _give_back(self, claim: Any) -> None:
        """Give back what a request (``claim``'s, or a plain one) took, as an error
        stops it before its caller could learn of it."""
        if claim is None:
            Limiter.release(self)  # (a shared limiter's own release gives back its database slot)
        else:
            claim.release()

    def release(self) -> None:
        """Give back a slot taken by `acquire` or `acquire_blocking`.

        Safe to call from any thread.

        Raises:
            RunError: If nothing is held.
        """
        with self._lock:
            if self._in_flight <= 0:
                raise RunError(f"{self!r}: release() called more times than acquire()")
            self._in_flight -= 1
            if self._waiting:
                self._wake_next()

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
        """Block the calling thread until a slot is free (FIFO) and take it.

        For threads only: on an event loop's thread, use ``await acquire()``.

        Raises:
            LimiterDeadlock: As for `acquire`.
        """
        self._wait_blocking()

    def _wait_blocking(
        self,
        taken: tuple[Any, ...] = (),
        node: Any = None,
        index: int | None = None,
        claim: Any = None,
        stop: Any = None,
    ) -> None:
        """`_wait` for a thread: block it until the slot is taken."""
        waiter = None
        try:
            waiter = self._enqueue(None, taken, node, index, claim, stop)
            if waiter is None:
                return
            while (wait := self._turn(waiter)) != 0.0:
                if wait < 0:
                    waiter.event.wait()  # type: ignore[union-attr]
                else:  # until the window has room, or sooner if units come back to it
                    self._clock.wait_blocking(waiter.event, wait)  # type: ignore[arg-type]
        except BaseException:
            if waiter is not None:
                self._stop_waiting(waiter)
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
