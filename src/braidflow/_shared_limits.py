"""SharedLimiter: a `Limiter` whose slots are rows in a store's database, so one
limit (in flight, and starts per period) holds across processes and machines.

A holder first takes a place in this process's line (the `Limiter` it is:
first come first served, at most ``max_concurrent`` past it, the deadlock
check), then a slot in the database (`Slots`): one short transaction that
counts the slots every process holds and the starts in the rate window. When
none is free, one waiter of this process at a time asks again, after a
backoff, or at once when a slot is given back here or, on PostgreSQL, in any
process (LISTEN/NOTIFY). A slot has a lease, renewed by a thread of this
process while it is held: the slots of a process that died come back once
their lease expires.
"""

from __future__ import annotations

import asyncio
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ._errors import InvalidParameterError, RunError, StoreError
from ._heartbeat import Wake, start_heartbeat
from ._limits import Limiter, LimiterStatistics
from ._options import check_number
from ._waiter import Waiter, resolve

__all__ = ["FIRST_POLL", "LAST_POLL", "SharedLimiter", "Slots"]

# When no slot is free, the database is asked again after FIRST_POLL seconds,
# then twice as long each time, up to LAST_POLL (each wait cut by up to half at
# random, so processes do not ask in step). A slot given back in this process,
# or announced by the database, ends the wait at once.
FIRST_POLL = 0.002
LAST_POLL = 0.05


class Slots(Protocol):
    """Where a `SharedLimiter` keeps its slots: tables of a store's database.

    Each method is one short transaction; none waits for another process to
    give a slot back (the limiter does the waiting). Failures are `StoreError`.
    """

    def take(
        self,
        name: str,
        max_concurrent: int | None,
        capacity: float | None,
        period: float,
        lease: float,
    ) -> tuple[int | None, float]:
        """Take a slot of limiter ``name`` if its limits allow it now: at most
        ``max_concurrent`` slots held (unexpired), at most ``capacity`` starts
        in any ``period`` seconds. Return ``(slot id, 0.0)`` if taken (id 0:
        no row, for a limit on the rate alone), else ``(None, -1.0)`` when
        every slot is held, or ``(None, seconds)`` until the rate window has room."""
        ...

    def give(self, name: str, slot: int) -> None:
        """Give a slot back (one already gone is fine)."""
        ...

    def renew(self, name: str, slots: list[int], lease: float) -> None:
        """Extend the leases of ``slots`` to ``lease`` seconds from now."""
        ...

    def held(self, name: str) -> int:
        """How many slots of limiter ``name`` are held now, by every process."""
        ...

    def listen(self, name: str, poke: Callable[[], None]) -> None:
        """Call ``poke()`` whenever another process gives a slot of ``name``
        back, if the database can say so (else do nothing: the waiter polls)."""
        ...

    def close(self) -> None:
        """Let go of the connection(s); slots still held expire with their lease."""
        ...


class SharedLimiter(Limiter):
    """A limit on work in flight and on starts per period that holds across
    every process using the same store, on one machine or many.

    Made by a store: ``store.limiter("openai", max_concurrent=8, rate=500,
    per=60)`` (`SQLiteStore.limiter`, `PostgresStore.limiter`); every
    process that makes a limiter of the same name on the same store shares
    its slots. It is used exactly like a `Limiter`: ``limits=[limiter]`` on
    nodes, ``async with limiter:``, ``with limiter:``.

    Taking a slot costs one short transaction in the store's database (a
    round trip to the server for PostgreSQL), giving it back another, on the
    thread that takes or gives it (on an event loop, its thread). While
    every slot is held, one waiter of this process at a time asks the
    database again, after a backoff of 2 ms growing to 50 ms, and at once when
    a slot is given back in this process or (PostgreSQL) announced by another
    one. Waiters of this process are served first come, first served; across
    processes, whoever asks first once a slot is free.

    A held slot has a lease, renewed by a thread of this process every third
    of it: if the process dies, its slots come back once their lease expires.
    A process stopped for longer than the lease (a debugger, a frozen VM)
    loses its slots to others while its calls may still run; choose a lease
    well above such pauses. Every process should give the same limits for
    one name: each applies its own when it takes a slot. A child made by
    ``os.fork`` uses the limiter as one more process: it holds none of its
    parent's slots, and renews those it takes.

    Args:
        slots: Where the slots are kept (the store's tables).
        name: The limiter's name in the store: the same name is the same limit.
        max_concurrent: Most slots held at once, by all processes; ``None``
            for no bound.
        rate: Most slots taken per ``per`` seconds, by all processes (as
            for `Limiter`), or ``None``.
        per: Length of the rate window in seconds (1 if not given; only
            with ``rate``).
        lease: Seconds a held slot counts as held after its process last
            renewed it.
        store: The store, for messages.
    """

    def __init__(
        self,
        slots: Slots,
        name: str,
        *,
        max_concurrent: int | None = None,
        rate: float | None = None,
        per: float | None = None,
        lease: float = 30.0,
        store: object = None,
    ) -> None:
        if not isinstance(name, str) or not name or not name.isprintable():
            raise InvalidParameterError(
                f"{store!r}: a shared limiter needs a name, a non-empty string (got {name!r}): "
                "processes that use the same name share its slots"
            )
        # The Limiter checks the options; its own line in this process has the
        # bound (never more holders here than anywhere) and no rate: the
        # database keeps the rate, for every process.
        super().__init__(max_concurrent, rate=rate, per=per, name=name)
        self.lease = check_number(
            lease,
            f"SharedLimiter {name!r}: lease={lease!r}",
            "a finite number of seconds > 0",
            above=0,
        )
        self._capacity_shared, self._period_shared = self._capacity, self._period
        self._capacity = None
        self._slots = slots
        self._store = store
        # One waiter of this process at a time asks the database: the holder of this turn.
        self._asking = Limiter(1, name=f"{name}: this process's turn to ask the database")
        self._poller: Waiter | None = None
        self._held: list[int] = []  # the slots this process holds, by id
        self._held_lock = threading.Lock()
        self._peak_held = 0
        self._taken = 0
        self._beat: threading.Thread | None = None
        self._wake = Wake()  # the heartbeat looks now: the limiter closed
        self._closed = False
        self._listening = False

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: the slots held, the thread renewing
        them and the waiter asking the database were the parent's; the child
        holds none of them (its first slot starts a heartbeat of its own), and
        listens anew (the slots' connections are the child's own: `Slots`)."""
        super()._after_fork()  # (its turn to ask, a Limiter, is made anew as every one is)
        self._held_lock = threading.Lock()
        self._held = []
        self._peak_held = 0
        self._taken = 0
        self._beat = None
        self._wake = Wake()
        self._poller = None
        self._listening = False

    def __repr__(self) -> str:
        shown = super().__repr__().removeprefix("Limiter(").removesuffix(")")
        return f"SharedLimiter({shown}, lease={self.lease:g}, in {self._store!r})"

    # -- the database's side ------------------------------------------------------------

    def _take(self) -> tuple[int | None, float]:
        if self._closed:
            raise StoreError(
                f"{self!r} is closed (its store was closed); make it again from an open store"
            )
        name = self.name
        assert name is not None
        return self._slots.take(
            name, self._max, self._capacity_shared, self._period_shared, self.lease
        )

    def _note(self, slot: int, noted: list[bool]) -> None:
        """A slot is this process's now: keep its lease renewed. ``noted[0]``
        is set as the slot joins those held, with no call in between (where a
        Ctrl-C could land): from then on, `release` is what gives it back."""
        with self._held_lock:
            self._taken += 1
            if len(self._held) >= self._peak_held:
                self._peak_held = len(self._held) + 1
            if self._beat is None and not self._closed:
                self._beat = start_heartbeat(
                    self,
                    self._wake,
                    self.lease / 3,
                    SharedLimiter._renew,
                    f"braidflow lease of limiter {self.name}",
                )
            noted[0] = True
            self._held.append(slot)

    def _taken_back(self, noted: list[bool]) -> None:
        """An error (a Ctrl-C, the database) stopped an acquisition that holds
        its place in this process's line: give back what it took. A slot of
        the database not yet noted comes back when its lease expires."""
        if noted[0]:
            self.release()
        else:
            Limiter.release(self)

    def _poke(self) -> None:
        """A slot may be free: the waiter asking the database asks again now."""
        poller = self._poller
        if poller is not None:
            poller.wake()

    def _pause(self, wait: float, backoff: float) -> tuple[float, float]:
        """How long to wait before asking again, and the next backoff."""
        if wait > 0:  # the rate window has room then, not before
            return wait, backoff
        return backoff * random.uniform(0.5, 1.0), min(backoff * 2, LAST_POLL)

    def _start_listening(self) -> None:
        """Have the database say when another process gives a slot back (once)."""
        if self._listening:
            return
        self._listening = True
        ref = weakref.ref(self)

        def poke() -> None:
            limiter = ref()
            if limiter is not None:
                limiter._poke()

        name = self.name
        assert name is not None
        self._slots.listen(name, poke)

    # -- the four methods the engine holds a limit through ----------------------------------

    def try_acquire(self) -> bool:
        """Take a slot if one is free, here and in the database, without waiting
        (one transaction in the database; none if this process's line is full
        or someone of it is queued).

        Raises:
            StoreError: If the database cannot be asked.
        """
        if not Limiter.try_acquire(self):
            return False
        noted = [False]
        try:
            if self._asking.try_acquire():
                try:
                    slot, _ = self._take()
                finally:
                    self._asking.release()
                if slot is not None:
                    self._note(slot, noted)
                    return True
        except BaseException:
            self._taken_back(noted)
            raise
        Limiter.release(self)
        return False

    async def _acquire_queued(
        self, taken: tuple[Limiter, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """Wait on the event loop for a place in this process's line, then for
        a slot in the database, and take it. ``stop`` may end either wait
        (`Limiter._stop_waits`).

        Raises:
            LimiterDeadlock: If the wait in this process could never end.
            StoreError: If the database cannot be asked.
            DrainStop: If ``stop`` ended the wait.
        """
        await Limiter._acquire_queued(self, taken, node, index, stop)
        noted = [False]
        try:
            await self._asking._acquire_queued((), node, index, stop)
            try:
                await self._ask_until_taken(noted, stop)
            finally:
                self._asking.release()
        except BaseException:
            self._taken_back(noted)
            raise

    def _pauses(self, waiter: Waiter, noted: list[bool], stop: Any) -> Iterator[float]:
        """Ask the database for a slot until one is taken (`_note`); between asks,
        the pause to wait (``waiter`` ends it early when a slot is given back
        here, or ``stop`` ends the wait: `_stop_waits`). The async and the
        blocking waits both follow it."""
        backoff = FIRST_POLL
        if stop is not None:  # a drain may end the wait, as in the line
            waiter.stop = stop
            waiter.failure = stop.waiting_at(self)
        while True:
            waiter.arm()  # before asking: a slot given back meanwhile ends the pause
            if waiter.failure is not None:  # (looked at once armed: its wake is not lost)
                raise waiter.failure
            slot, wait = self._take()
            if slot is not None:
                self._note(slot, noted)
                return
            self._start_listening()
            pause, backoff = self._pause(wait, backoff)
            yield pause

    def _stop_waits(self, stop: Any, error: Callable[[], BaseException]) -> None:
        """`Limiter._stop_waits`, and the waiter asking the database, if ``stop``
        may end its wait: it stops at its next ask, at once if it pauses."""
        super()._stop_waits(stop, error)
        poller = self._poller
        if poller is not None and poller.stop is stop and poller.failure is None:
            poller.failure = error()
            poller.wake()

    async def _ask_until_taken(self, noted: list[bool], stop: Any) -> None:
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop)
        self._poller = waiter
        try:
            for pause in self._pauses(waiter, noted, stop):
                future = waiter.future
                assert future is not None
                timer = loop.call_later(pause, resolve, future)
                try:
                    await future
                finally:
                    timer.cancel()
        finally:
            self._poller = None

    def _acquire_queued_blocking(
        self, taken: tuple[Limiter, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """`_acquire_queued` for a thread: block it until a slot is taken."""
        Limiter._acquire_queued_blocking(self, taken, node, index, stop)
        noted = [False]
        try:
            self._asking._acquire_queued_blocking((), node, index, stop)
            try:
                waiter = Waiter(None)
                self._poller = waiter
                try:
                    for pause in self._pauses(waiter, noted, stop):
                        event = waiter.event
                        assert event is not None
                        event.wait(pause)
                finally:
                    self._poller = None
            finally:
                self._asking.release()
        except BaseException:
            self._taken_back(noted)
            raise

    def release(self) -> None:
        """Give back a slot this process holds, in the database and here.

        If the database cannot be written now, the slot comes back to the
        others once its lease expires (it is renewed no more); nothing is raised.

        Raises:
            RunError: If this process holds no slot.
        """
        popped = False
        try:
            with self._held_lock:
                if not self._held:
                    raise RunError(f"{self!r}: release() called more times than acquire()")
                # Taken off with no call until `popped` (`pop()` is one: a
                # Ctrl-C could land as it returns, and the place here be lost).
                slot = self._held[-1]
                del self._held[-1]
                popped = True
            if slot:
                name = self.name
                assert name is not None
                self._slots.give(name, slot)
        except StoreError:
            pass  # its lease, renewed no more, gives it back; the next take says what failed
        finally:
            if popped:
                Limiter.release(self)
                self._poke()

    # -- the same, held directly ------------------------------------------------------

    async def acquire(self) -> None:
        """Wait on the event loop for a slot (here, then in the database) and take it.

        Raises:
            LimiterDeadlock: As for `Limiter.acquire`.
            StoreError: If the database cannot be asked.
        """
        if not self.try_acquire():
            await self._acquire_queued((), None, None)

    def acquire_blocking(self) -> None:
        """Block the calling thread until a slot is free and take it.

        Raises:
            LimiterDeadlock: As for `Limiter.acquire`.
            StoreError: If the database cannot be asked.
        """
        if not self.try_acquire():
            self._acquire_queued_blocking((), None, None)

    def weighted(self, weight: Any, *, by: Any = "tokens") -> Any:
        """Refused: a shared limiter counts calls across processes, not units.

        Raises:
            InvalidParameterError: Always, saying what to use instead.
        """
        raise InvalidParameterError(
            f"{self!r}: a shared limiter counts calls in every process, not units; "
            "for a limit of tokens, use a Limiter(...).weighted(...) in each process "
            "beside the shared one (limits=[shared, tokens.weighted(...)])"
        )

    # -- what it shows ----------------------------------------------------------------

    def statistics(self) -> LimiterStatistics:
        """This process's side: slots it holds, waiters (in its line or asking
        the database), its peak of slots held, and slots it took. Its
        ``in_window`` is 0: the rate window is the database's, for every
        process (see `held_everywhere` for what they hold now)."""
        local = Limiter.statistics(self)
        with self._held_lock:
            held = len(self._held)
            return LimiterStatistics(
                in_flight=held,
                waiting=local.waiting + max(int(local.in_flight) - held, 0),
                peak_in_flight=self._peak_held,
                acquired=self._taken,
            )

    def held_everywhere(self) -> int:
        """How many slots every process using the store holds now (one
        query; slots whose lease expired are not counted).

        Raises:
            StoreError: If the database cannot be asked.
        """
        name = self.name
        assert name is not None
        return self._slots.held(name)

    def close(self) -> None:
        """Stop renewing this process's slots and let go of the database
        connection (the store's ``close()`` does it). Slots still held come
        back to the others once their lease expires; taking one is refused."""
        self._closed = True
        self._wake.set()
        self._slots.close()

    def _idle(self) -> bool:
        """Whether the heartbeat has nothing to renew: no slot held, or the
        limiter closed (it ends; the next slot taken starts another)."""
        with self._held_lock:
            if not self._held or self._closed:
                self._beat = None
                return True
        return False

    def _renew(self) -> None:
        """Renew the leases of the slots this process holds."""
        with self._held_lock:
            held = [slot for slot in self._held if slot]
        if held:
            name = self.name
            assert name is not None
            try:
                self._slots.renew(name, held, self.lease)
            except StoreError:  # the database is down now: the next beat tries again
                pass
