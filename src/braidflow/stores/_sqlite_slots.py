"""The slots of a SQLiteStore's shared limiters: one connection of their own to
the store's file, each take or give one short ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._after_fork import remade_in_children, set_aside
from .._errors import StoreError
from ._slots import renew_slots, take_slot
from ._sqlite_failures import BUSY_MS, Transaction, diagnosis, said

__all__ = ["SQLiteSlots"]


class SQLiteSlots:
    """`Slots` in a SQLiteStore's file (its tables are made with the store's).

    Args:
        path: The store's file.
        clock: The store's clock (seconds since the epoch): leases are kept in it.
        store: The store, for messages.
    """

    def __init__(self, path: Path, clock: Callable[[], float], store: object) -> None:
        self._path = path
        self._clock = clock
        self._store = store
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._closed = False
        remade_in_children(self)

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: the next take connects anew (the
        inherited connection is the parent's); a lock no parent thread holds."""
        set_aside(self._db)
        self._db = None
        self._lock = threading.Lock()

    def _run(self, doing: str, work: Callable[[Callable[[str, Sequence[Any]], Any]], Any]) -> Any:
        """Run ``work`` in one transaction; a failure is a StoreError saying ``doing``."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._store!r}: cannot {doing}: the store is closed")
            try:
                if self._db is None:
                    self._db = sqlite3.connect(
                        self._path,
                        isolation_level=None,
                        check_same_thread=False,
                        timeout=BUSY_MS / 1000,
                    )
                    # Slots are leases, kept for seconds: not synced to disk.
                    self._db.execute("PRAGMA synchronous=OFF")
                db = self._db
                with Transaction(db):
                    return work(db.execute)
            except sqlite3.Error as error:
                what, todo = diagnosis(error)
                raise StoreError(
                    f"{self._store!r}: cannot {doing}: {what} ({said(error)}); {todo}"
                ) from error

    def take(
        self,
        name: str,
        max_concurrent: int | None,
        capacity: float | None,
        period: float,
        lease: float,
    ) -> tuple[int | None, float]:
        # The time is read in the transaction, once its write lock is taken: a
        # start recorded as earlier than it was would leave the window early.
        return tuple(
            self._run(
                f"take a slot of limiter {name!r}",
                lambda execute: take_slot(
                    execute,
                    name,
                    max_concurrent=max_concurrent,
                    capacity=capacity,
                    period=period,
                    lease=lease,
                    now=self._clock(),
                ),
            )
        )

    def give(self, name: str, slot: int) -> None:
        self._run(
            f"give back a slot of limiter {name!r}",
            lambda execute: execute("DELETE FROM braidflow_limiter_slots WHERE id=?", (slot,)),
        )

    def renew(self, name: str, slots: list[int], lease: float) -> None:
        self._run(
            f"renew the slots of limiter {name!r}",
            lambda execute: renew_slots(execute, slots, self._clock() + lease),
        )

    def held(self, name: str) -> int:
        return int(
            self._run(
                f"count the slots of limiter {name!r}",
                lambda execute: execute(
                    "SELECT COUNT(*) FROM braidflow_limiter_slots WHERE name=? AND lease_ends>?",
                    (name, self._clock()),
                ).fetchone()[0],
            )
        )

    def listen(self, name: str, poke: Callable[[], None]) -> None:
        """SQLite cannot tell another process's give: the waiter polls."""

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None
