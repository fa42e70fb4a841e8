"""How an exception is stored in a checkpoint, and how it comes back on resume.

An exception is written as a record of its class's name, its message, and
(when they can be stored) its arguments and attributes; read back, it is its
own class again if that is already imported and rebuilds to the same
message, else a `RecordedError` stand-in with the original's name.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from .._errors import message_of

__all__ = ["RecordedError", "error_from", "error_record", "message_of", "stand_in_class"]

TAG = "__braidflow__"  # the key that marks braidflow's own values in JSON


class RecordedError(Exception):
    """Stands for an exception read back from a store whose class cannot be
    rebuilt: its class has the original's name; its message is the
    original's. (Events kept with ``record_events=True`` give every error
    back as one; a checkpointed exception only when its own class cannot be
    imported or rebuilt from its arguments.)"""


_stand_ins: dict[str, type[RecordedError]] = {}


def stand_in_class(name: str) -> type[RecordedError]:
    """The `RecordedError` subclass that stands for the class ``name``
    (``"module:qualname"``, or just a class name): one class per name."""
    made = _stand_ins.get(name)
    if made is None:
        qualname = name.rpartition(":")[2] or name
        made = type(
            qualname.rpartition(".")[2] or qualname,
            (RecordedError,),
            {"__qualname__": qualname, "_bf_type": name},
        )
        made = _stand_ins.setdefault(name, made)
    return made


_recording = threading.local()  # the exceptions being recorded now, per thread


def error_record(error: BaseException, storable: Callable[[Any], bool]) -> dict[str, Any]:
    """An exception as stored: ``type`` (``"module:qualname"``), ``message``
    (its ``str``), ``args`` and ``state`` (its ``__dict__``: notes, attributes)
    as its ``__reduce__`` gives them. ``args`` only if the class can be found
    by name and ``storable`` takes the arguments and every attribute: then it
    can be rebuilt. Otherwise it is read back as a stand-in with the name and
    message, and the attributes ``storable`` takes."""
    busy: set[int] | None = getattr(_recording, "ids", None)
    if busy is None:
        busy = _recording.ids = set()
    if id(error) in busy:  # an attribute leads back to the exception itself
        raise ValueError(f"the {type(error).__name__} refers to itself")
    busy.add(id(error))
    try:
        cls = type(error)
        name = cls.__dict__.get("_bf_type") if issubclass(cls, RecordedError) else None
        args: tuple[Any, ...] | None = None
        state: Any = getattr(error, "__dict__", None)
        if name is None:
            name = f"{cls.__module__}:{cls.__qualname__}"
            try:
                reduced = error.__reduce__()
            except Exception:
                reduced = None
            if (
                type(reduced) is tuple
                and len(reduced) in (2, 3)
                and reduced[0] is cls
                and type(reduced[1]) is tuple
                and _find_class(name) is cls
            ):
                args = reduced[1]
                state = reduced[2] if len(reduced) == 3 else None
        record: dict[str, Any] = {TAG: "error", "type": name, "message": message_of(error)}
        kept: dict[str, Any] = {}
        whole = state is None or type(state) is dict
        if type(state) is dict:
            for key in sorted(key for key in state if type(key) is str):
                value = state[key]
                if storable(value):
                    kept[key] = value
                else:
                    whole = False
            whole = whole and len(kept) == len(state)
        if args is not None and whole and storable(list(args)):
            record["args"] = list(args)
        if kept:
            record["state"] = kept
        return record
    finally:
        busy.discard(id(error))


def _find_class(name: str) -> Any:
    """The exception class ``"module:qualname"`` names, imported; else None."""
    module_name, _, qualname = name.partition(":")
    if not qualname or "<" in qualname:
        return None
    # Only a module already imported is looked in: a checkpoint never makes
    # braidflow import code (resuming imports the flow, and with it its errors).
    module = sys.modules.get(module_name)
    if module is None:
        return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def error_from(record: dict[str, Any]) -> BaseException:
    """An exception read back: its own class, called with its arguments (or,
    if that fails, made without ``__init__``) and given its attributes, if
    that gives the same class and message; else a stand-in (a
    `RecordedError` of the original's name, with its message and attributes)."""
    name, message = record["type"], record["message"]
    state: dict[str, Any] = record.get("state") or {}
    if "args" in record:
        cls = _find_class(name)
        if cls is not None:
            args = tuple(record["args"])
            for make in (cls, cls.__new__):
                try:
                    if make is cls:
                        error = cls(*args)
                    else:  # without __init__ (OSError's __new__ may then drop the args)
                        error = make(cls, *args)
                        error.args = args
                    if type(error) is not cls:
                        continue
                    if state:
                        setstate = getattr(error, "__setstate__", None)
                        if setstate is not None:
                            setstate(dict(state))
                        else:
                            error.__dict__.update(state)
                    if message_of(error) == message:
                        return error  # type: ignore[no-any-return]
                except Exception:
                    continue
    error = stand_in_class(name)(message)
    for key, value in state.items():
        try:
            setattr(error, key, value)
        except Exception:
            pass
    return error
