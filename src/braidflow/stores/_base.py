"""The ``Store`` protocol and its public row types: what a store keeps and how.

A store keeps, per run: a record (status, owner, the node it is at, the
caller's metadata), the initial ``shared``, and an append-only list of
checkpoint rows (finished steps, batch items, branches, questions and
answers), plus optionally the run's events. The engine writes rows as work
finishes and reads them back to resume; nothing else reaches into a store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._errors import StoreError
from ._owners import owner_alive

__all__ = [
    "Checkpoint",
    "RunRecord",
    "Store",
    "check_claim",
    "check_serializer",
    "merged_metadata",
    "metadata_text",
    "no_run",
    "prompt_text",
    "row_path",
    "run_id_taken",
    "shown_status",
    "step_path",
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
        metadata: What the caller attached to the run (``run(...,
            metadata={...})``, or `Store.set_metadata`): a dict of
            JSON values, ``{}`` if none.
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
    metadata: dict[str, Any] = field(default_factory=dict)


class Checkpoint(NamedTuple):
    """One row of a run's checkpoint log: what a store's ``append`` takes and
    ``claim`` gives back, in order. A store keeps rows as they are and never
    reads their payload.

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
        node: The node's (or branch's) display name.
        node_class: The node's class name.
        action: The action it returned (JSON text), if any.
        payload: Serialized data: the changes, or the items' results.
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
    """What the engine (and the ``braidflow`` command) needs of a store.

    `SQLiteStore` and `MemoryStore` implement it; another database can too:
    the contract tests in ``tests/test_store_contract.py`` say what each
    method must do, and ``docs/durable.md`` ("Writing a store") how. Every
    failure of the store itself (a database that cannot be written, an
    unknown run) is raised as `StoreError`.
    """

    serializer: str  # "json" or "pickle": how the engine encodes values

    def create_run(
        self,
        run_id: str,
        flow: str,
        graph: str,
        initial: bytes,
        owner: str,
        metadata: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record a new run as running, owned by ``owner``. Raises StoreError
        if the id is taken."""
        ...

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it: return its record as it was
        (status as listed), its graph description, initial state and
        checkpoints, and mark it running under ``owner``. Raises StoreError
        for an unknown or completed run, or one whose owner still runs it."""
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

    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` (JSON values) into the run's: a key given
        replaces the one kept, a key given as ``None`` is removed."""
        ...

    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep events of a run (JSON text each), in order."""
        ...

    def events(self, run_id: str) -> list[str]:
        """The events kept for a run, as JSON text, in order."""
        ...


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


def prompt_text(prompt: Any) -> str:
    """A prompt as stored: JSON where it can be, else its repr."""
    try:
        return json.dumps(prompt)
    except (TypeError, ValueError):
        return json.dumps(repr(prompt))


def metadata_text(store: object, run_id: str, metadata: Any) -> str:
    """A run's metadata as stored (JSON text of a dict).

    Raises:
        StoreError: If it is not a dict with string keys and JSON values.
    """
    if not isinstance(metadata, dict) or not all(isinstance(key, str) for key in metadata):
        raise StoreError(
            f"{store!r}: the metadata of run {run_id!r} must be a dict with string keys, "
            f"got {metadata!r}",
            run_id=run_id,
        )
    try:
        return json.dumps(metadata, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise StoreError(
            f"{store!r}: the metadata of run {run_id!r} must hold JSON values ({error})",
            run_id=run_id,
        ) from None


def merged_metadata(kept: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``kept`` updated with ``given``; a key given as ``None`` is removed."""
    merged = dict(kept)
    for key, value in given.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
