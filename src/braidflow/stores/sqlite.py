"""SQLiteStore: durable runs in one SQLite file (stdlib ``sqlite3``, WAL mode).

Every checkpoint reaches the operating system before the engine goes on, so
a process killed at any point loses no finished node and no finished item.
A run's checkpoints are appended to a log file of the run (see
``_runlog``) and folded into the database in batches: a system call each,
not a commit each. Whoever resumes a run whose process died folds what its
log holds first. ``durable=True`` commits each checkpoint to the database
and syncs it to disk: it survives power loss too.

A run this process runs has a lease in its record, which a thread of the
store renews every third of a lease while the run runs: when the process
dies the lease expires, and any process, on any host, may resume the run
(see ``_owners``). Every failure comes out as a `StoreError` that says what
happened and what to do.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from .._errors import StoreError
from ._base import (
    Checkpoint,
    RunRecord,
    check_claim,
    check_end,
    check_new_run,
    check_owner,
    check_rows,
    check_run_id,
    check_serializer,
    check_text,
    merged_metadata,
    metadata_text,
    no_run,
    prompt_text,
    row_path,
    run_id_taken,
    shown_status,
    storable_text,
)
from ._owners import hold, holds, owner_alive, this_owner
from ._owners import release as release_held
from ._runlog import RunLog, read_log, unpack

__all__ = ["LEASE", "SCHEMA_VERSION", "SQLiteStore"]

# 2: runs.folded and runs.log, for run logs; 3: runs.metadata, and runs.lease
# (when the lease of a running run's owner expires, by the owner's clock).
SCHEMA_VERSION = 3
LEASE = 30.0  # seconds: how long a run counts as running after its owner last renewed it

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
    metadata TEXT,
    lease REAL
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


_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(doing: str, then: str = "", *, closed_ok: bool = False) -> Callable[[_F], _F]:
    """A store method whose every failure is a `StoreError` saying what happened
    and what to do: ``doing`` is what the method does (``{run}``: the run it
    is given), ``then`` what to do once the store works again."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def guarded(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
            if self._closed and not closed_ok:
                raise self._failure(doing, args, None, then)
            try:
                return method(self, *args, **kwargs)
            except StoreError:
                raise
            except Exception as error:
                raise self._failure(doing, args, error, then) from error

        return cast(_F, guarded)

    return wrap


class _TakenOver(StoreError):
    """Another owner took over a run this store object was running."""


class SQLiteStore:
    """A store in one SQLite file: the embedded default for durable runs.

    Several processes can share the file (SQLite's locking keeps it
    consistent), on one host or several (a shared volume); one connection per
    store object, usable from any thread. While a run goes, its checkpoints
    are appended to a log file of the run beside the database
    (``<path>-run-<random>.log``, named in the run's record) and folded into
    the database every 1,000 checkpoints or 4 MB, at the first checkpoint a
    second after the last fold, and when it ends; other processes see a run
    in progress that far behind (this one sees its own checkpoints at once).

    While this process runs a run, a thread of the store renews the run's
    lease every ``lease / 3`` seconds. A run whose lease expired is no longer
    run by anyone: any process may resume it, on any host. On this host, a
    run whose process is gone may be resumed at once.

    Args:
        path: The database file; made, with its tables, if missing.
        serializer: How values are written: ``"json"`` (default) or
            ``"pickle"`` (any picklable object, but only for trusted files).
        durable: Also survive the machine crashing or losing power: commit
            every checkpoint to the database and sync it to disk
            (``synchronous=FULL``), at many times the cost. By default every
            checkpoint reaches the operating system before the run goes on,
            which survives the process being killed.
        lease: Seconds a run counts as running after its owner last renewed
            it (default 30). Shorter lets another host take a dead process's
            runs sooner; longer tolerates a process that cannot renew for a
            while (stopped, or the database locked). Every process sharing
            the file should use the same, and hosts' clocks should agree to
            well within it.
        clock: What gives the time leases are kept in, seconds since the
            epoch (default ``time.time``); tests give one they move by hand.

    Raises:
        StoreError: If the file cannot be opened, is not a braidflow store, or
            was written by a newer version of braidflow.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: str = "json",
        durable: bool = False,
        lease: float = LEASE,
        clock: Callable[[], float] | None = None,
    ) -> None:
        check_serializer("SQLiteStore", serializer)
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
        self.path = Path(path)
        self.serializer = serializer
        self.lease = float(lease)
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._durable = durable
        self._closed = False
        self._logs: dict[str, RunLog] = {}  # the runs this object writes, by id
        # The runs this object runs (from create_run or claim to finish or
        # release), by id: their owner; and those another owner took over
        # since, with what to tell. The heartbeat reads them too.
        self._held: dict[str, str] = {}
        self._lost: dict[str, str] = {}
        self._held_lock = threading.Lock()  # taken after self._lock, never before
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        # Logs go beside the real file, wherever the cwd or a symlink points.
        self._real = Path(os.path.realpath(self.path))
        self._location = str(self._real)  # where this process's record of its runs is kept
        if not self.path.parent.is_dir():
            raise StoreError(
                f"SQLiteStore: the directory of {str(self.path)!r} does not exist; create it first"
            )
        if self.path.is_dir():
            raise StoreError(
                f"SQLiteStore: {str(self.path)!r} is a directory; give the path of a file "
                "(it is made if missing)"
            )
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_MS / 1000
            )
        except (sqlite3.Error, OSError) as error:
            raise self._cannot_open(error) from None
        try:
            self._open(durable)
            self._largest = self._db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        except BaseException as error:
            self._db.close()
            if isinstance(error, (sqlite3.Error, OSError, ValueError)):
                raise self._cannot_open(error) from None
            raise

    def _cannot_open(self, error: BaseException) -> StoreError:
        name = getattr(error, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or isinstance(error, ValueError):
            return StoreError(
                f"SQLiteStore: {str(self.path)!r} is not a braidflow store (SQLite says: {error}); "
                "use another file"
            )
        what, todo = _diagnosis(error)
        return StoreError(
            f"SQLiteStore: cannot open {str(self.path)!r}: {what} ({_said(error)}); {todo}"
        )

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
            columns = {column[1] for column in db.execute("PRAGMA table_info(runs)")}
            if int(row[0] if row else SCHEMA_VERSION) < SCHEMA_VERSION or "lease" not in columns:
                self._migrate(columns)

    def _migrate(self, columns: set[str]) -> None:
        """Bring a store written by an older braidflow up to this schema (in
        the caller's transaction); ``columns``: those ``runs`` has."""
        db = self._db
        if "folded" not in columns:  # before run logs: every row is in the database
            db.execute("ALTER TABLE runs ADD COLUMN folded INTEGER NOT NULL DEFAULT 0")
            db.execute("ALTER TABLE runs ADD COLUMN log TEXT")
        if "metadata" not in columns:
            db.execute("ALTER TABLE runs ADD COLUMN metadata TEXT")
        if "lease" not in columns:
            # A run marked running now gets one lease: if its owner is alive,
            # it runs a braidflow that renews none; upgrade every process
            # sharing the file together.
            db.execute("ALTER TABLE runs ADD COLUMN lease REAL")
            db.execute(
                "UPDATE runs SET lease=? WHERE status='running'", (self._clock() + self.lease,)
            )
        db.execute("UPDATE braidflow_meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))

    def _transaction(self) -> Any:
        return _Transaction(self._db)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _failure(
        self, doing: str, args: tuple[Any, ...], error: BaseException | None, then: str = ""
    ) -> StoreError:
        """The StoreError for a failure of ``doing`` (see `_guarded`)."""
        about_run = "{run}" in doing
        run_id = args[0] if about_run and args and isinstance(args[0], str) else None
        doing = doing.replace("{run}", f"run {run_id!r}")
        if self._closed:
            what, todo = "the store is closed", "open the file again: SQLiteStore(path)"
        else:
            assert error is not None
            what, todo = _diagnosis(error)
            what = f"{what} ({_said(error)})"
        return StoreError(f"{self!r}: cannot {doing}: {what}; {todo}{then}", run_id=run_id)

    @_guarded("close the store", closed_ok=True)
    def close(self) -> None:
        """Fold the logs of runs still going into the database, and close it.
        (Such a run then stops at its next checkpoint; it can be resumed.) A
        log that cannot be folded stays for whoever resumes the run. Closing
        again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            try:
                for run_id in list(self._logs):
                    folded = False
                    try:
                        self._fold(run_id)
                        folded = True
                    except (sqlite3.Error, StoreError):
                        pass
                    log = self._logs.pop(run_id, None)
                    if log is not None:
                        log.close(remove=folded)
            finally:
                self._db.close()
        # The runs stay held until the engine releases them: a run still
        # going stops at its next checkpoint, and is then resumable.

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- who runs what --------------------------------------------------------------

    def _hold(self, run_id: str, owner: str) -> None:
        """Note that this object runs the run for ``owner`` (the caller holds
        the lock); this process's runs get their leases renewed."""
        with self._held_lock:
            self._held[run_id] = owner
            self._lost.pop(run_id, None)
            if owner != this_owner():
                return
            if self._beat is None and not self._closed:
                self._beat = threading.Thread(
                    target=_heartbeat,
                    args=(weakref.ref(self), self._stop, self.lease / 3, self.path),
                    name=f"braidflow lease of {self.path.name}",
                    daemon=True,
                )
                self._beat.start()
        hold(self._location, run_id, self)

    def _let_go(self, run_id: str, *, keep_log: bool) -> None:
        """This object runs the run no more (the caller holds the lock); its
        log, if it has one still, stays for whoever resumes it (``keep_log``)."""
        with self._held_lock:
            self._held.pop(run_id, None)
        release_held(self._location, run_id, self)
        log = self._logs.pop(run_id, None)
        if log is not None:
            log.close(remove=not keep_log)

    def release(self, run_id: str) -> None:
        """This process no longer runs the run: it counts as running no more,
        and its lease is not renewed. The engine calls this when a run ends,
        however it ends; a run that did not record its end stays resumable,
        its log (if any) kept for whoever resumes it."""
        with self._lock:
            self._let_go(run_id, keep_log=True)

    def _lose(self, run_id: str, owner: str | None) -> _TakenOver:
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
        return _TakenOver(message, run_id=run_id)

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

    def _shown(self, row: tuple[Any, ...]) -> RunRecord:
        """The record of a row of ``_RECORD``, its status as listed."""
        record = _record(row)
        if record.status != "running":
            return record
        return shown_status(record, self._alive(record, row[13]))

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
                db = sqlite3.connect(self.path, isolation_level=None, timeout=_BUSY_MS / 1000)
            expires = self._clock() + self.lease
            with _Transaction(db):
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

    # -- runs --------------------------------------------------------------------

    # A run's record, with where its last checkpoint was made (for a run that
    # is still going, or stopped without saying where), and its lease.
    _RECORD = (
        "SELECT r.run_id, r.flow, r.status, r.started, r.ended, r.node, r.error, r.prompt, "
        "r.owner, c.kind, c.frame, c.node, r.metadata, r.lease FROM runs r LEFT JOIN "
        "checkpoints c ON c.seq = (SELECT MAX(seq) FROM checkpoints WHERE run_id = r.run_id)"
    )

    def _row(self, run_id: str) -> tuple[Any, ...]:
        row = self._db.execute(f"{self._RECORD} WHERE r.run_id=?", (run_id,)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        return cast(tuple[Any, ...], row)

    @_guarded("record new {run}", "; then run it again")
    def create_run(
        self,
        run_id: str,
        flow: str,
        graph: str,
        initial: bytes,
        owner: str,
        metadata: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record a new run as running (see `Store`).

        Raises:
            StoreError: Also if its initial state or graph is larger than
                SQLite holds.
        """
        check_new_run(self, run_id, flow, graph, initial, owner)
        kept = metadata_text(self, run_id, metadata or {})
        for what, size in (("initial shared", len(initial)), ("graph", len(graph.encode()))):
            if size > self._largest:
                raise StoreError(
                    f"{self!r}: the {what} of run {run_id!r} is {size:,} bytes, more than "
                    f"SQLite holds ({self._largest:,}); keep large data out of shared (a file "
                    "path, a key to another store)",
                    run_id=run_id,
                )
        with self._lock:
            log = self._new_log(0)
            try:
                with self._transaction():
                    if self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                        raise run_id_taken(self, run_id)
                    started = time.time()
                    self._db.execute(
                        "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial, "
                        "log, metadata, lease) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                        (
                            run_id,
                            flow,
                            graph,
                            started,
                            owner,
                            initial,
                            log and log.path.name,
                            kept,
                            self._clock() + self.lease,
                        ),
                    )
            except BaseException:
                if log is not None:
                    log.close()
                raise
            if log is not None:
                self._logs[run_id] = log
            self._hold(run_id, owner)
            return RunRecord(
                run_id, flow, "running", started, owner=owner, metadata=json.loads(kept)
            )

    @_guarded("resume {run}", "; then resume it again")
    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`): a run whose
        owner's lease expired, or whose owner's process on this host is gone.

        Raises:
            StoreError: Also if the run's log (its latest checkpoints) cannot
                be read; the run is then left as it was.
        """
        check_run_id(self, run_id)
        check_owner(self, run_id, owner)
        with self._lock:
            self._fold_all()
            new: RunLog | None = None
            try:
                with self._transaction():
                    row = self._row(run_id)
                    record = _record(row)
                    alive = record.status == "running" and self._alive(record, row[13])
                    lease_left = None if row[13] is None else row[13] - self._clock()
                    check_claim(record, owner, alive, lease_left)
                    # What the run's last process logged and did not fold: in first.
                    folded, old = self._db.execute(
                        "SELECT folded, log FROM runs WHERE run_id=?", (run_id,)
                    ).fetchone()
                    if old is not None:
                        logged, folded = self._read_log(run_id, old, folded)
                        self._insert(run_id, logged, folded)
                    shown = shown_status(_record(self._row(run_id)), alive)  # at its last row
                    new = self._new_log(folded)
                    self._db.execute(
                        "UPDATE runs SET status='running', owner=?, lease=?, ended=NULL, "
                        "node=NULL, error=NULL, prompt=NULL, log=? WHERE run_id=?",
                        (owner, self._clock() + self.lease, new and new.path.name, run_id),
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
            stale = self._logs.pop(run_id, None)  # of an earlier run of it here: folded
            if stale is not None:
                stale.close()
            if new is not None:
                self._logs[run_id] = new
            self._hold(run_id, owner)
            return shown, graph, initial, rows

    def _read_log(self, run_id: str, name: str, folded: int) -> tuple[list[Checkpoint], int]:
        """The rows of the run's log not in the database yet (see `read_log`)."""
        path = self._real.with_name(name)
        try:
            return read_log(path, folded)
        except OSError as error:
            what, _ = _diagnosis(error)
            raise StoreError(
                f"{self!r}: cannot read the log of run {run_id!r}, {str(path)!r}: {what} "
                f"({_said(error)}); it holds the run's latest checkpoints: make it a readable "
                "file again and resume, or move it away to resume the run without them",
                run_id=run_id,
            ) from error

    _APPEND = (
        "write checkpoints of {run}",
        "; the run stops there: once the store works again, resume it",
    )

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically, after those already there: to the
        run's log if this object writes one, else to the database.

        Raises:
            StoreError: If a row is not a `Checkpoint` of texts and bytes, is
                larger than SQLite holds, or it cannot be written; nothing of
                ``rows`` is then kept. Also if another owner took the run over.
        """
        # Guarded by hand, not by _guarded: this is the path of every checkpoint.
        if self._closed:
            raise self._failure(self._APPEND[0], (run_id,), None, self._APPEND[1])
        if run_id in self._lost:
            raise StoreError(self._lost[run_id], run_id=run_id)
        try:
            largest = self._largest
            for row in rows:
                if len(row[6]) > largest:
                    raise StoreError(
                        f"{self!r}: a checkpoint of node {row[3]!r} holds {len(row[6]):,} "
                        f"bytes, more than SQLite holds ({largest:,}); keep large data out "
                        "of shared (a file path, a key to another store)",
                        run_id=run_id,
                    )
            with self._lock:
                log = self._logs.get(run_id)
                if log is not None and log.broken:
                    self._give_up_log(run_id)
                    log = None
                if log is None:
                    check_run_id(self, run_id)
                    check_rows(self, run_id, rows)
                    with self._transaction():
                        self._fence(run_id)
                        self._insert(run_id, rows)
                    return
                if not rows:
                    return
                try:
                    log.write(rows)  # rows it cannot encode raise before anything is written
                except OSError as error:
                    self._give_up_log(run_id)
                    what, _ = _diagnosis(error)
                    raise StoreError(
                        f"{self!r}: cannot write the log of run {run_id!r}: {what} "
                        f"({_said(error)}); this checkpoint is not kept, and the run's later "
                        "ones go to the database",
                        run_id=run_id,
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
        except StoreError:
            raise
        except Exception as error:
            check_run_id(self, run_id)
            check_rows(self, run_id, rows)  # odd input: the answer every store gives
            raise self._failure(self._APPEND[0], (run_id,), error, self._APPEND[1]) from error

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
                self._fence(run_id)
                self._insert(run_id, log.packed(self._largest), log.rank)
                self._db.execute("UPDATE runs SET log=NULL WHERE run_id=?", (run_id,))
        except sqlite3.Error as error:
            what, todo = _diagnosis(error)
            raise StoreError(
                f"{self!r}: cannot write the log of run {run_id!r}, nor the database: {what} "
                f"({_said(error)}); its checkpoints so far are kept in {str(log.path)!r}, for "
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
            _TakenOver: If another owner has the run now (the log is dropped).
        """
        log = self._logs[run_id]
        if not log.count:
            return
        with self._transaction():
            self._fence(run_id)
            self._insert(run_id, log.packed(self._largest), log.rank)
        log.folded()

    def _fold_all(self) -> None:
        for run_id in list(self._logs):
            try:
                self._fold(run_id)
            except _TakenOver:  # that run is not this process's any more
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
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_MS}")

    @_guarded("record how {run} ended", closed_ok=True)
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
        """Record how the run ended (see `Store`); its log is folded in. This
        object runs the run no more, whether or not its end is recorded.

        Raises:
            StoreError: If the database cannot be written; the run's
                checkpoints stay in its log, for whoever resumes it. Also if
                another owner took the run over (its record is left to it).
        """
        check_run_id(self, run_id)
        check_end(self, run_id, status, ended)
        if run_id in self._lost:  # its record is the new owner's
            raise StoreError(self._lost[run_id], run_id=run_id)
        with self._lock:
            log = self._logs.get(run_id)
            recorded = False
            try:
                if self._closed:
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                with self._transaction():
                    self._fence(run_id)
                    if log is not None:
                        self._insert(run_id, log.packed(self._largest), log.rank)
                    self._db.execute(
                        "UPDATE runs SET status=?, ended=?, node=?, error=?, prompt=?, log=NULL, "
                        "lease=NULL WHERE run_id=?",
                        (
                            status,
                            time.time() if ended is None else ended,
                            storable_text(node),
                            storable_text(error),
                            None if prompt is None else prompt_text(prompt),
                            run_id,
                        ),
                    )
                recorded = True
            except (sqlite3.Error, OSError) as failure:
                what, todo = _diagnosis(failure)
                kept = f"; its checkpoints are kept in {str(log.path)!r}" if log else ""
                raise StoreError(
                    f"{self!r}: cannot record that run {run_id!r} is {status} ({what}: "
                    f"{_said(failure)}){kept}; {todo}. Once the database can be written, the "
                    "run can be resumed",
                    run_id=run_id,
                ) from failure
            finally:
                self._let_go(run_id, keep_log=not recorded)

    @_guarded("set the metadata of {run}")
    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the run's (see `Store`)."""
        check_run_id(self, run_id)
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

    @_guarded("read {run}")
    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        check_run_id(self, run_id)
        with self._lock:
            self._fold_all_if_free()  # what this process wrote shows at once
            return self._shown(self._row(run_id))

    @_guarded("list the runs")
    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._lock:
            self._fold_all_if_free()
            rows = self._db.execute(f"{self._RECORD} ORDER BY r.started").fetchall()
        records = [self._shown(row) for row in rows]
        return [record for record in records if status is None or record.status == status]

    # -- events -------------------------------------------------------------------

    @_guarded("keep events of {run}")
    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep some of a run's events (JSON lines), after those already kept."""
        check_run_id(self, run_id)
        for text in records:
            check_text(self, run_id, "an event", text)
        with self._lock, self._transaction():
            if not self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                raise no_run(self, run_id)
            self._db.executemany(
                "INSERT INTO events (run_id, event) VALUES (?, ?)",
                [(run_id, text) for text in records],
            )

    @_guarded("read the events of {run}")
    def events(self, run_id: str) -> list[str]:
        """A run's kept events, in order (JSON lines)."""
        check_run_id(self, run_id)
        with self._lock:
            self._row(run_id)
            return [
                row[0]
                for row in self._db.execute(
                    "SELECT event FROM events WHERE run_id=? ORDER BY seq", (run_id,)
                )
            ]


def _heartbeat(
    ref: weakref.ref[SQLiteStore], stop: threading.Event, every: float, path: Path
) -> None:
    """A store's heartbeat: every ``every`` seconds, renew the leases of the
    runs this process runs through it, on a connection of its own (so a busy
    database never holds up a checkpoint), until the store is closed, gone,
    or runs nothing (it starts again with the next run)."""
    db: sqlite3.Connection | None = None
    try:
        while not stop.wait(every):
            store = ref()
            if store is None:
                return
            try:
                if db is None:
                    db = sqlite3.connect(path, isolation_level=None, timeout=_BUSY_MS / 1000)
            except Exception:  # tried again at the next beat
                continue
            if not store._renew_leases(db):
                with store._held_lock:
                    if not any(owner == this_owner() for owner in store._held.values()):
                        store._beat = None
                        return
            del store
    finally:
        if db is not None:
            db.close()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``), so a writer holds the
    write lock from the start and concurrent claims are serialized."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._rollback()
            return
        try:
            self.db.execute("COMMIT")
        except BaseException:
            self._rollback()  # a COMMIT that failed may leave it open
            raise

    def _rollback(self) -> None:
        """Roll back what is still open: a failed statement (a full disk) may
        have ended the transaction already; the error to tell is its own."""
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _said(error: BaseException) -> str:
    """What an error says, with its kind."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _diagnosis(error: BaseException) -> tuple[str, str]:
    """What a failure of SQLite or the disk means, in words, and what to do."""
    name = getattr(error, "sqlite_errorname", None) or _ERROR_NAMES.get(str(error), "")
    number = getattr(error, "errno", None)
    if isinstance(error, sqlite3.ProgrammingError) and "closed" in str(error):
        return "the store is closed", "open the file again: SQLiteStore(path)"
    if name.startswith("SQLITE_FULL") or number in _FULL:
        return (
            "the disk is full, or the database reached its size limit",
            "free some space",
        )
    if name.startswith("SQLITE_READONLY") or number in _READ_ONLY:
        return (
            "the database cannot be written (a read-only file, directory or disk)",
            "make it writable",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (
            f"another connection held the database for over {_BUSY_MS // 1000} s",
            "try again when it is free",
        )
    if name.startswith("SQLITE_CANTOPEN") or isinstance(
        error, (IsADirectoryError, NotADirectoryError, FileNotFoundError)
    ):
        return (
            "a file cannot be opened (a directory in its place, or its directory is gone)",
            "put the file back where it was",
        )
    if name.startswith("SQLITE_IOERR") or number == errno.EIO:
        return "the disk failed to read or write", "check the disk"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return "the database file is damaged", "restore it from a copy"
    if name.startswith("SQLITE_TOOBIG") or isinstance(error, sqlite3.DataError):
        return (
            "a value is larger than SQLite holds",
            "keep large data out of shared (a file path, a key to another store)",
        )
    if isinstance(error, UnicodeError):
        return "a text is not valid Unicode (a lone surrogate)", "give valid text"
    return "the store failed", "check the database file and its directory"


# SQLite's words for its errors, for an error that does not carry its name.
_ERROR_NAMES = {
    "database or disk is full": "SQLITE_FULL",
    "attempt to write a readonly database": "SQLITE_READONLY",
    "database is locked": "SQLITE_BUSY",
    "disk I/O error": "SQLITE_IOERR",
    "unable to open database file": "SQLITE_CANTOPEN",
    "database disk image is malformed": "SQLITE_CORRUPT",
    "file is not a database": "SQLITE_NOTADB",
    "string or blob too big": "SQLITE_TOOBIG",
}
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EACCES, errno.EPERM, errno.EROFS}


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
