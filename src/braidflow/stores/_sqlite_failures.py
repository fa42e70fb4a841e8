"""What a failing SQLite call means: every failure of a SQLiteStore becomes a
`StoreError` that says what happened and what to do; transactions roll back.

`guarded` wraps a store method so, `failure` words one by hand, `diagnosis`
reads an error of SQLite or the disk, and `Transaction` holds the write lock
from its start and leaves nothing open when a statement fails.
"""

from __future__ import annotations

import errno
import functools
import sqlite3
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from .._errors import StoreError

__all__ = ["BUSY_MS", "Transaction", "diagnosis", "failure", "guarded", "said"]

BUSY_MS = 10_000  # how long a write waits for another process's


class _Store(Protocol):
    """What a failure needs of its store: whether it is closed (and its repr)."""

    _closed: bool


_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(doing: str, then: str = "", *, closed_ok: bool = False) -> Callable[[_F], _F]:
    """A store method whose every failure is a `StoreError` saying what happened
    and what to do: ``doing`` is what the method does (``{run}``: the run it
    is given), ``then`` what to do once the store works again."""

    def wrap(method: _F) -> _F:
        @functools.wraps(method)
        def checked(self: _Store, *args: Any, **kwargs: Any) -> Any:
            if self._closed and not closed_ok:
                raise failure(self, doing, args, None, then)
            try:
                return method(self, *args, **kwargs)
            except StoreError:
                raise
            except Exception as error:
                raise failure(self, doing, args, error, then) from error

        return cast(_F, checked)

    return wrap


def failure(
    store: _Store, doing: str, args: tuple[Any, ...], error: BaseException | None, then: str = ""
) -> StoreError:
    """The StoreError for a failure of ``doing`` (see `guarded`); ``error`` is
    None when the store is closed."""
    about_run = "{run}" in doing
    run_id = args[0] if about_run and args and isinstance(args[0], str) else None
    doing = doing.replace("{run}", f"run {run_id!r}")
    if store._closed:
        what, todo = "the store is closed", "open the file again: SQLiteStore(path)"
    else:
        assert error is not None
        what, todo = diagnosis(error)
        what = f"{what} ({said(error)})"
    return StoreError(f"{store!r}: cannot {doing}: {what}; {todo}{then}", run_id=run_id)


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``), so a writer holds the
    write lock from the start and concurrent claims are serialized."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        # A Ctrl-C (a KeyboardInterrupt, raised between two bytecodes) that
        # lands as a transaction begins or as its `__exit__` is called leaves it
        # open, and its write lock locks every process out: ended here, at the
        # latest by the connection's next transaction.
        if self.db.in_transaction:
            self._rollback()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._rollback()
            raise

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


def said(error: BaseException) -> str:
    """What an error says, with its kind."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def diagnosis(error: BaseException) -> tuple[str, str]:
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
            f"another connection held the database for over {BUSY_MS // 1000} s",
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
