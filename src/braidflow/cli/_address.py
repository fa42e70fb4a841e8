"""What a ``--store`` value names -- a SQLite file, or a PostgreSQL database by its
``postgresql://`` URL -- how it is opened, and how it is shown without its password.

Every command and the dashboard open their store through `StoreAddress.open`,
so that each takes the same values and refuses a bad one with the same line.
A `StoreAddress` prints as its value with a URL's password replaced by
``PASSWORD``: the messages, the banner and the command lines braidflow prints
never show it; a printed command asks for it to be filled in, as it asks for
``JSON`` (or the password is kept out of the URL, in ``$PGPASSWORD`` or
``~/.pgpass``, which libpq reads, and the command works as printed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ._console import UsageError

__all__ = ["PASSWORD", "URL_PREFIXES", "StoreAddress", "masked"]

# What libpq takes as a URL (a connection URI); anything else is a SQLite file's path.
URL_PREFIXES = ("postgresql://", "postgres://")
PASSWORD = "PASSWORD"  # what a URL's password is shown as
_PASSWORD_PARAMETER = re.compile(r"(^|&)(password=)[^&]*")
# A libpq "key=value" string: not taken as a database (give a URL), nor made into a file.
_KEY_VALUE = re.compile(r"\s*(host|hostaddr|port|dbname|user|password|service)\s*=")


def masked(url: str) -> str:
    """A connection URL with its password (in its user part, or a ``password``
    parameter) replaced by `PASSWORD`."""
    scheme, _, rest = url.partition("://")
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    user, at, hosts = authority.rpartition("@")
    if at and ":" in user:
        user = f"{user.split(':', 1)[0]}:{PASSWORD}"
    query = _PASSWORD_PARAMETER.sub(rf"\1\2{PASSWORD}", query)
    return f"{scheme}://{user}{at}{hosts}{slash}{path}{question}{query}{hash_}{fragment}"


class StoreAddress:
    """Where a command's store is: ``given`` as ``--store`` (or
    ``$BRAIDFLOW_STORE``) gave it, a path or a ``postgresql://`` URL.
    ``str()`` shows it with its password replaced (see `masked`)."""

    __slots__ = ("given",)

    def __init__(self, given: str | os.PathLike[str]) -> None:
        self.given = os.fspath(given)

    @property
    def is_database(self) -> bool:
        """Tell whether it names a PostgreSQL database (a URL), not a file."""
        return self.given.startswith(URL_PREFIXES)

    def __str__(self) -> str:
        return masked(self.given) if self.is_database else self.given

    def __repr__(self) -> str:
        return f"StoreAddress({str(self)!r})"

    def open(self, *, create: bool, read_only: bool = False, serializer: str = "json") -> Any:
        """The store: a `PostgresStore` for a URL, else a `SQLiteStore`; a file
        that is not there (or is empty) is made only if ``create`` (a database's
        tables are made on first use, except when ``read_only``, which reads
        only). ``serializer``: how the runs it starts are written (every
        run is read as it was written).

        Raises:
            UsageError: For a file that is not there or is empty (unless
                ``create``), a database that cannot be reached or has no
                braidflow tables to read, psycopg not installed: one line,
                naming the store and what to do.
        """
        from .. import StoreError

        if self.is_database:
            return self._database(read_only, serializer)
        path = Path(self.given)
        if not path.exists() and _KEY_VALUE.match(self.given):
            raise UsageError(
                f"--store {self.given!r} is not a file, and braidflow takes a PostgreSQL "
                "database as a URL: give --store postgresql://USER@HOST:PORT/DBNAME"
            )
        if not path.exists() and (read_only or not create):
            raise UsageError(
                f"no store at {self.given!r} (give --store PATH, or set BRAIDFLOW_STORE)"
            )
        if (read_only or not create) and path.is_file() and path.stat().st_size == 0:
            # SQLite would take it as a new database and write a store's tables
            # into it: a command that never creates a store refuses it instead.
            raise UsageError(
                f"no store at {self.given!r}: the file is empty (give --store PATH, or set "
                "BRAIDFLOW_STORE)"
            )
        if path.is_dir():
            made = " (a new one is made where none is)" if create and not read_only else ""
            raise UsageError(
                f"--store {self.given!r} is a directory: give the path of a store's file in "
                f"it, such as {str(path / 'braidflow.db')!r}{made}"
            )
        from ..stores.sqlite import SQLiteStore

        try:
            return SQLiteStore(path, read_only=read_only, serializer=serializer)
        except StoreError as error:
            raise UsageError(str(error)) from error

    def _database(self, read_only: bool, serializer: str) -> Any:
        from .. import StoreError

        try:
            from ..stores._postgres_schema import shown_dsn
            from ..stores.postgres import PostgresStore
        except ImportError as error:
            raise UsageError(
                f"--store {self}: a PostgreSQL store needs psycopg ({error.name or 'psycopg'} "
                "is missing): pip install 'braidflow[postgres]'"
            ) from error
        try:
            return PostgresStore(self.given, read_only=read_only, serializer=serializer)
        except StoreError as error:
            # The store's messages name it as libpq's "key=value" string; the
            # command names it as it was given (the password replaced).
            said = str(error).removeprefix(f"PostgresStore({shown_dsn(self.given)!r}): ")
            raise UsageError(
                f"store {self}: {said} (give --store URL, or set BRAIDFLOW_STORE)"
            ) from error
