"""The durable side of one run: the checkpoints it writes and what it finished before.

The engine asks a `DurableRun` whether a step, item or branch finished
before (when resuming) and tells it what finishes now; it turns both into
checkpoint rows with the run's codec and hands them to its writer.
"""

from __future__ import annotations

import asyncio
import copy
import json
from functools import partial
from time import time
from typing import Any
from zlib import crc32

from .._context import STEP, AttemptState, StepAt
from .._errors import CheckpointError, ResumeError
from .._isolation import MISSING
from .._questions import question_id
from .._views import SharedView
from ..stores._base import Checkpoint, Store, step_path
from ._codec import ASCII, JSON_TEXT, SCALARS, UNSAVABLE, Codec, action_text, encode_key_value
from ._drain import Drain
from ._fingerprint import Unfingerprintable, fingerprint
from ._history import renamed_key
from ._interrupt import Interrupted
from ._lax import KEPT, Settled, StepColumns
from ._recorded import POST, PREP, Recorded
from ._run_codec import undecodable
from ._tracking import TrackingDict, changed_keys, replayed_into
from ._usage_writes import UsageWrites
from ._writer import BATCH, CheckpointWriter

__all__ = ["DurableRun"]


class DurableRun:
    """Writes one run's checkpoints and, resuming, answers what finished before."""

    def __init__(
        self, store: Store, run_id: str, durability: str = "sync", codec: Codec | None = None
    ) -> None:
        self.store = store
        self.run_id = run_id
        # A new run's: as the store says; a resumed run's: its own (run_codec).
        self.codec = Codec(store.serializer) if codec is None else codec
        self.writer = CheckpointWriter(store, run_id, self.codec, durability)
        self.batch_lock = self.writer.batch_lock
        self.strict = durability == "sync"  # every checkpoint in the store before going on
        self.batched = durability == "async"  # written in batches as the run goes
        # async and exit: a step of the run's own shared records no changes
        # and its row is kept in columns (see _lax).
        self.settled = Settled(self.codec)
        self.columns = StepColumns()
        if not self.strict:
            self.writer.lax(self.columns.take, self.settled.row)
        # Raise the error of a failed group commit, if one failed (per item: direct).
        self.check_written = self.writer.check_written
        self.recorded = Recorded()
        self.drain = Drain(store, run_id)  # asked to stop at the next safe point?
        # Answers to interrupts (the recorded ones, then those given since), by
        # the step (and item) that asked, then by call; how many calls each
        # step made in this process; per step, the exec attempt loop that last
        # asked, its attempt then, and the call its attempts start from.
        self.answers = self.recorded.answers
        self.calls: dict[str, int] = {}
        self.attempts: dict[str, tuple[AttemptState, int, int]] = {}
        self.at: StepAt | None = None  # the step that started last
        # Resumed with nodes renamed: each one's name now -> its name when the
        # run began, so idempotency keys and question ids stay the same.
        self._first_names: dict[str, str] = {}
        self._keep_root = True
        self._failures: list[tuple[BaseException, str]] = []  # and the step each came from
        self._json = self.codec.kind == "json"
        # What the run's calls used in its earlier parts (resuming), and the
        # spending of this part (a braidflow._usage.Spend), kept when it ends.
        self.spent_before: Any = None
        self.spend: Any = None
        self.usage = UsageWrites(store, run_id)  # its usage in its record as it goes
        # Whether the run's events are kept in the store (resuming: as its
        # first part said, unless the resume says otherwise).
        self.record_events = False

    def renamed(self, renamed: dict[str, str], keep_root: bool) -> None:
        """The run resumes with the nodes ``renamed`` (its first name: its
        name now; the flow's own too, unless ``keep_root``)."""
        first: dict[str, str] = {}
        for old, new in renamed.items():
            first.setdefault(new, old)
        self._first_names, self._keep_root = first, keep_root

    def first_key(self, key: str) -> str:
        """A step key under the names its nodes had when the run began: what
        an idempotency key and a question's id are made of, so that neither
        changes when a resume renames a node."""
        first = self._first_names
        return key if not first else renamed_key(key, first, self._keep_root)

    def initial(self, shared: TrackingDict, node: str) -> bytes:
        """Encode the whole store at the start (and remember each key's form);
        ``node`` is what runs (a flow, mostly), for an error to name.

        Raises:
            CheckpointError: If the shared given to ``run()`` holds a key or
                value that cannot be saved.
        """
        encoded = [
            (key, encode_key_value(self.codec, key, value, node, given="run"))
            for key, value in dict.items(shared)
        ]
        shared._bf_last = dict(encoded)
        self.settled.shared = shared
        return self.codec.pack(list(encoded))

    def rebuild(self, initial: bytes, rows: list[Checkpoint]) -> TrackingDict:
        """The store as the recorded steps left it; index the rest for replay.

        Raises:
            StoreError: If the run's data cannot be decoded with its codec.
        """
        try:
            shared = self.recorded.rebuild(self.codec, initial, rows)
        except Exception as error:
            damaged = undecodable(error, self.run_id, self.codec)
            if damaged is None:
                raise
            raise damaged from error
        self.settled.shared = shared
        return shared

    @property
    def asked(self) -> list[Checkpoint]:
        """The questions a waiting run stopped at and no resume answered yet."""
        return self.recorded.asked

    # -- writing ------------------------------------------------------------------

    def write(self, rows: list[Checkpoint]) -> None:
        """Write rows now, after any queued ones."""
        self.writer.write(rows)

    def flush(self) -> None:
        """Write the queued rows now, and wait until they are in the store
        (the run is ending)."""
        self.writer.flush()

    def hand_over(self) -> None:
        """The queued items go on their way now, before anything uses their
        results: into the store, under ``durability="sync"``."""
        self.writer.hand_over()

    def sync(self) -> None:
        """Everything so far in the store now (a node with durability="sync")."""
        self.writer.sync()

    # -- interrupts ----------------------------------------------------------------

    def ask_row(self, asked: Interrupted) -> Checkpoint:
        """The row that keeps which interrupt a waiting run stopped at."""
        return Checkpoint("ask", asked.key, asked.call, asked.where, "", None, b"", None, time())

    def answer(self, answers: list[tuple[Checkpoint, Any]]) -> None:
        """Record answers to questions the run stopped at (each with its
        ``ask`` row), all or none, so they hold even if the run stops again.

        Raises:
            CheckpointError: If an answer cannot be saved; none is written.
        """
        rows = []
        for asked, value in answers:
            ident = question_id(self.first_key(asked.frame), asked.position)
            payload = answer_payload(self.codec, f"run {self.run_id!r}", asked, ident, value)
            rows.append(
                Checkpoint(
                    "answer",
                    asked.frame,
                    asked.position,
                    asked.node,
                    "",
                    None,
                    payload,
                    None,
                    time(),
                )
            )
        self.write(rows)
        for asked, value in answers:
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
        return None if self.at is None else step_path(self.at.key)

    # -- steps ---------------------------------------------------------------------

    def steps_in(self, frame: str) -> list[Checkpoint]:
        """The steps already finished in the walk ``frame`` (resuming), in order."""
        return self.recorded.steps.get(frame, [])

    def replay(self, row: Checkpoint, node: Any, target: Any) -> Any:
        """Skip a finished step: check it is the same node, apply what it changed
        to a branch's view (the store itself was rebuilt already); return its action.

        A view gets what the walks nested in the step changed too (a flow's
        steps, a batch flow's parameter sets, a fork's branches), in the order
        they were written, then the step's own changes, which were made
        against those (`replayed_into`): its nested walks are not walked again."""
        name = node._display_name()
        if row.node != name:
            raise ResumeError(
                f"the flow changed since run {self.run_id!r} was recorded: step {row.position} "
                f"of {step_path(row.frame)!r} was {row.node!r}, the flow now has {name!r} there; "
                f"if it was renamed, resume with rename={{{row.node!r}: {name!r}}}, else with "
                "the flow as it was",
                node=name,
            )
        if row.kind == "view_step":
            for nested in self.recorded.nested_view_steps(f"{row.frame}/{row.position}:"):
                self._apply(target, nested.payload)
            self._apply(target, row.payload)
        return None if row.action is None else json.loads(row.action)

    def prep_done(self, frame: str, shared: TrackingDict, touched: Any) -> None:
        """A flow's own ``prep`` ran, before its walk ``frame`` begins: keep
        what it changed (the keys it ``touched``) as a ``state`` row, so that
        the steps inside see it as saved, ``state(at=)`` has it, and a resume
        inside the flow finds it (see `prep_ran_again`).

        Raises:
            CheckpointError: If a value it left cannot be stored.
        """
        touched = [*touched]  # at once: see step_done
        if self.strict:
            changes = changed_keys(self.codec, shared, frame, touched)
        else:  # after the steps kept and the state they left; every key it touched
            self.writer.settle()
            changes = [
                (key, encode_key_value(self.codec, key, dict.__getitem__(shared, key), frame))
                if key in shared
                else (key, None)
                for key in shared.touched(touched)
            ]
            self.settled.saved(changes)
        if changes:
            payload = self.codec.pack(changes)
            row = Checkpoint("state", frame, 0, PREP, "", None, payload, None, time())
            self.writer.write([row])

    def prep_ran_again(self, frame: str, shared: TrackingDict, touched: Any) -> None:
        """Resuming inside the flow whose walk is ``frame``: its own ``prep``
        ran again (for its result) on the store as the run left it, which
        holds what it wrote the first time (`prep_done`) and what the steps
        since did. The keys it ``touched`` now get back their recorded
        values, so that nothing it did counts twice: in the objects they
        hold, where those are stored the same or are lists and dicts (see
        `_restored`), so that a result of ``prep`` that is one of them (a
        list its ``post`` appends to) still is what ``shared`` holds."""
        if not self.recorded.began(frame):
            return
        recorded = self.recorded.last_state(self.codec)
        memo: dict[int, Any] = {}
        for key in [*shared.touched(touched)] if touched else ():
            if key in recorded:
                value = dict.get(shared, key, MISSING)
                restored = _restored(self.codec, value, recorded[key], memo)
                if restored is not value:
                    dict.__setitem__(shared, key, restored)
            else:
                dict.pop(shared, key, None)

    def replay_sets(self, stage: str, view: Any) -> None:
        """Resuming a batch flow whose parameter sets share a branch's view:
        apply to it what the sets that finished before changed, in the order
        written (they are not walked again; the store itself was rebuilt)."""
        finished = self.recorded.items.get(stage)
        if finished:
            prefixes = [f"{stage}[{index}]" for index in finished]
            for row in self.recorded.nested_view_steps(*prefixes):
                self._apply(view, row.payload)

    def nested_before(self, stage: str, view: Any) -> None:
        """Resuming a fork (or isolated parameter sets) at ``stage`` that runs
        on a branch's ``view``: what the views nested in it saved before
        (its branches' or sets' steps, recorded in the run's earlier parts)
        is noted in ``view`` as saved (`replayed_into`), as the steps they
        save now are: a later resume that replays the step applies them
        all to ``view``, in the order written, before the step's own."""
        codec = self.codec
        for row in self.recorded.nested_view_steps(f"{stage}/", f"{stage}["):
            replayed_into(
                view,
                [
                    (key, None if value is MISSING else codec.encode(value))
                    for key, value in codec.unpack(row.payload)
                ],
            )

    def _apply(self, target: Any, payload: bytes) -> None:
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
        touched: set[Any] | list[Any],
        started: float,
    ) -> None:
        """Record a finished step (``node``, whose display name is ``name``,
        begun at ``started``) and what it changed, before the walk goes on."""
        tracking = type(target) is TrackingDict  # else a branch's view
        # The keys as they are now, at once: a thread the step started (or a
        # value's encoding) may touch more while they are recorded.
        touched = [*touched]
        payload = _json_changes(target, touched) if self._json and tracking else None
        if payload is None:
            changes = changed_keys(self.codec, target, name, touched, node._bf_is_flow)
            payload = self.codec.pack(changes)
            if changes and type(target) is SharedView:
                # The views it is nested in replay it with their running step.
                outer = target._base
                while type(outer) is SharedView:
                    replayed_into(outer, changes)
                    outer = outer._base
        kind = "step" if tracking or not isinstance(target, SharedView) else "view_step"
        row = _row(
            (
                kind,
                frame,
                position,
                name,
                type(node).__qualname__,
                action_text(action, name),
                payload,
                started,
                time(),
            )
        )
        self.writer.write([row])

    def run_done(self, shared: TrackingDict, root: StepAt) -> None:
        """The run completed: keep what its own flow's ``prep`` and ``post``
        changed (the keys its step ``root`` touched), which no step holds, so
        that the run's stored state is ``shared`` as the run left it. Its
        row is marked `POST`: it is not the state after the last step.

        Raises:
            CheckpointError: If a value they left cannot be stored.
        """
        if not self.strict:  # after the steps kept and the state they left
            self.writer.settle()
        changes = changed_keys(self.codec, shared, root.key, [*root.touched])
        if changes:
            payload = self.codec.pack(changes)
            self.writer.write(
                [Checkpoint("state", root.key, 0, POST, "", None, payload, None, time())]
            )

    def lax_step_done(self, at: Any, node: Any, action: Any) -> None:
        """Record a finished step of the run's own ``shared`` under async or
        exit (where `step_done` records the others), at the walk's step
        ``at`` (its `StepCheckpoints`), and move it on: the values of the
        keys it touched are noted and its row kept in columns (see _lax);
        it is written with the next batch.

        Raises:
            CheckpointError: If its action or a value it left cannot be stored.
        """
        name = at.name
        ended = time()
        touched = at.touched
        columns = self.columns
        lock = self.batch_lock  # a batch may be written from a worker thread
        lock.acquire()  # (not `with`: its two method calls cost a tenth of a step)
        try:
            if touched:  # Settled.note, its common case inline: every value kept as it is
                touched = [*touched]  # at once: see step_done
                shared = at.target
                for key in touched:
                    if type(key) is not str or type(dict.get(shared, key, MISSING)) not in KEPT:
                        self.settled.note(shared, touched, name)
                        break
                else:
                    values = self.settled.values
                    for key in touched:
                        values[key] = dict.get(shared, key, MISSING)
            # The step kept in columns: StepColumns.add, inline.
            position = at.position
            if position != columns.next or at.frame != columns.frame:
                columns.restart(at.frame, position)
            last = columns.action
            if action is not last and (type(action) is not str or action != last):
                columns.acted(action, name)
            columns.next = position + 1
            names = columns.names
            class_ = type(node).__qualname__
            if class_ is not columns.class_:  # (a class's __qualname__ is one string)
                columns.classes.append((len(names), class_))
                columns.class_ = class_
            names.append(name)
            columns.started.append(at.started)
            columns.ended.append(ended)
        finally:
            lock.release()
        at.position = position + 1
        if self.batched:  # the batch written if due (CheckpointWriter.tick, when it may be)
            writer = self.writer
            if ended >= writer.due_hint or len(names) >= BATCH or ended < writer.begun_hint:
                writer.tick(len(names))
        if node._bf_strict:  # durability="sync" for this node
            self.sync()

    # -- items -------------------------------------------------------------------------

    def recorded_items(self, stage: str) -> dict[int, tuple[int, Any]]:
        """The items of ``stage`` that finished before (resuming), by index."""
        return self.recorded.items.get(stage, {})

    def fingerprint(self, item: Any, index: int, node: Any) -> int:
        """Item ``index`` of ``node``'s batch's fingerprint, taken before it runs.

        Raises:
            CheckpointError: If the item has no stable fingerprint; it does not run.
        """
        if type(item) is int and self._json:  # the usual item, made directly
            return crc32(b"%d" % item)
        try:
            return fingerprint(self.codec, item)
        except Unfingerprintable as error:
            raise _unfingerprintable(error, index, node) from None

    def item_result(self, index: int, recorded: tuple[int, Any], item: Any, node: Any) -> Any:
        """The recorded result of an item that finished before.

        Raises:
            ResumeError: If prep now gives a different item at that index.
            CheckpointError: If the item now has no stable fingerprint.
        """
        taken, result = recorded  # the fingerprint taken when it ran
        try:
            now = fingerprint(self.codec, item)
        except Unfingerprintable as error:
            raise _unfingerprintable(error, index, node) from None
        if taken != now:
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
            if self._json:
                if type(result) in SCALARS:  # faithful as they are
                    return b"[%d,%d,%b]" % (index, mark, JSON_TEXT(result).encode())
                return b"[%d,%d,%b]" % (index, mark, self.codec.encode(result))
            return self.codec.encode([index, mark, result])
        except UNSAVABLE as error:
            raise CheckpointError(
                f"{node._describe()}: the result of item {index} is a {type(result).__name__} "
                f"that cannot be saved as {self.codec.kind} ({error}); return plain data "
                "from exec, or use serializer='pickle'",
                node=node._display_name(),
            ) from error

    def item_done(
        self, batch: tuple[str, int, str | None], index: int, mark: int, result: Any, node: Any
    ) -> None:
        """Record a finished item now (``mark``: its fingerprint, taken before it ran)."""
        payload = self._item_payload(index, mark, result, node)
        self.write([self.writer.items_row(batch, node, [payload])])

    def record_item(
        self, batch: tuple[str, int, str | None], index: int, mark: int, result: Any, node: Any
    ) -> None:
        """Record a finished item (``mark``: its fingerprint) of ``batch`` (its
        stage, its node's id, how many items it has as JSON text, if known): on an event loop,
        queued for the group commit at the loop's next turn; in a thread with
        no loop, written now.

        Raises:
            StoreError: If an earlier group commit failed; the batch stops.
        """
        if asyncio._get_running_loop() is None:
            self.item_done(batch, index, mark, result, node)
            return
        if type(result) is int and self._json:
            payload = b"[%d,%d,%d]" % (index, mark, result)
        else:
            payload = self._item_payload(index, mark, result, node)
        self.writer.queue_item(batch, payload, node)

    # -- isolated sub-flows and branches --------------------------------------------------

    def _packed_changes(self, view: SharedView, name: str) -> bytes:
        """What ``view`` changed (``None`` for a deleted key), as one payload."""
        return self.codec.pack(
            [
                (key, None if value is MISSING else encode_key_value(self.codec, key, value, name))
                for key, value in view.changes().items()
            ]
        )

    def sub_flow_done(self, stage: str, index: int, view: SharedView, node: Any) -> None:
        """Queue the changes an isolated sub-flow made, to merge them again after a crash."""
        name = node._display_name()
        row = Checkpoint(
            "changes",
            stage,
            index,
            name,
            type(node).__qualname__,
            None,
            self._packed_changes(view, name),
            None,
            time(),
        )
        self.writer.queue_row(row)

    def recorded_changes(self, stage: str, index: int) -> dict[Any, Any]:
        """What the isolated sub-flow ``index`` of ``stage`` changed, as recorded."""
        row = self.recorded.changes.get((stage, index))
        return {} if row is None else dict(self.codec.unpack(row.payload))

    def recorded_branch(self, stage: str, index: int) -> dict[Any, Any] | None:
        """The changes branch ``index`` made, if it finished before; else ``None``."""
        row = self.recorded.branches.get((stage, index))
        return None if row is None else dict(self.codec.unpack(row.payload))

    def branch_done(
        self, stage: str, index: int, name: str, node: Any, action: Any, view: SharedView
    ) -> None:
        """Record a finished branch and what it changed."""
        row = Checkpoint(
            "branch",
            stage,
            index,
            name,
            type(node).__qualname__,
            action_text(action, name),
            self._packed_changes(view, name),
            None,
            time(),
        )
        self.write([row])


def _unfingerprintable(error: Unfingerprintable, index: Any, node: Any) -> CheckpointError:
    """The error for a batch item without a stable fingerprint, naming its
    node and index (those of the batch at hand if not known)."""
    if hasattr(node, "_describe"):
        where, name = node._describe(), node._display_name()
    else:
        name = step_path(STEP.get().key)
        where = f"node {name!r}"
    which = f"item {index}" if isinstance(index, int) else "an item"
    return CheckpointError(
        f"{where}: {which} cannot be fingerprinted: {error}. A durable batch takes a "
        "fingerprint of each item before it runs, to tell on resume whether prep gives the "
        "same items; make items the data that says what to do (ids, paths, URLs, or "
        "dataclasses, tuples and dicts of such values) and keep clients, connections and "
        "other live objects on the node or in shared",
        node=name,
    )


def answer_payload(codec: Codec, run: str, asked: Checkpoint, ident: str, value: Any) -> bytes:
    """An answer to question ``ident`` (``asked``: its ``ask`` row), encoded.

    Raises:
        CheckpointError: If it cannot be saved (``run``: the run, as said).
    """
    try:
        return codec.encode(value)
    except UNSAVABLE as error:
        kind = type(value).__name__
        raise CheckpointError(
            f"the answer to question {ident} of {run} (at {step_path(asked.frame)}) is "
            f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind} that "
            f"cannot be saved as "
            f"{codec.kind} ({error}); give plain data, or use a store with "
            "serializer='pickle'",
            node=asked.node,
        ) from error


def _restored(codec: Codec, value: Any, recorded: Any, memo: dict[int, Any]) -> Any:
    """``recorded``, a value of the recorded state (left as it is), in place
    of ``value``, what a ``prep`` run again left: in ``value``'s own list or
    dict where both are one (each item restored so in turn), ``value``
    itself where it is stored the same, else a copy of ``recorded``.
    ``memo``: deepcopy's, shared by the values of one restore; it holds
    the lists and dicts filled too (one met twice gets a copy)."""
    kind = type(value)
    if kind is type(recorded) and (kind is list or kind is dict) and id(value) not in memo:
        memo[id(value)] = value  # (an object alive in shared: no id of a copied one)
        if kind is list:
            pairs = zip(value, recorded, strict=False)  # as far as both go; then recorded's
            kept = [_restored(codec, item, was, memo) for item, was in pairs]
            value[:] = kept + copy.deepcopy(recorded[len(kept) :], memo)
        else:
            items = [
                (key, _restored(codec, value[key], was, memo))
                if key in value
                else (key, copy.deepcopy(was, memo))
                for key, was in recorded.items()
            ]
            value.clear()  # and filled again, in the recorded order
            value.update(items)
        return value
    if type(recorded) in SCALARS:
        return recorded  # nothing changes it in place: its object is as good as any
    if value is not MISSING:
        try:
            if codec.encode(value) == codec.encode(recorded):
                return value
        except UNSAVABLE:
            pass  # it cannot be stored as it is: not the value recorded
    return copy.deepcopy(recorded, memo)


_row = partial(tuple.__new__, Checkpoint)  # a Checkpoint of its nine fields, made directly


def _json_changes(shared: TrackingDict, touched: list[Any]) -> bytes | None:
    """What a step changed in ``shared``, as `Codec.pack` writes it for JSON,
    made here for the usual step (string keys, numbers and strings); ``None``
    for anything else, which `changed_keys` then does (nothing is noted here
    until all of it could be)."""
    last = shared._bf_last
    changed: list[tuple[str, bytes | None]] = []
    for key in touched:
        if type(key) is not str:  # a key that is not a string, or every key (_ALL)
            return None
        if dict.__contains__(shared, key):
            value = dict.__getitem__(shared, key)
            kind = type(value)
            if kind is int:
                data = b"%d" % value
            elif kind is str:
                data = ASCII(value).encode()
            else:
                return None
            if last.get(key) != data:
                changed.append((key, data))
        elif key in last:
            changed.append((key, None))
    parts = []
    for key, saved in changed:
        if saved is None:
            del last[key]
            parts.append(b"[%b,0]" % ASCII(key).encode())
        else:
            last[key] = saved
            parts.append(b"[%b,1,%b]" % (ASCII(key).encode(), saved))
    return b"[%b]" % b",".join(parts)
