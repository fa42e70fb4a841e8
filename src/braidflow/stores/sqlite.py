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

import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .._errors import StoreError
from ._base import (
    Checkpoint,
    RunRecord,
    check_claim,
    check_serializer,
    merged_metadata,
    metadata_text,
    no_run,
    prompt_text,
    row_path,
    run_id_taken,
    shown_status,
)
from ._runlog import RunLog, read_log, unpack

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

SCHEMA_VERSION = 3  # 2: runs.folded and runs.log, for run logs; 3: runs.metadata

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
    folded INTEGER NOT NULL DEFAULT 0,
    log TEXT,
    metadata TEXT
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
_BUSY_MS = 10_000  # how long a write waits for another process's

_INSERT_CHECKPOINT = (
    "INSERT INTO checkpoints (run_id, kind, frame, position, node, node_class, action, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    """A store in one SQLite file: the embedded default for durable runs.

    Several processes can share the file (SQLite's locking keeps it
    consistent); one connection per store object, usable from any thread.
    While a run goes, its checkpoints are appended to a log file of the run
    beside the database (``<path>-run-<random>.log``, named in the run's
    record) and folded into the database every 1,000 checkpoints or 4 MB,
    at the first checkpoint a second after the last fold, and when it ends;
    other processes see a run in progress that far behind (this one sees
    its own checkpoints at once).

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
        # Logs go beside the real file, wherever the cwd or a symlink points.
        self._real = Path(os.path.realpath(self.path))
        if not self.path.parent.is_dir():
            raise StoreError(
                f"SQLiteStore: the directory of {str(self.path)!r} does not exist; create it first"
            )
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_MS / 1000
            )
            self._open(durable)
            self._largest = self._db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
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
            elif int(row[0]) < SCHEMA_VERSION:
                self._migrate(int(row[0]))

    def _migrate(self, version: int) -> None:
        """Bring a store written by an older braidflow up to this schema (in
        the caller's transaction)."""
        db = self._db
        if version < 2:  # before run logs: every row is in the database
            db.execute("ALTER TABLE runs ADD COLUMN folded INTEGER NOT NULL DEFAULT 0")
            db.execute("ALTER TABLE runs ADD COLUMN log TEXT")
        if version < 3:
            db.execute("ALTER TABLE runs ADD COLUMN metadata TEXT")
        db.execute("UPDATE braidflow_meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

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
        "r.owner, c.kind, c.frame, c.node, r.metadata FROM runs r LEFT JOIN checkpoints c "
        "ON c.seq = (SELECT MAX(seq) FROM checkpoints WHERE run_id = r.run_id)"
    )

    def _row(self, run_id: str) -> RunRecord:
        row = self._db.execute(f"{self._RECORD} WHERE r.run_id=?", (run_id,)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        return _record(row)

    def create_run(
        self,
        run_id: str,
        flow: str,
        graph: str,
        initial: bytes,
        owner: str,
        metadata: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record a new run as running (see `Store`)."""
        kept = metadata_text(self, run_id, metadata or {})
        with self._lock:
            log = self._new_log(0)
            try:
                with self._transaction():
                    if self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                        raise run_id_taken(self, run_id)
                    started = time.time()
                    self._db.execute(
                        "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial, "
                        "log, metadata) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                        (run_id, flow, graph, started, owner, initial, log and log.path.name, kept),
                    )
            except BaseException:
                if log is not None:
                    log.close()
                raise
            if log is not None:
                self._logs[run_id] = log
            return RunRecord(
                run_id, flow, "running", started, owner=owner, metadata=json.loads(kept)
            )

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`)."""
        with self._lock:
            self._fold_all()
            new: RunLog | None = None
            try:
                with self._transaction():
                    check_claim(self._row(run_id), owner)
                    # What the run's last process logged and did not fold: in first.
                    folded, old = self._db.execute(
                        "SELECT folded, log FROM runs WHERE run_id=?", (run_id,)
                    ).fetchone()
                    if old is not None:
                        logged, folded = read_log(self._real.with_name(old), folded)
                        self._insert(run_id, logged, folded)
                    shown = shown_status(self._row(run_id))  # at its last row, logged too
                    new = self._new_log(folded)
                    self._db.execute(
                        "UPDATE runs SET status='running', owner=?, ended=NULL, node=NULL, "
                        "error=NULL, prompt=NULL, log=? WHERE run_id=?",
                        (owner, new and new.path.name, run_id),
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
            except BaseException:
                if new is not None:
                    new.close()
                raise
            if old is not None:  # its rows are in the database now
                _remove(self._real.with_name(old))
            if new is not None:
                self._logs[run_id] = new
            return shown, graph, initial, rows

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically, after those already there: to the
        run's log if this object writes one, else to the database.

        Raises:
            StoreError: If a row is larger than SQLite holds, or it cannot be
                written; nothing of ``rows`` is then kept.
        """
        for row in rows:
            if len(row.payload) > self._largest:
                raise StoreError(
                    f"{self!r}: a checkpoint of node {row.node!r} holds {len(row.payload):,} "
                    f"bytes, more than SQLite holds ({self._largest:,}); keep large data out "
                    "of shared (a file path, a key to another store)",
                    run_id=run_id,
                )
        with self._lock:
            log = self._logs.get(run_id)
            if log is not None and log.broken:
                self._give_up_log(run_id)
                log = None
            if log is None:
                with self._transaction():
                    self._insert(run_id, rows)
                return
            if not rows:
                return
            try:
                log.write(rows)
            except OSError as error:
                self._give_up_log(run_id)
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
            with self._transaction():
                self._insert(run_id, log.packed(self._largest), log.rank)
                self._db.execute("UPDATE runs SET log=NULL WHERE run_id=?", (run_id,))
        except sqlite3.Error as error:
            raise StoreError(
                f"{self!r}: cannot write the log of run {run_id!r}, nor the database "
                f"({error}); its checkpoints so far are kept in {str(log.path)!r}",
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
        """Put what the run's log holds into the database."""
        log = self._logs[run_id]
        if not log.count:
            return
        with self._transaction():
            self._insert(run_id, log.packed(self._largest), log.rank)
        log.folded()

    def _fold_all(self) -> None:
        for run_id in self._logs:
            self._fold(run_id)

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
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")

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
                    if log is not None:
                        self._insert(run_id, log.packed(self._largest), log.rank)
                    self._db.execute(
                        "UPDATE runs SET status=?, ended=?, node=?, error=?, prompt=?, log=NULL "
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

    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the run's (see `Store`)."""
        given = json.loads(metadata_text(self, run_id, metadata))
        with self._lock, self._transaction():
            row = self._db.execute("SELECT metadata FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise no_run(self, run_id)
            merged = merged_metadata(json.loads(row[0] or "{}"), given)
            self._db.execute(
                "UPDATE runs SET metadata=? WHERE run_id=?",
                (metadata_text(self, run_id, merged), run_id),
            )

    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        with self._lock:
            self._fold_all_if_free()  # what this process wrote shows at once
            return shown_status(self._row(run_id))

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._lock:
            self._fold_all_if_free()
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
        if exc_type is not None:
            self.db.execute("ROLLBACK")
            return
        try:
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # a COMMIT that failed may leave it open
                self.db.execute("ROLLBACK")
            raise


def _record(row: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of ``SQLiteStore._RECORD``."""
    prompt = json.loads(row[7]) if row[7] is not None else None
    node = row[5]
    if node is None and row[9] is not None:  # a packed row's node is its last row's path
        node = row[11] if row[9] == "packed" else row_path(row[9], row[10], row[11])
    metadata = json.loads(row[12]) if row[12] else {}
    return RunRecord(row[0], row[1], row[2], row[3], row[4], node, row[6], prompt, row[8], metadata)


def _remove(path: Path) -> None:
    """Remove a log whose rows are in the database (gone already is fine)."""
    try:
        os.unlink(path)
    except OSError:  # left behind, it is never read: no run names it
        pass
