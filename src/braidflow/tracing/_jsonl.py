"""JSONLTrace: every event of a run as one JSON object per line."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from .._events import Event
from ._files import writable_path

__all__ = ["JSONLTrace", "event_record"]


def event_record(event: Event) -> dict[str, Any]:
    """An event as plain JSON data: the ``Event`` field names as keys, the error
    as its type and message, ``data`` as is when JSON can hold it."""
    error = event.error
    return {
        "kind": event.kind,
        "run_id": event.run_id,
        "node": event.node,
        "path": list(event.path),
        "time": event.time,
        "item": event.item,
        "attempt": event.attempt,
        "duration": event.duration,
        "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
        "data": event.data,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, default=repr)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


class JSONLTrace:
    """An observer that writes each event as one line of JSON to ``path``.

    Lines are buffered and flushed at the end of each run (and by
    `close`). Values in ``data`` that JSON cannot hold are written as
    their ``repr``. The file is created (emptied) when the trace is made, so
    a path that cannot be written fails then, before any run starts. Safe to
    use from several threads.

    Args:
        path: The file to write.

    Raises:
        InvalidParameterError: If the file cannot be written there.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = writable_path(path, "JSONLTrace")
        self._file = open(self.path, "w", encoding="utf-8", buffering=1 << 16)
        self._lock = threading.Lock()
        self._encoded: dict[Any, str] = {}  # names and paths, encoded once

    def __repr__(self) -> str:
        return f"JSONLTrace({str(self.path)!r})"

    def _json(self, value: Any) -> str:
        encoded = self._encoded.get(value)
        if encoded is None:
            if len(self._encoded) > 10_000:
                self._encoded.clear()
            encoded = self._encoded[value] = _dumps(list(value) if type(value) is tuple else value)
        return encoded

    def _line(self, event: Event) -> str:
        # The same object as json.dumps(event_record(event)) would write,
        # assembled from parts: most of an event is names seen before.
        error = event.error
        return (
            f'{{"kind": "{event.kind}", "run_id": "{event.run_id}", '
            f'"node": {self._json(event.node)}, "path": {self._json(event.path)}, '
            f'"time": {event.time!r}, "item": {_number(event.item)}, '
            f'"attempt": {_number(event.attempt)}, "duration": {_number(event.duration)}, '
            f'"error": {"null" if error is None else _dumps(event_record(event)["error"])}, '
            f'"data": {"null" if event.data is None else _dumps(event.data)}}}'
        )

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        line = self._line(event)
        with self._lock:
            self._file.write(line)
            self._file.write("\n")
            if event.kind == "run_end":
                self._file.flush()

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._file.close()

    def __enter__(self) -> JSONLTrace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
