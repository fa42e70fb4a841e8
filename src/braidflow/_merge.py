"""Isolated views of ``shared`` for concurrent branches, and merging them at the join.

A `SharedView` reads through to the store and keeps the branch's own writes.
The first time the branch touches a key (reads, writes or deletes it) the
view notes the key's value then, *the value at the fork*, and a container it
reads is copied (`data_copy`), so in-place changes stay in the branch; values
the branch never touches cost nothing. At the join a branch's changes are
what differs from the value at the fork, never from the store as it is at the
join (in a parallel batch flow that is not isolated, other sub-flows write to
that store meanwhile). `merge` applies what the branches changed, and refuses
two branches changing one key unless a rule says how to combine them; a rule
combines each branch's change onto the store's value at the join.
"""

from __future__ import annotations

import array
import copy
import dataclasses
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Final

from ._errors import InvalidParameterError, MergeConflict

__all__ = ["MERGE_RULES", "MISSING", "Changes", "SharedView", "check_rules", "data_copy", "merge"]


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


def _snapshot(value: Any) -> Any:
    """The value at the fork, kept aside: a second, private `data_copy`."""
    if type(value) in _SCALARS:
        return value
    return _copy(value, {}, _reduced)


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


# -- the branch's view ---------------------------------------------------------------

_UNTOUCHED: Final[Any] = object()


class Changes(dict[Any, Any]):
    """What one branch changed: each key's value now (``MISSING``: deleted),
    and in `before` its value at the fork, which the merge rules combine from."""

    __slots__ = ("before",)
    before: dict[Any, Any]


class SharedView(MutableMapping[Any, Any]):
    """What a branch sees as ``shared``: the store, each key as it was when the
    branch first touched it, plus the branch's own writes. A ``MutableMapping``,
    not a ``dict``: ``dict(view)`` makes one."""

    __slots__ = ("_base", "_before", "_bf_last", "_deleted", "_dirty", "_local")

    def __init__(self, base: MutableMapping[Any, Any]) -> None:
        self._base = base
        self._local: dict[Any, Any] = {}  # written, or copied on first read
        # Each key the branch touched -> its value at the fork, taken then: a
        # snapshot of a container (what `changes` compares with), else the value
        # itself, or MISSING. A key read and neither copied nor written keeps
        # that value: the branch reads it alike until the join.
        self._before: dict[Any, Any] = {}
        self._deleted: set[Any] = set()
        self._dirty: set[Any] = set()  # touched since the last checkpoint (durable runs)
        self._bf_last: dict[Any, bytes] = {}

    def _take_dirty(self) -> set[Any]:
        """The keys touched since the last call (durable runs checkpoint those)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def _at_fork(self, key: Any) -> Any:
        """The value at the fork of a key first touched by a write or a delete
        (``in`` first: a defaultdict store must not make the key)."""
        base = self._base
        return _snapshot(base[key]) if key in base else MISSING

    def __getitem__(self, key: Any) -> Any:
        # Marked only when the value is the branch's own (local, or just
        # copied), which it may change in place; a value shared with the base
        # (a scalar, or an object data_copy leaves alone) is not the branch's
        # change, for checkpoints as for the merge.
        local = self._local
        if key in local:
            self._dirty.add(key)
            return local[key]
        before = self._before.get(key, _UNTOUCHED)
        if before is not _UNTOUCHED:  # read before; or deleted
            if before is MISSING or key in self._deleted:
                raise KeyError(key)
            return before
        try:
            value = self._base[key]
        except KeyError:
            self._before[key] = MISSING
            raise
        if type(value) in _SCALARS:
            self._before[key] = value
            return value
        copied = data_copy(value)
        if copied is value:
            self._before[key] = value
            return value
        local[key] = copied
        self._before[key] = _snapshot(value)
        self._dirty.add(key)
        return copied

    def _peek(self, key: Any) -> Any:
        """The value of ``key`` now, neither copied nor marked as touched."""
        if key in self._local:
            return self._local[key]
        if key in self._deleted:
            raise KeyError(key)
        before = self._before.get(key, _UNTOUCHED)
        if before is _UNTOUCHED:
            return self._base[key]
        if before is MISSING:
            raise KeyError(key)
        return before

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self._before:
            self._before[key] = self._at_fork(key)
        self._dirty.add(key)
        self._local[key] = value
        self._deleted.discard(key)

    def __delitem__(self, key: Any) -> None:
        if key not in self:
            raise KeyError(key)
        if key not in self._before:
            self._before[key] = self._at_fork(key)
        self._dirty.add(key)
        self._local.pop(key, None)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        if key in self._local:
            return True
        if key in self._deleted:
            return False
        before = self._before.get(key, _UNTOUCHED)
        if before is not _UNTOUCHED:
            return before is not MISSING
        return key in self._base

    def __iter__(self) -> Iterator[Any]:
        base, local, deleted, before = self._base, self._local, self._deleted, self._before
        for key in base:
            if key in local or (key not in deleted and before.get(key) is not MISSING):
                yield key
        for key in local:
            if key not in base:
                yield key
        for key, value in before.items():  # read, then removed from the store meanwhile
            if value is not MISSING and key not in local and key not in deleted and key not in base:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"<SharedView of {len(self)} keys, {len(self.changes())} changed>"

    def changes(self) -> Changes:
        """What this branch changed: each key whose value now differs from its
        value at the fork (set, deleted as ``MISSING``, or changed in place),
        with its value now; `Changes.before` holds those values at the fork.
        Writing back an equal value is no change, and a key only read is never
        one, whatever the store holds by now."""
        local, deleted = self._local, self._deleted
        changed = Changes()
        changed.before = at_fork = {}
        for key, before in self._before.items():
            if key in local:
                now = local[key]
            elif key in deleted:
                now = MISSING
            else:  # only read, and shared with the store: the branch's value is the store's
                continue
            if now is not before and not _same(now, before):
                changed[key] = now
                at_fork[key] = before
        return changed


# -- merge rules ---------------------------------------------------------------------
#
# A rule gets the store's value at the join (``now_there``: moved on from the
# value at the fork only where other code wrote the store meanwhile, as the
# sub-flows of a parallel batch flow that is not isolated do) and, for each
# branch that changed the key, its value at the fork and its value now. The
# built-in rules apply each branch's change onto the value at the join, so
# what was written there meanwhile stays; they build a new value.

Writers = list[tuple[str, Any, Any]]  # (branch, value at the fork, value now)


def _conflict(key: Any, values: Writers, message: str) -> MergeConflict:
    return MergeConflict(message, key=key, branches=[name for name, _, _ in values])


def _extend(key: Any, now_there: Any, values: Writers) -> Any:
    if now_there is MISSING:
        merged = []
    elif isinstance(now_there, list):
        merged = list(now_there)
    else:
        raise _conflict(
            key,
            values,
            f"merge rule 'extend' for key {key!r}: the store holds a "
            f"{type(now_there).__name__} there, not a list",
        )
    for name, before, value in values:
        start = [] if before is MISSING else before
        if (
            not isinstance(value, list)
            or len(value) < len(start)
            or not _same(value[: len(start)], start)
        ):
            raise _conflict(
                key,
                values,
                f"merge rule 'extend' for key {key!r}: branch {name!r} did not only append to "
                "the list (it changed, removed or replaced what was there)",
            )
        merged.extend(value[len(start) :])
    return merged


def _sum(key: Any, now_there: Any, values: Writers) -> Any:
    total = 0 if now_there is MISSING else now_there
    for name, before, value in values:
        if value is MISSING:
            raise _conflict(
                key, values, f"merge rule 'sum' for key {key!r}: branch {name!r} deleted the key"
            )
        total = total + (value - (0 if before is MISSING else before))
    return total


def _update(key: Any, now_there: Any, values: Writers) -> Any:
    if now_there is MISSING:
        merged: dict[Any, Any] = {}
    elif isinstance(now_there, Mapping):
        merged = dict(now_there)
    else:
        raise _conflict(
            key,
            values,
            f"merge rule 'update' for key {key!r}: the store holds a "
            f"{type(now_there).__name__} there, not a dict",
        )
    setters: dict[Any, str] = {}
    for name, before, value in values:
        if not isinstance(value, Mapping):
            raise _conflict(
                key,
                values,
                f"merge rule 'update' for key {key!r}: branch {name!r} left a "
                f"{type(value).__name__} there, not a dict",
            )
        start: Mapping[Any, Any] = {} if before is MISSING else before
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


def _last(key: Any, now_there: Any, values: Writers) -> Any:
    return values[-1][2]


MERGE_RULES: Final[dict[str, Callable[[Any, Any, Writers], Any]]] = {
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


def _value_in(store: Mapping[Any, Any], key: Any) -> Any:
    return store[key] if key in store else MISSING


def merge(
    store: Mapping[Any, Any],
    changes: Sequence[tuple[str, Mapping[Any, Any]]],
    rules: dict[str, Rule],
) -> dict[Any, Any]:
    """Combine the branches' changes, in branch order, into one set of changes
    to apply to ``store``, the store (or view) the fork started from.

    Each branch's changes are a `Changes` (with its values at the fork), or a
    plain mapping, whose values at the fork are taken to be ``store``'s (the
    changes a resumed run recorded before: the store was rebuilt as it was at
    the fork). A key changed by one branch takes that branch's value
    (``MISSING`` for a deletion). A key changed by several is combined by its
    rule, and so is a key changed by one if ``store`` no longer holds the
    value that branch started from: the built-in rules apply each branch's
    change onto ``store``'s value; ``"last"`` and a function give their value,
    a function getting the value at the fork of the first branch that changed
    the key.

    Raises:
        MergeConflict: For a key changed by several branches and no rule, or
            changes a rule cannot combine.
    """
    writers: dict[Any, Writers] = {}
    for name, changed in changes:
        at_fork = changed.before if isinstance(changed, Changes) else None
        for key, value in changed.items():
            before = at_fork[key] if at_fork is not None else _value_in(store, key)
            writers.setdefault(key, []).append((name, before, value))
    merged: dict[Any, Any] = {}
    for key, values in writers.items():
        rule = rules.get(key)
        if len(values) == 1:
            if rule is None:
                merged[key] = values[0][2]
                continue
            now_there = _value_in(store, key)
            if _same(now_there, values[0][1]):  # the store did not move: the branch's value
                merged[key] = values[0][2]
                continue
        elif rule is None:
            names = [name for name, _, _ in values]
            shown = ", ".join(repr(name) for name in names)
            raise MergeConflict(
                f"key {key!r} was written by branches {shown}; declare how to combine them, "
                f"e.g. merge={{{key!r}: 'extend' | 'sum' | 'update' | 'last' | function}}",
                key=key,
                branches=names,
            )
        else:
            now_there = _value_in(store, key)
        if isinstance(rule, str):
            merged[key] = MERGE_RULES[rule](key, now_there, values)
        else:
            merged[key] = rule(values[0][1], [value for _, _, value in values])
    return merged


def apply_changes(target: MutableMapping[Any, Any], changes: Mapping[Any, Any]) -> None:
    """Write merged changes into the store (or the view) the fork started from."""
    for key, value in changes.items():
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
