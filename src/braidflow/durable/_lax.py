"""What a step of a run under ``durability="async"`` or ``"exit"`` records.

Such a step records no changes (its payload is `LAX`): the value each key
it touched has after it is noted (`Settled`), and written as one ``state``
row with the next rows the writer writes, so the store holds ``shared``
as it was after the last step it holds, however the run stops. Its row
costs little too: the steps of one walk that finish one after another are
kept as columns (`StepColumns`) and written as one row of kind ``steps``,
which `expand` turns back into a ``step`` row each when the run is read.
"""

from __future__ import annotations

import json
import sys
from array import array
from typing import Any

from .._isolation import MISSING
from ..stores._base import LAX, Checkpoint
from ._codec import Codec, action_text, encode_key_value
from ._tracking import EVERY_KEY, TrackingDict

__all__ = ["KEPT", "STEPS", "Settled", "StepColumns", "expand"]

STEPS = "steps"  # the kind of a row of steps kept as columns
# The types of values a step cannot change in place (MISSING: a deleted key):
# noted as they are, where others are encoded at once.
KEPT = frozenset({str, int, bool, type(None), type(MISSING)})
_ALL = EVERY_KEY
get = dict.get  # a TrackingDict read as a dict: reading marks nothing


class _Encoded:
    """A value noted encoded: it may change in place after the step."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class Settled:
    """The values the keys touched since the last ``state`` row have now.

    Each ``state`` row made is also what the run's ``shared`` (`shared`, its
    `TrackingDict`) now has saved (its ``_bf_last``): so a step that goes
    through every key (an iteration) finds a key deleted since it was saved
    in an earlier row, and what the run's own flow changes after its steps
    (`DurableRun.run_done`) is told from what is saved now."""

    __slots__ = ("codec", "shared", "values")

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.values: dict[Any, Any] = {}
        self.shared: TrackingDict | None = None  # set once the run's shared is made

    def note(self, shared: TrackingDict, touched: list[Any], node: str) -> None:
        """Note the values the keys a step of ``node`` touched (``touched``,
        its keys, taken at once) have in ``shared`` after it. (`DurableRun.lax_step_done`
        notes them itself when every value is of a type in `KEPT`.)

        Raises:
            CheckpointError: If a value cannot be stored (naming the node);
                nothing of the step is noted then (its step failed).
        """
        noted = {}
        as_json = self.codec.kind == "json"
        # Every key: those there now, those saved, and those noted since
        # (one made and deleted since the last row is in neither of the others).
        keys = {*shared.touched(touched), *self.values} if _ALL in touched else touched
        for key in keys:
            value = get(shared, key, MISSING)
            if value is MISSING and as_json and type(key) is not str:
                continue  # looked for, not there: JSON stores no such key, so none to delete
            if (type(value) in KEPT and type(key) is str) or value is MISSING:
                noted[key] = value  # never changed in place: kept as it is
            else:
                noted[key] = _Encoded(encode_key_value(self.codec, key, value, node))
        self.values.update(noted)

    def saved(self, changes: list[tuple[Any, bytes | None]]) -> None:
        """A ``state`` row of ``changes`` (each key's saved form, ``None``
        for a deleted key) was made: what ``shared`` has saved now."""
        if self.shared is not None:
            saved = self.shared._bf_last
            for key, data in changes:
                if data is None:
                    saved.pop(key, None)
                else:
                    saved[key] = data

    def row(self, last: Checkpoint) -> list[Checkpoint]:
        """The ``state`` row of what changed, if anything did, to follow
        ``last`` and stand where it stands (for where a run is)."""
        values = self.values
        if not values:
            return []
        self.values = {}
        codec = self.codec
        changes = [
            (
                key,
                None
                if value is MISSING
                else value.data
                if type(value) is _Encoded
                else encode_key_value(codec, key, value, last.node),
            )
            for key, value in values.items()
        ]
        self.saved(changes)
        kind = last.kind
        if not last.frame and kind in (STEPS, "step"):  # a node run alone: 0:name
            where = f"{last.position}:{last.node}"
        elif kind in (STEPS, "step", "view_step", "branch") or (kind == "update" and last.node):
            where = f"{last.frame}/{'b' if kind == 'branch' else ''}{last.position}:{last.node}"
        else:  # a row whose path is its frame's: items, a sub-flow's changes, a question
            where = last.frame
        return [Checkpoint("state", where, 0, "", "", None, codec.pack(changes), None, last.ended)]


class StepColumns:
    """Steps finished one after another in one walk, kept to be written as
    one row, column by column: their names, their classes and actions
    (where each changes), when each began and ended; their positions
    follow each other from `first`. `DurableRun.lax_step_done` adds a step
    itself, inline (a call would cost a tenth of it); `add` does the same."""

    __slots__ = (
        "action",
        "acts",
        "class_",
        "classes",
        "done",
        "ended",
        "first",
        "frame",
        "names",
        "next",
        "started",
    )

    def __init__(self) -> None:
        self.done: list[Checkpoint] = []  # rows of earlier walks' steps, in order
        self.frame: str | None = None
        self.first = self.next = 0  # the position of the first step kept, of the next
        self._empty()

    def _empty(self) -> None:
        self.names: list[str] = []
        self.classes: list[tuple[int, str]] = []  # (index, class) where the class changes
        self.class_: str | None = None  # the last step's class
        # (index, the action as JSON, or None) where the action changes; the
        # last step's action as it was given (None before the first step).
        self.acts: list[tuple[int, str | None]] = []
        self.action: Any = None
        self.started = array("d")
        self.ended = array("d")

    def restart(self, frame: str, position: int) -> None:
        """The next step kept is at ``position`` of the walk ``frame``, which
        does not follow the last one kept: the steps kept so far make a row."""
        if self.names:
            self.done.append(self._row())
        self.frame = frame
        self.first = position

    def acted(self, action: Any, name: str) -> None:
        """The next step kept gave ``action``, not the action of the step before.

        Raises:
            CheckpointError: If the action cannot be saved; nothing is kept.
        """
        self.acts.append((len(self.names), action_text(action, name)))
        self.action = action

    def add(
        self,
        frame: str,
        position: int,
        name: str,
        class_: str,
        action: Any,
        started: float,
        ended: float,
    ) -> None:
        """Keep the step at ``position`` of the walk ``frame`` that gave ``action``."""
        if position != self.next or frame != self.frame:
            self.restart(frame, position)
        if action is not self.action and (type(action) is not str or action != self.action):
            self.acted(action, name)
        self.next = position + 1
        names = self.names
        if class_ is not self.class_:  # (a class's __qualname__ is one string)
            self.classes.append((len(names), class_))
            self.class_ = class_
        names.append(name)
        self.started.append(started)
        self.ended.append(ended)

    def _row(self) -> Checkpoint:
        names, classes, acts, started, ended = (
            self.names,
            self.classes,
            self.acts,
            self.started,
            self.ended,
        )
        self._empty()
        first, self.first = self.first, self.next  # the next row's steps follow these
        # The texts as JSON, a line; the times after it as doubles (as text,
        # they would cost more than all the rest).
        texts: dict[str, Any] = {"first": first, "names": names, "classes": classes}
        if acts:
            texts["acts"] = acts
        times = started.tobytes() + ended.tobytes()
        if sys.byteorder != "little":  # stored little-endian, as the run log is
            swapped = array("d", started)
            swapped.extend(ended)
            swapped.byteswap()
            times = swapped.tobytes()
        return Checkpoint(  # where the last step stands
            STEPS,
            self.frame or "",
            first + len(names) - 1,
            names[-1],
            classes[-1][1],
            None,
            b"%b\n%b" % (json.dumps(texts, separators=(",", ":")).encode(), times),
            started[0],
            ended[-1],
        )

    def take(self) -> list[Checkpoint]:
        """The rows of the steps kept, in order; none are kept after."""
        rows = self.done
        if self.names:
            rows.append(self._row())
        self.done = []
        return rows


def expand(rows: list[Checkpoint]) -> list[Checkpoint]:
    """The rows of a run as it was written, with each ``steps`` row as the
    ``step`` rows it holds (each with the payload `LAX`)."""
    if not any(row.kind == STEPS for row in rows):
        return rows
    expanded: list[Checkpoint] = []
    for row in rows:
        if row.kind != STEPS:
            expanded.append(row)
            continue
        text, _, doubles = row.payload.partition(b"\n")
        positions, names, classes, actions = _columns(json.loads(text))
        times = array("d")
        times.frombytes(doubles)
        if sys.byteorder != "little":
            times.byteswap()
        count = len(positions)
        started, ended = times[:count], times[count:]
        frame = row.frame
        expanded += [
            Checkpoint("step", frame, *step, LAX, *times)
            for step, times in zip(
                zip(positions, names, classes, actions, strict=True),
                zip(started, ended, strict=True),
                strict=True,
            )
        ]
    return expanded


def _columns(texts: Any) -> tuple[list[int], list[str], list[str], list[str | None]]:
    """A ``steps`` row's positions, names, classes and actions. (Rows written
    by the first lax runs hold the four lists as they are; later ones, each
    action given by its index, in ``actions``.)"""
    if type(texts) is list:
        positions, names, kinds, actions = texts
        return positions, names, kinds, actions
    names = texts["names"]
    count = len(names)
    first = texts["first"]
    if "actions" in texts:
        given = texts["actions"]
        actions = [given.get(str(index)) for index in range(count)]
    else:
        actions = _spread(texts.get("acts", []), count, None)
    return list(range(first, first + count)), names, _spread(texts["classes"], count, ""), actions


def _spread(changes: list[Any], count: int, before: Any) -> list[Any]:
    """``count`` values given as ``[index, value]`` where the value changes
    (``before`` until the first change)."""
    if not changes:
        return [before] * count
    values = [before] * changes[0][0]
    for (start, value), (end, _) in zip(changes, [*changes[1:], (count, None)], strict=True):
        values += [value] * (end - start)
    return values
