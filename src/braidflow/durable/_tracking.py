"""Which keys of ``shared`` each step of a durable run touched, so its checkpoint holds only those.

In a durable run ``shared`` is a `TrackingDict`: a real dict that notes the
keys read, written or deleted in the step's set (`STEP`); a branch's view
(`SharedView`) notes its own. `changed_keys` encodes those whose saved form
changed since the last checkpoint; `replayed_into` notes in a view what
the views nested in its step saved, which a resume replays into it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from .._context import STEP
from .._isolation import MISSING, SCALARS
from ._codec import UNSAVABLE, Codec, encode_key_value

__all__ = ["EVERY_KEY", "TrackingDict", "changed_keys", "replayed_into"]

_step = STEP.get  # the running step (StepAt), looked up once here: every access calls it
EVERY_KEY: Any = object()  # in a touched set: every key (the store was iterated or updated)
_ALL = EVERY_KEY


class TrackingDict(dict[Any, Any]):
    """``shared`` in a durable run: a real dict that notes which keys each step
    touches (reads, writes or deletes), so its checkpoint serializes only those."""

    __slots__ = ("_bf_last",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._bf_last: dict[Any, bytes] = {}  # the last saved encoding of each key

    def touched(self, keys: Collection[Any]) -> Iterable[Any]:
        """The keys a step touched, given them (after an iteration: every key
        there now or saved, and those it named, deleted since)."""
        if _ALL in keys:
            every = {*dict.keys(self), *self._bf_last, *keys}
            every.discard(_ALL)
            return every
        return keys

    def __getitem__(self, key: Any) -> Any:
        _step().touched.add(key)
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        _step().touched.add(key)
        return dict.get(self, key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        _step().touched.add(key)
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        _step().touched.add(key)
        dict.__delitem__(self, key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        _step().touched.add(key)
        return dict.setdefault(self, key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        _step().touched.add(key)
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[Any, Any]:
        _step().touched.add(_ALL)
        return dict.popitem(self)

    def clear(self) -> None:
        _step().touched.add(_ALL)
        dict.clear(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        _step().touched.add(_ALL)
        dict.update(self, *args, **kwargs)

    def __ior__(self, other: Any) -> TrackingDict:  # type: ignore[misc]
        _step().touched.add(_ALL)
        dict.update(self, other)
        return self

    def __iter__(self) -> Any:
        _step().touched.add(_ALL)
        return dict.__iter__(self)

    def keys(self) -> Any:
        _step().touched.add(_ALL)
        return dict.keys(self)

    def values(self) -> Any:
        _step().touched.add(_ALL)
        return dict.values(self)

    def items(self) -> Any:
        _step().touched.add(_ALL)
        return dict.items(self)


def changed_keys(
    codec: Codec,
    target: Any,
    node: str,
    touched: Collection[Any] | None = None,
    nested: bool = False,
) -> list[tuple[Any, bytes | None]]:
    """The keys of ``target`` whose saved form changed since the last
    checkpoint, encoded; ``None`` for a deleted key. Of a TrackingDict, the
    keys in ``touched`` (the step's); of a SharedView, those it noted (and,
    if the step is a flow's, ``nested``: see `_view_changes`)."""
    if type(target) is not TrackingDict:
        return _view_changes(codec, target, node, nested)
    last: dict[Any, bytes] = target._bf_last
    changes: list[tuple[Any, bytes | None]] = []
    read = dict.__getitem__  # so that reading marks nothing
    for key in target.touched(touched or ()):
        if key in target:
            data = encode_key_value(codec, key, read(target, key), node)
            if last.get(key) != data:
                last[key] = data
                changes.append((key, data))
        elif key in last:
            del last[key]
            changes.append((key, None))
    return changes


_UNSAVED: Any = object()  # a key's saved form not known yet, or not to be had


def _view_changes(
    codec: Codec, view: Any, node: str, nested: bool = False
) -> list[tuple[Any, bytes | None]]:
    """`changed_keys` of a branch's view: the keys it noted, each compared
    with its last saved form, else with that of its value at the fork (what
    a resume's view has there before the steps' changes are replayed). So a
    key only read (a container, which the view copies, notes) is no change,
    and one deleted is, even if no step of the branch saved it.

    The step of a flow (``nested``) looks at every container the view holds
    as its own too: its nested steps' checkpoints took the keys noted so
    far, and what its ``prep`` read the flow's ``post`` may change in place
    through ``prep_res``, which the view does not see."""
    last: dict[Any, bytes | None] = view._bf_last
    changes: list[tuple[Any, bytes | None]] = []
    keys = view._take_dirty()
    if nested:
        keys |= {key for key, value in [*view._local.items()] if type(value) not in SCALARS}
    for key in keys:
        data = encode_key_value(codec, key, view._peek(key), node) if key in view else None
        saved = last.get(key, _UNSAVED)
        if saved is _UNSAVED:
            before = view._forked(key)
            if before is MISSING:
                saved = None
            else:
                try:
                    saved = codec.encode(before)
                except UNSAVABLE:
                    pass  # unsaved at the fork: the value now is saved
        if saved != data:
            changes.append((key, data))
        last[key] = data
    return changes


def replayed_into(view: Any, changes: Iterable[tuple[Any, bytes | None]]) -> None:
    """Note in a branch's ``view`` the ``changes`` (key, saved form or ``None``:
    deleted) that a view nested in its running step saved: a branch of a
    fork in it, or an isolated parameter set. A resume that replays the
    step applies them to ``view``, in the order written, before the step's
    own; so they are the saved form the step's checkpoint compares with,
    and it looks at their keys even if ``view`` never touched them (a
    join's merged value, back at the value at the fork, is a change)."""
    last, dirty = view._bf_last, view._dirty
    for key, data in changes:
        last[key] = data
        dirty.add(key)
