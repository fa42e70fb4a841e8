"""Durable runs: checkpoints as work finishes, replay of what finished on resume.

With a store, the engine records a finished node step (with the keys of
``shared`` it changed), a finished batch item (with its result) and a
finished branch (with its changes) as soon as each finishes. To resume, the
flow runs again from the top on the rebuilt ``shared``; every recorded step,
item and branch is skipped (its effects taken from the record) and the rest
runs. ``interrupt(prompt)`` suspends a run until it is resumed with input.
"""

from __future__ import annotations

import asyncio
import json
import json.encoder
import pickle
import threading
import types
import weakref
import zlib
from collections.abc import Callable, Generator, Iterable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from ._context import ATTEMPT, AttemptState
from ._errors import CheckpointError, ResumeError, RunError
from ._merge import MISSING, SharedView
from ._store import Checkpoint, Store, step_path

if TYPE_CHECKING:
    from ._events import Event

__all__ = [
    "DITEM",
    "STEP",
    "Durable",
    "Interrupted",
    "TrackingDict",
    "checkpointed_items",
    "describe_graph",
    "interrupt",
    "recorded_events",
]


class _ItemAt:
    """In DITEM, for a task that runs items of one batch: the item it is at,
    and whether the one before waits for its commit."""

    __slots__ = ("batch", "index", "queued")

    def __init__(self, batch: Any, index: int) -> None:
        self.batch = batch
        self.index = index
        self.queued = False


# The step running now (a path of "position:node id" down from the run's top)
# and the batch item within it: where a checkpoint belongs, and which
# interrupt an answer is for. Set only in durable runs.
STEP: ContextVar[str] = ContextVar("braidflow_step", default="")
DITEM: ContextVar[int | _ItemAt | None] = ContextVar("braidflow_durable_item", default=None)

NO_ANSWER: Any = object()


# The keys of the store the running step touched: each step of a walk (and
# the run around them) gets a set of its own, so a step's checkpoint holds
# only what it did, never what a sibling sub-flow or an unfinished enclosing
# phase (a flow's prep) did meanwhile.
class _Unrecorded(set[Any]):
    """Outside a durable run's steps nothing is recorded: adding is a no-op."""

    def add(self, key: Any) -> None:
        pass


TOUCHED: ContextVar[set[Any]] = ContextVar("braidflow_touched", default=_Unrecorded())  # noqa: B039 - adds nothing
_ALL: Any = object()  # in a touched set: every key (the store was iterated or updated)


class TrackingDict(dict[Any, Any]):
    """``shared`` in a durable run: a real dict that notes which keys each step
    touches (reads, writes or deletes), so its checkpoint serializes only those."""

    __slots__ = ("_bf_last",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._bf_last: dict[Any, bytes] = {}  # the last saved encoding of each key

    def touched(self, keys: set[Any]) -> Iterable[Any]:
        """The keys a step touched, given its set (all of them after an iteration)."""
        if _ALL in keys:
            return set(dict.keys(self)) | set(self._bf_last)
        return keys

    def __getitem__(self, key: Any) -> Any:
        TOUCHED.get().add(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        TOUCHED.get().add(key)
        return dict.get(self, key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        TOUCHED.get().add(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        TOUCHED.get().add(key)
        dict.__delitem__(self, key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        TOUCHED.get().add(key)
        return dict.setdefault(self, key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        TOUCHED.get().add(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        TOUCHED.get().add(_ALL)
        return dict.popitem(self)

    def clear(self) -> None:
        TOUCHED.get().add(_ALL)
        dict.clear(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        TOUCHED.get().add(_ALL)
        dict.update(self, *args, **kwargs)

    def __ior__(self, other: Any) -> TrackingDict:  # type: ignore[misc]
        TOUCHED.get().add(_ALL)
        dict.update(self, other)
        return self

    def __iter__(self) -> Any:
        TOUCHED.get().add(_ALL)
        return dict.__iter__(self)

    def keys(self) -> Any:
        TOUCHED.get().add(_ALL)
        return dict.keys(self)

    def values(self) -> Any:
        TOUCHED.get().add(_ALL)
        return dict.values(self)

    def items(self) -> Any:
        TOUCHED.get().add(_ALL)
        return dict.items(self)


# -- serializing ----------------------------------------------------------------------


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` for the store: compact, no NaN, ASCII. The C encoder is made
    once and reused (``JSONEncoder.encode`` makes one per call, half its cost);
    a cycle in a value then shows as a RecursionError."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    try:
        fast = make(
            None, plain.default, json.encoder.encode_basestring_ascii, None, ":", ",",
            False, False, False,
        )  # fmt: skip
        join = "".join

        def encode(value: Any) -> str:
            return join(fast(value, 0))

        sample = ["é", 1, 2.5, True, None, {"k": [1]}]
        if encode(sample) == plain.encode(sample):
            return encode
    except Exception:  # another Python's C encoder: the documented one will do
        pass
    return plain.encode


_JSON = _json_encoder()
_ASCII = json.encoder.encode_basestring_ascii  # what the JSON encoder does to a str
# What encoding a value that cannot be saved raises (a cycle: RecursionError).
_UNSAVABLE = (TypeError, ValueError, RecursionError, pickle.PicklingError, AttributeError)


class Codec:
    """How a store's values are written: JSON (text) or pickle."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def encode(self, value: Any) -> bytes:
        """``value`` as stored. JSON must give back an equal value, or it is
        refused: a tuple would come back a list, an int key a string.

        Raises:
            TypeError, ValueError: If the value cannot be stored faithfully.
        """
        if self.kind == "json":
            kind = type(value)
            if kind is int:  # what the JSON encoder writes, made directly
                return b"%d" % value
            if kind is str:
                return _ASCII(value).encode()
            if kind not in _SCALARS and not _faithful(value):
                raise ValueError(_json_drift(value))
            return _JSON(value).encode()
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        if self.kind == "json":
            return json.loads(data)
        return pickle.loads(data)

    def pack(self, changes: list[tuple[Any, bytes | None]]) -> bytes:
        """Changes (key, encoded value or None for a deletion) as one payload."""
        if self.kind == "json":
            parts = [
                b"[%b,0]" % _key_json(key)
                if data is None
                else b"[%b,1,%b]" % (_key_json(key), data)
                for key, data in changes
            ]
            return b"[%b]" % b",".join(parts)
        return pickle.dumps(changes, protocol=pickle.HIGHEST_PROTOCOL)

    def join(self, parts: list[bytes]) -> bytes:
        """Values encoded one by one (by `encode`), as one payload."""
        if self.kind == "json":
            return b"[" + b",".join(parts) + b"]"
        return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)

    def split(self, payload: bytes) -> list[Any]:
        """The values of a payload made by `join`, decoded."""
        if self.kind == "json":
            values: list[Any] = json.loads(payload)
            return values
        return [pickle.loads(part) for part in pickle.loads(payload)]

    def unpack(self, payload: bytes) -> list[tuple[Any, Any]]:
        """The (key, value or MISSING) pairs of a payload made by `pack`."""
        if self.kind == "json":
            return [(entry[0], entry[2] if entry[1] else MISSING) for entry in json.loads(payload)]
        return [
            (key, MISSING if data is None else pickle.loads(data))
            for key, data in pickle.loads(payload)
        ]


_SCALARS = frozenset((str, int, float, bool, type(None)))


def _key_json(key: Any) -> bytes:
    """A key of ``shared`` as JSON (a str, but for a store that holds others)."""
    return _ASCII(key).encode() if type(key) is str else _JSON(key).encode()


def _faithful(value: Any) -> bool:
    """Whether JSON gives ``value`` back equal: no tuple, no key but a string
    (anything else JSON cannot hold at all, its encoder refuses)."""
    if isinstance(value, list):
        for item in value:
            if type(item) not in _SCALARS and not _faithful(item):
                return False
        return True
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if type(item) not in _SCALARS and not _faithful(item):
                return False
        return True
    return not isinstance(value, tuple)


def _json_drift(value: Any) -> str:
    """Say what in ``value`` JSON would give back changed."""
    return _drift_in(value, "") or f"a {type(value).__name__} JSON gives back as another value"


def _drift_in(value: Any, where: str) -> str | None:
    at = f" at {where}" if where else ""
    if isinstance(value, tuple):
        return f"the {type(value).__name__}{at} would come back as a list"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"the key {key!r} ({type(key).__name__}){at} would come back as "
                    f"the string {json.dumps(next(iter(json.loads(_JSON({key: 0})))))}"
                )
            found = _drift_in(item, f"{where}[{key!r}]")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _drift_in(item, f"{where}[{index}]")
            if found:
                return found
    return None


def _encode_key_value(codec: Codec, key: Any, value: Any, node: str) -> bytes:
    if codec.kind == "json" and type(key) is not str and not isinstance(key, str):
        raise CheckpointError(
            f"node {node!r}: shared[{key!r}] has a key of type {type(key).__name__}; a durable "
            "run stores shared as JSON, whose keys are strings (or use serializer='pickle')",
            node=node,
            key=key,
        )
    try:
        return codec.encode(value)
    except _UNSAVABLE as error:
        raise CheckpointError(
            f"node {node!r}: shared[{key!r}] holds a {type(value).__name__} that cannot be "
            f"saved as {codec.kind} ({error}); keep plain data in shared, or use "
            f"{'a store with ' if codec.kind == 'json' else ''}"
            f"{'serializer=' + repr('pickle') if codec.kind == 'json' else 'picklable values'}",
            node=node,
            key=key,
        ) from error


def changed_keys(
    codec: Codec, target: Any, node: str, touched: set[Any] | None = None
) -> list[tuple[Any, bytes | None]]:
    """The keys of ``target`` whose saved form changed since the last
    checkpoint, encoded; ``None`` for a deleted key. Of a TrackingDict, the
    keys in ``touched`` (the step's); of a SharedView, those it noted."""
    last: dict[Any, bytes] = target._bf_last
    changes: list[tuple[Any, bytes | None]] = []
    # Read so that reading marks nothing: a TrackingDict as a plain dict, a view by peek.
    tracking = type(target) is TrackingDict
    read = dict.__getitem__ if tracking else type(target).peek
    keys = target.touched(touched or set()) if tracking else target.take_dirty()
    for key in keys:
        if key in target:
            data = _encode_key_value(codec, key, read(target, key), node)
            if last.get(key) != data:
                last[key] = data
                changes.append((key, data))
        elif key in last:
            del last[key]
            changes.append((key, None))
    return changes


def fingerprint(codec: Codec, item: Any) -> int:
    """A stable checksum of a batch item, to tell whether prep gives the same items."""
    if codec.kind == "json":  # the bytes of the item's JSON; ints and strs made directly
        kind = type(item)
        if kind is int:
            return zlib.crc32(b"%d" % item)
        if kind is str:
            return zlib.crc32(_ASCII(item).encode())
    try:
        data = _JSON(item).encode() if codec.kind == "json" else codec.encode(item)
    except Exception:  # not serializable: only its type can be compared
        data = type(item).__qualname__.encode()
    return zlib.crc32(data)


# -- the graph, described, to see whether it changed ----------------------------------


def describe_graph(node: Any) -> str:
    """One line per node reachable from ``node``: its id, class and successors,
    nested flows and branches inside; the same graph gives the same lines.
    Kept until any wiring or name changes."""
    from . import _wiring

    cached = _described.get(node)
    if cached is not None and cached[0] == _wiring._current:
        return cached[1]
    version = _wiring._current
    text = "\n".join(_describe(node))
    _described[node] = (version, text)
    return text


_described: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()


def _describe(node: Any) -> list[str]:
    from ._wiring import display_names, graph_of

    lines: list[str] = []
    seen: set[int] = set()

    def walk(start: Any, prefix: str) -> None:
        names = display_names(start)
        for member in graph_of(start):
            name = names[id(member)]
            wiring = ", ".join(
                f"{action}->{'end' if target is None else names.get(id(target), '?')}"
                for action, target in member.successors.items()
            )
            lines.append(f"{prefix}{name}: {type(member).__qualname__} [{wiring}]")
            if id(member) in seen:
                continue
            seen.add(id(member))
            if member._bf_is_flow and member.start_node is not None:
                walk(member.start_node, f"{prefix}{name}/")
            for index, head in enumerate(getattr(member, "branches", ())):
                walk(head, f"{prefix}{name}/branch {index}/")

    walk(node, "")
    return lines


# -- interrupts -----------------------------------------------------------------------


class Interrupted(BaseException):
    """Raised by `interrupt` to stop a durable run for input. A
    ``BaseException``, so no ``except Exception``, retry or fallback catches it.

    Attributes:
        prompt: What was asked.
        key: The step (and item) that asked, as checkpoints name it.
        call: Which of that step's ``interrupt`` calls it is (0 for the first).
        where: The step as people read it (``flow/review``, ``flow/items#3``).
    """

    def __init__(self, prompt: Any, key: str, call: int) -> None:
        super().__init__(prompt)
        self.prompt = prompt
        self.key = key
        self.call = call
        self.where = step_path(key)


def interrupt(prompt: Any) -> Any:
    """Stop the run to ask a human (or any caller) for input; return the answer.

    Call it from any phase of any node of a durable run (one given a
    ``store=``). The first time, the run stops: it is stored as ``waiting``
    with ``prompt``, and ``run``/``run_async`` raise `Suspended`. When
    the run is resumed with ``flow.resume(run_id, store=..., input=answer)``,
    the node runs again from ``prep`` and this call returns ``answer``. A node
    may ask several times: its calls are matched to answers in the order they
    are made, each answer given by its own resume; a retried ``exec`` gets
    the answers its failed attempt got. An interrupt is never retried nor
    handed to a fallback.

    Args:
        prompt: What to ask; stored with the run (JSON, or its repr).

    Raises:
        RunError: If the run has no store, so it could never be resumed.
    """
    from ._run import RUN

    run = RUN.get()
    durable = run.durable if run is not None else None
    if durable is None:
        raise RunError(
            "braidflow.interrupt() needs a durable run, one that can be resumed: run the flow "
            "with a store, e.g. flow.run(shared, store=SQLiteStore('runs.db'))"
        )
    item = DITEM.get()
    if type(item) is _ItemAt:
        item = item.index
    key = STEP.get() if item is None else f"{STEP.get()}#{item}"
    call = durable.calls.get(key, 0)
    attempt = ATTEMPT.get()
    if attempt is not None:  # in exec: a retry makes its calls again, with the same answers
        seen = durable.attempts.get(key)
        if seen is None or seen[0] is not attempt:  # the first call of this exec
            durable.attempts[key] = (attempt, attempt.attempt, call)
        elif seen[1] != attempt.attempt:  # the first call of a retry
            call = seen[2]
            durable.attempts[key] = (attempt, attempt.attempt, call)
    durable.calls[key] = call + 1
    answer = durable.answers.get(key, {}).get(call, NO_ANSWER)
    if answer is not NO_ANSWER:
        return answer
    raise Interrupted(prompt, key, call)


# -- the per-run checkpointer -----------------------------------------------------------


class Durable:
    """The durable side of one run: writes checkpoints, and (when resuming)
    answers which steps, items and branches already finished."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.codec = Codec(store.serializer)
        # Answers to interrupts, by the step (and item) that asked, then by
        # its call; and how many calls each step made in this process.
        self.answers: dict[str, dict[int, Any]] = {}
        self.calls: dict[str, int] = {}
        # Per step, the exec attempt loop that last asked, its attempt then, and
        # the call its attempts start from.
        self.attempts: dict[str, tuple[AttemptState, int, int]] = {}
        self.asked: Checkpoint | None = None  # the question a waiting run stopped at
        self.at: str | None = None  # the step that started last
        self._failures: list[tuple[BaseException, str]] = []  # and the step each came from
        self._steps: dict[str, list[Checkpoint]] = {}
        # Items that finished before: (fingerprint, result), by stage, by index.
        self._items: dict[str, dict[int, tuple[int, Any]]] = {}
        self._changes: dict[tuple[str, int], Checkpoint] = {}
        self._branches: dict[tuple[str, int], Checkpoint] = {}
        # Rows wait here for the next turn of the event loop, so items finishing
        # together are written in one transaction (a group commit), those of one
        # batch as one row; any other write takes them first.
        self._pending: list[Checkpoint] = []
        # Finished items' payloads, each batch's after a (batch, node) marker
        # when it differs from the one before: an item adds no object the
        # garbage collector must follow. The list is only ever changed in
        # place, so the loop appends to it without the lock.
        self._queued: list[Any] = []
        self._queued_batch: Any = None  # the batch of the last marker queued
        self._taken_batch: Any = None  # the last marker taken: whose items come next
        # Sync batches write from worker threads while the loop queues rows.
        self._queue_lock = threading.Lock()
        self._json = self.codec.kind == "json"
        self._flush_due = False
        self._write_error: BaseException | None = None

    # -- starting and resuming ---------------------------------------------------

    def initial(self, shared: TrackingDict, node: str) -> bytes:
        """Encode the whole store at the start (and remember each key's form)."""
        encoded = [
            (key, _encode_key_value(self.codec, key, value, node))
            for key, value in dict.items(shared)
        ]
        shared._bf_last = dict(encoded)
        return self.codec.pack(list(encoded))

    def rebuild(self, initial: bytes, rows: list[Checkpoint]) -> TrackingDict:
        """The store as the recorded steps left it; index the rest for replay."""
        shared = TrackingDict()
        for key, value in self.codec.unpack(initial):
            dict.__setitem__(shared, key, value)
        for row in rows:
            if row.kind == "step":
                for key, value in self.codec.unpack(row.payload):
                    if value is MISSING:
                        dict.pop(shared, key, None)
                    else:
                        dict.__setitem__(shared, key, value)
            if row.kind in ("step", "view_step"):
                self._steps.setdefault(row.frame, []).append(row)
            elif row.kind == "items":
                items = self._items.setdefault(row.frame, {})
                for index, mark, result in self.codec.split(row.payload):
                    items[index] = (mark, result)
            elif row.kind == "changes":
                self._changes[(row.frame, row.position)] = row
            elif row.kind == "branch":
                self._branches[(row.frame, row.position)] = row
            elif row.kind == "answer":
                answer = self.codec.decode(row.payload)
                self.answers.setdefault(row.frame, {})[row.position] = answer
            if row.kind == "ask":
                self.asked = row
            elif row.kind != "answer":
                self.asked = None  # the run went on past that question
        for steps in self._steps.values():
            steps.sort(key=lambda row: row.position)
        shared._bf_last = {key: self.codec.encode(value) for key, value in dict.items(shared)}
        return shared

    # -- interrupts ----------------------------------------------------------------

    def ask_row(self, asked: Interrupted) -> Checkpoint:
        """The row that keeps which interrupt a waiting run stopped at."""
        return Checkpoint("ask", asked.key, asked.call, asked.where, "", None, b"")

    def answer(self, value: Any) -> None:
        """Record the answer to the question the run stopped at (resuming
        with ``input=``), so it holds even if the run stops again later.

        Raises:
            CheckpointError: If the answer cannot be saved.
        """
        asked = self.asked
        assert asked is not None
        try:
            payload = self.codec.encode(value)
        except _UNSAVABLE as error:
            raise CheckpointError(
                f"the input for run {self.run_id!r} is a {type(value).__name__} that cannot "
                f"be saved as {self.codec.kind} ({error}); give plain data, or use a store "
                "with serializer='pickle'",
                node=asked.node,
            ) from error
        row = Checkpoint("answer", asked.frame, asked.position, asked.node, "", None, payload)
        self.write([row])
        self.answers.setdefault(asked.frame, {})[asked.position] = value

    # -- failures ------------------------------------------------------------------

    def failed_in(self, error: BaseException, key: str) -> None:
        """Note the step ``error`` came out of, unless an inner one was noted."""
        if not any(seen is error for seen, _ in self._failures):
            self._failures.append((error, key))

    def where_failed(self, error: BaseException) -> str | None:
        """The step the run's error came from, as people read it."""
        for seen, key in self._failures:
            if seen is error:
                return step_path(key)
        return None if self.at is None else step_path(self.at)

    # -- steps ---------------------------------------------------------------------

    def steps_in(self, frame: str) -> list[Checkpoint]:
        """The steps already finished in the walk ``frame`` (resuming), in order."""
        return self._steps.get(frame, [])

    def replay(self, row: Checkpoint, node: Any, target: Any) -> Any:
        """Skip a finished step: check it is the same node, apply what it changed
        to a branch's view (the store itself was rebuilt already); return its action."""
        name, cls = node._display_name(), type(node).__qualname__
        if row.node != name or row.node_class != cls:
            raise ResumeError(
                f"the flow changed since run {self.run_id!r} was recorded: step {row.position} "
                f"of {row.frame!r} was {row.node!r} ({row.node_class}), the graph now has "
                f"{name!r} ({cls}) there; resume with the flow as it was",
                node=name,
            )
        if row.kind == "view_step":
            self.apply(target, row.payload)
        return None if row.action is None else json.loads(row.action)

    def apply(self, target: Any, payload: bytes) -> None:
        for key, value in self.codec.unpack(payload):
            if value is MISSING:
                target.pop(key, None)
            else:
                target[key] = value
        changed_keys(self.codec, target, "resume")  # the view's saved form, now current

    def step_done(
        self,
        frame: str,
        position: int,
        node: Any,
        name: str,
        action: Any,
        target: Any,
        touched: set[Any],
    ) -> None:
        """Record a finished step (``node``, whose display name is ``name``) and
        what it changed, before the walk goes on."""
        kind = "view_step" if isinstance(target, SharedView) else "step"
        changes = changed_keys(self.codec, target, name, touched)
        row = Checkpoint(
            kind,
            frame,
            position,
            name,
            type(node).__qualname__,
            _action_text(action, name),
            self.codec.pack(changes),
        )
        self.write([row])

    # -- items -------------------------------------------------------------------------

    def recorded_items(self, stage: str) -> dict[int, tuple[int, Any]]:
        """The items of ``stage`` that finished before (resuming), by index."""
        return self._items.get(stage, {})

    def item_result(self, index: int, recorded: tuple[int, Any], item: Any, node: Any) -> Any:
        """The recorded result of an item that finished before.

        Raises:
            ResumeError: If prep now gives a different item at that index.
        """
        mark, result = recorded
        if mark != fingerprint(self.codec, item):
            raise ResumeError(
                f"{node._describe()}: item {index} is not the one recorded in run "
                f"{self.run_id!r}; prep must give the same items, in the same order, when a "
                "run resumes",
                node=node._display_name(),
            )
        return result

    def _item_payload(self, index: int, mark: int, result: Any, node: Any) -> bytes:
        """``[index, fingerprint, result]``, encoded."""
        try:
            if self.codec.kind == "json":
                if type(result) in _SCALARS:  # faithful as they are
                    return b"[%d,%d,%b]" % (index, mark, _JSON(result).encode())
                return b"[%d,%d,%b]" % (index, mark, self.codec.encode(result))
            return self.codec.encode([index, mark, result])
        except _UNSAVABLE as error:
            raise CheckpointError(
                f"{node._describe()}: the result of item {index} is a {type(result).__name__} "
                f"that cannot be saved as {self.codec.kind} ({error}); return plain data "
                "from exec, or use serializer='pickle'",
                node=node._display_name(),
            ) from error

    def _items_row(self, stage: str, node: Any, parts: list[bytes]) -> Checkpoint:
        """One row for items of one batch: ``[index, fingerprint, result]`` each."""
        name, cls = node._display_name(), type(node).__qualname__
        return Checkpoint("items", stage, len(parts), name, cls, None, self.codec.join(parts))

    def item_done_sync(self, stage: str, index: int, mark: int, result: Any, node: Any) -> None:
        """Record a finished item (``mark``: its fingerprint, taken before it ran)."""
        payload = self._item_payload(index, mark, result, node)
        self.write([self._items_row(stage, node, [payload])])

    def queue_item(
        self, batch: tuple[str, int], index: int, mark: int, result: Any, node: Any
    ) -> None:
        """Queue a finished item for the group commit at the loop's next turn.

        Items finishing in the same turn of the loop are written together, in
        one transaction (a group commit) at the start of the next turn, those
        of one ``batch`` (its stage, and the node's id) in one row.

        Raises:
            StoreError: If an earlier group commit failed; the batch stops.
        """
        if self._write_error is not None:
            raise self._write_error
        if type(result) is int and self._json:
            payload = b"[%d,%d,%d]" % (index, mark, result)
        else:
            payload = self._item_payload(index, mark, result, node)
        if batch is not self._queued_batch:
            self._queued.append((batch, node))
            self._queued_batch = batch
        self._queued.append(payload)
        if not self._flush_due:
            self._flush_soon()

    def check_written(self) -> None:
        """Raise the error of a failed group commit, if one failed.

        Raises:
            StoreError: If the group commit failed; the batch stops.
        """
        if self._write_error is not None:
            raise self._write_error

    def later(self, row: Checkpoint) -> None:
        """Queue a row for the group commit at the next turn of the event loop.

        Raises:
            StoreError: If an earlier group commit failed; the batch stops.
        """
        self.check_written()
        with self._queue_lock:
            self._pending.append(row)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _take_pending(self) -> list[Checkpoint]:
        """The queued rows, the items of each batch joined into one row."""
        batches: dict[tuple[str, int], tuple[Any, list[bytes]]] = {}
        parts: list[bytes] | None = None
        with self._queue_lock:
            queued = self._queued
            count = len(queued)
            taken = queued[:count]
            del queued[:count]  # an item queued meanwhile stays, after these
            pending, self._pending = self._pending, []
            # Payloads before the first marker are those of the last one taken.
            marker = self._taken_batch
            for entry in taken:
                if type(entry) is not bytes:
                    marker, parts = entry, None
                    continue
                if parts is None:
                    parts = batches.setdefault(marker[0], (marker[1], []))[1]
                parts.append(entry)
            self._taken_batch = marker
        rows = [self._items_row(key[0], node, group) for key, (node, group) in batches.items()]
        return rows + pending

    def _flush(self) -> None:
        self._flush_due = False
        if self._write_error is not None or not (self._pending or self._queued):
            return
        rows = self._take_pending()
        try:
            self.store.append(self.run_id, rows)
        except BaseException as error:  # told to the next item, and at the run's end
            with self._queue_lock:
                self._pending = rows + self._pending
            self._write_error = error

    def write(self, rows: list[Checkpoint]) -> None:
        """Write rows now, after any queued ones (in one transaction)."""
        self.check_written()
        if self._pending or self._queued:
            rows = self._take_pending() + rows
        self.store.append(self.run_id, rows)

    def flush(self) -> None:
        """Write the queued rows now (the run is ending).

        Raises:
            StoreError: If they cannot be written.
        """
        error, self._write_error = self._write_error, None
        if self._pending or self._queued:
            self.write([])
        elif error is not None:
            raise error

    def _packed_changes(self, view: SharedView, name: str) -> bytes:
        """What ``view`` changed (``None`` for a deleted key), as one payload."""
        return self.codec.pack(
            [
                (key, None if value is MISSING else _encode_key_value(self.codec, key, value, name))
                for key, value in view.changes().items()
            ]
        )

    def changes_row(self, stage: str, index: int, view: SharedView, node: Any) -> Checkpoint:
        """The changes an isolated sub-flow made, to merge them again after a crash."""
        name = node._display_name()
        return Checkpoint(
            "changes",
            stage,
            index,
            name,
            type(node).__qualname__,
            None,
            self._packed_changes(view, name),
        )

    def recorded_changes(self, stage: str, index: int) -> dict[Any, Any]:
        row = self._changes.get((stage, index))
        return {} if row is None else dict(self.codec.unpack(row.payload))

    # -- branches ------------------------------------------------------------------------

    def branch(self, stage: str, index: int) -> dict[Any, Any] | None:
        """The changes branch ``index`` made, if it finished before; else ``None``."""
        row = self._branches.get((stage, index))
        return None if row is None else dict(self.codec.unpack(row.payload))

    def branch_done(
        self, stage: str, index: int, name: str, node: Any, action: Any, view: SharedView
    ) -> None:
        row = Checkpoint(
            "branch",
            stage,
            index,
            name,
            type(node).__qualname__,
            _action_text(action, name),
            self._packed_changes(view, name),
        )
        self.write([row])


def checkpointed_items(
    durable: Durable,
    node: Any,
    run_item: Any,
    is_async: bool,
    direct: Callable[[Any], Any] | None = None,
    failed: Callable[[BaseException, int], BaseException] | None = None,
    runs_in: str = "sequence",
    results: list[Any] | None = None,
) -> Any:
    """Wrap a batch runner's per-item function: an item that finished before is
    not run again (its recorded result stands); one that finishes now is in
    the store before its worker goes on (in the event loop, written at the
    loop's next turn with the others that finished meanwhile).

    ``direct``: the node's own exec coroutine function, to await instead of
    ``run_item`` when nothing else applies to an item (the batch runner's
    fast path); ``failed`` says what its failure on an item becomes.
    ``runs_in`` says what runs the items: ``"sequence"``, the caller, one
    after another; ``"worker"``, tasks that each take item after item; or
    ``"task"``, a task per item. The first two go on to another item when
    one returns, so they must wait until it is in the store first; a task
    of its own per item need not. ``results``: a list to put each item's
    result in, at its index (saving the caller a frame per item)."""
    stage = STEP.get()
    batch = (stage, id(node))
    codec = durable.codec
    recorded = durable.recorded_items(stage)
    # A parameter set's sub-flow walks a frame of its own; an item is told
    # apart (for interrupt answers) by its index.
    flow = node._bf_is_flow
    where: ContextVar[Any] = STEP if flow else DITEM

    if is_async:

        async def item_async(item: Any, index: int) -> Any:
            if recorded and index in recorded:
                result = durable.item_result(index, recorded[index], item, node)
                if results is not None:
                    results[index] = result
                return result
            mark = fingerprint(codec, item)  # before exec, which may change the item
            token: Token[Any] | None = None
            at: _ItemAt | None = None
            if flow:
                token = STEP.set(f"{stage}[{index}]")
            elif runs_in == "task":  # its context is its own, and ends with it
                DITEM.set(index)
            elif runs_in == "worker":  # its next item only moves its marker on
                at = DITEM.get()  # type: ignore[assignment]
                if type(at) is _ItemAt and at.batch is batch:
                    if at.queued:  # the item before must be in the store first
                        await _yield()
                        at.queued = False
                        durable.check_written()
                    at.index = index
                else:
                    at = _ItemAt(batch, index)
                    DITEM.set(at)
            else:
                token = DITEM.set(index)
            try:
                if direct is None:
                    result = await run_item(item, index)
                else:
                    try:
                        result = await direct(item)
                    except Exception as error:
                        failed(error, index)  # type: ignore[misc]  # notes the index
                        raise
                    except asyncio.CancelledError as cancel:
                        raise failed(cancel, index) from cancel  # type: ignore[misc]
            finally:
                if token is not None:
                    where.reset(token)
            durable.queue_item(batch, index, mark, result, node)
            if results is not None:
                results[index] = result
            # Nothing new runs until this item is in the store, so a crash can
            # only lose items in flight. Its commit is queued (call_soon) before
            # this task's next step: it has run when a yield returns. A node's
            # worker yields before its next item (its last one never waits); a
            # task per item ends here (post waits for the commit).
            if at is not None:
                at.queued = True
            elif runs_in != "task":
                await _yield()
                durable.check_written()
            return result

        return item_async

    def item_sync(item: Any, index: int) -> Any:
        if recorded and index in recorded:
            return durable.item_result(index, recorded[index], item, node)
        mark = fingerprint(codec, item)  # before exec, which may change the item
        token = where.set(f"{stage}[{index}]" if flow else index)
        try:
            result = run_item(item, index)
        finally:
            where.reset(token)
        durable.item_done_sync(stage, index, mark, result, node)
        return result

    return item_sync


@types.coroutine
def _yield() -> Generator[None, None, None]:
    """Let the event loop turn once (``asyncio.sleep(0)``, without its coroutine)."""
    yield


def _action_text(action: Any, node: str) -> str | None:
    if action is None:
        return None
    if type(action) is str:
        return _ASCII(action)
    try:
        return json.dumps(action)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"node {node!r} returned action {action!r}, which cannot be saved; actions are strings",
            node=node,
        ) from None


def recorded_events(store: Store, run_id: str) -> list[Event]:
    """The events kept for a run (``record_events=True``), as `Event`
    objects; an error comes back as an exception of a made-up class with the
    original's name, holding its message."""
    from ._events import Event

    events = []
    for text in store.events(run_id):
        record = json.loads(text)
        error = record["error"]
        if error is not None:
            error = type(error["type"], (RecordedError,), {})(error["message"])
        events.append(
            Event(
                record["kind"],
                record["run_id"],
                record["node"],
                tuple(record["path"]),
                record["time"],
                record["item"],
                record["attempt"],
                record["duration"],
                error,
                record["data"],
            )
        )
    return events


class RecordedError(Exception):
    """Stands for an exception read back from a store: its class has the
    original's name; its message is the original's."""
