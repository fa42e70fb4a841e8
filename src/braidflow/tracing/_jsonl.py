"""JSONLTrace: every event of a run as one JSON object per line."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from .._events import Event
from .._strict_json import plain, safe_repr
from ._files import writable_path

__all__ = ["JSONLTrace", "event_line", "event_record", "json_of"]


def event_record(event: Event) -> dict[str, Any]:
    """An event as plain JSON data: the ``Event`` field names as keys, the error
    as its type and message (and its notes, if it has any: braidflow's say
    where it failed), ``data`` as is when JSON can hold it."""
    return {
        "kind": event.kind,
        "run_id": event.run_id,
        "node": event.node,
        "path": list(event.path),
        "time": event.time,
        "item": event.item,
        "attempt": event.attempt,
        "duration": event.duration,
        "error": _error_record(event.error),
        "data": event.data,
    }


def _error_record(error: BaseException | None) -> dict[str, Any] | None:
    if error is None:
        return None
    record: dict[str, Any] = {"type": type(error).__name__, "message": safe_repr(error, str)}
    notes = getattr(error, "__notes__", None)
    if notes:  # braidflow's name the node, item and attempt: where it failed
        record["notes"] = [str(note) for note in notes]
    return record


def json_of(value: Any) -> str:
    """``value`` as strict JSON, whatever it holds; never raises. What JSON
    cannot hold goes by its ``repr``, as do a float it has no number for (NaN,
    infinity) and a dict key that is not text (see `braidflow._strict_json`);
    what cannot be safe_repr at all (an int too long to write, a ``repr`` that
    raises) by a placeholder naming its type."""
    try:
        return json.dumps(value, default=repr, allow_nan=False)
    except Exception:  # a NaN, a key JSON has none for (an Enum, a tuple), a repr that raises...
        try:
            return json.dumps(plain(value), default=safe_repr, allow_nan=False)
        except Exception:  # a value that holds itself, or nests too deep
            return json.dumps(safe_repr(value))


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


# Kinds, run ids, names and paths, each encoded once: most of an event is
# text seen before. Shared by every trace and event log; a dict's get and
# set are atomic, so threads need no lock (at worst two encode one value).
_encoded: dict[Any, str] = {}


def _json(value: Any) -> str:
    encoded = _encoded.get(value)
    if encoded is None:
        if len(_encoded) > 10_000:
            _encoded.clear()
        encoded = _encoded[value] = json_of(list(value) if type(value) is tuple else value)
    return encoded


def event_line(event: Event) -> str:
    """An event as one line of JSON: the object ``json.dumps(event_record(event),
    default=repr)`` writes, assembled from parts (names and ids encoded once)."""
    error, data = event.error, event.data
    return (
        f'{{"kind": {_json(event.kind)}, "run_id": {_json(event.run_id)}, '
        f'"node": {_json(event.node)}, "path": {_json(event.path)}, '
        f'"time": {event.time!r}, "item": {_number(event.item)}, '
        f'"attempt": {_number(event.attempt)}, "duration": {_number(event.duration)}, '
        f'"error": {"null" if error is None else json_of(_error_record(error))}, '
        f'"data": {"null" if data is None else json_of(data)}}}'
    )


class JSONLTrace:
    """An observer that writes each event as one line of JSON to ``path``.

    Lines are buffered and flushed at the end of each run (and by
    `close`). Values in ``data`` that JSON cannot hold are written as
    their ``repr`` (where even that fails, a placeholder naming their type).
    The file is created (emptied) when the trace is made, so a path that
    cannot be written fails then, before any run starts. Safe to use from
    several threads.

    Args:
        path: The file to write.

    Raises:
        InvalidParameterError: If the file cannot be written there.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = writable_path(path, "JSONLTrace")
        self._file = open(self.path, "w", encoding="utf-8", buffering=1 << 16)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JSONLTrace({str(self.path)!r})"

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        line = event_line(event)
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
