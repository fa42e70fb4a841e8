"""Leases of the runs a PostgresStore runs: held while they run, renewed by a
heartbeat thread on a connection of its own, and lost to another owner that
took a run over once its lease expired (no process ids across machines).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

from .._heartbeat import Wake, start_heartbeat
from ._base import TakenOver, no_run
from ._owners import heartbeat_idle, hold, this_owner
from ._owners import release as release_held

__all__ = ["LEASE", "PostgresLeases"]

LEASE = 30.0  # seconds: how long a run counts as running after its owner last renewed it


def _text(value: str | None) -> bytes | None:
    """A text as a column keeps it (UTF-8 bytes: PostgreSQL text holds no NUL)."""
    return None if value is None else value.encode()


def _str(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode()


class PostgresLeases:
    """What a PostgresStore keeps of the runs it runs: which it holds (from
    `create_run` or `claim` to `finish` or `release`), for which owner, which
    it lost to another owner since, and the heartbeat that renews their leases."""

    dsn: str
    lease: float
    _closed: bool
    _location: str
    _clock: Callable[[], float]

    def _start_leases(self) -> None:
        """Hold no run, with no heartbeat: when made, and in a child made by
        ``os.fork`` (the runs held are the parent's, its thread is not there)."""
        # The runs this object runs, by id: their owner; those another owner
        # took over since, with what to tell. The heartbeat reads them too.
        self._held: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._held_lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._wake = Wake()  # the heartbeat looks now: the store closed

    def release(self, run_id: str) -> None:
        """This process no longer runs the run: it counts as running no more,
        and its lease is not renewed (the engine calls this when a run ends)."""
        with self._held_lock:
            self._held.pop(run_id, None)
        release_held(self._location, run_id, self)

    def _hold(self, run_id: str, owner: str) -> None:
        with self._held_lock:
            self._held[run_id] = owner
            self._lost.pop(run_id, None)
            if owner != this_owner():
                return
            if self._beat is None and not self._closed:
                beat = _Heartbeat()
                self._beat = start_heartbeat(
                    self,
                    self._wake,
                    self.lease / 3,
                    beat.renew,
                    f"braidflow lease of {self!r}",
                    end=beat.close,
                )
        hold(self._location, run_id, self)

    def _idle(self) -> bool:
        """Whether the heartbeat has nothing to renew (`heartbeat_idle`)."""
        return heartbeat_idle(self)

    def _lose(self, run_id: str, owner: str | None) -> TakenOver:
        message = (
            f"{self!r}: run {run_id!r} was taken over by {owner or 'another store'} after "
            f"this process's lease on it expired (it was not renewed for {self.lease:g} s: "
            "the process was stopped, or the database could not be reached); this process "
            "stops running it"
        )
        self.release(run_id)
        with self._held_lock:
            self._lost[run_id] = message
        return TakenOver(message, run_id=run_id)

    def _fence(self, conn: psycopg.Connection[Any], run_id: str) -> None:
        """Before writing a run's rows (in a transaction): refuse an unknown
        run, and one another owner took from this object; hold its record so
        no claim takes it before the transaction ends."""
        row = conn.execute(
            "SELECT owner FROM braidflow_runs WHERE run_id=%s FOR SHARE", (_text(run_id),)
        ).fetchone()
        if row is None:
            raise no_run(self, run_id)
        owner = self._held.get(run_id)
        if owner is not None and _str(row[0]) != owner:
            raise self._lose(run_id, _str(row[0]))

    def _renew_leases(self, conn: psycopg.Connection[Any]) -> bool:
        """Renew the leases of the runs this process runs through this object,
        on ``conn`` (the heartbeat's own); a run another owner has now is lost.
        Return whether there is anything to renew at the next beat."""
        me = this_owner()
        with self._held_lock:
            mine = {run_id: owner for run_id, owner in self._held.items() if owner == me}
        if not mine or self._closed:
            return False
        lost: list[tuple[str, str | None]] = []
        expires = self._clock() + self.lease
        with conn.transaction():
            for run_id, owner in mine.items():
                renewed = conn.execute(
                    "UPDATE braidflow_runs SET lease=%s WHERE run_id=%s AND owner=%s "
                    "AND status='running'",
                    (expires, _text(run_id), _text(owner)),
                )
                if renewed.rowcount == 0:
                    row = conn.execute(
                        "SELECT owner FROM braidflow_runs WHERE run_id=%s", (_text(run_id),)
                    ).fetchone()
                    lost.append((run_id, None if row is None else _str(row[0])))
        for run_id, now_owner in lost:
            with self._held_lock:
                still = self._held.get(run_id) == mine[run_id]
            if still:
                self._lose(run_id, now_owner)
        return True


class _Heartbeat:
    """A store's heartbeat's connection of its own, kept from beat to beat."""

    def __init__(self) -> None:
        self.conn: psycopg.Connection[Any] | None = None

    def renew(self, store: PostgresLeases) -> None:
        try:
            conn = self.conn
            if conn is None or conn.closed or conn.broken:
                conn = self.conn = psycopg.connect(store.dsn, autocommit=True, connect_timeout=10)
                conn.execute("SET synchronous_commit = off")  # a lease: kept for seconds
            store._renew_leases(conn)
        except Exception:  # the server is down now: the next beat tries again
            pass

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
