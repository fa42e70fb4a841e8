"""The slots of a PostgresStore's shared limiters: a connection of their own to
the store's database; each take one short transaction, serialized per limiter
by an advisory lock; a slot given back announced to every process (NOTIFY)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from .._after_fork import remade_in_children, set_aside
from .._errors import StoreError
from ._postgres_schema import diagnosis, open_connection, said
from ._slots import renew_slots, take_slot

__all__ = ["PostgresSlots"]

_CHANNEL = "braidflow_limiter_slots"


class PostgresSlots:
    """`Slots` in a PostgresStore's database.

    Args:
        dsn: The store's database.
        clock: The store's clock (seconds since the epoch): leases are kept in it.
        store: The store, for messages.
        connect_timeout: Seconds to wait for the server when connecting.
    """

    def __init__(
        self, dsn: str, clock: Callable[[], float], store: object, *, connect_timeout: float
    ) -> None:
        self._dsn = dsn
        self._clock = clock
        self._store = store
        self._timeout = max(1, round(connect_timeout))
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._listener: threading.Thread | None = None
        self._pokes: dict[bytes, Callable[[], None]] = {}
        remade_in_children(self)

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: the next take connects anew (the
        inherited connection is the parent's session), a lock no parent thread
        holds, and no listener (its thread is not there: the next wait starts one)."""
        set_aside(self._conn)
        self._conn = None
        self._lock = threading.Lock()
        self._listener = None

    def _run(self, doing: str, work: Callable[[Callable[[str, Sequence[Any]], Any]], Any]) -> Any:
        """Run ``work`` in one transaction; a failure is a StoreError saying ``doing``."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._store!r}: cannot {doing}: the store is closed")
            try:
                conn = self._conn
                if conn is None or conn.closed or conn.broken:
                    # Slots are leases, kept for seconds: not synced to disk.
                    conn = self._conn = open_connection(
                        self._dsn, connect_timeout=self._timeout, durable=False
                    )

                def execute(statement: str, args: Sequence[Any]) -> Any:
                    return conn.execute(statement.replace("?", "%s"), args)

                with conn.transaction():
                    return work(execute)
            except psycopg.Error as error:
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
        key = name.encode()

        def work(execute: Callable[[str, Sequence[Any]], Any]) -> tuple[int | None, float]:
            # One taker of this limiter at a time, in every process: counts stay exact.
            execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(encode(?::bytea, 'hex'), 0))",
                (key,),
            )
            return take_slot(
                execute,
                key,
                max_concurrent=max_concurrent,
                capacity=capacity,
                period=period,
                lease=lease,
                now=self._clock(),
            )

        return tuple(self._run(f"take a slot of limiter {name!r}", work))

    def give(self, name: str, slot: int) -> None:
        def work(execute: Callable[[str, Sequence[Any]], Any]) -> None:
            execute("DELETE FROM braidflow_limiter_slots WHERE id=?", (slot,))
            execute("SELECT pg_notify(?, encode(?::bytea, 'hex'))", (_CHANNEL, name.encode()))

        self._run(f"give back a slot of limiter {name!r}", work)

    def renew(self, name: str, slots: list[int], lease: float) -> None:
        ends = self._clock() + lease
        self._run(
            f"renew the slots of limiter {name!r}",
            lambda execute: renew_slots(execute, slots, ends),
        )

    def held(self, name: str) -> int:
        now = self._clock()
        return int(
            self._run(
                f"count the slots of limiter {name!r}",
                lambda execute: execute(
                    "SELECT COUNT(*) FROM braidflow_limiter_slots WHERE name=? AND lease_ends>?",
                    (name.encode(), now),
                ).fetchone()[0],
            )
        )

    def listen(self, name: str, poke: Callable[[], None]) -> None:
        """Call ``poke()`` when any process gives a slot of ``name`` back: a
        thread listens on a connection of its own (best effort: if it cannot,
        the waiter polls)."""
        with self._lock:
            self._pokes[name.encode()] = poke
            if self._listener is not None or self._closed:
                return
            self._listener = threading.Thread(
                target=self._listen, name=f"braidflow slots of {self._store!r}", daemon=True
            )
            self._listener.start()

    def _listen(self) -> None:
        try:
            with psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._timeout) as conn:
                conn.execute(f"LISTEN {_CHANNEL}")
                while not self._closed:
                    for note in conn.notifies(timeout=1.0):
                        poke = self._pokes.get(bytes.fromhex(note.payload))
                        if poke is not None:
                            poke()
        except psycopg.Error:  # the waiters poll, as they do anyway
            pass
        finally:
            with self._lock:
                self._listener = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
