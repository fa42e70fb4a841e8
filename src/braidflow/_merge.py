"""Isolated views of ``shared`` for concurrent branches, and merging them at the join.

A `SharedView` reads through to the store as it was at the fork and
keeps its own writes. A value is copied the first time the branch touches it
(containers only: dicts, lists, sets and the like, recursively; other objects
are shared), so in-place changes stay in the branch and untouched values cost
nothing. At the join, `merge` applies what each branch changed, and
refuses two branches changing one key unless a rule says how to combine them.
"""

from __future__ import annotations

import array
import copy
import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Final

from ._errors import InvalidParameterError, MergeConflict

__all__ = ["MERGE_RULES", "MISSING", "SharedView", "check_rules", "merge"]


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
_SCALARS: Final = frozenset({str, int, float, complex, bool, bytes, type(None), frozenset, range})
# The same, subclasses included (an IntEnum, a str subclass): immutable, shared.
_IMMUTABLE: Final = (str, int, float, complex, bytes, frozenset, range, type(None))

Shallow = Callable[[Any], Any]


def _copy(value: Any, memo: dict[int, Any], shallow: Shallow) -> Any:
    """`data_copy`, with ``shallow`` making the first, shallow copy of the
    instances of subclasses (and of deques, arrays and dataclasses)."""
    cls = type(value)
    if cls in _SCALARS:
        return value
    key = id(value)
    done = memo.get(key)
    if done is not None:
        return done
    copied: Any
    if cls is dict:
        copied = memo[key] = {}
        for name, item in value.items():
            copied[name] = item if type(item) in _SCALARS else _copy(item, memo, shallow)
        return copied
    if cls is list:
        copied = memo[key] = []
        copied.extend(
            [item if type(item) in _SCALARS else _copy(item, memo, shallow) for item in value]
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
                if type(item) not in _SCALARS:
                    dict.__setitem__(copied, name, _copy(item, memo, shallow))
        elif isinstance(value, list):
            for index in range(list.__len__(copied)):
                item = list.__getitem__(copied, index)
                if type(item) not in _SCALARS:
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
    items = [item if type(item) in _SCALARS else _copy(item, memo, shallow) for item in value]
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
        fields[field.name] = item if type(item) in _SCALARS else _copy(item, memo, shallow)
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


# -- comparing -----------------------------------------------------------------------


def _equal(now: Any, before: Any) -> bool:
    try:
        return bool(now == before)
    except Exception:  # some values cannot say (arrays): count them as changed
        return False


def _same(now: Any, before: Any) -> bool:
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
    if cls is not type(before) or cls in _SCALARS:
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


class SharedView(MutableMapping[Any, Any]):
    """What a branch sees as ``shared``: the store as it was at the fork, plus
    the branch's own writes. A ``MutableMapping``, not a ``dict``: ``dict(view)``
    makes one."""

    __slots__ = ("_base", "_bf_last", "_copied", "_deleted", "_dirty", "_local", "_written")

    def __init__(self, base: MutableMapping[Any, Any]) -> None:
        self._base = base
        self._local: dict[Any, Any] = {}  # written, or copied on first read
        self._copied: dict[Any, Any] = {}  # key -> the value it was copied from
        self._deleted: set[Any] = set()
        self._written: set[Any] = set()
        self._dirty: set[Any] = set()  # touched since the last checkpoint (durable runs)
        self._bf_last: dict[Any, bytes] = {}

    def take_dirty(self) -> set[Any]:
        """The keys touched since the last call (durable runs checkpoint those)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def __getitem__(self, key: Any) -> Any:
        # Marked only when the value is the branch's own (local, or just
        # copied), which it may change in place; a value shared with the base
        # (a scalar, or an object data_copy leaves alone) is not the branch's
        # change, for checkpoints as for the merge.
        local = self._local
        if key in local:
            self._dirty.add(key)
            return local[key]
        if key in self._deleted:
            raise KeyError(key)
        value = self._base[key]
        copied = data_copy(value)
        if copied is not value:
            local[key] = copied
            self._copied[key] = value
            self._dirty.add(key)
        return copied

    def peek(self, key: Any) -> Any:
        """The value of ``key`` now, neither copied nor marked as touched."""
        if key in self._local:
            return self._local[key]
        if key in self._deleted:
            raise KeyError(key)
        return self._base[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._dirty.add(key)
        self._local[key] = value
        self._copied.pop(key, None)
        self._deleted.discard(key)
        self._written.add(key)

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        self._dirty.add(key)
        self._local.pop(key, None)
        self._copied.pop(key, None)
        self._deleted.add(key)
        self._written.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._local or (key not in self._deleted and key in self._base)

    def __iter__(self) -> Iterator[Any]:
        local, deleted = self._local, self._deleted
        for key in self._base:
            if key not in deleted:
                yield key
        for key in local:
            if key not in self._base:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<SharedView of {len(self)} keys, {len(self.changes())} changed>"

    def changes(self) -> dict[Any, Any]:
        """What this branch changed: each key whose value now differs from its
        value at the fork (set, deleted as ``MISSING``, or changed in place),
        with its value now. Writing back an equal value is no change."""
        base = self._base
        changed = {}
        for key in self._written:
            now = self._local.get(key, MISSING)
            before = base[key] if key in base else MISSING
            if now is MISSING or before is MISSING:
                if now is not before:
                    changed[key] = now
            elif not _same(now, before):
                changed[key] = now
        for key, before in self._copied.items():
            now = self._local[key]
            if not _same(now, before):
                changed[key] = now
        return changed


# -- merge rules ---------------------------------------------------------------------


def _extend(key: Any, before: Any, values: list[tuple[str, Any]]) -> Any:
    start = [] if before is MISSING else before
    merged = list(start)
    for name, value in values:
        if not isinstance(value, list) or len(value) < len(start) or value[: len(start)] != start:
            raise MergeConflict(
                f"merge rule 'extend' for key {key!r}: branch {name!r} did not only append to "
                "the list (it changed, removed or replaced what was there)",
                key=key,
                branches=[n for n, _ in values],
            )
        merged.extend(value[len(start) :])
    return merged


def _sum(key: Any, before: Any, values: list[tuple[str, Any]]) -> Any:
    start = 0 if before is MISSING else before
    total = start
    for name, value in values:
        if value is MISSING:
            raise MergeConflict(
                f"merge rule 'sum' for key {key!r}: branch {name!r} deleted the key",
                key=key,
                branches=[n for n, _ in values],
            )
        total = total + (value - start)
    return total


def _update(key: Any, before: Any, values: list[tuple[str, Any]]) -> Any:
    start: dict[Any, Any] = {} if before is MISSING else before
    merged = dict(start)
    setters: dict[Any, str] = {}
    for name, value in values:
        if not isinstance(value, Mapping):
            raise MergeConflict(
                f"merge rule 'update' for key {key!r}: branch {name!r} left a "
                f"{type(value).__name__} there, not a dict",
                key=key,
                branches=[n for n, _ in values],
            )
        touched = [k for k in value if k not in start or not _same(value[k], start[k])]
        touched += [k for k in start if k not in value]
        for inner in touched:
            if inner in setters:
                raise MergeConflict(
                    f"key {key!r}[{inner!r}] was changed by branches {setters[inner]!r} and "
                    f"{name!r}; the 'update' rule merges different keys only",
                    key=key,
                    branches=[setters[inner], name],
                )
            setters[inner] = name
            if inner in value:
                merged[inner] = value[inner]
            else:
                merged.pop(inner, None)
    return merged


def _last(key: Any, before: Any, values: list[tuple[str, Any]]) -> Any:
    return values[-1][1]


MERGE_RULES: Final[dict[str, Callable[[Any, Any, list[tuple[str, Any]]], Any]]] = {
    "extend": _extend,
    "sum": _sum,
    "update": _update,
    "last": _last,
}

Rule = str | Callable[[Any, list[Any]], Any]


def check_rules(rules: Any, owner: str) -> dict[str, Rule]:
    """Check ``merge=`` where it is given.

    Raises:
        InvalidParameterError: If it is not a dict of key names to a rule name
            or a function, naming what is wrong.
    """
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise InvalidParameterError(
            f"{owner}: merge={rules!r} must be a dict of shared-store keys to merge rules"
        )
    for key, rule in rules.items():
        if not isinstance(key, str):
            raise InvalidParameterError(
                f"{owner}: merge rule for {key!r} ({type(key).__name__}): keys of merge= "
                "must be the string keys of the shared store"
            )
        if isinstance(rule, str):
            if rule not in MERGE_RULES:
                raise InvalidParameterError(
                    f"{owner}: merge rule {rule!r} for key {key!r} is not one of "
                    f"{', '.join(map(repr, MERGE_RULES))}, or a function"
                )
        elif not callable(rule):
            raise InvalidParameterError(
                f"{owner}: merge rule for key {key!r} must be a rule name or a function "
                "(value before the fork, list of the branches' values) -> merged value"
            )
    return dict(rules)


def merge(
    before: Mapping[Any, Any], changes: Sequence[tuple[str, dict[Any, Any]]], rules: dict[str, Rule]
) -> dict[Any, Any]:
    """Combine the branches' changes, in branch order, into one set of changes.

    A key changed by one branch takes that branch's value (``MISSING`` for a
    deletion); a key changed by several is combined by its rule.

    Raises:
        MergeConflict: For a key changed by several branches and no rule, or
            changes a rule cannot combine.
    """
    writers: dict[Any, list[tuple[str, Any]]] = {}
    for name, changed in changes:
        for key, value in changed.items():
            writers.setdefault(key, []).append((name, value))
    merged: dict[Any, Any] = {}
    for key, values in writers.items():
        if len(values) == 1:
            merged[key] = values[0][1]
            continue
        rule = rules.get(key)
        names = [name for name, _ in values]
        if rule is None:
            shown = ", ".join(repr(name) for name in names)
            raise MergeConflict(
                f"key {key!r} was written by branches {shown}; declare how to combine them, "
                f"e.g. merge={{{key!r}: 'extend' | 'sum' | 'update' | 'last' | function}}",
                key=key,
                branches=names,
            )
        start = before[key] if key in before else MISSING
        if isinstance(rule, str):
            merged[key] = MERGE_RULES[rule](key, start, values)
        else:
            merged[key] = rule(start, [value for _, value in values])
    return merged


def apply_changes(target: MutableMapping[Any, Any], changes: Mapping[Any, Any]) -> None:
    """Write merged changes into the store (or the view) the fork started from."""
    for key, value in changes.items():
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
