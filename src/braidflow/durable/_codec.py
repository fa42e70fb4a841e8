"""The codec of durable runs: how values of ``shared``, items' results and actions are written.

JSON by default (a value is refused unless JSON gives it back equal), or
pickle. braidflow's own values (a `Failure`, the exception in it,
``MISSING``) are written by both: JSON writes each as an object tagged with
the reserved key ``"__braidflow__"``, which user data may not use. Batch
items are fingerprinted, to tell on resume whether ``prep`` gives the same
items.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import json.encoder
import pickle
from collections.abc import Callable
from typing import Any

from .._errors import CheckpointError, Failure, ResumeError
from .._isolation import MISSING
from .._state import VALUE_CLASSES
from .._state_pydantic import model_from_fields
from ._exceptions import TAG, RecordedError, error_from, error_record

__all__ = [
    "ASCII",
    "JSON_TEXT",
    "SCALARS",
    "TAG",
    "UNSAVABLE",
    "Codec",
    "RecordedError",
    "action_text",
    "encode_key_value",
]

# TAG, the key that marks braidflow's own values in JSON: {"__braidflow__": kind, ...}.
_TAG_TEXT = b'"__braidflow__"'  # in a payload only if one of them (or a string) holds it


def _json_encoder(default: Callable[[Any], Any] | None = None) -> Callable[[Any], str]:
    """``json.dumps`` for the store: compact, no NaN, ASCII. The C encoder is made
    once and reused (``JSONEncoder.encode`` makes one per call, half its cost);
    a cycle in a value then shows as a RecursionError. ``default`` turns an
    object JSON does not know into one it does (or raises TypeError)."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=default)
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


JSON_TEXT = _json_encoder()  # plain JSON: what fingerprints and scalars are written with
ASCII = json.encoder.encode_basestring_ascii  # what the JSON encoder does to a str
# What encoding a value that cannot be saved raises (a cycle: RecursionError).
UNSAVABLE = (TypeError, ValueError, RecursionError, pickle.PicklingError, AttributeError)
SCALARS = frozenset((str, int, float, bool, type(None)))


class Codec:
    """How a store's values are written: JSON (text) or pickle."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def encode(self, value: Any) -> bytes:
        """``value`` as stored. JSON must give back an equal value, or it is
        refused: a tuple would come back a list, an int key a string.
        braidflow's own values are written tagged (see `TAG`).

        Raises:
            TypeError, ValueError: If the value cannot be stored faithfully.
        """
        if self.kind == "json":
            kind = type(value)
            if kind is int:  # what the JSON encoder writes, made directly
                return b"%d" % value
            if kind is str:
                return ASCII(value).encode()
            if kind not in SCALARS and not _faithful(value):
                raise ValueError(_json_drift(value))
            try:
                return _TAGGED_TEXT(value).encode()
            except TypeError:
                found = _not_json(value, "")
                if found is None:
                    raise
                raise TypeError(found) from None
        return _pickled(value)

    def decode(self, data: bytes) -> Any:
        if self.kind == "json":
            return _loads(data)
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
            values: list[Any] = _loads(payload)
            return values
        return [pickle.loads(part) for part in pickle.loads(payload)]

    def unpack(self, payload: bytes) -> list[tuple[Any, Any]]:
        """The (key, value or MISSING) pairs of a payload made by `pack`."""
        if self.kind == "json":
            return [(entry[0], entry[2] if entry[1] else MISSING) for entry in _loads(payload)]
        return [
            (key, MISSING if data is None else pickle.loads(data))
            for key, data in pickle.loads(payload)
        ]


def _key_json(key: Any) -> bytes:
    """A key of ``shared`` as JSON (a str, but for a store that holds others)."""
    return ASCII(key).encode() if type(key) is str else JSON_TEXT(key).encode()


# -- braidflow's own values ---------------------------------------------------------------

_MISSING_RECORD = {TAG: "MISSING"}


def _tagged(value: Any) -> Any:
    """What JSON writes for a value it does not know: braidflow's own, tagged."""
    if isinstance(value, BaseException):
        return error_record(value, _json_storable)
    if value is MISSING:
        return _MISSING_RECORD
    if type(value) is Failure:
        return {TAG: "Failure", "error": value.error, "item": value.item, "index": value.index}
    cls = type(value)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if VALUE_CLASSES.get(name) is cls:  # a dataclass or model a state type declares
        return _object_record(value, name)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _object_record(value: Any, name: str) -> dict[str, Any]:
    """A dataclass or pydantic model of a state type as JSON, tagged with its
    class: a model as its JSON dump, a dataclass as its fields.

    Raises:
        ValueError: If JSON would give a field back changed (a tuple...).
    """
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        # By field name, as it is read back: an alias is not what every model reads.
        return {TAG: "object", "class": name, "model": dump(mode="json", by_alias=False)}
    fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if not _faithful(fields):
        raise ValueError(_json_drift(fields).replace(" at [", f" at {name}.[", 1))
    return {TAG: "object", "class": name, "fields": fields}


def _from_record(record: dict[str, Any]) -> Any:
    """The dataclass or model an ``"object"`` record holds, rebuilt as
    pickle rebuilds one (a dataclass's ``__init__`` does not run; a model is
    validated from its dump)."""
    name = record["class"]
    cls = VALUE_CLASSES.get(name)
    if cls is None:
        raise ResumeError(
            f"a checkpoint holds a {name}, a class no state type declares in this process; "
            "make the flow (Flow(..., state=...)) before resuming the run, with the state "
            "type whose keys hold it"
        )
    if "model" in record:
        return model_from_fields(cls, record["model"])
    made: Any = object.__new__(cls)
    for key, value in record["fields"].items():
        object.__setattr__(made, key, value)
    return made


_TAGGED_TEXT = _json_encoder(_tagged)  # JSON with braidflow's values tagged: what is stored


def _untagged(record: dict[str, Any]) -> Any:
    """A JSON object as read: braidflow's value if it is tagged, else itself."""
    kind = record.get(TAG)
    if kind is None:
        return record
    if kind == "Failure":
        return Failure(record["error"], record["item"], record["index"])
    if kind == "error":
        return error_from(record)
    if kind == "MISSING":
        return MISSING
    if kind == "object":
        return _from_record(record)
    raise ResumeError(
        f"a checkpoint holds a value tagged {kind!r}, which this version of braidflow does "
        "not know; resume the run with the version that recorded it"
    )


def _loads(data: bytes) -> Any:
    """A JSON payload read back; the object hook runs only if a tag may be in it."""
    if _TAG_TEXT in data:
        return json.loads(data, object_hook=_untagged)
    return json.loads(data)


def _json_storable(value: Any) -> bool:
    """Whether JSON (with braidflow's tags) writes ``value`` and gives it back equal."""
    try:
        if type(value) not in SCALARS and not _faithful(value):
            return False
        _TAGGED_TEXT(value)
    except Exception:
        return False
    return True


class _Pickler(pickle.Pickler):
    """Pickles an exception as its record (see `_error_record`), so it comes
    back whatever its ``__init__`` takes, or as a stand-in; unless its class
    says how to pickle it (a ``__reduce__`` of its own, not Python's)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException) and not _reduces_itself(type(obj)):
            return error_from, (error_record(obj, _picklable),)
        return NotImplemented


def _reduces_itself(cls: type) -> bool:
    """Whether the first ``__reduce__`` (or ``__reduce_ex__``) along the MRO of
    an exception class is not one of Python's own."""
    for klass in cls.__mro__:
        if "__reduce__" in klass.__dict__ or "__reduce_ex__" in klass.__dict__:
            return klass.__module__ != "builtins"
    return False


def _pickled(value: Any) -> bytes:
    if type(value) in SCALARS:  # no exception in it: the plain pickler is faster
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _picklable(value: Any) -> bool:
    try:
        _pickled(value)
    except Exception:
        return False
    return True


# -- what JSON gives back changed ------------------------------------------------------------


def _faithful(value: Any) -> bool:
    """Whether JSON gives ``value`` back equal: no tuple, no key but a string,
    no dict with braidflow's tag as a key, and no subclass of a JSON type (an
    enum of str or int, a Counter: JSON writes it as its base, and gives that
    back). Anything else JSON cannot hold at all, its encoder refuses."""
    kind = type(value)
    if kind is list:
        for item in value:
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    if kind is dict:
        if TAG in value:
            return False
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):  # (see _STR_KEYS)
                return False
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    if kind is Failure:
        item = value.item
        return type(item) in SCALARS or _faithful(item)
    return kind in SCALARS or not isinstance(value, _JSON_BASES)


# What JSON writes an instance of a subclass of as that base (and a tuple as a list).
_JSON_BASES = (str, int, float, dict, list, tuple)
# _STR_KEYS: a key that is a str of a subclass (a StrEnum, the usual way to
# name the keys of shared) is kept as its string. A dict finds it by either,
# so what a resumed run looks up by it is there; only iterating the keys
# gives the plain strings. A value, whose methods code calls, is refused.


def _json_drift(value: Any) -> str:
    """Say what in ``value`` JSON would give back changed."""
    return _drift_in(value, "") or f"a {type(value).__name__} JSON gives back as another value"


def _drift_in(value: Any, where: str) -> str | None:
    at = f" at {where}" if where else ""
    kind = type(value)
    if kind is dict:
        if TAG in value:
            return (
                f"the dict{at} has the key {TAG!r}, which braidflow keeps for its own values "
                "in JSON checkpoints; rename that key"
            )
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):  # (see _STR_KEYS)
                return _key_drift(key, at)
            found = _drift_in(item, f"{where}[{key!r}]")
            if found:
                return found
    elif kind is list:
        for index, item in enumerate(value):
            found = _drift_in(item, f"{where}[{index}]")
            if found:
                return found
    elif kind is Failure:
        return _drift_in(value.item, f"{where}.item")
    elif kind not in SCALARS and isinstance(value, _JSON_BASES):
        return _subclass_drift(value, at)
    return None


def _subclass_drift(value: Any, at: str) -> str:
    """Say what JSON gives back for a tuple or a subclass of a JSON type, and what to store."""
    kind = type(value)
    base = next(base for base in _JSON_BASES if isinstance(value, base))
    if base is tuple:
        return f"the {kind.__name__}{at} would come back as a list"
    if isinstance(value, enum.Enum):
        name = f"{kind.__qualname__}.{value.name}"
        return (
            f"the enum {name}{at} would come back as the plain {base.__name__} "
            f"{value.value!r}; store {name}.value, and {kind.__qualname__}(value) to have "
            "the enum again"
        )
    return (
        f"the {kind.__name__}{at} would come back as a plain {base.__name__}; "
        f"store {base.__name__}(value) instead"
    )


def _key_drift(key: Any, at: str) -> str:
    """Say what JSON gives back for a dict key that is not a str, and what to key by."""
    try:
        text = json.dumps(next(iter(json.loads(JSON_TEXT({key: 0})))))
    except (TypeError, ValueError):  # a key JSON cannot write at all (a tuple, an object)
        return f"the key {key!r} ({type(key).__name__}){at} is not JSON data"
    said = f"the key {key!r} ({type(key).__name__}){at} would come back as the string {text}"
    if isinstance(key, enum.Enum):
        said += f"; key it by a str: str({type(key).__qualname__}.{key.name}.value)"
    return said


def _not_json(value: Any, where: str) -> str | None:
    """Say which object in ``value`` JSON cannot hold, and where."""
    if type(value) in SCALARS or isinstance(value, BaseException) or value is MISSING:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_json(item, f"{where}[{key!r}]")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _not_json(item, f"{where}[{index}]")
            if found:
                return found
    elif type(value) is Failure:
        return _not_json(value.item, f"{where}.item")
    elif not isinstance(value, str | int | float):
        at = f" at {where}" if where else ""
        if isinstance(value, enum.Enum) and type(value.value) in SCALARS:  # its value is data
            name = f"{type(value).__qualname__}.{value.name}"
            return f"the enum {name}{at} is not JSON data; store {name}.value"
        return f"the {type(value).__name__}{at} is not JSON data"
    return None


# Where a value of shared came from when no node's step left it (``node`` is
# then the flow): how the message names the dict it is in, where to put plain
# data instead, and whether another serializer can still be chosen (a new run,
# yes; a resumed or forked run keeps its own).
_GIVEN = {
    "": ("node {node!r}", "shared", "keep {data} in shared", True),
    "run": (
        "flow {node!r}",
        "the initial shared",
        "pass {data} in the shared given to run()",
        True,
    ),
    "update": ("flow {node!r}", "update", "pass {data} in update=", False),
    "migrate": ("flow {node!r}, after migrate=", "shared", "make migrate= leave {data}", False),
}


def encode_key_value(codec: Codec, key: Any, value: Any, node: str, given: str = "") -> bytes:
    """``value``, of ``shared[key]``, as ``codec`` writes it.

    ``given`` says what put the value there when no step of ``node`` did:
    ``"run"`` (the shared passed to ``run()``), ``"update"`` (a fork's
    ``update=``) or ``"migrate"`` (a resume's ``migrate=``), for the error
    to name it and say what to do.

    Raises:
        CheckpointError: If the key or value cannot be saved with ``codec``.
    """
    who, where, fix, choosable = _GIVEN[given]
    who = who.format(node=node)
    if codec.kind == "json" and type(key) is not str and not isinstance(key, str):
        kept = "a durable run stores shared as JSON, whose keys are strings"  # (_STR_KEYS)
        if isinstance(key, enum.Enum):
            kept += f": key it by a str, str({type(key).__qualname__}.{key.name}.value),"
        raise CheckpointError(
            f"{who}: {where}[{key!r}] has a key of type {type(key).__name__}; {kept} "
            + ("(or use serializer='pickle')" if choosable else "(the run is saved as json)"),
            node=node,
            key=key,
        )
    try:
        return codec.encode(value)
    except UNSAVABLE as error:
        advice = fix.format(data="plain data" if codec.kind == "json" else "picklable values")
        if codec.kind == "json":
            advice += (
                ", or use a store with serializer='pickle'"
                if choosable
                else " (the run is saved as json)"
            )
        raise CheckpointError(
            f"{who}: {where}[{key!r}] holds a {type(value).__name__} that cannot be "
            f"saved as {codec.kind} ({error}); {advice}",
            node=node,
            key=key,
        ) from error


# -- fingerprints of batch items ----------------------------------------------------------------


def action_text(action: Any, node: str) -> str | None:
    if action is None:
        return None
    if type(action) is str:
        return ASCII(action)
    try:
        return json.dumps(action)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"node {node!r} returned action {action!r}, which cannot be saved; actions are strings",
            node=node,
        ) from None
