"""The SQLite store's tables, and opening its file: made with them when new,
brought up to this schema when an older braidflow wrote it, refused otherwise.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from .._errors import StoreError
from ._sqlite_failures import BUSY_MS, Transaction, diagnosis, said

__all__ = ["SCHEMA_VERSION", "open_database"]

# 2: runs.folded and runs.log, for run logs; 3: runs.metadata, and runs.lease
# (when the lease of a running run's owner expires, by the owner's clock);
# 4: checkpoints.started and .ended (when each step began and ended);
# 5: the cache table (results of nodes with a result cache, by key);
# 6: the slots of shared limiters (``_slots``).
SCHEMA_VERSION = 7

_CACHE_TABLE = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    stored REAL NOT NULL,
    value BLOB NOT NULL
);
"""

# What a run started with, written once: in a table of its own, so that an
# update of a run's record (a lease renewed, its end) does not write it again
# (SQLite rewrites a whole row, a state of megabytes too).
_STARTS_TABLE = """
CREATE TABLE IF NOT EXISTS run_starts (
    run_id TEXT PRIMARY KEY,
    graph TEXT NOT NULL,
    initial BLOB NOT NULL
);
"""

_LIMITER_TABLES = """
CREATE TABLE IF NOT EXISTS braidflow_limiter_slots (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    lease_ends REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS braidflow_limiter_slots_of ON braidflow_limiter_slots (name);
CREATE TABLE IF NOT EXISTS braidflow_limiter_starts (name TEXT NOT NULL, started REAL NOT NULL);
CREATE INDEX IF NOT EXISTS braidflow_limiter_starts_of ON braidflow_limiter_starts (name, started);
"""

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS braidflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    flow TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    node TEXT,
    error TEXT,
    prompt TEXT,
    owner TEXT,
    folded INTEGER NOT NULL DEFAULT 0,
    log TEXT,
    metadata TEXT,
    lease REAL
);
"""
    + _STARTS_TABLE
    + """CREATE TABLE IF NOT EXISTS checkpoints (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    frame TEXT NOT NULL,
    position INTEGER NOT NULL,
    node TEXT NOT NULL,
    node_class TEXT NOT NULL,
    action TEXT,
    payload BLOB NOT NULL,
    started REAL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS checkpoints_of_run ON checkpoints (run_id, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_of_run ON events (run_id, seq);
"""
    + _CACHE_TABLE
    + _LIMITER_TABLES
)


def open_database(
    path: Path, *, durable: bool, lease_ends: Callable[[], float], read_only: bool = False
) -> sqlite3.Connection:
    """A connection to the store's file at ``path`` (usable from any thread),
    made with its tables if missing and brought up to this schema.

    Args:
        path: The database file.
        durable: Sync every commit to disk (``synchronous=FULL``).
        lease_ends: When a lease taken now ends: what a run marked running
            gets when the file is brought up from before leases.
        read_only: Open a store that exists, of this schema, for reading only:
            SQLite itself refuses every write on the connection.

    Raises:
        StoreError: If the file cannot be opened, is not a braidflow store, or
            was written by a newer version of braidflow; if ``read_only``,
            also if it is missing or of an older schema.
    """
    if read_only:
        return _open_to_read(path)
    if not path.parent.is_dir():
        raise StoreError(
            f"SQLiteStore: the directory of {str(path)!r} does not exist; create it first"
        )
    if path.is_dir():
        raise StoreError(
            f"SQLiteStore: {str(path)!r} is a directory; give the path of a file "
            "(it is made if missing)"
        )
    try:
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_MS / 1000
        )
    except (sqlite3.Error, OSError) as error:
        raise _cannot_open(path, error) from None
    try:
        _prepare(db, path, durable, lease_ends)
    except BaseException as error:
        db.close()
        if isinstance(error, (sqlite3.Error, OSError, ValueError)):
            raise _cannot_open(path, error) from None
        raise
    return db


def _open_to_read(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise StoreError(f"SQLiteStore: no store at {str(path)!r} to read")
    try:
        # mode=ro: a reader that cannot write, so that it changes nothing;
        # in WAL mode it never waits for a writer, nor makes one wait.
        db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_MS / 1000,
        )
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "braidflow_meta" not in tables:
            db.close()
            raise StoreError(
                f"SQLiteStore: {str(path)!r} is not a braidflow store (it has tables "
                f"{sorted(tables)}); use another file"
            )
        row = db.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
    except (sqlite3.Error, OSError, ValueError) as error:
        raise _cannot_open(path, error) from None
    version = int(row[0]) if row else 0
    if version != SCHEMA_VERSION:
        db.close()
        newer = version > SCHEMA_VERSION
        raise StoreError(
            f"SQLiteStore: {str(path)!r} was written by "
            f"{'a newer' if newer else 'an older'} braidflow (store schema {version}, this "
            f"one reads {SCHEMA_VERSION}); "
            + ("upgrade braidflow" if newer else "open it once to write (it is brought up to date)")
        )
    return db


def _cannot_open(path: Path, error: BaseException) -> StoreError:
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or isinstance(error, ValueError):
        return StoreError(
            f"SQLiteStore: {str(path)!r} is not a braidflow store (SQLite says: {error}); "
            "use another file"
        )
    what, todo = diagnosis(error)
    return StoreError(f"SQLiteStore: cannot open {str(path)!r}: {what} ({said(error)}); {todo}")


def _prepare(
    db: sqlite3.Connection, path: Path, durable: bool, lease_ends: Callable[[], float]
) -> None:
    """Set the connection up, and make or check the tables (see `open_database`)."""
    db.execute("PRAGMA journal_mode=WAL")
    # WAL without syncs still hands each commit to the OS before returning:
    # a killed process loses nothing. Power loss needs FULL.
    db.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "braidflow_meta" not in tables:
        raise StoreError(
            f"SQLiteStore: {str(path)!r} is an SQLite file but not a braidflow store "
            f"(it has tables {sorted(tables)}); use another file"
        )
    if not tables:
        db.executescript(_SCHEMA)  # idempotent; executescript commits by itself
    with Transaction(db):
        row = db.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO braidflow_meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"SQLiteStore: {str(path)!r} was written by a newer braidflow (store "
                f"schema {row[0]}, this one reads {SCHEMA_VERSION}); upgrade braidflow"
            )
        columns = {column[1] for column in db.execute("PRAGMA table_info(runs)")}
        for column in db.execute("PRAGMA table_info(checkpoints)"):
            columns.add(f"checkpoints.{column[1]}")
        older = int(row[0] if row else SCHEMA_VERSION) < SCHEMA_VERSION
        made_before_caches = bool(tables) and "cache" not in tables
        made_before_limiters = bool(tables) and "braidflow_limiter_slots" not in tables
        if (
            older
            or not {"lease", "checkpoints.ended"} <= columns
            or "initial" in columns
            or made_before_caches
            or made_before_limiters
        ):
            _migrate(db, columns, lease_ends)


def _migrate(db: sqlite3.Connection, columns: set[str], lease_ends: Callable[[], float]) -> None:
    """Bring a store written by an older braidflow up to this schema (in
    the caller's transaction); ``columns``: those ``runs`` has, and those
    ``checkpoints`` has as ``checkpoints.NAME``."""
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
        db.execute("UPDATE runs SET lease=? WHERE status='running'", (lease_ends(),))
    if "checkpoints.ended" not in columns:  # rows written before have no times
        db.execute("ALTER TABLE checkpoints ADD COLUMN started REAL")
        db.execute("ALTER TABLE checkpoints ADD COLUMN ended REAL")
    if "initial" in columns:  # before run_starts: graph and initial in each run's record
        _move_starts(db)
    db.execute(_CACHE_TABLE)  # if missing: a store made before result caches
    for statement in _LIMITER_TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute("UPDATE braidflow_meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


def _move_starts(db: sqlite3.Connection) -> None:
    """Move each run's graph and initial state out of ``runs`` into
    ``run_starts``, and make ``runs`` again without them (SQLite drops a
    column only by making the table anew)."""
    db.execute(_STARTS_TABLE)
    db.execute("INSERT OR REPLACE INTO run_starts SELECT run_id, graph, initial FROM runs")
    kept = [
        column[1]
        for column in db.execute("PRAGMA table_info(runs)")
        if column[1] not in ("graph", "initial")
    ]
    listed = ", ".join(kept)
    runs = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS runs (") :]
    runs = runs[: runs.index(");") + 2].replace("IF NOT EXISTS runs", "runs_without_starts")
    db.execute(runs)
    db.execute(f"INSERT INTO runs_without_starts ({listed}) SELECT {listed} FROM runs")
    db.execute("DROP TABLE runs")
    db.execute("ALTER TABLE runs_without_starts RENAME TO runs")
