"""Leases of the runs a SQLiteStore runs: held while they run, renewed by a
heartbeat thread, and lost to another owner that took a run over once expired.

A run this process runs has a lease in its record, which a thread of the
store renews every third of a lease while the run runs (the thread ends with
the store's last run, or with the store: `start_heartbeat`): when the process
dies the lease expires, and any process, on any host, may resume the run
(see ``_owners``). A store object that finds another owner in a run's record
stops writing the run (`LeaseHolder._fence`), and says why from then on.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .._errors import StoreError
from .._heartbeat import Wake, start_heartbeat
from ._base import RunRecord, TakenOver, no_run
from ._owners import heartbeat_idle, hold, holds, owner_alive, this_owner
from ._owners import release as release_held
from ._runlog import RunLog
from ._sqlite_failures import BUSY_MS, Transaction

__all__ = ["LEASE", "LeaseHolder", "TakenOver"]

LEASE = 30.0  # seconds: how long a run counts as running after its owner last renewed it


class LeaseHolder:
    """What a SQLiteStore keeps of the runs it runs: which it holds (from
    `create_run` or `claim` to `finish` or `release`), for which owner, which
    it lost to another owner since, and the heartbeat that renews their leases.

    Its methods that change what is held are called with the store's lock held.
    """

    # Kept by the store (see SQLiteStore).
    path: Path
    _lock: threading.Lock
    _closed: bool
    _db: sqlite3.Connection
    _location: str
    _logs: dict[str, RunLog]

    def __init__(self, lease: float, clock: Callable[[], float] | None) -> None:
        if (
            isinstance(lease, bool)
            or not isinstance(lease, (int, float))
            or not math.isfinite(lease)
            or lease <= 0
        ):
            raise StoreError(f"SQLiteStore: lease={lease!r} must be a number of seconds above 0")
        if clock is not None and not callable(clock):
            raise StoreError(
                f"SQLiteStore: clock={clock!r} must be a function that gives the time in "
                "seconds since the epoch"
            )
        self.lease = float(lease)
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._start_leases()

    def _start_leases(self) -> None:
        """Hold no run, with no heartbeat: when made, and in a child made by
        ``os.fork`` (the runs held are the parent's, its thread is not there)."""
        # The runs this object runs (from create_run or claim to finish or
        # release), by id: their owner; and those another owner took over
        # since, with what to tell. The heartbeat reads them too.
        self._held: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._held_lock = threading.Lock()  # taken after self._lock, never before
        self._beat: threading.Thread | None = None
        self._wake = Wake()  # the heartbeat looks now: the store closed

    def _hold(self, run_id: str, owner: str) -> None:
        """Note that this object runs the run for ``owner`` (the caller holds
        the lock); this process's runs get their leases renewed."""
        with self._held_lock:
            self._held[run_id] = owner
            self._lost.pop(run_id, None)
            if owner != this_owner():
                return
            if self._beat is None and not self._closed:
                self._beat = start_heartbeat(
                    self,
                    self._wake,
                    self.lease / 3,
                    _renew,
                    f"braidflow lease of {self.path.name}",
                )
        hold(self._location, run_id, self)

    def _idle(self) -> bool:
        """Whether the heartbeat has nothing to renew (`heartbeat_idle`)."""
        return heartbeat_idle(self)

    def _let_go(self, run_id: str, *, keep_log: bool) -> None:
        """This object runs the run no more (the caller holds the lock); its
        log, if it has one still, stays for whoever resumes it (``keep_log``)."""
        with self._held_lock:
            self._held.pop(run_id, None)
        release_held(self._location, run_id, self)
        log = self._logs.pop(run_id, None)
        if log is not None:
            log.close(remove=not keep_log)

    def _lose(self, run_id: str, owner: str | None) -> TakenOver:
        """Another owner took the run over (the caller holds the lock): stop
        running it here, and say so to every later call about it."""
        message = (
            f"{self!r}: run {run_id!r} was taken over by {owner or 'another store'} after "
            f"this process's lease on it expired (it was not renewed for {self.lease:g} s: "
            "the process was stopped, or the database could not be written); this process "
            "stops running it"
        )
        self._let_go(run_id, keep_log=False)  # the new owner read the log when it claimed
        with self._held_lock:
            self._lost[run_id] = message
        return TakenOver(message, run_id=run_id)

    def _fence(self, run_id: str) -> None:
        """Before writing a run's rows (in a transaction the caller opened):
        refuse an unknown run, and a run another owner took from this object."""
        row = self._db.execute("SELECT owner FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        owner = self._held.get(run_id)
        if owner is not None and row[0] != owner:
            raise self._lose(run_id, row[0])

    def _alive(self, record: RunRecord, lease: float | None) -> bool:
        """Whether the run's owner still runs it (see ``_owners``)."""
        held = holds(self._location, record.run_id)
        return owner_alive(record.owner, held=held, lease=lease or 0.0, now=self._clock())

    def _renew_leases(self, db: sqlite3.Connection | None = None) -> bool:
        """Renew the leases of the runs this process runs through this object
        (on ``db``, the heartbeat's own connection; a new one if not given).
        A run whose record another owner has now is lost (see `_lose`).
        Return whether there is anything to renew at the next beat."""
        me = this_owner()
        with self._held_lock:
            mine = {run_id: owner for run_id, owner in self._held.items() if owner == me}
            if not mine or self._closed:
                return False
        lost: list[tuple[str, str | None]] = []
        opened = db is None
        try:
            if db is None:
                db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_MS / 1000)
            expires = self._clock() + self.lease
            with Transaction(db):
                for run_id, owner in mine.items():
                    renewed = db.execute(
                        "UPDATE runs SET lease=? WHERE run_id=? AND owner=? AND status='running'",
                        (expires, run_id, owner),
                    )
                    if renewed.rowcount == 0:
                        now = db.execute("SELECT owner FROM runs WHERE run_id=?", (run_id,))
                        row = now.fetchone()
                        lost.append((run_id, None if row is None else row[0]))
        except Exception:  # a database that cannot be written now: the next beat tries again
            return True
        finally:
            if opened and db is not None:
                db.close()
        if lost:
            with self._lock:
                for run_id, now_owner in lost:
                    with self._held_lock:
                        still = self._held.get(run_id) == mine[run_id]
                    if still:  # not ended here meanwhile
                        self._lose(run_id, now_owner)
        return True


def _renew(store: LeaseHolder) -> None:
    """A beat: on a connection of its own (a busy database never holds up a checkpoint)."""
    store._renew_leases()
