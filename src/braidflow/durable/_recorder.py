"""A durable run's events, kept in its store (``record_events=True``) and read back.

`EventRecorder` is an observer that writes each event as a line of JSON
to the store, in batches; `recorded_events` turns the lines back into
`Event` objects (an error as an exception of the original's class name).
"""

from __future__ import annotations

import json
import threading

from .._events import Event
from ..stores._base import Store
from ..tracing._jsonl import event_line
from ._codec import RecordedError, stand_in_class

__all__ = ["EventRecorder", "RecordedError", "recorded_events"]


class EventRecorder:
    """Keeps a durable run's events in its store (``record_events=True``)."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.buffer: list[str] = []
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return "<the store's event log>"

    def on_event(self, event: Event) -> None:
        """Take one event (the observer protocol); write a batch every 500, and at the end."""
        text = event_line(event)
        with self.lock:
            self.buffer.append(text)
            if event.kind != "run_end" and len(self.buffer) < 500:
                return
            batch, self.buffer = self.buffer, []
        self.store.add_events(self.run_id, batch)


def recorded_events(store: Store, run_id: str) -> list[Event]:
    """The events kept for a run (``record_events=True``), as `Event`
    objects; an error comes back as an exception of a made-up class with the
    original's name (a `RecordedError`), holding its message."""
    events = []
    for text in store.events(run_id):
        record = json.loads(text)
        error = record["error"]
        if error is not None:
            error = stand_in_class(error["type"])(error["message"])
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
