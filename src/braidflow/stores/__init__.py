"""Where durable runs are kept: the `Store` protocol, its row types, and the stores.

``SQLiteStore`` is the embedded default; ``MemoryStore`` keeps runs in this
process. Any object that implements `Store` works: the rows it is given
(`Checkpoint`) and the records it gives back (`RunRecord`) are public. A
store that is also a `CacheStore` keeps result caches' entries (`CacheEntry`).
``PostgresStore`` keeps runs in a PostgreSQL database that processes on many
machines share; it needs the ``braidflow[postgres]`` extra (psycopg 3) and is
imported only when first used, so ``import braidflow`` never imports psycopg.
"""

from typing import TYPE_CHECKING, Any

from ._base import CacheEntry as CacheEntry
from ._base import CacheStore as CacheStore
from ._base import Checkpoint as Checkpoint
from ._base import RunRecord as RunRecord
from ._base import Store as Store
from .memory import MemoryStore as MemoryStore
from .sqlite import SQLiteStore as SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore as PostgresStore

__all__ = [
    "CacheEntry",
    "CacheStore",
    "Checkpoint",
    "MemoryStore",
    "PostgresStore",
    "RunRecord",
    "SQLiteStore",
    "Store",
]


def __getattr__(name: str) -> Any:
    if name != "PostgresStore":
        raise AttributeError(f"module 'braidflow.stores' has no attribute {name!r}")
    from .postgres import PostgresStore

    globals()[name] = PostgresStore
    return PostgresStore
