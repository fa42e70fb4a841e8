"""How a SQLiteStore's checkpoint rows reach its database: folded in batches
from the log of their run (``_runlog``), or committed at once where it has none.

A run's checkpoints are appended to a log file of the run and folded into
the database in batches: a system call each, not a commit each
(`SQLiteStore.append` folds once enough is logged). Whoever resumes a run
whose process died folds what its log holds first. A durable store, or one
whose log cannot be made or written, commits every row to the database.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from .._errors import StoreError
from ._base import Checkpoint
from ._runlog import RunLog, read_log
from ._sqlite_failures import BUSY_MS, Transaction, diagnosis, said
from ._sqlite_leases import LeaseHolder, TakenOver

__all__ = ["LogFolder", "remove_log"]

_INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints "
    "(run_id, kind, frame, position, node, node_class, action, payload, started, ended) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class LogFolder(LeaseHolder):
    """How a SQLiteStore puts checkpoint rows into its database: from the logs
    of the runs it writes (``_logs``, by id), or as they come.

    Its methods are called with the store's lock held.
    """

    # Kept by the store (see SQLiteStore).
    _durable: bool
    _real: Path
    _largest: int

    def _new_log(self, rank: int) -> RunLog | None:
        """A log for a run whose first record will be its ``rank``-th; a file
        of its own, so no other owner's removal can take it. None for a
        durable store, or if no file can be made (rows are committed then)."""
        if self._durable:  # every row is committed (and synced) as it comes
            return None
        name = f"{self._real.name}-run-{secrets.token_hex(8)}.log"
        try:
            return RunLog(self._real.with_name(name), rank)
        except OSError:
            return None

    def _read_log(self, run_id: str, name: str, folded: int) -> tuple[list[Checkpoint], int]:
        """The rows of the run's log not in the database yet (see `read_log`)."""
        path = self._real.with_name(name)
        try:
            return read_log(path, folded)
        except OSError as error:
            what, _ = diagnosis(error)
            raise StoreError(
                f"{self!r}: cannot read the log of run {run_id!r}, {str(path)!r}: {what} "
                f"({said(error)}); it holds the run's latest checkpoints: make it a readable "
                "file again and resume, or move it away to resume the run without them",
                run_id=run_id,
            ) from error

    def _give_up_log(self, run_id: str) -> None:
        """After a failed write (a torn record may stay in the file), put what
        the log holds into the database and commit every row from then on.

        Raises:
            StoreError: If the database cannot take them either; the log
                stays, and the next append tries again.
        """
        log = self._logs[run_id]
        log.broken = True
        try:
            with Transaction(self._db):
                self._fence(run_id)
                self._insert(run_id, log.packed(self._largest), log.rank)
                self._db.execute("UPDATE runs SET log=NULL WHERE run_id=?", (run_id,))
        except sqlite3.Error as error:
            what, todo = diagnosis(error)
            raise StoreError(
                f"{self!r}: cannot write the log of run {run_id!r}, nor the database: {what} "
                f"({said(error)}); its checkpoints so far are kept in {str(log.path)!r}, for "
                f"whoever resumes it: {todo}, then resume the run",
                run_id=run_id,
            ) from error
        del self._logs[run_id]
        log.close()

    def _insert(self, run_id: str, rows: list[Checkpoint], folded: int | None = None) -> None:
        """Add rows (in a transaction the caller opened), and how many records
        of the run's log the database now holds."""
        if rows:
            self._db.executemany(_INSERT_CHECKPOINT, [(run_id, *row) for row in rows])
        if folded is not None:
            self._db.execute("UPDATE runs SET folded=? WHERE run_id=?", (folded, run_id))

    def _fold(self, run_id: str) -> None:
        """Put what the run's log holds into the database.

        Raises:
            TakenOver: If another owner has the run now (the log is dropped).
        """
        log = self._logs[run_id]
        if not log.count:
            return
        with Transaction(self._db):
            self._fence(run_id)
            self._insert(run_id, log.packed(self._largest), log.rank)
        log.folded()

    def _fold_all(self) -> None:
        for run_id in list(self._logs):
            try:
                self._fold(run_id)
            except TakenOver:  # that run is not this process's any more
                pass

    def _fold_all_if_free(self) -> None:
        """Fold before a read, so this process sees its own rows at once;
        a database another writer holds is read as it is, without waiting."""
        if not any(log.count for log in self._logs.values()):
            return
        self._db.execute("PRAGMA busy_timeout=0")
        try:
            self._fold_all()
        except sqlite3.Error:
            pass
        finally:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")


def remove_log(path: Path) -> None:
    """Remove a log whose rows are in the database (gone already is fine)."""
    try:
        os.unlink(path)
    except OSError:  # left behind, it is never read: no run names it
        pass
