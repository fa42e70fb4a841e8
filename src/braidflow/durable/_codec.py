"""The codec of durable runs: how values of ``shared``, items' results and actions are written.

JSON by default (a value is refused unless JSON gives it back equal), or
pickle. braidflow's own values (a `Failure`, the exception in it,
``MISSING``) are written by both: JSON writes each as an object tagged with
the reserved key ``"__braidflow__"``, which user data may not use. Batch
items are fingerprinted, to tell on resume whether ``prep`` gives the same
items.
"""

from __future__ import annotations

import collections
import copyreg
import importlib
import io
import json
import json.encoder
import math
import pickle
import sys
import threading
import types
import zlib
from collections.abc import Callable
from typing import Any

from .._errors import CheckpointError, ResumeError
from .._merge import MISSING

__all__ = [
    "ASCII",
    "JSON_TEXT",
    "SCALARS",
    "TAG",
    "UNSAVABLE",
    "Codec",
    "RecordedError",
    "Unfingerprintable",
    "action_text",
    "encode_key_value",
    "fingerprint",
    "stand_in_class",
]

# The key that marks braidflow's own values in JSON: {"__braidflow__": kind, ...}.
TAG = "__braidflow__"
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

_failure: Any = None


def _failure_class() -> Any:
    """`braidflow.Failure` (looked up late: the module defining it imports this one)."""
    global _failure
    if _failure is None:
        from .. import Failure

        _failure = Failure
    return _failure


_MISSING_RECORD = {TAG: "MISSING"}


def _tagged(value: Any) -> Any:
    """What JSON writes for a value it does not know: braidflow's own, tagged."""
    if isinstance(value, BaseException):
        return _error_record(value, _json_storable)
    if value is MISSING:
        return _MISSING_RECORD
    if type(value) is _failure_class():
        return {TAG: "Failure", "error": value.error, "item": value.item, "index": value.index}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_TAGGED_TEXT = _json_encoder(_tagged)  # JSON with braidflow's values tagged: what is stored


def _untagged(record: dict[str, Any]) -> Any:
    """A JSON object as read: braidflow's value if it is tagged, else itself."""
    kind = record.get(TAG)
    if kind is None:
        return record
    if kind == "Failure":
        return _failure_class()(record["error"], record["item"], record["index"])
    if kind == "error":
        return _error_from(record)
    if kind == "MISSING":
        return MISSING
    raise ResumeError(
        f"a checkpoint holds a value tagged {kind!r}, which this version of braidflow does "
        "not know; resume the run with the version that recorded it"
    )


def _loads(data: bytes) -> Any:
    """A JSON payload read back; the object hook runs only if a tag may be in it."""
    if _TAG_TEXT in data:
        return json.loads(data, object_hook=_untagged)
    return json.loads(data)


def _message(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose str() fails>"


_recording = threading.local()  # the exceptions being recorded now, per thread


def _error_record(error: BaseException, storable: Callable[[Any], bool]) -> dict[str, Any]:
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
        record: dict[str, Any] = {TAG: "error", "type": name, "message": _message(error)}
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
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return None


def _error_from(record: dict[str, Any]) -> BaseException:
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
                    if _message(error) == message:
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
            return _error_from, (_error_record(obj, _picklable),)
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
    no dict with braidflow's tag as a key (anything else JSON cannot hold at
    all, its encoder refuses)."""
    if isinstance(value, list):
        for item in value:
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    if isinstance(value, dict):
        if TAG in value:
            return False
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    if isinstance(value, tuple):
        return False
    if type(value) is _failure_class():
        item = value.item
        return type(item) in SCALARS or _faithful(item)
    return True


def _json_drift(value: Any) -> str:
    """Say what in ``value`` JSON would give back changed."""
    return _drift_in(value, "") or f"a {type(value).__name__} JSON gives back as another value"


def _drift_in(value: Any, where: str) -> str | None:
    at = f" at {where}" if where else ""
    if isinstance(value, tuple):
        return f"the {type(value).__name__}{at} would come back as a list"
    if isinstance(value, dict):
        if TAG in value:
            return (
                f"the dict{at} has the key {TAG!r}, which braidflow keeps for its own values "
                "in JSON checkpoints; rename that key"
            )
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"the key {key!r} ({type(key).__name__}){at} would come back as "
                    f"the string {json.dumps(next(iter(json.loads(JSON_TEXT({key: 0})))))}"
                )
            found = _drift_in(item, f"{where}[{key!r}]")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _drift_in(item, f"{where}[{index}]")
            if found:
                return found
    elif type(value) is _failure_class():
        return _drift_in(value.item, f"{where}.item")
    return None


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
    elif type(value) is _failure_class():
        return _not_json(value.item, f"{where}.item")
    elif not isinstance(value, str | int | float):
        return f"the {type(value).__name__}{f' at {where}' if where else ''} is not JSON data"
    return None


def encode_key_value(codec: Codec, key: Any, value: Any, node: str) -> bytes:
    if codec.kind == "json" and type(key) is not str and not isinstance(key, str):
        raise CheckpointError(
            f"node {node!r}: shared[{key!r}] has a key of type {type(key).__name__}; a durable "
            "run stores shared as JSON, whose keys are strings (or use serializer='pickle')",
            node=node,
            key=key,
        )
    try:
        return codec.encode(value)
    except UNSAVABLE as error:
        raise CheckpointError(
            f"node {node!r}: shared[{key!r}] holds a {type(value).__name__} that cannot be "
            f"saved as {codec.kind} ({error}); keep plain data in shared, or use "
            f"{'a store with ' if codec.kind == 'json' else ''}"
            f"{'serializer=' + repr('pickle') if codec.kind == 'json' else 'picklable values'}",
            node=node,
            key=key,
        ) from error


# -- fingerprints of batch items ----------------------------------------------------------------


class Unfingerprintable(TypeError):
    """A batch item has no stable fingerprint: `fingerprint` says why and where."""


def fingerprint(codec: Codec, item: Any) -> int:
    """A stable checksum of a batch item, to tell whether prep gives the same items.

    An item JSON writes: the CRC-32 of its compact JSON text (with the JSON
    codec; with pickle, of its pickle if it is plain data), as ever. Any other
    item: the CRC-32 of its canonical text (`_Canonical`), the same in every
    process and Python run, and different for a different item.

    Raises:
        Unfingerprintable: If the item has no stable fingerprint (an object
            whose only identity is its address, one that cannot be pickled).
    """
    if codec.kind == "json":  # the bytes of the item's JSON; ints and strs made directly
        kind = type(item)
        if kind is int:
            return zlib.crc32(b"%d" % item)
        if kind is str:
            return zlib.crc32(ASCII(item).encode())
        try:
            return zlib.crc32(JSON_TEXT(item).encode())
        except (TypeError, ValueError, RecursionError):
            pass
    elif _plain(item):
        return zlib.crc32(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
    try:
        text = _Canonical().text(item)
    except _Unstable as unstable:
        where = "".join(reversed(unstable.where))
        raise Unfingerprintable(
            f"{unstable.reason}{f' (at item{where})' if where else ''}"
        ) from unstable.__cause__
    except RecursionError:
        raise Unfingerprintable("it is nested too deeply") from None
    return zlib.crc32(text.encode())


def _plain(item: Any) -> bool:
    """Plain data whose pickle is the same in every process: scalars, and
    lists, tuples and dicts of them (a set's order is not)."""
    kind = type(item)
    if kind in SCALARS:
        return True
    try:
        if kind is list or kind is tuple:
            return all(_plain(value) for value in item)
        if kind is dict:
            return all(_plain(key) and _plain(value) for key, value in item.items())
    except RecursionError:
        return False
    return False


class _Unstable(Exception):
    """Why a value has no stable canonical text; ``where`` is filled in on the way out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where: list[str] = []


_CALLABLES = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
)
_NEWOBJ = getattr(copyreg, "__newobj__", None)  # what pickle makes plain objects with
_NEWOBJ_EX = getattr(copyreg, "__newobj_ex__", None)


class _Canonical:
    """A value's canonical text: JSON naming each part's kind, with dicts' and
    sets' entries sorted, objects by their pickle reduction (class by name,
    arguments, state), exceptions by class name and message, and a reference
    back up the path for a cycle. Nothing in it depends on a memory address or
    on the order of a hash."""

    def __init__(self) -> None:
        self.path: dict[int, int] = {}  # ids of the containers we are inside: their depth

    def text(self, value: Any) -> str:
        kind = type(value)
        if kind is str:
            return ASCII(value)
        if kind is int:
            return str(value)
        if kind is bool:
            return "true" if value else "false"
        if value is None:
            return "null"
        if kind is float:
            return repr(value) if math.isfinite(value) else f'["float","{value!r}"]'
        key = id(value)
        depth = self.path.get(key)
        if depth is not None:
            return f'["cycle",{depth}]'
        self.path[key] = len(self.path)
        try:
            return self._compound(value, kind)
        finally:
            del self.path[key]

    def _each(self, values: Any, where: Callable[[int, Any], str]) -> list[str]:
        """The texts of ``values``; if one has none, say where it is."""
        parts = []
        text = self.text
        for index, value in enumerate(values):
            try:
                parts.append(text(value))
            except _Unstable as unstable:
                unstable.where.append(where(index, value))
                raise
        return parts

    def _compound(self, value: Any, kind: type) -> str:
        if kind is list or kind is tuple:
            parts = self._each(value, _index)
            return f'["{kind.__name__}",[{",".join(parts)}]]'
        if kind is dict:
            return f'["dict",{self._pairs(value.items(), True, _key)}]'
        if kind is set or kind is frozenset:
            parts = sorted(self._each(value, _member))
            return f'["{kind.__name__}",[{",".join(parts)}]]'
        if kind is bytes or kind is bytearray:
            return f'["{kind.__name__}","{value.hex()}"]'
        if isinstance(value, BaseException):
            name = kind.__dict__.get("_bf_type") if issubclass(kind, RecordedError) else None
            name = name or f"{kind.__module__}:{kind.__qualname__}"
            return f'["error",{ASCII(name)},{ASCII(_message(value))}]'
        if value is MISSING:
            return '["MISSING"]'
        if isinstance(value, _CALLABLES):
            return self._named(value)
        return self._reduced(value, kind)

    def _pairs(self, pairs: Any, sort: bool, where: Callable[[int, Any], str]) -> str:
        """Key-value pairs (a dict's items, an object's attributes), sorted if
        their order does not matter."""
        keys, values = [], []
        for key, value in pairs:
            keys.append(key)
            values.append(value)
        names = self._each(keys, where)
        texts = self._each(values, lambda index, value: where(index, keys[index]))
        parts = [f"[{name},{text}]" for name, text in zip(names, texts, strict=True)]
        if sort:
            parts.sort()
        return f"[{','.join(parts)}]"

    def _named(self, value: Any) -> str:
        """A class or function, by its module and qualified name; a method
        bound to an object, by the object and the method's name."""
        owner = getattr(value, "__self__", None)
        if owner is not None and not isinstance(owner, type | types.ModuleType):
            (owned,) = self._each([owner], lambda index, owner: ".__self__")
            return f'["method",{owned},{ASCII(value.__name__)}]'
        module = owner.__module__ if isinstance(owner, type) else getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if not isinstance(qualname, str):
            raise _Unstable(f"the {type(value).__name__} {value!r} has no qualified name")
        return f'["global",{ASCII(str(module))},{ASCII(qualname)}]'

    def _reduced(self, value: Any, kind: type) -> str:
        """An object by its pickle reduction: what makes it, from what, and its state."""
        try:
            reduced = value.__reduce_ex__(4)
        except Exception as error:
            raise _Unstable(f"the {kind.__qualname__} cannot be pickled ({error})") from error
        if isinstance(reduced, str):  # a module-level singleton, pickled by name
            module = getattr(value, "__module__", None) or kind.__module__
            return f'["global",{ASCII(str(module))},{ASCII(reduced)}]'
        if type(reduced) is not tuple or not 2 <= len(reduced) <= 6:
            raise _Unstable(f"the {kind.__qualname__} reduces to a {type(reduced).__name__}")
        make, args, state, items, entries = (*reduced, None, None, None)[:5]
        bare = type(args) is tuple and (
            (make is _NEWOBJ and len(args) == 1)
            or (make is _NEWOBJ_EX and len(args) == 3 and args[1] == () and args[2] == {})
        )
        if (
            bare
            and args[0] is kind
            and (state is None or (type(state) in (dict, tuple, list) and not state))
            and items is None
            and entries is None
            and kind.__eq__ is object.__eq__
        ):
            raise _Unstable(
                f"the {kind.__qualname__} has no state but its identity (its memory address)"
            )
        parts = self._each([make, args], _nowhere)
        if type(state) is dict:  # attributes: by name, in any order
            parts.append(f'["attributes",{self._pairs(state.items(), True, _attribute)}]')
        else:
            parts.extend(self._each([state], _nowhere))
        if items is not None:
            parts.extend(self._each([list(items)], _nowhere))
        if entries is not None:
            ordered = isinstance(value, collections.OrderedDict)
            parts.append(f'["entries",{self._pairs(entries, not ordered, _key)}]')
        return f'["object",{",".join(parts)}]'


def _index(index: int, value: Any) -> str:
    return f"[{index}]"


def _key(index: int, key: Any) -> str:
    return f"[{key!r}]"


def _member(index: int, value: Any) -> str:
    return "{...}"


def _attribute(index: int, name: Any) -> str:
    return f".{name}"


def _nowhere(index: int, value: Any) -> str:
    return ""


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
