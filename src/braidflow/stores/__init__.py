"""Where durable runs are kept: the `Store` protocol, its row types, and the stores.

``SQLiteStore`` is the embedded default; ``MemoryStore`` keeps runs in this
process. Any object that implements `Store` works: the rows it is given
(`Checkpoint`) and the records it gives back (`RunRecord`) are public. A
store that is also a `CacheStore` keeps result caches' entries (`CacheEntry`).
"""

from ._base import CacheEntry as CacheEntry
from ._base import CacheStore as CacheStore
from ._base import Checkpoint as Checkpoint
from ._base import RunRecord as RunRecord
from ._base import Store as Store
from .memory import MemoryStore as MemoryStore
from .sqlite import SQLiteStore as SQLiteStore

__all__ = [
    "CacheEntry",
    "CacheStore",
    "Checkpoint",
    "MemoryStore",
    "RunRecord",
    "SQLiteStore",
    "Store",
]
