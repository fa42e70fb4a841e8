"""The table of runs: a store's runs, newest first, filtered by status and searched
by id, a page at a time, each row saying where its run is and how far it got.

The store's ``runs()`` is called at most once a second however many pages
are open (`RunIndex`). A row of a run that has not completed reads the run
(`StoredRun`, which changes nothing) for the step it is at and its batch's
progress; what it read is kept until the run's record changes, except for a
running run, read again each time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import ResumeError, StoreError
from ..durable._history import FORKED_KEY, StoredRun
from ..stores._base import USAGE_KEY, RunRecord, Store

__all__ = [
    "PAGE",
    "STATUSES",
    "USAGE_KEY",
    "Listing",
    "Row",
    "RunIndex",
    "inside",
    "took",
    "when",
]

PAGE = 50  # rows a page
STATUSES = ("running", "waiting", "failed", "interrupted", "drained", "completed")
_FRESH = 1.0  # seconds a reading of store.runs() serves every page


@dataclass(frozen=True, slots=True)
class Row:
    """One run, as the table shows it."""

    run_id: str
    flow: str
    status: str
    started: float
    duration: str
    where: str
    done: int | None
    total: int | None
    tokens: int | None
    cost: float | None
    forked_from: str | None
    forked_step: Any
    note: str  # its error or prompt, short


@dataclass(frozen=True, slots=True)
class Listing:
    """A page of the table: its rows and what the controls show."""

    rows: list[Row]
    matching: int  # runs that pass the filter and the search
    counts: dict[str, int]  # runs of each status, in the whole store
    total: int  # runs in the store
    page: int  # from 1
    pages: int
    usage: bool  # some run of the store recorded its usage: show the columns
    forks: bool  # some run of the store is a fork: show where it came from


def when(seconds: float | None) -> str:
    """A moment, as the tables show it: ``2026-01-05 14:03:07``, local time."""
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run_length(record: RunRecord) -> float | None:
    """How long a run took, or has been running; ``None`` for one whose
    process stopped with no end recorded (``interrupted``): not known."""
    if record.ended is not None:
        return record.ended - record.started
    return time.time() - record.started if record.status == "running" else None


def took(seconds: float | None) -> str:
    """A length of time: ``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunIndex:
    """The store's runs for the table, read at most once a second.

    Args:
        store: The store (only read).
        clock: Gives the time the readings are kept by (``time.monotonic``).
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._newest_first: list[RunRecord] = []
        self._usage = self._forks = False
        # What a run that is not running was read to be: (record's state, row parts).
        self._places: dict[str, tuple[tuple[Any, ...], tuple[str, int | None, int | None]]] = {}

    def records(self) -> list[RunRecord]:
        """Every run's record, newest first (read again after a second)."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= _FRESH:
                records = self.store.runs()
                records.reverse()
                self._newest_first = records
                self._usage = any(USAGE_KEY in record.metadata for record in records)
                self._forks = any(FORKED_KEY in record.metadata for record in records)
                self._read_at = now
            return self._newest_first

    def page(self, status: str | None, search: str, number: int) -> Listing:
        """Page ``number`` (from 1) of the runs with ``status`` (any: ``None``)
        whose id holds ``search`` (any case)."""
        records = self.records()
        counts = dict.fromkeys(STATUSES, 0)
        for record in records:
            counts[record.status] = counts.get(record.status, 0) + 1
        needle = search.strip().casefold()
        chosen = [
            record
            for record in records
            if (status is None or record.status == status)
            and (not needle or needle in record.run_id.casefold())
        ]
        pages = max((len(chosen) + PAGE - 1) // PAGE, 1)
        number = min(max(number, 1), pages)
        shown = chosen[(number - 1) * PAGE : number * PAGE]
        return Listing(
            rows=[self._row(record) for record in shown],
            matching=len(chosen),
            counts=counts,
            total=len(records),
            page=number,
            pages=pages,
            usage=self._usage,
            forks=self._forks,
        )

    def _row(self, record: RunRecord) -> Row:
        where, done, total = self._place(record)
        tokens, cost = record.spent
        forked = record.metadata.get(FORKED_KEY)
        note = record.error or ""
        if record.status == "waiting" and record.prompt is not None:
            note = _prompt_line(record.prompt)
            more = len(record.questions) - 1
            if more > 0:  # one per branch or item that asked: the first shown
                note = f"{note} (and {more} more question{'' if more == 1 else 's'})"
        return Row(
            run_id=record.run_id,
            flow=record.flow,
            status=record.status,
            started=record.started,
            duration=took(run_length(record)),
            where=where,
            done=done,
            total=total,
            tokens=tokens,
            cost=cost,
            forked_from=str(forked.get("run")) if isinstance(forked, dict) else None,
            forked_step=forked.get("step") if isinstance(forked, dict) else None,
            note=note if len(note) <= 120 else note[:117] + "...",
        )

    def _place(self, record: RunRecord) -> tuple[str, int | None, int | None]:
        """Where the run is (or ended), and its batch's items done of how many."""
        ended_at = inside(record.node or "", record.flow)
        if record.status == "completed":
            return ended_at, None, None
        state = (record.status, record.ended, record.node, record.owner)
        kept = self._places.get(record.run_id)
        if kept is not None and kept[0] == state and record.status != "running":
            return kept[1]
        try:
            step = StoredRun(self.store, record.run_id).here()
        except (StoreError, ResumeError):  # gone, or a store without read(): as recorded
            step = None
        if step is not None:
            place = (step.path, step.items_done, step.items_total)
        else:
            place = (ended_at, None, None)
        self._places[record.run_id] = (state, place)
        return place


def inside(path: str, flow: str) -> str:
    """A node's path inside the run's own flow, as ``braidflow show`` says it."""
    return path[len(flow) + 1 :] if path.startswith(f"{flow}/") else path


def _prompt_line(prompt: Any) -> str:
    """A prompt in one line: a text as it is, a dict's ``question`` (or first
    value), anything else as it was stored."""
    if isinstance(prompt, dict) and prompt:
        prompt = prompt.get("question", next(iter(prompt.values())))
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, default=repr)
    return " ".join(text.split())
