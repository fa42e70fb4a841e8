"""SQLiteStore: durable runs in one SQLite file (stdlib ``sqlite3``, WAL mode).

Every checkpoint reaches the operating system before the engine goes on, so
a process killed at any point loses no finished node and no finished item.
A run's checkpoints are appended to a log file of the run (see
``_runlog``) and folded into the database in batches: a system call each,
not a commit each. Whoever resumes a run whose process died folds what its
log holds first. ``durable=True`` commits each checkpoint to the database
and syncs it to disk: it survives power loss too.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .._errors import StoreError
from .._store import (
    Checkpoint,
    RunRecord,
    check_claim,
    check_serializer,
    no_run,
    prompt_text,
    row_path,
    run_id_taken,
    shown_status,
)
from ._runlog import RunLog, read_log, unpack

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = 2  # 2: runs.folded, for run logs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS braidflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    graph TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    node TEXT,
    error TEXT,
    prompt TEXT,
    owner TEXT,
    initial BLOB NOT NULL,
    folded INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    frame TEXT NOT NULL,
    position INTEGER NOT NULL,
    node TEXT NOT NULL,
    node_class TEXT NOT NULL,
    action TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_of_run ON checkpoints (run_id, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_of_run ON events (run_id, seq);
"""

# A run's log is folded into the database once it holds this many rows or
# bytes, or has held rows for this long: the database then lags the run by
# at most about that much (the log holds the rest; folding it again is safe).
_FOLD_ROWS = 1000
_FOLD_BYTES = 4 << 20
_FOLD_SECONDS = 1.0

_INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, kind, frame, position, node, node_class, action, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    """A store in one SQLite file: the embedded default for durable runs.

    Several processes can share the file (SQLite's locking keeps it
    consistent); one connection per store object, usable from any thread.
    While a run goes, its checkpoints are appended to a log file of the run
    beside the database (``<path>-run-<hash>.log``) and folded into the
    database every 1,000 checkpoints, 4 MB or second, and when it ends;
    other processes see a run in progress that far behind.

    Args:
        path: The database file; made, with its tables, if missing.
        serializer: How values are written: ``"json"`` (default) or
            ``"pickle"`` (any picklable object, but only for trusted files).
        durable: Also survive the machine crashing or losing power: commit
            every checkpoint to the database and sync it to disk
            (``synchronous=FULL``), at many times the cost. By default every
            checkpoint reaches the operating system before the run goes on,
            which survives the process being killed.

    Raises:
        StoreError: If the file is not a braidflow store, or was written by a
            newer version of braidflow.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, serializer: str = "json", durable: bool = False
    ) -> None:
        check_serializer("SQLiteStore", serializer)
        self.path = Path(path)
        self.serializer = serializer
        self._lock = threading.Lock()
        self._durable = durable
        self._logs: dict[str, RunLog] = {}  # the runs this object writes, by id
        self._absolute = Path(os.path.abspath(self.path))  # logs stay put if the cwd changes
        if not self.path.parent.is_dir():
            raise StoreError(
                f"SQLiteStore: the directory of {str(self.path)!r} does not exist; create it first"
            )
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._open(durable)
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"SQLiteStore: {str(self.path)!r} is not a braidflow store (SQLite says: {error})"
            ) from None

    def _open(self, durable: bool) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        # WAL without syncs still hands each commit to the OS before returning:
        # a killed process loses nothing. Power loss needs FULL.
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "braidflow_meta" not in tables:
            raise StoreError(
                f"SQLiteStore: {str(self.path)!r} is an SQLite file but not a braidflow store "
                f"(it has tables {sorted(tables)}); use another file"
            )
        if not tables:
            db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
        with self._transaction():
            row = db.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO braidflow_meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"SQLiteStore: {str(self.path)!r} was written by a newer braidflow (store "
                    f"schema {row[0]}, this one reads {SCHEMA_VERSION}); upgrade braidflow"
                )
            elif int(row[0]) == 1:  # before run logs: every row is in the database
                db.execute("ALTER TABLE runs ADD COLUMN folded INTEGER NOT NULL DEFAULT 0")
                db.execute(
                    "UPDATE braidflow_meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),)
                )

    def _transaction(self) -> Any:
        return _Transaction(self._db)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def close(self) -> None:
        """Fold the logs of runs still going into the database, and close it.
        (Such a run then stops at its next checkpoint; it can be resumed.)"""
        with self._lock:
            try:
                for run_id in list(self._logs):
                    self._fold(run_id)
                    self._logs.pop(run_id).close()
            finally:
                self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- runs --------------------------------------------------------------------

    # A run's record, with where its last checkpoint was made (for a run that
    # is still going, or stopped without saying where).
    _RECORD = (
        "SELECT r.run_id, r.flow, r.status, r.started, r.ended, r.node, r.error, r.prompt, "
        "r.owner, c.kind, c.frame, c.node FROM runs r LEFT JOIN checkpoints c ON c.seq = "
        "(SELECT MAX(seq) FROM checkpoints WHERE run_id = r.run_id)"
    )

    def _row(self, run_id: str) -> RunRecord:
        row = self._db.execute(f"{self._RECORD} WHERE r.run_id=?", (run_id,)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        return _record(row)

    def create_run(
        self, run_id: str, flow: str, graph: str, initial: bytes, owner: str
    ) -> RunRecord:
        """Record a new run as running (see `Store`)."""
        with self._lock, self._transaction():
            if self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                raise run_id_taken(self, run_id)
            started = time.time()
            self._db.execute(
                "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (run_id, flow, graph, started, owner, initial),
            )
            record = RunRecord(run_id, flow, "running", started, owner=owner)
        with self._lock:
            self._open_log(run_id, 0)
        return record

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`)."""
        with self._lock:
            self._fold_all()
            with self._transaction():
                shown = check_claim(self._row(run_id), owner)
                # What the run's last process logged and did not fold: in first.
                folded = self._db.execute(
                    "SELECT folded FROM runs WHERE run_id=?", (run_id,)
                ).fetchone()[0]
                logged, folded = read_log(self._log_path(run_id), folded)
                self._insert(run_id, logged, folded)
                self._db.execute(
                    "UPDATE runs SET status='running', owner=?, ended=NULL, node=NULL, "
                    "error=NULL, prompt=NULL WHERE run_id=?",
                    (owner, run_id),
                )
                graph, initial = self._db.execute(
                    "SELECT graph, initial FROM runs WHERE run_id=?", (run_id,)
                ).fetchone()
                rows = [
                    unpacked
                    for row in self._db.execute(
                        "SELECT kind, frame, position, node, node_class, action, payload "
                        "FROM checkpoints WHERE run_id=? ORDER BY seq",
                        (run_id,),
                    )
                    for unpacked in unpack(Checkpoint(*row))
                ]
            self._open_log(run_id, folded)  # a fresh file: only once the fold is committed
            return shown, graph, initial, rows

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically, after those already there: to the
        run's log if this object writes one, else to the database."""
        with self._lock:
            log = self._logs.get(run_id)
            if log is None:
                with self._transaction():
                    self._insert(run_id, rows)
                return
            if not rows:
                return
            try:
                log.write(rows)
            except OSError as error:
                raise StoreError(
                    f"{self!r}: cannot write the log of run {run_id!r} ({error})", run_id=run_id
                ) from error
            if (
                log.count >= _FOLD_ROWS
                or log.size >= _FOLD_BYTES
                or time.monotonic() - log.folded_at >= _FOLD_SECONDS
            ):
                try:
                    self._fold(run_id)
                except sqlite3.Error:
                    # The rows are written (in the log): the append succeeded,
                    # and must not be retried. The next fold tries again; the
                    # run's end reports a database that stays unwritable.
                    log.folded_at = time.monotonic()

    # -- run logs (the caller holds the lock) --------------------------------------

    def _log_path(self, run_id: str) -> Path:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:24]
        return self._absolute.with_name(f"{self._absolute.name}-run-{digest}.log")

    def _open_log(self, run_id: str, rank: int) -> None:
        """Start the run's log, whose first record is the run's ``rank``-th."""
        if self._durable:  # every row is committed (and synced) as it comes
            return
        old = self._logs.pop(run_id, None)
        if old is not None:
            os.close(old.fd)
        try:
            self._logs[run_id] = RunLog(self._log_path(run_id), rank)
        except OSError:  # no log then: each row is committed to the database
            pass

    def _insert(self, run_id: str, rows: list[Checkpoint], folded: int | None = None) -> None:
        """Add rows (in a transaction the caller opened), and how many records
        of the run's log the database now holds."""
        if rows:
            self._db.executemany(_INSERT_CHECKPOINT, [(run_id, *row) for row in rows])
        if folded is not None:
            self._db.execute("UPDATE runs SET folded=? WHERE run_id=?", (folded, run_id))

    def _fold(self, run_id: str) -> None:
        """Put what the run's log holds into the database."""
        log = self._logs[run_id]
        packed = log.packed()
        if packed is None:
            return
        with self._transaction():
            self._insert(run_id, [packed], log.rank)
        log.folded()

    def _fold_all(self) -> None:
        for run_id in self._logs:
            self._fold(run_id)

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        node: str | None = None,
        error: str | None = None,
        prompt: Any = None,
        ended: float | None = None,
    ) -> None:
        """Record how the run ended (see `Store`); its log is folded in.

        Raises:
            StoreError: If the database cannot be written; the run's
                checkpoints stay in its log, for whoever resumes it.
        """
        with self._lock:
            log = self._logs.get(run_id)
            try:
                with self._transaction():
                    packed = None if log is None else log.packed()
                    if packed is not None:
                        self._insert(run_id, [packed], log.rank)  # type: ignore[union-attr]
                    self._db.execute(
                        "UPDATE runs SET status=?, ended=?, node=?, error=?, prompt=? "
                        "WHERE run_id=?",
                        (
                            status,
                            time.time() if ended is None else ended,
                            node,
                            error,
                            None if prompt is None else prompt_text(prompt),
                            run_id,
                        ),
                    )
            except sqlite3.Error as failure:
                kept = f"; its checkpoints are kept in {str(log.path)!r}" if log else ""
                raise StoreError(
                    f"{self!r}: cannot record that run {run_id!r} is {status} ({failure}){kept}. "
                    "Once the database can be written, the run can be resumed",
                    run_id=run_id,
                ) from failure
            if log is not None:
                del self._logs[run_id]
                log.close()

    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        with self._lock:
            self._fold_all()  # what this process wrote shows at once
            return shown_status(self._row(run_id))

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._lock:
            self._fold_all()
            rows = self._db.execute(f"{self._RECORD} ORDER BY r.started").fetchall()
        records = [shown_status(_record(row)) for row in rows]
        return [record for record in records if status is None or record.status == status]

    # -- events -------------------------------------------------------------------

    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep some of a run's events (JSON lines), after those already kept."""
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT INTO events (run_id, event) VALUES (?, ?)",
                [(run_id, text) for text in records],
            )

    def events(self, run_id: str) -> list[str]:
        """A run's kept events, in order (JSON lines)."""
        with self._lock:
            self._row(run_id)
            return [
                row[0]
                for row in self._db.execute(
                    "SELECT event FROM events WHERE run_id=? ORDER BY seq", (run_id,)
                )
            ]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``), so a writer holds the
    write lock from the start and concurrent claims are serialized."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _record(row: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of ``SQLiteStore._RECORD``."""
    prompt = json.loads(row[7]) if row[7] is not None else None
    node = row[5]
    if node is None and row[9] is not None:  # a packed row's node is its last row's path
        node = row[11] if row[9] == "packed" else row_path(row[9], row[10], row[11])
    return RunRecord(row[0], row[1], row[2], row[3], row[4], node, row[6], prompt, row[8])
