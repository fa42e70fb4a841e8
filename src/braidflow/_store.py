"""Where durable runs are kept: the ``Store`` protocol, its records, an in-memory store.

A store keeps, per run: a record (status, owner, the node it is at), the
initial ``shared``, and an append-only list of checkpoint rows (finished
steps, finished batch items, finished branches), plus optionally the run's
events. The engine writes rows as work finishes and reads them back to
resume. ``SQLiteStore`` (in ``braidflow.stores``) is the embedded default.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ._errors import StoreError

__all__ = [
    "Checkpoint",
    "MemoryStore",
    "RunRecord",
    "Store",
    "owner_alive",
    "row_path",
    "step_path",
    "this_owner",
]

_POSITION = re.compile(r"(?:^|(?<=/))b?\d+:")


def step_path(key: str) -> str:
    """A step's key as people read it: the names on its path, without the
    positions that keep keys apart (``0:job/2:review`` is ``job/review``)."""
    return _POSITION.sub("", key)


def row_path(kind: str, frame: str, node: str) -> str:
    """Where a checkpoint row was made, as a path of names: an item's or a
    sub-flow's is its batch node's; a step's or a branch's ends with its own."""
    if kind in ("items", "changes", "ask", "answer"):
        return step_path(frame)
    return f"{step_path(frame)}/{node}"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What a store knows of one run.

    Attributes:
        run_id: The run's id.
        flow: The name of the node or flow the run started from.
        status: ``running``, ``completed``, ``failed``, ``waiting`` (suspended
            by ``interrupt``, for input), or ``interrupted`` (marked running,
            but the process that ran it is gone).
        started: When the run started (seconds since the epoch).
        ended: When it ended, or ``None``.
        node: The node it is at, or ended at (its path, ``/``-joined).
        error: ``"Type: message"`` of the error it failed with, or ``None``.
        prompt: What ``interrupt(prompt)`` asked, for a waiting run.
        owner: The process running it (``host:pid:start``), or ``None``.
    """

    run_id: str
    flow: str
    status: str
    started: float
    ended: float | None = None
    node: str | None = None
    error: str | None = None
    prompt: Any = None
    owner: str | None = None


class Checkpoint(NamedTuple):
    """One row of a run's checkpoint log.

    Attributes:
        kind: ``step`` (a node finished, its changes are to ``shared``),
            ``view_step`` (a node in a branch finished, changes to its view),
            ``items`` (batch items or parameter sets finished: one row for
            those of one batch written together), ``changes`` (what an
            isolated sub-flow changed), ``branch``, ``ask`` or ``answer``
            (an interrupt's question and its answer).
        frame: Where: the walk (for steps) or the stage (for items, branches).
        position: The step's place in its walk, the branch's index, or how
            many items the row holds.
        node: The node's (or branch's) id.
        node_class: The node's class name.
        action: The action it returned (JSON text), if any.
        payload: Serialized data: the changes, or the item's result.
    """

    kind: str
    frame: str
    position: int
    node: str
    node_class: str
    action: str | None
    payload: bytes


@runtime_checkable
class Store(Protocol):
    """What the engine needs of a store. ``SQLiteStore`` and ``MemoryStore``
    implement it; another database can too (the contract tests in
    ``tests/test_store_contract.py`` say what it must do)."""

    serializer: str  # "json" or "pickle": how values are written

    def create_run(
        self, run_id: str, flow: str, graph: str, initial: bytes, owner: str
    ) -> RunRecord:
        """Record a new run as running. Raises StoreError if the id is taken."""
        ...

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it: return its record as it was
        (status as listed), its graph description, initial state and
        checkpoints, and mark it running under ``owner``. Raises StoreError
        for an unknown or completed run, or one that is running (in a live
        process: this one included)."""
        ...

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically (all or none), after those already there."""
        ...

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
        """Record how the run ended: completed, failed, waiting or interrupted,
        at which node, and when (``ended``; default: now). The prompt is
        stored as `prompt_text` gives it, and read back from that."""
        ...

    def get(self, run_id: str) -> RunRecord:
        """One run's record. Raises StoreError for an unknown id."""
        ...

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """Every run's record (only those with ``status``, if given), oldest first."""
        ...

    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep events of a run (JSON text each), in order."""
        ...

    def events(self, run_id: str) -> list[str]:
        """The events kept for a run, as JSON text, in order."""
        ...


# -- owners: which process runs a run, and whether it still lives ------------------


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


_THIS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def this_owner() -> str:
    """``host:pid:start`` of this process (start: its start time, against pid reuse)."""
    if not _THIS_OWNER.startswith(f"{socket.gethostname()}:{os.getpid()}:"):  # forked since
        return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"
    return _THIS_OWNER


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by ``owner`` is still running. An owner on
    another host cannot be checked and counts as alive."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return started in ("?", _process_start(pid))


def shown_status(record: RunRecord) -> RunRecord:
    """A record as listed: ``running`` with a dead owner is ``interrupted``."""
    if record.status == "running" and not owner_alive(record.owner):
        return replace(record, status="interrupted")
    return record


def check_claim(record: RunRecord, owner: str) -> RunRecord:
    """Refuse to resume a run that is complete, or running in a live process
    (this one too: another thread or task of it has the run). Return the
    record as listed (`shown_status`)."""
    shown = shown_status(record)
    status = shown.status
    if status == "completed":
        raise StoreError(
            f"run {record.run_id!r} has completed; there is nothing to resume", run_id=record.run_id
        )
    if status == "running":
        where = "this process" if record.owner == owner else f"a live process ({record.owner})"
        raise StoreError(
            f"run {record.run_id!r} is running in {where}; wait for it to end (or stop it) "
            "before resuming",
            run_id=record.run_id,
        )
    return shown


def check_serializer(store: str, serializer: str) -> None:
    """Refuse a serializer other than ``json`` or ``pickle`` (``store``: the store's name)."""
    if serializer not in ("json", "pickle"):
        raise StoreError(f"{store}: serializer={serializer!r} must be 'json' or 'pickle'")


def run_id_taken(store: object, run_id: str) -> StoreError:
    """The error for creating a run whose id ``store`` already holds."""
    return StoreError(
        f"run id {run_id!r} is already used by another run in {store!r}; choose another, "
        "or resume that run",
        run_id=run_id,
    )


def no_run(store: object, run_id: str) -> StoreError:
    """The error for a run id ``store`` does not hold."""
    return StoreError(f"no run {run_id!r} in {store!r}", run_id=run_id)


class MemoryStore:
    """A store in this process's memory: for tests, and to try durable runs.

    Nothing survives the process, so it cannot resume after a crash; a
    failed or suspended run can be resumed while the process lives.

    Args:
        serializer: ``"json"`` (default) or ``"pickle"``.
    """

    def __init__(self, serializer: str = "json") -> None:
        check_serializer("MemoryStore", serializer)
        self.serializer = serializer
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._graphs: dict[str, tuple[str, bytes]] = {}
        self._rows: dict[str, list[Checkpoint]] = {}
        self._events: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        count = len(self._runs)
        return f"MemoryStore({count} run{'' if count == 1 else 's'})"

    def _record(self, run_id: str) -> RunRecord:
        record = self._runs.get(run_id)
        if record is None:
            raise no_run(self, run_id)
        return record

    def create_run(
        self, run_id: str, flow: str, graph: str, initial: bytes, owner: str
    ) -> RunRecord:
        """Record a new run as running (see `Store`)."""
        with self._lock:
            if run_id in self._runs:
                raise run_id_taken(self, run_id)
            record = RunRecord(run_id, flow, "running", time.time(), owner=owner)
            self._runs[run_id] = record
            self._graphs[run_id] = (graph, initial)
            self._rows[run_id] = []
            return record

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it (see `Store`)."""
        with self._lock:
            record = self._record(run_id)
            shown = check_claim(record, owner)
            self._runs[run_id] = replace(
                record,
                status="running",
                owner=owner,
                ended=None,
                node=None,
                error=None,
                prompt=None,
            )
            graph, initial = self._graphs[run_id]
            return self._with_node(shown), graph, initial, list(self._rows[run_id])

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically, after those already there."""
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
        with self._lock:
            record = self._record(run_id)
            self._runs[run_id] = replace(
                record,
                status=status,
                ended=time.time() if ended is None else ended,
                node=node,
                error=error,
                prompt=None if prompt is None else json.loads(prompt_text(prompt)),
            )

    def _with_node(self, record: RunRecord) -> RunRecord:
        """The record with its node: where it ended, else the last that finished."""
        rows = self._rows[record.run_id]
        if record.node is None and rows:
            last = rows[-1]
            record = replace(record, node=row_path(last.kind, last.frame, last.node))
        return record

    def _current(self, record: RunRecord) -> RunRecord:
        """The record as listed: with its node, its status as `shown_status` gives it."""
        return shown_status(self._with_node(record))

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
        with self._lock:
            self._events.setdefault(run_id, []).extend(records)

    def events(self, run_id: str) -> list[str]:
        """A run's kept events, in order (JSON lines)."""
        with self._lock:
            self._record(run_id)
            return list(self._events.get(run_id, []))


def prompt_text(prompt: Any) -> str:
    """A prompt as stored: JSON where it can be, else its repr."""
    try:
        return json.dumps(prompt)
    except (TypeError, ValueError):
        return json.dumps(repr(prompt))
