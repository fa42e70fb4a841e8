"""The codec of durable runs: how values of ``shared``, items' results and actions are written.

JSON by default (a value is refused unless JSON gives it back equal), or
pickle; batch items are fingerprinted, to tell on resume whether ``prep``
gives the same items.
"""

from __future__ import annotations

import json
import json.encoder
import pickle
import zlib
from collections.abc import Callable
from typing import Any

from .._errors import CheckpointError
from .._isolation import MISSING

__all__ = [
    "ASCII",
    "JSON_TEXT",
    "SCALARS",
    "UNSAVABLE",
    "Codec",
    "action_text",
    "encode_key_value",
    "fingerprint",
]


def _json_encoder() -> Callable[[Any], str]:
    """``json.dumps`` for the store: compact, no NaN, ASCII. The C encoder is made
    once and reused (``JSONEncoder.encode`` makes one per call, half its cost);
    a cycle in a value then shows as a RecursionError."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
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


JSON_TEXT = _json_encoder()
ASCII = json.encoder.encode_basestring_ascii  # what the JSON encoder does to a str
# What encoding a value that cannot be saved raises (a cycle: RecursionError).
UNSAVABLE = (TypeError, ValueError, RecursionError, pickle.PicklingError, AttributeError)


class Codec:
    """How a store's values are written: JSON (text) or pickle."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def encode(self, value: Any) -> bytes:
        """``value`` as stored. JSON must give back an equal value, or it is
        refused: a tuple would come back a list, an int key a string.

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
            return JSON_TEXT(value).encode()
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        if self.kind == "json":
            return json.loads(data)
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
            values: list[Any] = json.loads(payload)
            return values
        return [pickle.loads(part) for part in pickle.loads(payload)]

    def unpack(self, payload: bytes) -> list[tuple[Any, Any]]:
        """The (key, value or MISSING) pairs of a payload made by `pack`."""
        if self.kind == "json":
            return [(entry[0], entry[2] if entry[1] else MISSING) for entry in json.loads(payload)]
        return [
            (key, MISSING if data is None else pickle.loads(data))
            for key, data in pickle.loads(payload)
        ]


SCALARS = frozenset((str, int, float, bool, type(None)))


def _key_json(key: Any) -> bytes:
    """A key of ``shared`` as JSON (a str, but for a store that holds others)."""
    return ASCII(key).encode() if type(key) is str else JSON_TEXT(key).encode()


def _faithful(value: Any) -> bool:
    """Whether JSON gives ``value`` back equal: no tuple, no key but a string
    (anything else JSON cannot hold at all, its encoder refuses)."""
    if isinstance(value, list):
        for item in value:
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            if type(item) not in SCALARS and not _faithful(item):
                return False
        return True
    return not isinstance(value, tuple)


def _json_drift(value: Any) -> str:
    """Say what in ``value`` JSON would give back changed."""
    return _drift_in(value, "") or f"a {type(value).__name__} JSON gives back as another value"


def _drift_in(value: Any, where: str) -> str | None:
    at = f" at {where}" if where else ""
    if isinstance(value, tuple):
        return f"the {type(value).__name__}{at} would come back as a list"
    if isinstance(value, dict):
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


def fingerprint(codec: Codec, item: Any) -> int:
    """A stable checksum of a batch item, to tell whether prep gives the same items."""
    if codec.kind == "json":  # the bytes of the item's JSON; ints and strs made directly
        kind = type(item)
        if kind is int:
            return zlib.crc32(b"%d" % item)
        if kind is str:
            return zlib.crc32(ASCII(item).encode())
    try:
        data = JSON_TEXT(item).encode() if codec.kind == "json" else codec.encode(item)
    except Exception:  # not serializable: only its type can be compared
        data = type(item).__qualname__.encode()
    return zlib.crc32(data)


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
