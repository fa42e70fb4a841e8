"""Isolating the values of ``shared``: what a branch's view copies, and whether a value changed.

`data_copy` copies the containers of a value (dicts, lists, sets, tuples,
dataclasses... recursively) and shares everything else; `snapshot` keeps a
value as it was at the fork; `same` tells a changed value from an equal one.
"""

from __future__ import annotations

import array
import copy
import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Final

__all__ = ["MISSING", "SCALARS", "data_copy", "same", "snapshot"]


class _Missing:
    """The value of a key that is not there: absent before the fork, or deleted."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "braidflow.MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()

# -- copying plain data --------------------------------------------------------------
#
# What a branch's view copies, exactly (docs/branches.md, "What a branch's view
# copies", says the same):
#   dict and every subclass (OrderedDict, defaultdict, Counter...): its values;
#   list and every subclass, deque: its items;
#   set and every subclass, bytearray, array.array (their items are hashable or
#     numbers, so a shallow copy is a full one);
#   tuple and every subclass (namedtuples...), and frozen dataclass instances,
#     when something inside them is copied (else they cannot change: shared);
#   dataclass instances that are not frozen: always, each field copied;
# recursively, with shared references and cycles kept (one memo per copy).
# Everything else is shared by reference: immutable scalars, and any other
# object (class instances, clients, locks, arrays of numpy...).

# Exact types that never need a copy: the fast path of every copy and comparison.
SCALARS: Final = frozenset({str, int, float, complex, bool, bytes, type(None), frozenset, range})
# The same, subclasses included (an IntEnum, a str subclass): immutable, shared.
_IMMUTABLE: Final = (str, int, float, complex, bytes, frozenset, range, type(None))

Shallow = Callable[[Any], Any]


def _reduced(value: Any) -> Any:
    """A shallow copy of ``value`` built from its pickle protocol (``__reduce_ex__``),
    as `copy.copy` builds one for a class without ``__copy__``; `copy.copy` if
    that fails.

    Snapshots are made this way, so a class's own ``__copy__`` runs once per
    touched value (for the branch's working copy), not twice.
    """
    try:
        reduced = value.__reduce_ex__(4)
        if isinstance(reduced, str):  # a module global: a singleton
            return value
        func, args, *rest = reduced
        state, items, pairs, setter = (*rest, None, None, None, None)[:4]
        copied = func(*args)
        if state is not None:
            if setter is not None:
                setter(copied, state)
            elif hasattr(copied, "__setstate__"):
                copied.__setstate__(state)
            else:
                slots = None
                if isinstance(state, tuple) and len(state) == 2:
                    state, slots = state
                if state:
                    copied.__dict__.update(state)
                for name, item in (slots or {}).items():
                    setattr(copied, name, item)
        for item in items or ():
            copied.append(item)
        for name, item in pairs or ():
            copied[name] = item
    except Exception:
        return copy.copy(value)
    if type(copied) is not type(value):
        return copy.copy(value)
    return copied


def _copy(value: Any, memo: dict[int, Any], shallow: Shallow) -> Any:
    """`data_copy`, with ``shallow`` making the first, shallow copy of the
    instances of subclasses (and of deques, arrays and dataclasses)."""
    cls = type(value)
    if cls in SCALARS:
        return value
    key = id(value)
    done = memo.get(key)
    if done is not None:
        return done
    copied: Any
    if cls is dict:
        copied = memo[key] = {}
        for name, item in value.items():
            copied[name] = item if type(item) in SCALARS else _copy(item, memo, shallow)
        return copied
    if cls is list:
        copied = memo[key] = []
        copied.extend(
            [item if type(item) in SCALARS else _copy(item, memo, shallow) for item in value]
        )
        return copied
    if cls is tuple:
        return _copy_tuple(value, memo, shallow)
    if cls is set or cls is bytearray:
        copied = memo[key] = value.copy()
        return copied
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, dict | list | deque | set | bytearray | array.array):
        copied = shallow(value)
        if copied is value or type(copied) is not cls:  # a __copy__ that does not copy
            memo[key] = value
            return value
        memo[key] = copied
        # Set through the base class: a subclass's own __setitem__ may check,
        # convert or log, and these are the same items, copied.
        if isinstance(value, dict):
            for name in list(dict.keys(copied)):
                item = dict.__getitem__(copied, name)
                if type(item) not in SCALARS:
                    dict.__setitem__(copied, name, _copy(item, memo, shallow))
        elif isinstance(value, list):
            for index in range(list.__len__(copied)):
                item = list.__getitem__(copied, index)
                if type(item) not in SCALARS:
                    list.__setitem__(copied, index, _copy(item, memo, shallow))
        elif isinstance(value, deque):
            items = [_copy(item, memo, shallow) for item in deque.__iter__(copied)]
            deque.clear(copied)
            deque.extend(copied, items)
        return copied
    if isinstance(value, tuple):
        return _copy_tuple(value, memo, shallow)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(value, type):
        return _copy_dataclass(value, memo, shallow)
    return value


def _copy_tuple(value: tuple[Any, ...], memo: dict[int, Any], shallow: Shallow) -> Any:
    key = id(value)
    items = [item if type(item) in SCALARS else _copy(item, memo, shallow) for item in value]
    if all(copied is item for copied, item in zip(items, value, strict=True)):
        memo[key] = value  # holds nothing that can change: shared
        return value
    done = memo.get(key)  # copied meanwhile, through a cycle back to it
    if done is not None:
        return done
    copied = memo[key] = _rebuild_tuple(value, items)
    return copied


def _rebuild_tuple(value: tuple[Any, ...], items: list[Any]) -> Any:
    """``value``'s class, holding ``items``: a namedtuple by ``_make``, another
    subclass by ``tuple.__new__`` (as pickle does: no ``__init__``), one made in
    C (``os.stat_result``...) by calling the class with the items; its
    ``__dict__`` copied over. One none of these rebuild is shared as it is."""
    cls = type(value)
    if cls is tuple:
        return tuple(items)
    copied: Any = None
    if hasattr(cls, "_fields") and hasattr(cls, "_make"):
        try:
            copied = cls._make(items)
        except Exception:
            copied = None
    if copied is None:
        try:
            copied = tuple.__new__(cls, items)
        except TypeError:
            try:
                copied = cls(items)
            except Exception:
                return value
    if (
        type(copied) is not cls
        or len(copied) != len(items)
        or any(a is not b for a, b in zip(tuple.__iter__(copied), items, strict=False))
    ):
        return value
    state = getattr(value, "__dict__", None)
    if state:
        try:
            copied.__dict__.update(state)
        except Exception:
            return value
    return copied


def _copy_dataclass(value: Any, memo: dict[int, Any], shallow: Shallow) -> Any:
    """A copy with each field set to its copied value (``object.__setattr__``:
    frozen ones too). A frozen instance whose fields hold nothing copied cannot
    change: it is shared, as a tuple is."""
    key = id(value)
    fields: dict[str, Any] = {}
    frozen = bool(getattr(type(value).__dataclass_params__, "frozen", False))
    copied: Any = None
    if not frozen:
        copied = shallow(value)
        if copied is value or type(copied) is not type(value):
            memo[key] = value
            return value
        memo[key] = copied
    for field in dataclasses.fields(value):
        try:
            item = getattr(value, field.name)
        except AttributeError:  # a field never set (init=False, no default)
            continue
        fields[field.name] = item if type(item) in SCALARS else _copy(item, memo, shallow)
    if frozen:
        if all(fields[name] is getattr(value, name) for name in fields):
            memo[key] = value
            return value
        done = memo.get(key)  # copied meanwhile, through a cycle back to it
        if done is not None:
            return done
        copied = shallow(value)
        if copied is value or type(copied) is not type(value):
            memo[key] = value
            return value
        memo[key] = copied
    for name, item in fields.items():
        object.__setattr__(copied, name, item)
    return copied


def data_copy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of the plain data in ``value``, sharing every other object.

    Copies, recursively: dicts, lists, sets, deques, bytearrays and
    ``array.array``s, subclasses included; tuples (every subclass) and frozen
    dataclass instances that hold any of them; other dataclass instances. An
    instance of a subclass is first copied by `copy.copy` (its class's
    ``__copy__`` if it has one), then its items or fields are copied. Shared
    references and cycles stay so in the copy. Everything else is shared as
    it is: immutable values, and objects such as clients, locks and models,
    which could not be copied, or should not be.
    """
    return _copy(value, {} if memo is None else memo, copy.copy)


def snapshot(value: Any) -> Any:
    """The value at the fork, kept aside: a second, private `data_copy`."""
    if type(value) in SCALARS:
        return value
    return _copy(value, {}, _reduced)


# -- comparing -----------------------------------------------------------------------


def _equal(now: Any, before: Any) -> bool:
    try:
        return bool(now == before)
    except Exception:  # some values cannot say (arrays): count them as changed
        return False


def same(now: Any, before: Any) -> bool:
    """Whether ``now`` is the value ``before``: the same object, equal (``==``),
    or holding, item by item, what it held (copies compare so even where
    ``==`` is identity, as for dataclasses with ``eq=False``)."""
    if now is before:
        return True
    if now is MISSING or before is MISSING:
        return False
    if _equal(now, before):
        return True
    try:
        return _alike(now, before, set())
    except RecursionError:  # nested too deep to tell: count it as changed
        return False


def _alike(now: Any, before: Any, seen: set[tuple[int, int]]) -> bool:
    if now is before:
        return True
    cls = type(now)
    if cls is not type(before) or cls in SCALARS:
        return _equal(now, before)
    pair = (id(now), id(before))
    if pair in seen:  # a cycle: alike unless something else differs
        return True
    if isinstance(now, dict):
        if dict.__len__(now) != dict.__len__(before):
            return False
        if isinstance(now, OrderedDict) and list(now) != list(before):  # its own order
            return False
        seen.add(pair)
        for name, item in dict.items(now):
            if not dict.__contains__(before, name) or not _alike(
                item, dict.__getitem__(before, name), seen
            ):
                return False
        return True
    if isinstance(now, list | tuple | deque):
        if len(now) != len(before):
            return False
        seen.add(pair)
        return all(_alike(a, b, seen) for a, b in zip(now, before, strict=True))
    if hasattr(cls, "__dataclass_fields__") and not isinstance(now, type):
        seen.add(pair)
        unset = object()
        return all(
            _alike(getattr(now, field.name, unset), getattr(before, field.name, unset), seen)
            for field in dataclasses.fields(now)
        )
    return _equal(now, before)
