"""One stored run as its page shows it: its steps, its error with the notes that say
where it failed, ``shared`` after any step with what that step changed, its events.

Everything is read with `StoredRun` and the store's ``events()``, which
change nothing: a run going on in another process is read as far as it is
written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._errors import ResumeError
from ..durable._history import FORKED_KEY, RESUMED_KEY, StepRecord, StoredRun
from ..stores._base import RunRecord, Store
from ._listing import run_length, took, when

__all__ = [
    "EVENTS_PAGE",
    "Change",
    "EventRow",
    "EventsPage",
    "RunView",
    "StateView",
    "StepRow",
    "events_page",
    "progress",
    "prompt_lines",
    "version_of",
]

EVENTS_PAGE = 200  # events a page
_SHOWN = 1_000_000  # characters of shared shown (and editable) on the page
_SHORT = 200  # characters of a value in a list of changes
_STATES = ("step", "update")  # the kinds of step that change shared itself


@dataclass(frozen=True, slots=True)
class StepRow:
    """One step, as the table of steps shows it."""

    number: int
    path: str
    kind: str
    status: str
    action: str
    started: str
    took: str
    items: str
    changed: str
    run_id: str  # the run it ran in, if not this one (a fork took it over)
    part: int
    viewable: bool  # it finished: shared after it can be shown


@dataclass(frozen=True, slots=True)
class Change:
    """What a step did to one key of ``shared``: ``+`` added, ``~`` changed, ``-`` removed."""

    sign: str
    key: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class StateView:
    """``shared`` after a step (``at``; 0: as the run started), what the step
    changed, and whether it can be edited here to fork the run."""

    at: int
    step: StepRecord | None
    text: str  # shared as JSON, for reading (cut past `_SHOWN` characters)
    cut: bool
    changes: list[Change]
    in_view: bool  # the step changed a branch's view of shared, not shared itself
    editable: str | None  # shared as exact JSON, to edit; None if it cannot be
    why_not: str  # why it cannot be edited here


@dataclass(frozen=True, slots=True)
class EventRow:
    """One recorded event, as the table of events shows it."""

    number: int
    part: int
    at: str  # since its part began
    kind: str
    path: str
    item: Any
    attempt: Any
    duration: str
    detail: str
    bad: bool


@dataclass(frozen=True, slots=True)
class EventsPage:
    """A page of a run's recorded events."""

    rows: list[EventRow]
    total: int
    matching: int
    kinds: list[str]
    kind: str
    offset: int


class RunView:
    """A stored run, read once, as its page shows it.

    Raises:
        StoreError: For a run the store does not have.
        ResumeError: For a store that cannot be read without taking the run.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run = StoredRun(store, run_id)
        self.record = self.run.record
        self.history = self.run.history()
        self.here: StepRecord | None = self.run.here()
        # The number of the last step that finished (0: none did), the one a
        # page shows shared after unless told otherwise.
        self.last_finished = len(self.history) - len(self.run.unfinished())

    @property
    def version_key(self) -> str:
        """What its page follows the run by (see `version_of`)."""
        return version_of(self.record)

    @property
    def duration(self) -> str:
        return took(run_length(self.record))

    @property
    def forked_from(self) -> dict[str, Any] | None:
        forked = self.record.metadata.get(FORKED_KEY)
        return forked if isinstance(forked, dict) else None

    @property
    def resumes(self) -> list[str]:
        """When each resume of the run began (a fork's own start left out)."""
        resumed = [float(at) for at in self.record.metadata.get(RESUMED_KEY, ())]
        if self.forked_from is not None:
            resumed = resumed[1:]
        return [when(at) for at in resumed]

    def steps(self) -> list[StepRow]:
        rows = []
        for step in self.history:
            rows.append(
                StepRow(
                    number=step.number,
                    path=step.path,
                    kind=step.kind,
                    status=step.status,
                    action="" if step.action is None else str(step.action),
                    started=when(step.started)[11:],
                    took=(
                        took(step.ended - step.started)
                        if step.started is not None and step.ended is not None
                        else ""
                    ),
                    items=progress(step),
                    changed=", ".join(str(key) for key in step.changed),
                    run_id="" if step.run_id == self.record.run_id else step.run_id,
                    part=step.part + 1,
                    viewable=step.status == "finished",
                )
            )
        return rows

    def notes(self) -> list[str]:
        """The notes of the error the run's last recorded part ended with:
        braidflow's name the node, item and attempt where it failed."""
        if self.record.status != "failed":
            return []
        for line in reversed(self.store.events(self.record.run_id)):
            event = json.loads(line)
            if event.get("kind") == "run_start":
                return []
            if event.get("kind") == "run_end":
                error = event.get("error") or {}
                return [str(note) for note in error.get("notes", ())]
        return []

    def state(self, at: int) -> StateView:
        """``shared`` after step ``at`` and what that step changed.

        Raises:
            ResumeError: For a step that did not finish, or does not exist.
        """
        after = self.run.state(at)
        step = self.history[at - 1] if at > 0 else None
        changes: list[Change] = []
        in_view = step is not None and step.kind not in _STATES
        if step is not None and step.changed:  # (none recorded under async or exit)
            before = self.run.state(at - 1)
            for key in step.changed:
                if in_view:
                    changes.append(Change("~", str(key), "", ""))
                elif key not in after:
                    changes.append(Change("-", str(key), _short(before.get(key)), ""))
                elif key not in before:
                    changes.append(Change("+", str(key), "", _short(after[key])))
                else:
                    changes.append(Change("~", str(key), _short(before[key]), _short(after[key])))
        text = _json(after, indent=2)
        editable, why_not = _editable(after, text)
        if step is not None and step.kind not in _STATES:
            editable, why_not = None, "a fork starts after a step of the run's own walk"
        return StateView(
            at=at,
            step=step,
            text=text[:_SHOWN],
            cut=len(text) > _SHOWN,
            changes=changes,
            in_view=in_view,
            editable=editable,
            why_not=why_not,
        )

    def finished(self, at: int) -> bool:
        """Tell whether step ``at`` finished with its state stored (0, the
        start, always has)."""
        try:
            self.run.row_of(at)
        except ResumeError:
            return False
        return True

    def why_no_state(self, at: int) -> str:
        """Why step ``at`` has no state to show, if it finished (under
        ``durability="async"`` or ``"exit"``, not every step's is stored)."""
        if not 0 < at <= self.last_finished:
            return ""
        try:
            self.run.row_of(at)
        except ResumeError as error:
            return f"{error}; the page shows the state after the last step"
        return ""


def prompt_lines(prompt: Any) -> list[tuple[str, str]]:
    """A prompt to read: (key, text) pairs for a dict, else one pair with no key."""
    if isinstance(prompt, dict):
        return [
            (str(key), value if isinstance(value, str) else _json(value))
            for key, value in prompt.items()
        ]
    return [("", prompt if isinstance(prompt, str) else _json(prompt))]


def version_of(record: RunRecord) -> str:
    """What changes as a run goes from one step to the next, or ends: its
    status, where it is, when it ended and who runs it."""
    return json.dumps([record.status, record.node, record.ended, record.owner], default=repr)


def progress(step: StepRecord) -> str:
    """``528 of 1,000`` items (``528`` if the total is not known); ``""`` if none."""
    if step.items_done is None:
        return ""
    if step.items_total is None:
        return f"{step.items_done:,}"
    return f"{step.items_done:,} of {step.items_total:,}"


def _json(value: Any, indent: int | None = None) -> str:
    """A value as JSON to read; what JSON cannot hold, by its ``repr``."""
    try:
        return json.dumps(value, indent=indent, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):  # a key JSON cannot hold; a value that holds itself
        return repr(value)


def _short(value: Any) -> str:
    text = _json(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _editable(shared: dict[Any, Any], shown: str) -> tuple[str | None, str]:
    """``shared`` as exact JSON to edit for a fork, or why it cannot be."""
    if not all(isinstance(key, str) for key in shared):
        return None, "its keys are not all text, which JSON cannot hold"
    if len(shown) > _SHOWN:
        return None, f"it is larger than {_SHOWN:,} characters of JSON"
    try:
        return json.dumps(shared, indent=2, ensure_ascii=False, allow_nan=False), ""
    except (TypeError, ValueError):
        return None, "it holds values JSON cannot hold"


def events_page(store: Store, run_id: str, offset: int, kind: str) -> EventsPage:
    """The run's recorded events from ``offset`` (only those of ``kind``; ``""``:
    all; ``problems``: errors, retries and failed ends).

    A batch of 10,000 items records some 20,000 events: each is only looked
    at for its kind (and, for ``problems``, whether it holds an error) and
    the page's 200 are read in full.
    """
    lines = store.events(run_id)
    kinds: set[str] = set()
    began: dict[int, float] = {}  # when each part of the run began
    chosen: list[tuple[int, int]] = []  # (number, part) of the events that pass
    part = 0
    for number, line in enumerate(lines, 1):
        name = _kind_of(line)
        kinds.add(name)
        if name == "run_start":
            part += 1
            began[part] = float(json.loads(line).get("time") or 0.0)
        if kind and not (name == kind or (kind == "problems" and _bad(line, name))):
            continue
        chosen.append((number, part))
    offset = min(max(offset, 0), max(len(chosen) - 1, 0) // EVENTS_PAGE * EVENTS_PAGE)
    return EventsPage(
        rows=[
            _event_row(lines[number - 1], number, part, began.get(part, 0.0))
            for number, part in chosen[offset : offset + EVENTS_PAGE]
        ],
        total=len(lines),
        matching=len(chosen),
        kinds=sorted(kinds),
        kind=kind,
        offset=offset,
    )


_KIND = '{"kind": "'  # how the recorder starts every event it keeps


def _kind_of(line: str) -> str:
    if line.startswith(_KIND):
        return line[len(_KIND) : line.index('"', len(_KIND))]
    return str(json.loads(line).get("kind"))


def _bad(line: str, name: str) -> bool:
    """Whether an event tells of a problem: an error, or a retry."""
    if name == "retry":
        return True
    if line.count('"error": ') == 1 and '"error": null' in line:
        return False
    return json.loads(line).get("error") is not None


def _event_row(line: str, number: int, part: int, began: float) -> EventRow:
    event = json.loads(line)
    name = str(event.get("kind"))
    error = event.get("error")
    detail = ""
    if error is not None:
        detail = f"{error.get('type')}: {error.get('message')}"
        detail = " · ".join([detail, *error.get("notes", ())])
    elif event.get("data") is not None:
        detail = _short(event["data"])
    duration = event.get("duration")
    return EventRow(
        number=number,
        part=part,
        at=f"+{float(event.get('time') or 0.0) - began:.3f} s",
        kind=name,
        path="/".join(str(step) for step in event.get("path") or ()),
        item=event.get("item"),
        attempt=event.get("attempt"),
        duration="" if duration is None else took(float(duration)),
        detail=detail if len(detail) <= 600 else detail[:597] + "...",
        bad=error is not None or name == "retry",
    )
