"""What a stored run already did, read back from its checkpoints to resume it.

`Recorded` rebuilds ``shared`` as the finished steps left it and indexes
the rest: the steps of each walk, the finished items of each batch, the
changes of isolated sub-flows and branches, and the answers to interrupts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from .._isolation import MISSING
from ..stores._base import Checkpoint
from ._codec import Codec
from ._tracking import TrackingDict

__all__ = ["POST", "PREP", "Recorded", "folded"]

PREP = "prep"  # the node of a "state" row of what a flow's own prep wrote
POST = "post"  # that of the row of what the run's own flow wrote after its steps
STATES = ("step", "update", "state")  # the rows that change shared itself


class Recorded:
    """The checkpoints of a run being resumed, indexed for replay."""

    def __init__(self) -> None:
        self.steps: dict[str, list[Checkpoint]] = {}  # by walk, in order
        # The steps of branches' views, in the order written: (frame, order, row)
        # sorted by frame, so those of one walk and the walks nested in it
        # follow each other (see `nested_view_steps`).
        self._view_steps: list[tuple[str, int, Checkpoint]] = []
        # Items that finished before: (fingerprint, result), by stage, by index.
        self.items: dict[str, dict[int, tuple[int, Any]]] = {}
        self.changes: dict[tuple[str, int], Checkpoint] = {}  # isolated sub-flows
        self.branches: dict[tuple[str, int], Checkpoint] = {}
        # Answers to interrupts, by the step (and item) that asked, then by call.
        self.answers: dict[str, dict[int, Any]] = {}
        # The questions a waiting run stopped at (the last run of ask rows),
        # less those answered since.
        self.asked: list[Checkpoint] = []
        self._rows: list[Checkpoint] = []  # every row, in the order written
        self._initial = b""  # the run's initial state, encoded
        # Made once, when first asked (a resume asks at every flow it enters):
        # the walks that got past their flow's prep, and the state the rows leave.
        self._begun: set[str] | None = None
        self._last: dict[Any, Any] | None = None

    @property
    def resumed(self) -> bool:
        """Whether the run did anything before (a resume or a fork)."""
        return bool(self._rows)

    def wrote(self, row: Checkpoint) -> None:
        """The resume wrote ``row`` (a migration's update) after the rows read."""
        self._rows = [*self._rows, row]
        self._begun = self._last = None

    def began(self, frame: str) -> bool:
        """Whether the flow whose walk is ``frame`` got past its ``prep``: its
        walk (or one nested in it) recorded a row, or its ``prep`` its writes
        (`PREP`). A question its ``prep`` asked is kept under ``frame`` too,
        and so is the state written after it (async, exit): neither says so."""
        if self._begun is None:
            begun: set[str] = set()
            for row in self._rows:
                key = row.frame
                if row.kind not in ("ask", "answer", "state") or row.node == PREP:
                    begun.add(key)
                for at, char in enumerate(key):  # the walks it is nested in
                    if char == "/" or char == "[":
                        begun.add(key[:at])
            self._begun = begun
        return frame in self._begun

    def last_state(self, codec: Codec) -> dict[Any, Any]:
        """``shared`` as the recorded rows left it (read once: copy a value
        before changing it)."""
        if self._last is None:
            self._last = folded(codec.unpack, self._initial, self._rows)
        return self._last

    def rebuild(self, codec: Codec, initial: bytes, rows: list[Checkpoint]) -> TrackingDict:
        """``shared`` as the recorded steps left it; index the rest for replay."""
        self._rows, self._initial = rows, initial
        shared = TrackingDict()
        for key, value in codec.unpack(initial):
            dict.__setitem__(shared, key, value)
        previous = ""
        for row in rows:
            kind = row.kind
            # A step of an async or exit run records no changes (its payload is
            # empty): a "state" row after it holds them.
            if kind in ("step", "update", "state") and row.payload:
                for key, value in codec.unpack(row.payload):
                    if value is MISSING:
                        dict.pop(shared, key, None)
                    else:
                        dict.__setitem__(shared, key, value)
            if kind == "state":
                continue  # it may come between a suspension's questions and the run's end
            if kind in ("step", "view_step"):
                self.steps.setdefault(row.frame, []).append(row)
                if kind == "view_step":
                    self._view_steps.append((row.frame, len(self._view_steps), row))
            elif kind == "items":
                items = self.items.setdefault(row.frame, {})
                for index, fingerprint, result in codec.split(row.payload):
                    items[index] = (fingerprint, result)
            elif kind == "changes":
                self.changes[(row.frame, row.position)] = row
            elif kind == "branch":
                self.branches[(row.frame, row.position)] = row
            elif kind == "answer":
                self.answers.setdefault(row.frame, {})[row.position] = codec.decode(row.payload)
            if kind == "ask":
                if previous != "ask":  # the asks of one suspension are written together
                    self.asked = []
                self.asked.append(row)
            elif kind != "answer":
                self.asked = []  # the run went on past those questions
            previous = kind
        answers = self.answers
        self.asked = [row for row in self.asked if row.position not in answers.get(row.frame, {})]
        for steps in self.steps.values():
            steps.sort(key=lambda row: row.position)
        self._view_steps.sort(key=lambda entry: entry[:2])
        shared._bf_last = {key: codec.encode(value) for key, value in dict.items(shared)}
        return shared

    def nested_view_steps(self, *prefixes: str) -> list[Checkpoint]:
        """The steps of views recorded in the walks whose key begins with one
        of ``prefixes`` (those nested in a step, ``0:f/2:``, or a parameter
        set's, ``0:f/2:sets[1]``), in the order they were written."""
        entries = self._view_steps
        found = []
        for prefix in prefixes:
            for at in range(bisect_left(entries, (prefix,)), len(entries)):
                entry = entries[at]
                if not entry[0].startswith(prefix):
                    break
                found.append(entry)
        found.sort(key=lambda entry: entry[1])
        return [row for _, _, row in found]


def folded(
    unpack: Callable[[bytes], list[tuple[Any, Any]]], initial: bytes, rows: Iterable[Checkpoint]
) -> dict[Any, Any]:
    """``shared`` as ``initial`` and the changes ``rows`` hold leave it, in
    order (``unpack``: how a payload is read)."""
    shared: dict[Any, Any] = dict(unpack(initial))
    for row in rows:
        if row.kind in STATES and row.payload:
            for key, value in unpack(row.payload):
                if value is MISSING:
                    shared.pop(key, None)
                else:
                    shared[key] = value
    return shared
