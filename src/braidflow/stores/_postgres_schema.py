"""The PostgreSQL store's tables, and connecting to its database: the tables
made on first use, brought up to this schema version step by step, refused
when a newer braidflow wrote them; and what a failure of the server means.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg

from .._errors import StoreError

__all__ = ["SCHEMA_VERSION", "connect", "diagnosis", "open_connection", "shown_dsn"]

# Each version's statements, applied in order to bring a database up to it.
# 1: runs, their checkpoints and events; 2: the slots of shared limiters;
# 3: the entries of result caches (`CacheStore`).
_STEPS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE braidflow_runs (
            run_id BYTEA PRIMARY KEY,
            created BIGSERIAL,
            flow BYTEA NOT NULL,
            graph BYTEA NOT NULL,
            status TEXT NOT NULL,
            started DOUBLE PRECISION NOT NULL,
            ended DOUBLE PRECISION,
            node BYTEA,
            error BYTEA,
            prompt TEXT,
            owner BYTEA,
            initial BYTEA NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            lease DOUBLE PRECISION
        )""",
        "CREATE INDEX braidflow_runs_by_start ON braidflow_runs (started, created)",
        """CREATE TABLE braidflow_checkpoints (
            seq BIGSERIAL PRIMARY KEY,
            run_id BYTEA NOT NULL,
            kind BYTEA NOT NULL,
            frame BYTEA NOT NULL,
            position BIGINT NOT NULL,
            node BYTEA NOT NULL,
            node_class BYTEA NOT NULL,
            action BYTEA,
            payload BYTEA NOT NULL,
            started DOUBLE PRECISION,
            ended DOUBLE PRECISION
        )""",
        "CREATE INDEX braidflow_checkpoints_of_run ON braidflow_checkpoints (run_id, seq)",
        """CREATE TABLE braidflow_events (
            seq BIGSERIAL PRIMARY KEY,
            run_id BYTEA NOT NULL,
            event BYTEA NOT NULL
        )""",
        "CREATE INDEX braidflow_events_of_run ON braidflow_events (run_id, seq)",
    ],
    2: [
        """CREATE TABLE braidflow_limiter_slots (
            id BIGSERIAL PRIMARY KEY,
            name BYTEA NOT NULL,
            lease_ends DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX braidflow_limiter_slots_of ON braidflow_limiter_slots (name)",
        """CREATE TABLE braidflow_limiter_starts (
            name BYTEA NOT NULL,
            started DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX braidflow_limiter_starts_of ON braidflow_limiter_starts (name, started)",
    ],
    3: [
        """CREATE TABLE braidflow_cache (
            key BYTEA PRIMARY KEY,
            node BYTEA NOT NULL,
            stored DOUBLE PRECISION NOT NULL,
            value BYTEA NOT NULL
        )""",
    ],
}
SCHEMA_VERSION = max(_STEPS)
_SCHEMA_LOCK = 0x62726169  # an advisory lock: one process at a time makes or migrates tables


def shown_dsn(dsn: str) -> str:
    """The DSN as messages and reprs show it: without its password."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<a DSN psycopg cannot read>"
    given.pop("password", None)
    return psycopg.conninfo.make_conninfo(**{key: str(value) for key, value in given.items()})


def open_connection(
    dsn: str, *, connect_timeout: float, durable: bool, read_only: bool = False
) -> psycopg.Connection[Any]:
    """A connection to the database of ``dsn`` (autocommit: each transaction
    explicit). Not ``durable``: a commit returns once the server has it, before
    the server syncs it to disk (``synchronous_commit=off``): a client killed
    loses nothing; a server that crashes loses its last fraction of a second
    of commits, the latest ones, which a resumed run does again.
    ``read_only``: the server refuses every write of the connection.

    Raises:
        psycopg.Error: If the server cannot be reached.
    """
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, round(connect_timeout)))
    try:
        if read_only:
            conn.execute("SET default_transaction_read_only = on")
        elif not durable:
            conn.execute("SET synchronous_commit = off")
    except BaseException:
        conn.close()
        raise
    return conn


def connect(
    dsn: str,
    store: str,
    *,
    connect_timeout: float,
    durable: bool = True,
    upto: int = SCHEMA_VERSION,
    read_only: bool = False,
) -> psycopg.Connection[Any]:
    """A connection (see `open_connection`) to the database of ``dsn``, its
    tables made or brought up to version ``upto`` (the tests make older ones);
    ``read_only``, its tables only checked to be there, of this version.
    ``store``: the store's repr, for messages.

    Raises:
        StoreError: If the server cannot be reached, or the database was
            written by a newer braidflow; if ``read_only``, also if it has no
            braidflow tables, or tables of an older version.
    """
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as error:  # libpq's words may quote the address, password and all
        raise StoreError(
            f"{store}: cannot read the address of the database "
            f"({_secretless(said(error), dsn)}); write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME, or as key=value pairs"
        ) from None
    try:
        conn = open_connection(
            dsn, connect_timeout=connect_timeout, durable=durable, read_only=read_only
        )
    except psycopg.Error as error:
        what, todo = diagnosis(error)
        raise StoreError(
            f"{store}: cannot connect: {what} ({_secretless(said(error), dsn)}); {todo}"
        ) from None
    if read_only:
        _check_tables(conn, store)
        return conn
    with _closed_if_failing(conn, store, "make or check its tables"):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS braidflow_meta "
                "(key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = conn.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{store}: the database was written by a newer braidflow (store schema "
                    f"{version}, this one reads {SCHEMA_VERSION}); upgrade braidflow"
                )
            for step in range(version + 1, upto + 1):
                for statement in _STEPS[step]:
                    conn.execute(statement)
            if version < upto:
                conn.execute(
                    "INSERT INTO braidflow_meta VALUES ('schema', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(upto),),
                )
    return conn


@contextlib.contextmanager
def _closed_if_failing(conn: psycopg.Connection[Any], store: str, doing: str) -> Iterator[None]:
    """Close ``conn`` if the block fails; a database's failure is a
    `StoreError` saying what it was ``doing``, what happened and what to do."""
    try:
        yield
    except BaseException as error:
        conn.close()
        if isinstance(error, psycopg.Error):
            what, todo = diagnosis(error)
            raise StoreError(f"{store}: cannot {doing}: {what} ({said(error)}); {todo}") from None
        raise


def _check_tables(conn: psycopg.Connection[Any], store: str) -> None:
    """Refuse (closing ``conn``) a database a read-only store cannot read:
    one without braidflow's tables, or with tables of another version."""
    version: int | None = None
    with _closed_if_failing(conn, store, "read its tables"):
        if conn.execute("SELECT to_regclass('braidflow_meta')").fetchone() != (None,):
            row = conn.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
            version = None if row is None else int(row[0])
    if version == SCHEMA_VERSION:
        return
    conn.close()
    if version is None:
        raise StoreError(
            f"{store}: the database has no braidflow store to read (no braidflow tables); "
            "run a flow with this store first, or check the database's name"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{store}: the database was written by a newer braidflow (store schema "
            f"{version}, this one reads {SCHEMA_VERSION}); upgrade braidflow"
        )
    raise StoreError(
        f"{store}: the database was written by an older braidflow (store schema {version}); "
        "open it once for writing (without read_only) to bring it up to date"
    )


# A URL's password (user:PASSWORD@), or a key=value DSN's (password=...).
_URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]*)@")
_KEY_PASSWORD = re.compile(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


def _secretless(text: str, dsn: str) -> str:
    """``text`` without the password of ``dsn`` in it, however written there
    (as given, or as libpq reads it), each shown as ``PASSWORD``."""
    secrets = {found.group(1) for found in _URL_PASSWORD.finditer(dsn)}
    secrets |= {found.group(1).strip("'") for found in _KEY_PASSWORD.finditer(dsn)}
    try:
        secrets.add(str(psycopg.conninfo.conninfo_to_dict(dsn).get("password") or ""))
    except psycopg.Error:
        pass
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "PASSWORD")
    return text


def said(error: BaseException) -> str:
    """What an error says, with its kind, on one line."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def diagnosis(error: BaseException) -> tuple[str, str]:
    """What a failure of the server or the connection means, and what to do."""
    said = str(error)
    if isinstance(error, psycopg.OperationalError):  # the server's own refusals first
        if "password authentication failed" in said or "no password supplied" in said:
            return (
                "the server refused the user's password",
                "check the user and password (in the URL, $PGPASSWORD or ~/.pgpass)",
            )
        if "database" in said and "does not exist" in said:
            return (
                "the database does not exist on the server",
                "create it (createdb NAME) or name one that exists",
            )
        if "role" in said and "does not exist" in said:
            return "the database user does not exist", "create it or name a user that exists"
    if isinstance(error, psycopg.OperationalError) or (
        isinstance(error, psycopg.InterfaceError) and "closed" in str(error)
    ):
        return (
            "the database server cannot be reached (the connection was lost or refused)",
            "check that the PostgreSQL server is up and reachable",
        )
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return "the store was opened to read only", "open it without read_only=True to write"
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return (
            "the database user may not do this",
            "grant the user rights to create and write tables in the database",
        )
    if isinstance(error, (psycopg.errors.DiskFull, psycopg.errors.OutOfMemory)):
        return "the database server is out of space or memory", "free some on the server"
    if isinstance(error, psycopg.errors.ProgramLimitExceeded):
        return (
            "a value is larger than PostgreSQL holds",
            "keep large data out of shared (a file path, a key to another store)",
        )
    return "the database failed", "check the PostgreSQL server and its log"
