"""MemoryStore: durable runs (and a result cache's entries) kept in this process's memory,
for tests and trials."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import replace
from typing import Any

from .._after_fork import remade_in_children
from ._base import (
    CacheEntry,
    Checkpoint,
    RunRecord,
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
from ._owners import hold, holds, owner_alive, this_owner
from ._owners import release as release_held

__all__ = ["MemoryStore"]

_NAMES = itertools.count(1)  # each MemoryStore is a store location of its own


class MemoryStore:
    """A store in this process's memory: for tests, and to try durable runs
    and result caches (it is a `CacheStore` too).

    Nothing survives the process, so it cannot resume after a crash; a
    failed or suspended run can be resumed while the process lives. A run
    counts as running while this process runs it (from `create_run` or
    `claim` to `finish` or `release`).

    Args:
        serializer: ``"json"`` (default) or ``"pickle"``: how the runs it
            starts are written (each run keeps its own).
    """

    def __init__(self, serializer: str = "json") -> None:
        check_serializer("MemoryStore", serializer)
        self.serializer = serializer
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._graphs: dict[str, tuple[str, bytes]] = {}
        self._rows: dict[str, list[Checkpoint]] = {}
        self._events: dict[str, list[str]] = {}
        self._cache: dict[str, CacheEntry] = {}
        self._location = f"memory:{next(_NAMES)}"
        remade_in_children(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # in a child made by os.fork: a parent thread may hold it

    def __repr__(self) -> str:
        count = len(self._runs)
        return f"MemoryStore({count} run{'' if count == 1 else 's'})"

    def _record(self, run_id: str) -> RunRecord:
        check_run_id(self, run_id)
        record = self._runs.get(run_id)
        if record is None:
            raise no_run(self, run_id)
        return record

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
        kept = json.loads(metadata_text(self, run_id, metadata or {}))
        with self._lock:
            if run_id in self._runs:
                raise run_id_taken(self, run_id)
            record = RunRecord(run_id, flow, "running", time.time(), owner=owner, metadata=kept)
            self._runs[run_id] = record
            self._graphs[run_id] = (graph, initial)
            self._rows[run_id] = []
            self._hold(run_id, owner)
            return record

    def _hold(self, run_id: str, owner: str) -> None:
        if owner == this_owner():
            hold(self._location, run_id, self)

    def release(self, run_id: str) -> None:
        """This process no longer runs the run: it counts as running no more
        (the engine calls this when a run ends, however it ends)."""
        release_held(self._location, run_id, self)

    def _alive(self, record: RunRecord) -> bool:
        held = holds(self._location, record.run_id)
        return owner_alive(record.owner, held=held)

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`)."""
        with self._lock:
            record = self._record(run_id)
            check_owner(self, run_id, owner)
            shown = check_claim(record, owner, self._alive(record))
            self._runs[run_id] = replace(
                record,
                status="running",
                owner=owner,
                ended=None,
                node=None,
                error=None,
                prompt=None,
            )
            self._hold(run_id, owner)
            graph, initial = self._graphs[run_id]
            return self._with_node(shown), graph, initial, list(self._rows[run_id])

    def read(self, run_id: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """A run's record, graph, initial state and checkpoints, changing
        nothing (see `Store`)."""
        with self._lock:
            record = self._current(self._record(run_id))
            graph, initial = self._graphs[run_id]
            return record, graph, initial, list(self._rows[run_id])

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically, after those already there."""
        check_rows(self, run_id, rows)
        with self._lock:
            self._record(run_id)
            self._rows[run_id].extend(rows)

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
        """Record how the run ended (see `Store`)."""
        check_end(self, run_id, status, ended)
        with self._lock:
            record = self._record(run_id)
            try:
                self._runs[run_id] = replace(
                    record,
                    status=status,
                    ended=time.time() if ended is None else ended,
                    node=storable_text(node),
                    error=storable_text(error),
                    prompt=None if prompt is None else json.loads(prompt_text(prompt)),
                )
            finally:
                self.release(run_id)

    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into the run's (see `Store`)."""
        given = json.loads(metadata_text(self, run_id, metadata))
        with self._lock:
            record = self._record(run_id)
            self._runs[run_id] = replace(record, metadata=merged_metadata(record.metadata, given))

    def _with_node(self, record: RunRecord) -> RunRecord:
        """The record with its node: where it ended, else the last that finished."""
        rows = self._rows[record.run_id]
        if record.node is None and rows:
            last = rows[-1]
            record = replace(record, node=row_path(last.kind, last.frame, last.node))
        return record

    def _current(self, record: RunRecord) -> RunRecord:
        """The record as listed: with its node, its status as `shown_status` gives it."""
        return shown_status(self._with_node(record), self._alive(record))

    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed."""
        with self._lock:
            return self._current(self._record(run_id))

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """The runs, oldest first; only those with ``status`` if given."""
        with self._lock:
            records = [self._current(record) for record in self._runs.values()]
        return [record for record in records if status is None or record.status == status]

    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep some of a run's events (JSON lines), after those already kept."""
        for text in records:
            check_text(self, run_id, "an event", text)
        with self._lock:
            self._record(run_id)
            self._events.setdefault(run_id, []).extend(records)

    def events(self, run_id: str) -> list[str]:
        """A run's kept events, in order (JSON lines)."""
        with self._lock:
            self._record(run_id)
            return list(self._events.get(run_id, []))

    def cache_get(self, key: str) -> CacheEntry | None:
        """The result cache's entry kept under ``key``, or ``None`` (see `CacheStore`)."""
        check_cache_key(self, key)
        return self._cache.get(key)

    def cache_put(self, key: str, entry: CacheEntry) -> None:
        """Keep a result cache's ``entry`` under ``key``, in place of any kept there."""
        check_cache_entry(self, key, entry)
        with self._lock:
            self._cache[key] = CacheEntry(*entry)
