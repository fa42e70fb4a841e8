"""PostgresStore: durable runs in a PostgreSQL database (psycopg 3), shared by
many processes on many machines: runs, checkpoints, events and limiter slots.

Every checkpoint is committed before the engine goes on. A run a process
runs has a lease that a thread of the store renews; when the process dies the
lease expires, and any process on any machine may then resume the run, never
before. Tables are made on first use (``_postgres_schema``).
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

try:
    import psycopg
except ImportError as missing:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "PostgresStore needs psycopg 3: pip install 'braidflow[postgres]'"
    ) from missing

from .._after_fork import remade_in_children, set_aside
from .._errors import StoreError
from ._base import (
    CacheEntry,
    Checkpoint,
    RunRecord,
    TakenOver,
    check_cache_entry,
    check_cache_key,
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
from ._owners import hold_claimed, holds, owner_alive
from ._owners import release as release_held
from ._postgres_leases import LEASE, PostgresLeases, _str, _text
from ._postgres_schema import (
    SCHEMA_VERSION,
    connect,
    diagnosis,
    open_connection,
    said,
    shown_dsn,
)
from ._postgres_slots import PostgresSlots
from ._store_limiters import LimiterShelf, MakesLimiters

__all__ = ["LEASE", "SCHEMA_VERSION", "PostgresStore"]

_F = TypeVar("_F", bound=Callable[..., Any])

# A run's record, with its last checkpoint (where a run that goes on is).
_RECORD = (
    "SELECT r.run_id, r.flow, r.status, r.started, r.ended, r.node, r.error, r.prompt, "
    "r.owner, c.kind, c.frame, c.node, r.metadata, r.lease FROM braidflow_runs r "
    "LEFT JOIN LATERAL (SELECT kind, frame, node FROM braidflow_checkpoints "
    "WHERE run_id = r.run_id ORDER BY seq DESC LIMIT 1) c ON true"
)
# A checkpoint's rows in one statement, so in one round trip: all or none, in
# order, and only while the run is the writer's (its record held meanwhile).
_APPEND = (
    "INSERT INTO braidflow_checkpoints (run_id, kind, frame, position, node, node_class, "
    "action, payload, started, ended) "
    "SELECT r.run_id, t.kind, t.frame, t.position, t.node, t.node_class, t.action, "
    "t.payload, t.started, t.ended FROM (SELECT run_id FROM braidflow_runs WHERE run_id=%s "
    "AND (%s::bytea IS NULL OR owner=%s) FOR SHARE) r, unnest(%s::bytea[], %s::bytea[], "
    "%s::bigint[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[], %s::float8[], "
    "%s::float8[]) WITH ORDINALITY "
    "AS t(kind, frame, position, node, node_class, action, payload, started, ended, n) "
    "ORDER BY t.n"
)


def _guarded(doing: str, then: str = "") -> Callable[[_F], _F]:
    """A store method whose every failure is a StoreError naming the store,
    what it did (``{run}``: the run it is given), what happened and what to do."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def checked(self: PostgresStore, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except StoreError:
                raise
            except Exception as error:
                raise self._failure(doing, args, error, then) from error

        return cast(_F, checked)

    return wrap


class PostgresStore(PostgresLeases, MakesLimiters):
    """A store in a PostgreSQL database: durable runs that many processes, on
    many machines, run and resume (``pip install 'braidflow[postgres]'``),
    and a `CacheStore` for result caches (`braidflow.Cache`).

    Its tables (``braidflow_*``) are made in the database on first use, and
    brought up to date when a newer braidflow opens it; the database may hold
    other tables. One connection per store object, usable from any thread;
    each checkpoint is one transaction, committed before the run goes on (one
    round trip to the server per batch of items finishing together).

    While this process runs a run, a thread of the store renews the run's
    lease every ``lease / 3`` seconds. A run whose lease expired is run by
    nobody: any process may resume it, on any machine; a run whose lease has
    not expired is refused to every other process. (On the same host, a
    run whose process is gone may be resumed at once.) If the connection is
    lost, the call fails with a `StoreError` naming the store, and the next
    call connects again: a run stopped by it can be resumed once the
    database is back.

    Args:
        dsn: The database, as psycopg takes it: ``"host=db.internal
            dbname=runs user=app"`` or ``"postgresql://app@db.internal/runs"``.
        serializer: How the values of the runs it starts are written:
            ``"json"`` (default) or ``"pickle"`` (any picklable object, but
            only for a trusted database). A run keeps its own, and is read
            and resumed with it through a store object of either.
        durable: Also survive the database server crashing: each checkpoint
            returns only once the server has synced it to disk, at many times
            the cost. By default a checkpoint returns once the server has it
            (``synchronous_commit=off`` for the store's connection): a process
            killed loses nothing; a server crash loses its last fraction of a
            second of checkpoints, which the resumed run does again.
        lease: Seconds a run counts as running after its owner last renewed
            it (default 30). Every process sharing the database should use
            the same, and machines' clocks should agree to well within it.
        clock: What gives the time leases are kept in, seconds since the
            epoch (default ``time.time``); tests give one they move by hand.
        connect_timeout: Seconds to wait for the server when connecting.
        read_only: Only read: the server refuses every write of the store's
            connection (a `StoreError`), and its tables are not made, only
            checked. What ``braidflow ui`` looks with.

    Raises:
        StoreError: If the server cannot be reached, or its tables were
            written by a newer version of braidflow; if ``read_only``, also
            if it has none, or tables of an older version.
    """

    def __init__(
        self,
        dsn: str,
        *,
        serializer: str = "json",
        durable: bool = False,
        lease: float = LEASE,
        clock: Callable[[], float] | None = None,
        connect_timeout: float = 10.0,
        read_only: bool = False,
    ) -> None:
        check_serializer("PostgresStore", serializer)
        if not isinstance(dsn, str):
            raise StoreError(f"PostgresStore: dsn={dsn!r} must be a string (a libpq DSN or URL)")
        if (
            isinstance(lease, bool)
            or not isinstance(lease, (int, float))
            or not math.isfinite(lease)
            or lease <= 0
        ):
            raise StoreError(f"PostgresStore: lease={lease!r} must be a number of seconds above 0")
        if clock is not None and not callable(clock):
            raise StoreError(
                f"PostgresStore: clock={clock!r} must be a function that gives the time in "
                "seconds since the epoch"
            )
        self.dsn = dsn
        self.serializer = serializer
        self.lease = float(lease)
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._timeout = connect_timeout
        self._dsn_shown = shown_dsn(dsn)
        self._closed = False
        self._lock = threading.RLock()
        self._durable = durable
        self._read_only = read_only
        self._conn: psycopg.Connection[Any] | None = connect(
            dsn, repr(self), connect_timeout=connect_timeout, durable=durable, read_only=read_only
        )
        info = self._conn.info
        self._location = f"postgresql://{info.host}:{info.port}/{info.dbname}"
        self._start_leases()
        self._limiters = LimiterShelf()
        remade_in_children(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self._dsn_shown!r})"

    def _after_fork(self) -> None:
        """In a child made by ``os.fork``: no connection yet (the next call
        connects: the inherited one is the parent's session), a lock no thread
        of the parent holds, and no run held (the runs and their heartbeat
        are the parent's); the next run here gets its own."""
        set_aside(self._conn)  # closing it would end the parent's session
        self._conn = None
        self._lock = threading.RLock()
        self._start_leases()
        if self._closed:
            self._wake.set()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, and the limiters made by this store. Runs
        still going stop at their next checkpoint, and can be resumed once
        their lease expires. Closing again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            self._limiters.close()
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _new_slots(self) -> PostgresSlots:
        return PostgresSlots(self.dsn, self._clock, self, connect_timeout=self._timeout)

    # -- the connection ----------------------------------------------------------------

    def _failure(
        self, doing: str, args: tuple[Any, ...], error: BaseException | None, then: str = ""
    ) -> StoreError:
        run_id = args[0] if "{run}" in doing and args and isinstance(args[0], str) else None
        doing = doing.replace("{run}", f"run {run_id!r}")
        if error is None:
            what, todo = "the store is closed", "open it again: PostgresStore(dsn)"
        else:
            what, todo = diagnosis(error)
            what = f"{what} ({said(error)})"
        return StoreError(f"{self!r}: cannot {doing}: {what}; {todo}{then}", run_id=run_id)

    @contextmanager
    def _transaction(self, begin: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """The connection, in a transaction (under the lock), or for one
        statement (its own transaction) unless ``begin``; a connection that
        broke is replaced first, so a call after an outage works again."""
        with self._lock:
            if self._closed:
                raise self._failure("use the store", (), None)
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                if conn is not None:
                    conn.close()
                self._conn = None
                # Its tables were made when it first connected: only connect.
                conn = self._conn = open_connection(
                    self.dsn,
                    connect_timeout=self._timeout,
                    durable=self._durable,
                    read_only=self._read_only,
                )
            if not begin:
                yield conn
                return
            with conn.transaction():
                yield conn

    def _alive(self, record: RunRecord, lease: float | None) -> bool:
        held = holds(self._location, record.run_id)
        return owner_alive(record.owner, held=held, lease=lease or 0.0, now=self._clock())

    def _shown(self, row: tuple[Any, ...]) -> RunRecord:
        record = _record(row)
        if record.status != "running":
            return record
        return shown_status(record, self._alive(record, row[13]))

    def _row(self, conn: psycopg.Connection[Any], run_id: str, lock: str = "") -> tuple[Any, ...]:
        row = conn.execute(f"{_RECORD} WHERE r.run_id=%s {lock}", (_text(run_id),)).fetchone()
        if row is None:
            raise no_run(self, run_id)
        return cast(tuple[Any, ...], row)

    def _checkpoints(self, conn: psycopg.Connection[Any], run_id: str) -> list[Checkpoint]:
        return [
            Checkpoint(
                bytes(kind).decode(),
                bytes(frame).decode(),
                position,
                bytes(node).decode(),
                bytes(node_class).decode(),
                _str(action),
                bytes(payload),
                started,
                ended,
            )
            for kind, frame, position, node, node_class, action, payload, started, ended in (
                conn.execute(
                    "SELECT kind, frame, position, node, node_class, action, payload, started, "
                    "ended FROM braidflow_checkpoints WHERE run_id=%s ORDER BY seq",
                    (_text(run_id),),
                )
            )
        ]

    # -- runs ----------------------------------------------------------------------------

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
        """Record a new run as running (see `Store`)."""
        check_new_run(self, run_id, flow, graph, initial, owner)
        kept = metadata_text(self, run_id, metadata or {})
        started = time.time()
        with self._transaction() as conn:
            made = conn.execute(
                "INSERT INTO braidflow_runs (run_id, flow, graph, status, started, owner, "
                "initial, metadata, lease) VALUES (%s, %s, %s, 'running', %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id) DO NOTHING RETURNING 1",
                (
                    _text(run_id),
                    _text(flow),
                    _text(graph),
                    started,
                    _text(owner),
                    initial,
                    kept,
                    self._clock() + self.lease,
                ),
            ).fetchone()
            if made is None:
                raise run_id_taken(self, run_id)
        self._hold(run_id, owner)
        return RunRecord(run_id, flow, "running", started, owner=owner, metadata=json.loads(kept))

    @_guarded("resume {run}", "; then resume it again")
    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`): one whose owner's
        lease expired, or whose owner's process on this host is gone. Of
        processes claiming at once, one gets it; the others are refused."""
        check_run_id(self, run_id)
        check_owner(self, run_id, owner)
        noted = False
        try:
            with self._transaction() as conn:
                row = self._row(conn, run_id, "FOR UPDATE OF r")
                record = _record(row)
                alive = record.status == "running" and self._alive(record, row[13])
                lease_left = None if row[13] is None else row[13] - self._clock()
                check_claim(record, owner, alive, lease_left)
                shown = shown_status(record, alive)
                conn.execute(
                    "UPDATE braidflow_runs SET status='running', owner=%s, lease=%s, ended=NULL, "
                    "node=NULL, error=NULL, prompt=NULL WHERE run_id=%s",
                    (_text(owner), self._clock() + self.lease, _text(run_id)),
                )
                graph, initial = conn.execute(
                    "SELECT graph, initial FROM braidflow_runs WHERE run_id=%s", (_text(run_id),)
                ).fetchone()  # type: ignore[misc]
                rows = self._checkpoints(conn, run_id)
                noted = hold_claimed(self._location, run_id, self, owner)
        except BaseException:
            if noted:
                release_held(self._location, run_id, self)
            raise
        self._hold(run_id, owner)
        return shown, bytes(graph).decode(), bytes(initial), rows

    @_guarded("read {run}")
    def read(self, run_id: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """A run's record, graph, initial state and checkpoints, changing
        nothing (see `Store`), as of one moment."""
        check_run_id(self, run_id)
        with self._transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = self._row(conn, run_id)
            graph, initial = conn.execute(
                "SELECT graph, initial FROM braidflow_runs WHERE run_id=%s", (_text(run_id),)
            ).fetchone()  # type: ignore[misc]
            rows = self._checkpoints(conn, run_id)
        return self._shown(row), bytes(graph).decode(), bytes(initial), rows

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows in one statement (all or none, one round trip
        to the server), after those already there.

        Raises:
            StoreError: If a row is not a `Checkpoint` of texts and bytes, or
                the database cannot be written (the run stops there: resume it
                once the database is back); also if another owner took the
                run over.
        """
        if self._closed:
            raise self._failure("write checkpoints of {run}", (run_id,), None)
        if run_id in self._lost:
            raise StoreError(self._lost[run_id], run_id=run_id)
        check_run_id(self, run_id)
        check_rows(self, run_id, rows)
        key = _text(run_id)
        try:
            with self._transaction(begin=False) as conn:
                if rows:
                    owner = _text(self._held.get(run_id))
                    written = conn.execute(_APPEND, (key, owner, owner, *_columns(rows)))
                    if written.rowcount == len(rows):
                        return
                self._fence(conn, run_id)  # says why nothing was written
        except StoreError:
            raise
        except Exception as error:
            raise self._failure(
                "write checkpoints of {run}",
                (run_id,),
                error,
                "; the run stops there: once the database is back, resume it",
            ) from error

    @_guarded("record how {run} ended", "; once the database is back, the run can be resumed")
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
        """Record how the run ended (see `Store`). This object runs the run no
        more, whether or not its end is recorded.

        Raises:
            StoreError: If the database cannot be written, or another owner
                took the run over (its record is left to it).
        """
        check_run_id(self, run_id)
        check_end(self, run_id, status, ended)
        if run_id in self._lost:
            raise StoreError(self._lost[run_id], run_id=run_id)
        try:
            with self._transaction() as conn:
                self._fence(conn, run_id)
                conn.execute(
                    "UPDATE braidflow_runs SET status=%s, ended=%s, node=%s, error=%s, "
                    "prompt=%s, lease=NULL WHERE run_id=%s",
                    (
                        status,
                        time.time() if ended is None else ended,
                        _text(storable_text(node)),
                        _text(storable_text(error)),
                        None if prompt is None else prompt_text(prompt),
                        _text(run_id),
                    ),
                )
        finally:
            self.release(run_id)

    @_guarded("set the metadata of {run}")
    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the run's (see `Store`)."""
        check_run_id(self, run_id)
        given = json.loads(metadata_text(self, run_id, metadata))
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT metadata FROM braidflow_runs WHERE run_id=%s FOR UPDATE", (_text(run_id),)
            ).fetchone()
            if row is None:
                raise no_run(self, run_id)
            merged = merged_metadata(json.loads(row[0]), given)
            conn.execute(
                "UPDATE braidflow_runs SET metadata=%s WHERE run_id=%s",
                (metadata_text(self, run_id, merged), _text(run_id)),
            )

    @_guarded("read {run}")
    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        check_run_id(self, run_id)
        with self._transaction() as conn:
            row = self._row(conn, run_id)
        return self._shown(row)

    @_guarded("list the runs")
    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._transaction() as conn:
            rows = conn.execute(f"{_RECORD} ORDER BY r.started, r.created").fetchall()
        records = [self._shown(row) for row in rows]
        return [record for record in records if status is None or record.status == status]

    # -- the result cache (CacheStore) -------------------------------------------------

    @_guarded("read the result cache")
    def cache_get(self, key: str) -> CacheEntry | None:
        """The entry kept under ``key``, or ``None`` (see `CacheStore`)."""
        check_cache_key(self, key)
        with self._transaction(begin=False) as conn:
            row = conn.execute(
                "SELECT value, stored, node FROM braidflow_cache WHERE key=%s", (key.encode(),)
            ).fetchone()
        return None if row is None else CacheEntry(bytes(row[0]), row[1], bytes(row[2]).decode())

    @_guarded("write to the result cache")
    def cache_put(self, key: str, entry: CacheEntry) -> None:
        """Keep ``entry`` under ``key``, in place of any entry kept there (one
        statement: whole or absent, for every process at once)."""
        check_cache_entry(self, key, entry)
        value, stored, node = entry
        with self._transaction(begin=False) as conn:
            conn.execute(
                "INSERT INTO braidflow_cache (key, node, stored, value) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET node=excluded.node, stored=excluded.stored, "
                "value=excluded.value",
                (key.encode(), node.encode(), float(stored), bytes(value)),
            )

    # -- events ------------------------------------------------------------------------

    @_guarded("keep events of {run}")
    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep some of a run's events (JSON lines), after those already kept."""
        check_run_id(self, run_id)
        for text in records:
            check_text(self, run_id, "an event", text)
        if run_id in self._lost:  # another owner runs it: its events are the new owner's
            raise TakenOver(self._lost[run_id], run_id=run_id)
        with self._transaction() as conn:
            self._fence(conn, run_id)  # no such run, or taken over since
            if records:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO braidflow_events (run_id, event) VALUES (%s, %s)",
                        [(_text(run_id), text.encode()) for text in records],
                    )

    @_guarded("read the events of {run}")
    def events(self, run_id: str) -> list[str]:
        """A run's kept events, in order (JSON lines)."""
        check_run_id(self, run_id)
        with self._transaction() as conn:
            self._row(conn, run_id)
            return [
                bytes(event).decode()
                for (event,) in conn.execute(
                    "SELECT event FROM braidflow_events WHERE run_id=%s ORDER BY seq",
                    (_text(run_id),),
                )
            ]


def _columns(rows: list[Checkpoint]) -> list[list[Any]]:
    """Checkpoint rows as ``_APPEND`` takes them: a list per column, texts as bytes."""
    return [
        [row.kind.encode() for row in rows],
        [row.frame.encode() for row in rows],
        [int(row.position) for row in rows],
        [row.node.encode() for row in rows],
        [row.node_class.encode() for row in rows],
        [_text(row.action) for row in rows],
        [bytes(row.payload) for row in rows],
        [None if row.started is None else float(row.started) for row in rows],
        [None if row.ended is None else float(row.ended) for row in rows],
    ]


def _record(row: tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of ``_RECORD``."""
    prompt = json.loads(row[7]) if row[7] is not None else None
    node = _str(row[5])
    if node is None and row[9] is not None:
        node = row_path(bytes(row[9]).decode(), bytes(row[10]).decode(), bytes(row[11]).decode())
    return RunRecord(
        bytes(row[0]).decode(),
        bytes(row[1]).decode(),
        row[2],
        row[3],
        row[4],
        node,
        _str(row[6]),
        prompt,
        _str(row[8]),
        json.loads(row[12]) if row[12] else {},
    )
