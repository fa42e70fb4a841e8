"""Stores for durable runs. ``SQLiteStore`` is the embedded default; any object
that implements ``braidflow.Store`` works (see ``braidflow.MemoryStore``)."""

from .sqlite import SQLiteStore as SQLiteStore

__all__ = ["SQLiteStore"]
