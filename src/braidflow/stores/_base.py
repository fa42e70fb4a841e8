"""The ``Store`` protocol and its public row types: what a store keeps and how.

A store keeps, per run: a record (status, owner, the node it is at, the
caller's metadata), the initial ``shared``, and an append-only list of
checkpoint rows (finished steps, batch items, branches, questions and
answers), plus optionally the run's events. The engine writes rows as work
finishes and reads them back to resume; nothing else reaches into a store.
A store may also keep a result cache's entries (``CacheStore``), by key,
shared by every run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._errors import StoreError
from .._questions import QUESTIONS_KEY, Question
from .._usage import Usage, recorded_spend
from ._owners import this_owner

USAGE_KEY = "braidflow.usage"  # in a run's metadata: what its LLM calls used


__all__ = [
    "LAX",
    "CacheEntry",
    "CacheStore",
    "Checkpoint",
    "RunRecord",
    "Store",
    "STATUSES",
    "TakenOver",
    "check_cache_entry",
    "check_cache_key",
    "check_claim",
    "check_end",
    "check_new_run",
    "check_owner",
    "check_rows",
    "check_run_id",
    "check_serializer",
    "check_text",
    "merged_metadata",
    "metadata_text",
    "no_run",
    "prompt_text",
    "row_path",
    "run_id_taken",
    "shown_status",
    "step_path",
    "storable_text",
]

_POSITION = re.compile(r"(?:^|(?<=/))b?\d+:")


def step_path(key: str) -> str:
    """A step's key as people read it: the names on its path, without the
    positions that keep keys apart (``0:job/2:review`` is ``job/review``)."""
    return _POSITION.sub("", key)


def row_path(kind: str, frame: str, node: str) -> str:
    """Where a checkpoint row was made, as a path of names: an item's or a
    sub-flow's is its batch node's; a step's or a branch's ends with its own."""
    if kind in ("items", "changes", "ask", "answer", "state"):
        return step_path(frame)
    if not node:  # an update before the first step
        return ""
    if not frame:  # the step of a node run alone (or an update after it)
        return node
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
            JSON values, ``{}`` if none. braidflow keeps its own facts there
            under ``braidflow.*`` keys (`usage`, resumes, renames, forks,
            ``braidflow.serializer``: ``"pickle"`` for a run written with
            pickle, which every reader then reads it with).
        questions: The questions a waiting run waits on (see `Question`).
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

    @property
    def usage(self) -> Usage | None:
        """What the run's LLM calls reported (``node.report_usage``), in all
        its parts, as kept when it ended or stopped; ``None`` if none
        reported, or if what its metadata holds there is not in that form
        (written by hand: `spent` reads what it can of it)."""
        kept = self.metadata.get(USAGE_KEY)
        if not isinstance(kept, dict) or not {"input_tokens", "output_tokens"} <= kept.keys():
            return None
        try:
            return Usage.from_dict(kept)
        except (TypeError, ValueError):
            return None

    @property
    def spent(self) -> tuple[int | None, float | None]:
        """The tokens and cost the run's metadata records under
        ``braidflow.usage`` (each ``None`` if it records none): braidflow's
        own record, or one written by hand (`recorded_spend`). What the
        command and the dashboard show; never a guess."""
        return recorded_spend(self.metadata.get(USAGE_KEY))

    @property
    def questions(self) -> tuple[Question, ...]:
        """The questions a waiting run waits on, in the graph's order: one per
        branch or parallel item that asked; ``()`` for a run not waiting."""
        if self.status != "waiting":
            return ()
        listed = self.metadata.get(QUESTIONS_KEY)
        if not isinstance(listed, list):  # (a run suspended before questions were listed)
            return ()
        return tuple(
            Question(one["id"], one["where"], one.get("item"), one.get("prompt"))
            for one in listed
            if isinstance(one, dict) and "id" in one and "where" in one
        )


class Checkpoint(NamedTuple):
    """One row of a run's checkpoint log: what a store's ``append`` takes and
    ``claim`` and ``read`` give back, in order. A store keeps rows as they
    are and never reads their payload.

    Attributes:
        kind: ``step`` (a node finished, its changes are to ``shared``),
            ``view_step`` (a node in a branch finished, changes to its view),
            ``items`` (batch items or parameter sets finished: one row for
            those of one batch written together), ``changes`` (what an
            isolated sub-flow changed), ``branch``, ``ask`` or ``answer``
            (an interrupt's question and its answer), or ``update``
            (changes to ``shared`` made between steps: a fork's update, a
            resume's migration; its frame and node are those of the step
            it follows), or ``state`` (what the steps before it changed in
            ``shared``, in a run with ``durability="async"`` or ``"exit"``,
            whose steps record no changes: their payload is `LAX`).
        frame: Where: the walk (for steps) or the stage (for items, branches).
        position: The step's place in its walk, the branch's index, or how
            many items the row holds.
        node: The node's (or branch's) display name.
        node_class: The node's class name.
        action: The action it returned (JSON text), if any; for ``items``,
            how many items the batch has, if that was known (JSON text).
        payload: Serialized data: the changes, or the items' results.
        started: When the step began (seconds since the epoch), for a step;
            else ``None``. A store that keeps no times gives ``None`` back.
        ended: When the row's work ended: the step, or the items' commit.
    """

    kind: str
    frame: str
    position: int
    node: str
    node_class: str
    action: str | None
    payload: bytes
    started: float | None = None
    ended: float | None = None


LAX = b""  # the payload of a step whose changes a "state" row after it holds


@runtime_checkable
class Store(Protocol):
    """What the engine (and the ``braidflow`` command) needs of a store.

    `SQLiteStore`, `PostgresStore` and `MemoryStore` implement it; another
    database can too: the contract tests in ``tests/test_store_contract.py``
    say what each method must do, and ``docs/durable.md`` ("Writing a
    store") how.

    Every failure of the store itself (a database that cannot be written, a
    closed store, an unknown run, input it cannot keep as given: a run id
    that is not valid text, a row that is not a `Checkpoint`) is raised as
    `StoreError`, whose message says what happened and what to do; no other
    exception comes out of a store method.

    A store may also keep result caches' entries: two more methods,
    ``cache_get`` and ``cache_put``, make it a `CacheStore` too (the
    contract tests check them for any store that has them).

    A store may also have ``release(run_id)``, which is not part of the
    protocol: the engine calls it when a run it opened in this process ends,
    however it ended (even when ``finish`` failed), so a store that keeps
    which runs this process runs can drop the run (see ``_owners``).
    """

    serializer: str  # "json" or "pickle": how the engine encodes the values of runs it starts

    def create_run(
        self,
        run_id: str,
        flow: str,
        graph: str,
        initial: bytes,
        owner: str,
        metadata: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record a new run as running, owned by ``owner``, with ``metadata``
        (a dict of JSON values, else StoreError). Raises StoreError if the
        id is taken (nothing is overwritten)."""
        ...

    def claim(self, run_id: str, owner: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """Take a stored run over to resume it: return its record as it was
        (status as listed), its graph description, initial state and
        checkpoints, and mark it running under ``owner``, atomically: of
        two claims at once, one gets the run and the other a StoreError.
        Raises StoreError for an unknown or completed run, or one whose
        owner still runs it."""
        ...

    def read(self, run_id: str) -> tuple[RunRecord, str, bytes, list[Checkpoint]]:
        """What `claim` gives, without taking the run over or changing
        anything: its record (status as listed), graph description, initial
        state and checkpoints written so far, including those of a run that
        is going on in another process (as far as they are written).
        Raises StoreError for an unknown run."""
        ...

    def append(self, run_id: str, rows: list[Checkpoint]) -> None:
        """Add checkpoint rows atomically (all or none), after those already
        there; `claim` gives them back in this order. Raises StoreError for
        an unknown run."""
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
        """Record how the run ended: completed, failed, waiting, interrupted or
        drained (`STATUSES`), at which node, and when (``ended``; default: now). The
        prompt is stored as `prompt_text` gives it, and read back from that;
        the node and error as `storable_text` gives them."""
        ...

    def get(self, run_id: str) -> RunRecord:
        """One run's record, its status as listed (``running`` whose owner no
        longer runs it is ``interrupted``). Raises StoreError for an unknown id."""
        ...

    def runs(self, status: str | None = None) -> list[RunRecord]:
        """Every run's record (only those with ``status``, if given), oldest first."""
        ...

    def set_metadata(self, run_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` (JSON values) into the run's: a key given
        replaces the one kept, a key given as ``None`` is removed. Raises
        StoreError for an unknown run, or what JSON cannot hold."""
        ...

    def add_events(self, run_id: str, records: list[str]) -> None:
        """Keep events of a run (JSON text each), in order, after those kept."""
        ...

    def events(self, run_id: str) -> list[str]:
        """The events kept for a run, as JSON text, in order."""
        ...


class CacheEntry(NamedTuple):
    """One exec result a result cache (`braidflow.Cache`) keeps: what
    `CacheStore.cache_put` takes and `CacheStore.cache_get` gives back. A
    store keeps it as it is and never reads its value.

    Attributes:
        value: The result, encoded as the store's ``serializer`` says.
        stored: When it was stored, seconds since the epoch (by the cache's clock).
        node: The name of the node whose result it is, for people who look
            into the store.
    """

    value: bytes
    stored: float
    node: str


@runtime_checkable
class CacheStore(Protocol):
    """What a result cache (`braidflow.Cache`) needs of a store: entries by
    key, one per key, seen by every run and process that uses the store.

    `SQLiteStore`, `PostgresStore` and `MemoryStore` implement it besides `Store`. A key is
    a string of hex digits the cache makes from the node's name, the version
    of its code and its input; the store only keeps it, with the entry as
    given (no expiry: the cache decides from ``CacheEntry.stored`` whether
    an entry may still be used). Entries are kept apart from runs, and one
    write is whole or absent, never torn. Every failure is a `StoreError`,
    as for `Store`, including a key that is not a non-empty valid text and
    an entry that is not a `CacheEntry` of bytes, a number and a text.
    """

    serializer: str  # "json" or "pickle": how the cache encodes results

    def cache_get(self, key: str) -> CacheEntry | None:
        """The entry kept under ``key``, or ``None``."""
        ...

    def cache_put(self, key: str, entry: CacheEntry) -> None:
        """Keep ``entry`` under ``key``, in place of any entry kept there."""
        ...


def shown_status(record: RunRecord, alive: bool) -> RunRecord:
    """A record as listed: ``running`` whose owner no longer runs it (``alive``
    false, see `owner_alive`) is ``interrupted``."""
    if record.status == "running" and not alive:
        return replace(record, status="interrupted")
    return record


def check_claim(
    record: RunRecord, owner: str, alive: bool, lease_left: float | None = None
) -> RunRecord:
    """Refuse to resume a run that is complete, or running in a live process
    (this one too: another thread or task of it has the run). Return the
    record as listed (`shown_status`). ``lease_left``: how long the owner's
    lease still runs, if the store keeps leases (for the message)."""
    shown = shown_status(record, alive)
    status = shown.status
    if status == "completed":
        raise StoreError(
            f"run {record.run_id!r} has completed; there is nothing to resume", run_id=record.run_id
        )
    if status == "running":
        where = "this process" if record.owner == owner else f"a live process ({record.owner})"
        expiry = (
            ""
            if lease_left is None or record.owner == this_owner()
            else f"; if that process is gone, the run can be resumed once its lease expires "
            f"(in {max(lease_left, 0.0):.0f} s at most)"
        )
        raise StoreError(
            f"run {record.run_id!r} is running in {where}; wait for it to end (or stop it) "
            f"before resuming{expiry}",
            run_id=record.run_id,
        )
    return shown


# -- what a store accepts: the same answer from every store -------------------------------

STATUSES = ("completed", "failed", "waiting", "interrupted", "drained")  # how a run can end
_INT64 = (-(1 << 63), (1 << 63) - 1)


def _is_text(value: object) -> bool:
    """A str that UTF-8 can hold (no lone surrogate)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_text(store: object, run_id: str | None, what: str, value: object) -> StoreError:
    why = (
        "it holds a lone surrogate, which no UTF-8 text can hold"
        if isinstance(value, str)
        else f"it is a {type(value).__name__}"
    )
    shown = repr(value)
    if len(shown) > 80:  # a graph, say: its start tells enough
        shown = f"{shown[:60]}... ({len(shown):,} characters)"
    return StoreError(
        f"{store!r}: {what} {shown} must be a string of valid Unicode text ({why})",
        run_id=run_id if _is_text(run_id) else None,
    )


def check_run_id(store: object, run_id: object) -> None:
    """Refuse a run id that is not a non-empty string of valid text (a store
    keeps it as a key: it is never changed to fit)."""
    if type(run_id) is str and run_id and run_id.isascii():
        return
    if run_id == "":
        raise StoreError(f"{store!r}: a run id must not be empty")
    if not _is_text(run_id):
        raise _not_text(store, None, "run id", run_id)


def check_text(store: object, run_id: str | None, what: str, value: object) -> None:
    """Refuse a text (a flow's name, an owner, an event) that is not a string of valid text."""
    if not _is_text(value):
        raise _not_text(store, run_id, what, value)


def check_new_run(
    store: object, run_id: str, flow: str, graph: str, initial: bytes, owner: str
) -> None:
    """Refuse what `Store.create_run` cannot keep as it is given."""
    check_run_id(store, run_id)
    check_text(store, run_id, "the flow's name", flow)
    check_text(store, run_id, "the graph", graph)
    check_owner(store, run_id, owner)
    if not isinstance(initial, bytes):
        raise StoreError(
            f"{store!r}: the initial state of run {run_id!r} must be bytes, "
            f"got a {type(initial).__name__}",
            run_id=run_id,
        )


def check_owner(store: object, run_id: str, owner: object) -> None:
    """Refuse an owner that is not a non-empty string of valid text."""
    if not owner:
        raise StoreError(f"{store!r}: run {run_id!r} needs an owner", run_id=run_id)
    check_text(store, run_id, "the owner", owner)


def check_rows(store: object, run_id: str, rows: Any) -> None:
    """Refuse checkpoint rows a store cannot keep as they are: each must be a
    `Checkpoint` of texts, a 64-bit position and bytes."""
    for row in rows:
        if not isinstance(row, tuple) or len(row) != 9:
            raise StoreError(
                f"{store!r}: a checkpoint of run {run_id!r} must be a Checkpoint, got {row!r}",
                run_id=run_id,
            )
        kind, frame, position, node, node_class, action, payload, started, ended = row
        for what, value in (
            ("kind", kind),
            ("frame", frame),
            ("node", node),
            ("node class", node_class),
        ):
            if not _is_text(value):
                raise _not_text(store, run_id, f"the checkpoint's {what}", value)
        if action is not None and not _is_text(action):
            raise _not_text(store, run_id, "the checkpoint's action", action)
        if not isinstance(position, int) or not _INT64[0] <= position <= _INT64[1]:
            raise StoreError(
                f"{store!r}: the position of a checkpoint of run {run_id!r} must be a 64-bit "
                f"integer, got {position!r}",
                run_id=run_id,
            )
        for when in (started, ended):
            if when is not None and (isinstance(when, bool) or not isinstance(when, (int, float))):
                raise StoreError(
                    f"{store!r}: the times of a checkpoint of run {run_id!r} must be seconds "
                    f"since the epoch or None, got {when!r}",
                    run_id=run_id,
                )
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise StoreError(
                f"{store!r}: the payload of a checkpoint of run {run_id!r} must be bytes, "
                f"got a {type(payload).__name__}",
                run_id=run_id,
            )


def check_cache_key(store: object, key: object) -> None:
    """Refuse a cache key that is not a non-empty string of valid text."""
    if type(key) is str and key and key.isascii():
        return
    if key == "":
        raise StoreError(f"{store!r}: a cache key must not be empty")
    if not _is_text(key):
        raise _not_text(store, None, "cache key", key)


def check_cache_entry(store: object, key: object, entry: object) -> None:
    """Refuse what `CacheStore.cache_put` cannot keep as it is given."""
    check_cache_key(store, key)
    if not isinstance(entry, tuple) or len(entry) != 3:
        raise StoreError(f"{store!r}: a cache entry must be a CacheEntry, got {entry!r}")
    value, stored, node = entry
    if not isinstance(value, bytes):
        raise StoreError(
            f"{store!r}: the value of a cache entry must be bytes, got a {type(value).__name__}"
        )
    if isinstance(stored, bool) or not isinstance(stored, int | float):
        raise StoreError(
            f"{store!r}: when a cache entry was stored must be seconds since the epoch, "
            f"got {stored!r}"
        )
    if not _is_text(node):
        raise _not_text(store, None, "the node of a cache entry", node)


def check_end(store: object, run_id: str, status: object, ended: object) -> None:
    """Refuse an end `Store.finish` cannot record: a status other than
    those of `STATUSES`, a time that is not a number."""
    if status not in STATUSES:
        raise StoreError(
            f"{store!r}: run {run_id!r} can end as {', '.join(STATUSES)}, not {status!r}",
            run_id=run_id,
        )
    if ended is not None and (isinstance(ended, bool) or not isinstance(ended, (int, float))):
        raise StoreError(
            f"{store!r}: when run {run_id!r} ended must be seconds since the epoch, got {ended!r}",
            run_id=run_id,
        )


def storable_text(text: str | None) -> str | None:
    """A description (an error's text, a node's path) as a store keeps it: a
    lone surrogate, which UTF-8 cannot hold, as its escape (``\\ud800``)."""
    if text is None or _is_text(text):
        return text
    if not isinstance(text, str):
        return repr(text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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


class TakenOver(StoreError):
    """Another owner took over a run this store object was running: it
    writes nothing of that run any more."""


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
