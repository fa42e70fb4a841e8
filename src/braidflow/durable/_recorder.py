"""A durable run's events, kept in its store (``record_events=True``) and read back.

`EventRecorder` is an observer that writes each event as a line of JSON
to the store, in batches: of `BATCH` events, or those of `PERIOD` seconds
(so a killed run loses at most that much of them); `recorded_events` turns the lines back into
`Event` objects (an error as an exception of the original's class name).

An event larger than `EVENT_LIMIT` is kept cut down: its ``data`` becomes
a marker (``{"__braidflow__": "cut", "size": ..., "preview": ...}``) and a
long error message is shortened. A batch the store refuses is offered again
with the next one (at the run's end, at once); refused twice, it is dropped,
with one warning per run. Recording never stops before the run ends.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import warnings

from .._events import Event
from .._strict_json import safe_repr
from ..stores._base import Store, TakenOver
from ..tracing._jsonl import event_line, json_of
from ._exceptions import TAG, RecordedError, stand_in_class

__all__ = ["EVENT_LIMIT", "EventRecorder", "RecordedError", "recorded_events"]

EVENT_LIMIT = 64 * 1024  # the most characters (ASCII: bytes) of JSON an event is kept as
PREVIEW = 1024  # what a cut event keeps of its data's JSON
MESSAGE_LIMIT = 4096  # what a cut event keeps of its error's message
BATCH = 500  # events written together
PERIOD = 1.0  # seconds an event waits to be written, at most (but a kill)


class EventRecorder:
    """Keeps a durable run's events in its store (``record_events=True``)."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.buffer: list[str] = []
        self.lock = threading.Lock()  # guards the buffer
        self.writing = threading.Lock()  # one write at a time, batches in order
        self.refused: list[str] = []  # a batch the store refused once, to offer again
        self.dropped = 0  # events the store refused twice: not kept
        self.warned = False
        self.timer: threading.Timer | None = None  # writes the buffer when its period ends
        self.ended = False

    def __repr__(self) -> str:
        return "<the store's event log>"

    def on_event(self, event: Event) -> None:
        """Take one event (the observer protocol); write a batch every `BATCH`
        events or `PERIOD` seconds, and at the end."""
        text = event_line(event)
        if len(text) > EVENT_LIMIT:
            text = cut_line(event, len(text))
        last = event.kind == "run_end"
        timer = None
        with self.lock:
            self.buffer.append(text)
            if last:
                self.ended = True
                timer, self.timer = self.timer, None
            elif len(self.buffer) < BATCH:
                if self.timer is None:  # the first of a batch: written within a period
                    self.timer = threading.Timer(PERIOD, self._due)
                    self.timer.daemon = True
                    self.timer.start()
                return
        if timer is not None:  # the run ended: no thread of its recording outlives it
            timer.cancel()
            timer.join()
        self._flush(last)

    def _due(self) -> None:
        # A period after a batch began (a thread of its own): write it, unless
        # it was written meanwhile.
        with self.lock:
            self.timer = None
            if not self.buffer or self.ended:
                return
        self._flush(False)

    def _flush(self, last: bool) -> None:
        with self.writing:
            with self.lock:
                batch, self.buffer = self.buffer, []
            if batch or self.refused:
                self._write(batch, last)

    def _write(self, batch: list[str], last: bool) -> None:
        """Write ``batch`` after the one refused before, if any. What the store
        refuses a second time is dropped; what it refuses once waits for the
        next write, or, at the run's end, is offered again at once."""
        again, self.refused = self.refused, []
        error = self._add(again + batch)
        if error is None:
            return
        if again:
            self._drop(len(again), error, last)
        if not last:
            self.refused = batch
            return
        error = self._add(batch)
        if error is not None:
            self._drop(len(batch), error, last)

    def _add(self, lines: list[str]) -> Exception | None:
        if not lines:
            return None
        try:
            self.store.add_events(self.run_id, lines)
        except TakenOver:  # the run is another owner's now, its events too: none is kept
            return None
        except Exception as error:
            return error
        return None

    def _drop(self, count: int, error: Exception, last: bool) -> None:
        """``count`` events are not kept; warn once (``last``: the run is ending,
        these are its last events, so nothing of it goes on)."""
        self.dropped += count
        if not self.warned:
            self.warned = True
            after = (
                "They were among the run's last events: it is ending"
                if last
                else "The run goes on, and so does the recording of its later events (a "
                "later refusal is not warned about again)"
            )
            warnings.warn(
                f"braidflow: {self.store!r} refused {count} events of run {self.run_id!r} "
                f"twice ({error!r}); they are not kept. {after}",
                RuntimeWarning,
                stacklevel=2,
            )


def cut_line(event: Event, size: int) -> str:
    """An event too large to keep (``size`` characters of JSON), cut down:
    its data a marker with the event's size and the start of the data's JSON,
    its error's message cut to `MESSAGE_LIMIT` characters."""
    data: object = {TAG: "cut", "size": size, "preview": None}
    if event.data is not None:
        text = json_of(event.data)
        data = {TAG: "cut", "size": size, "preview": text[:PREVIEW]}
    error = event.error
    if error is not None:
        message = safe_repr(error, str)
        if len(message) > MESSAGE_LIMIT:
            shortened = f"{message[:MESSAGE_LIMIT]}... [cut: {len(message):,} characters]"
            notes = getattr(error, "__notes__", ())
            error = stand_in_class(type(error).__name__)(shortened)
            for note in notes:  # where it failed: short, and worth keeping
                error.add_note(note)
    return event_line(dataclasses.replace(event, data=data, error=error))


def recorded_events(store: Store, run_id: str) -> list[Event]:
    """The events kept for a run (``record_events=True``), as `Event`
    objects; an error comes back as an exception of a made-up class with the
    original's name (a `RecordedError`), holding its message and its notes
    (braidflow's say where it failed: node, item, attempt). An event that
    was cut has for ``data`` ``{"__braidflow__": "cut", "size": n, "preview":
    text}``: its size as JSON and the start of its data's JSON."""
    events = []
    for text in store.events(run_id):
        record = json.loads(text)
        error = record["error"]
        if error is not None:
            kept = error
            error = stand_in_class(kept["type"])(kept["message"])
            for note in kept.get("notes", ()):
                error.add_note(note)
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
