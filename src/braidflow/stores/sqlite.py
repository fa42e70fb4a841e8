"""SQLiteStore: durable runs in one SQLite file (stdlib ``sqlite3``, WAL mode):
the store's own API, its runs, checkpoints, metadata and events.

Every checkpoint reaches the operating system before the engine goes on, so
a process killed at any point loses no finished node and no finished item:
it goes to a log of the run, folded into the database in batches
(``_sqlite_folding``); ``durable=True`` commits each checkpoint to the
database and syncs it to disk, which survives power loss too. A run this
process runs has a lease that a thread renews while it runs; once it
expires any process, on any host, may resume the run (``_sqlite_leases``).
Every failure comes out as a `StoreError` that says what happened and what
to do (``_sqlite_failures``); the tables are in ``_sqlite_schema``, and a
result cache's entries in ``_sqlite_cache``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from .._after_fork import remade_in_children, set_aside
from .._errors import StoreError
from ._base import (
    Checkpoint,
    RunRecord,
    TakenOver,
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
from ._owners import hold_claimed
from ._owners import release as release_held
from ._runlog import RunLog, unpack
from ._sqlite_cache import CacheTable
from ._sqlite_failures import Transaction, diagnosis, failure, guarded, said
from ._sqlite_folding import LogFolder, remove_log
from ._sqlite_leases import LEASE
from ._sqlite_schema import SCHEMA_VERSION, open_database
from ._sqlite_slots import SQLiteSlots
from ._store_limiters import LimiterShelf, MakesLimiters

__all__ = ["LEASE", "SCHEMA_VERSION", "SQLiteStore"]

# A run's log is folded into the database once it holds this many rows or
# bytes, or has held rows for this long: the database then lags the run by
# at most about that much (the log holds the rest; folding it again is safe).
_FOLD_ROWS = 1000
_FOLD_BYTES = 4 << 20
_FOLD_SECONDS = 1.0
# How many times `read` tries for a consistent view while another process folds.
_READ_TRIES = 20
_SELECT_CHECKPOINTS = (
    "SELECT kind, frame, position, node, node_class, action, payload, started, ended "
    "FROM checkpoints WHERE run_id=? ORDER BY seq"
)


class SQLiteStore(CacheTable, LogFolder, MakesLimiters):
    """A store in one SQLite file: the embedded default for durable runs, and
    a `CacheStore` for result caches (`braidflow.Cache`).

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
        serializer: How the values of the runs it starts are written:
            ``"json"`` (default) or ``"pickle"`` (any picklable object, but
            only for trusted files). A run keeps its own, and is read and
            resumed with it through a store object of either.
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
        read_only: Only read the file (which must exist): every write is
            refused with a `StoreError`, and reading never waits for a run
            that writes, nor makes it wait. What ``braidflow ui`` looks with.

    Raises:
        StoreError: If the file cannot be opened, is not a braidflow store, or
            was written by a newer version of braidflow; if ``read_only``,
            also if it is missing or was written by an older braidflow.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: str = "json",
        durable: bool = False,
        lease: float = LEASE,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
    ) -> None:
        check_serializer("SQLiteStore", serializer)
        super().__init__(lease, clock)  # the lease and clock, checked; no run held yet
        self.path = Path(path)
        self.serializer = serializer
        self._lock = threading.Lock()
        self._durable = durable
        self._closed = False
        self._read_only = read_only
        self._logs: dict[str, RunLog] = {}  # the runs this object writes, by id
        # Logs go beside the real file, wherever the cwd or a symlink points.
        self._real = Path(os.path.realpath(self.path))
        self._location = str(self._real)  # where this process's record of its runs is kept
        self._db = open_database(
            self.path,
            durable=durable,
            lease_ends=lambda: self._clock() + self.lease,
            read_only=read_only,
        )
        self._largest = self._db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
        self._limiters = LimiterShelf()
        remade_in_children(self)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: a connection of its own, a lock no
        thread of the parent holds, and no run held (the runs, their logs and
        their heartbeat are the parent's); the next run here gets its own."""
        set_aside(self._db)  # the parent's: neither used nor closed here
        self._lock = threading.Lock()
        for log in self._logs.values():
            log.close(remove=False)  # this process's copy of the file; the parent writes it
        self._logs = {}
        self._start_leases()
        if self._closed:
            self._wake.set()
            return
        try:
            self._db = open_database(
                self.path,
                durable=self._durable,
                lease_ends=lambda: self._clock() + self.lease,
                read_only=self._read_only,
            )
        except Exception:  # every call says the store is closed, and to open it again
            self._closed = True
            self._wake.set()

    @guarded("close the store", closed_ok=True)
    def close(self) -> None:
        """Fold the logs of runs still going into the database, and close it.
        (Such a run then stops at its next checkpoint; it can be resumed.) A
        log that cannot be folded stays for whoever resumes the run. Closing
        again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            self._limiters.close()
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

    def _new_slots(self) -> SQLiteSlots:
        return SQLiteSlots(self.path, self._clock, self)

    def release(self, run_id: str) -> None:
        """This process no longer runs the run: it counts as running no more,
        and its lease is not renewed. The engine calls this when a run ends,
        however it ends; a run that did not record its end stays resumable,
        its log (if any) kept for whoever resumes it."""
        with self._lock:
            self._let_go(run_id, keep_log=True)

    # -- runs --------------------------------------------------------------------

    # A run's record, with where its last checkpoint was made (for a run that
    # is still going, or stopped without saying where), and its lease.
    _RECORD = (
        "SELECT r.run_id, r.flow, r.status, r.started, r.ended, r.node, r.error, r.prompt, "
        "r.owner, c.kind, c.frame, c.node, r.metadata, r.lease, r.log, r.folded FROM runs r "
        "LEFT JOIN "
        "checkpoints c ON c.seq = (SELECT MAX(seq) FROM checkpoints WHERE run_id = r.run_id)"
    )

    def _row(self, run_id: str) -> tuple[Any, ...]:
        row = self._db.execute(f"{self._RECORD} WHERE r.run_id=?", (run_id,)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        return cast(tuple[Any, ...], row)

    def _shown(self, row: tuple[Any, ...]) -> RunRecord:
        """The record of a row of ``_RECORD``, its status as listed; a run
        that has not ended is at its latest row, which may be in its log."""
        record = _record(row)
        if record.ended is None and row[5] is None and row[14] is not None:
            try:
                logged = self._read_log(record.run_id, row[14], row[15])[0]
            except StoreError:  # an unreadable log: where the database says
                logged = []
            if logged:
                last = logged[-1]
                record = replace(record, node=row_path(last.kind, last.frame, last.node))
        if record.status != "running":
            return record
        return shown_status(record, self._alive(record, row[13]))

    @guarded("record new {run}", "; then run it again")
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
                with Transaction(self._db):
                    if self._db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone():
                        raise run_id_taken(self, run_id)
                    started = time.time()
                    self._db.execute(
                        "INSERT INTO runs (run_id, flow, status, started, owner, log, metadata, "
                        "lease) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                        (
                            run_id,
                            flow,
                            started,
                            owner,
                            log and log.path.name,
                            kept,
                            self._clock() + self.lease,
                        ),
                    )
                    self._db.execute(
                        "INSERT OR REPLACE INTO run_starts VALUES (?, ?, ?)",
                        (run_id, graph, initial),
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

    @guarded("resume {run}", "; then resume it again")
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
            noted = False
            try:
                with Transaction(self._db):
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
                        "SELECT graph, initial FROM run_starts WHERE run_id=?", (run_id,)
                    ).fetchone()
                    rows = self._checkpoints(run_id)
                    noted = hold_claimed(self._location, run_id, self, owner)
            except BaseException:
                if noted:
                    release_held(self._location, run_id, self)
                if new is not None:
                    new.close()
                raise
            if old is not None:  # its rows are in the database now
                remove_log(self._real.with_name(old))
            stale = self._logs.pop(run_id, None)  # of an earlier run of it here: folded
            if stale is not None:
                stale.close()
            if new is not None:
                self._logs[run_id] = new
            self._hold(run_id, owner)
            return shown, graph, initial, rows

    @guarded("read {run}")
    def read(self, run_id: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """A run's record, graph, initial state and checkpoints, changing
        nothing (see `Store`): the rows in the database, then those in the
        run's log that are not, whichever process writes it.

        Raises:
            StoreError: Also if the run's log cannot be read.
        """
        check_run_id(self, run_id)
        with self._lock:
            for _ in range(_READ_TRIES):
                # One snapshot of the database; then the log it names. A fold
                # between the two moves rows from the log: read again.
                self._db.execute("BEGIN")
                try:
                    row = self._row(run_id)
                    folded, log, graph, initial = self._db.execute(
                        "SELECT r.folded, r.log, s.graph, s.initial FROM runs r "
                        "JOIN run_starts s ON s.run_id = r.run_id WHERE r.run_id=?",
                        (run_id,),
                    ).fetchone()
                    rows = self._checkpoints(run_id)
                finally:
                    self._db.execute("COMMIT")
                logged: list[Checkpoint] = []
                if log is not None:
                    logged = self._read_log(run_id, log, folded)[0]
                now = self._db.execute(
                    "SELECT folded, log FROM runs WHERE run_id=?", (run_id,)
                ).fetchone()
                if tuple(now) == (folded, log):
                    break
            return self._shown(row), graph, initial, rows + logged

    def _checkpoints(self, run_id: str) -> list[Checkpoint]:
        """The run's checkpoint rows in the database, packed ones unpacked, in order."""
        return [
            unpacked
            for row in self._db.execute(_SELECT_CHECKPOINTS, (run_id,))
            for unpacked in unpack(Checkpoint(*row))
        ]

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
        # Guarded by hand, not by guarded: this is the path of every checkpoint.
        if self._closed:
            raise failure(self, self._APPEND[0], (run_id,), None, self._APPEND[1])
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
                    with Transaction(self._db):
                        self._fence(run_id)
                        self._insert(run_id, rows)
                    return
                if not rows:
                    return
                try:
                    log.write(rows)  # rows it cannot encode raise before anything is written
                except OSError as error:
                    self._give_up_log(run_id)
                    what, _ = diagnosis(error)
                    raise StoreError(
                        f"{self!r}: cannot write the log of run {run_id!r}: {what} "
                        f"({said(error)}); this checkpoint is not kept, and the run's later "
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
            raise failure(self, self._APPEND[0], (run_id,), error, self._APPEND[1]) from error

    @guarded("record how {run} ended", closed_ok=True)
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
                with Transaction(self._db):
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
            except (sqlite3.Error, OSError) as fault:
                what, todo = diagnosis(fault)
                kept = f"; its checkpoints are kept in {str(log.path)!r}" if log else ""
                raise StoreError(
                    f"{self!r}: cannot record that run {run_id!r} is {status} ({what}: "
                    f"{said(fault)}){kept}; {todo}. Once the database can be written, the "
                    "run can be resumed",
                    run_id=run_id,
                ) from fault
            finally:
                self._let_go(run_id, keep_log=not recorded)

    @guarded("set the metadata of {run}")
    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the run's (see `Store`)."""
        check_run_id(self, run_id)
        given = json.loads(metadata_text(self, run_id, metadata))
        with self._lock, Transaction(self._db):
            row = self._db.execute("SELECT metadata FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise no_run(self, run_id)
            merged = merged_metadata(json.loads(row[0] or "{}"), given)
            self._db.execute(
                "UPDATE runs SET metadata=? WHERE run_id=?",
                (metadata_text(self, run_id, merged), run_id),
            )

    @guarded("read {run}")
    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        check_run_id(self, run_id)
        with self._lock:
            self._fold_all_if_free()  # what this process wrote shows at once
            return self._shown(self._row(run_id))

    @guarded("list the runs")
    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._lock:
            self._fold_all_if_free()
            rows = self._db.execute(f"{self._RECORD} ORDER BY r.started").fetchall()
        records = [self._shown(row) for row in rows]
        return [record for record in records if status is None or record.status == status]

    # -- events -------------------------------------------------------------------

    @guarded("keep events of {run}")
    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep some of a run's events (JSON lines), after those already kept."""
        check_run_id(self, run_id)
        for text in records:
            check_text(self, run_id, "an event", text)
        if run_id in self._lost:  # another owner runs it: its events are the new owner's
            raise TakenOver(self._lost[run_id], run_id=run_id)
        with self._lock, Transaction(self._db):
            self._fence(run_id)  # no such run, or taken over since
            self._db.executemany(
                "INSERT INTO events (run_id, event) VALUES (?, ?)",
                [(run_id, text) for text in records],
            )

    @guarded("read the events of {run}")
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


def _record(row: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of ``SQLiteStore._RECORD``."""
    prompt = json.loads(row[7]) if row[7] is not None else None
    node = row[5]
    if node is None and row[9] is not None:  # a packed row's node is its last row's path
        node = row[11] if row[9] == "packed" else row_path(row[9], row[10], row[11])
    metadata = json.loads(row[12]) if row[12] else {}
    return RunRecord(row[0], row[1], row[2], row[3], row[4], node, row[6], prompt, row[8], metadata)
