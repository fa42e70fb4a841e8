"""Fingerprints of batch items: stable checksums, to tell on resume that prep gives the same items.

JSON items keep the CRC-32 of their JSON text; any other item gets the
CRC-32 of a canonical text, the same in every process; an item with no
stable identity (only its address, or one that cannot be pickled) has none.
`stable_text` gives the text itself, which a result cache's keys are made of.
"""

from __future__ import annotations

import collections
import copyreg
import json
import math
import pickle
import types
import zlib
from collections.abc import Callable
from typing import Any

from .._isolation import MISSING
from ._codec import ASCII, JSON_TEXT, SCALARS, Codec, _faithful
from ._exceptions import RecordedError, message_of

__all__ = ["Unfingerprintable", "fingerprint", "stable_text"]


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
    return zlib.crc32(_canonical_text(item).encode())


# JSON with dicts' keys sorted: the same text for equal dicts built in any order.
_SORTED_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False).encode


def stable_text(value: Any) -> bytes:
    """A text of ``value`` that is the same in every process and Python run
    and tells unequal values apart, for a key to be made of: its JSON, keys
    sorted, if JSON gives the value back equal (plain data: no tuple, no key
    but a string, no subclass of a JSON type); else its canonical text
    (`_Canonical`), which names the class of what is not plain data (an enum
    by its class and value: ``Size.ONE`` is not ``1``). Each is marked, so the
    two never meet.

    Raises:
        Unfingerprintable: If the value has no stable text (an object whose
            only identity is its address, one that cannot be pickled).
    """
    if type(value) is str:
        return b"j" + ASCII(value).encode()
    if type(value) in SCALARS or (_faithful(value) and _str_keys(value)):
        try:
            return b"j" + _SORTED_JSON(value).encode()
        except (TypeError, ValueError, RecursionError):  # NaN, an object JSON does not know
            pass
    return b"c" + _canonical_text(value).encode()


def _str_keys(value: Any) -> bool:
    """Whether every dict in ``value`` (plain data) is keyed by plain strings:
    a checkpoint keeps a StrEnum key as its string (a lookup finds it by
    either), but a key of what exec is given is its class too (exec may
    iterate the keys and ask for ``.value``)."""
    if type(value) is dict:
        return all(type(key) is str and _str_keys(item) for key, item in value.items())
    if type(value) is list:
        return all(_str_keys(item) for item in value)
    return True


def _canonical_text(value: Any) -> str:
    """`_Canonical` text of ``value``; raises `Unfingerprintable` saying where it has none."""
    try:
        return _Canonical().text(value)
    except _Unstable as unstable:
        where = "".join(reversed(unstable.where))
        raise Unfingerprintable(
            f"{unstable.reason}{f' (at item{where})' if where else ''}"
        ) from unstable.__cause__
    except RecursionError:
        raise Unfingerprintable("it is nested too deeply") from None


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
            return f'["error",{ASCII(name)},{ASCII(message_of(value))}]'
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
