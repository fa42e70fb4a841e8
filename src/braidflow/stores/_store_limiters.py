"""``store.limiter(name, ...)``: the shared limiters a store makes, one method
for every store that keeps their slots (`SQLiteStore`, `PostgresStore`)."""

from __future__ import annotations

import threading
import weakref

from .._after_fork import remade_in_children
from .._errors import StoreError
from .._shared_limits import SharedLimiter, Slots

__all__ = ["LimiterShelf", "MakesLimiters"]


class LimiterShelf:
    """The limiters a store object made, closed with it."""

    def __init__(self) -> None:
        self._made: weakref.WeakSet[SharedLimiter] = weakref.WeakSet()
        self._lock = threading.Lock()
        remade_in_children(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a thread of the parent may have held it

    def add(self, limiter: SharedLimiter) -> None:
        with self._lock:
            self._made.add(limiter)

    def close(self) -> None:
        with self._lock:
            made = list(self._made)
        for limiter in made:
            limiter.close()


class MakesLimiters:
    """The ``limiter`` method of a store whose database keeps slots."""

    lease: float
    _closed: bool
    _read_only: bool
    _limiters: LimiterShelf

    def _new_slots(self) -> Slots:
        """A connection of the limiter's own to the store's slots."""
        raise NotImplementedError

    def limiter(
        self,
        name: str,
        *,
        max_concurrent: int | None = None,
        rate: float | None = None,
        per: float | None = None,
        lease: float | None = None,
    ) -> SharedLimiter:
        """A limit shared by every process that uses this store: a
        `SharedLimiter` named ``name``, used exactly like a `Limiter`
        (``limits=[...]`` on nodes, ``async with``, ``with``). Processes that
        make a limiter of the same name on the same database share its slots.

        Args:
            name: The limit's name in the store.
            max_concurrent: Most holders at once, in all processes together,
                or ``None`` for no bound.
            rate: Most acquisitions per ``per`` seconds, in all processes
                together, or ``None``.
            per: Length of the rate window in seconds (1 if not given; only
                with ``rate``).
            lease: Seconds the slots of a process that died stay taken
                (default: the store's ``lease``).

        Raises:
            InvalidParameterError: For a bad name or option.
            StoreError: If the store is closed, or opened to read only.
        """
        if self._closed:
            raise StoreError(f"{self!r}: cannot make limiter {name!r}: the store is closed")
        if self._read_only:  # taking a slot writes its row
            raise StoreError(
                f"{self!r}: cannot make limiter {name!r}: the store was opened to read only; "
                "open it without read_only=True to share limits through it"
            )
        made = SharedLimiter(
            self._new_slots(),
            name,
            max_concurrent=max_concurrent,
            rate=rate,
            per=per,
            lease=self.lease if lease is None else lease,
            store=self,
        )
        self._limiters.add(made)
        return made
