"""A SQLiteStore's result cache: entries of `braidflow.Cache` in the ``cache``
table, by key, seen at once by every process that shares the file.
"""

from __future__ import annotations

import sqlite3
import threading

from .._errors import StoreError
from ._base import CacheEntry, check_cache_entry, check_cache_key
from ._sqlite_failures import Transaction, guarded

__all__ = ["CacheTable"]

_GET = "SELECT value, stored, node FROM cache WHERE key=?"
_PUT = "INSERT OR REPLACE INTO cache (key, node, stored, value) VALUES (?, ?, ?, ?)"


class CacheTable:
    """The `CacheStore` methods of a SQLiteStore: one row per key, written in
    a transaction of its own (a result stored is in the file for every
    process before the run goes on)."""

    # Kept by the store (see SQLiteStore).
    _db: sqlite3.Connection
    _lock: threading.Lock
    _closed: bool
    _largest: int

    @guarded("read the result cache")
    def cache_get(self, key: str) -> CacheEntry | None:
        """The entry kept under ``key``, or ``None`` (see `CacheStore`)."""
        check_cache_key(self, key)
        with self._lock:
            row = self._db.execute(_GET, (key,)).fetchone()
        return None if row is None else CacheEntry(*row)

    @guarded("write to the result cache")
    def cache_put(self, key: str, entry: CacheEntry) -> None:
        """Keep ``entry`` under ``key``, in place of any entry kept there.

        Raises:
            StoreError: Also if the value is larger than SQLite holds.
        """
        check_cache_entry(self, key, entry)
        value, stored, node = entry
        if len(value) > self._largest:
            raise StoreError(
                f"{self!r}: a result of node {node!r} to cache is {len(value):,} bytes, more "
                f"than SQLite holds ({self._largest:,}); keep large data out of exec's result "
                "(a file path, a key to another store)"
            )
        with self._lock, Transaction(self._db):
            self._db.execute(_PUT, (key, node, float(stored), value))
