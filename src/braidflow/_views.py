"""`SharedView`: what a branch sees as ``shared``, and what it changed there.

The store as it was when the branch first touched each key (its value at
the fork, noted then; a container it reads is copied), plus the branch's own
writes; its `Changes` are what differs from the value at the fork.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Final

from ._isolation import MISSING, SCALARS, data_copy, same, snapshot

__all__ = ["MISSING", "Changes", "SharedView"]

# -- the branch's view ---------------------------------------------------------------

_UNTOUCHED: Final[Any] = object()
_NONE: Final[frozenset[Any]] = frozenset()  # the keys assumed, of most branches


class Changes(dict[Any, Any]):
    """What one branch changed: each key's value now (``MISSING``: deleted),
    and in `before` its value at the fork, which the merge rules combine from;
    `assumed` holds the changed keys whose value at the fork is a default the
    branch filled in (`SharedView.assume`), which the store lacks."""

    __slots__ = ("assumed", "before")
    before: dict[Any, Any]
    assumed: frozenset[Any]

    def without(self, key: Any) -> Changes:
        """These changes but that of ``key``."""
        rest = Changes((name, value) for name, value in self.items() if name != key)
        rest.before = {name: value for name, value in self.before.items() if name != key}
        rest.assumed = self.assumed - {key}
        return rest


class SharedView(MutableMapping[Any, Any]):
    """What a branch sees as ``shared``: the store, each key as it was when the
    branch first touched it, plus the branch's own writes. A ``MutableMapping``,
    not a ``dict``: ``dict(view)`` makes one."""

    __slots__ = ("_assumed", "_base", "_before", "_bf_last", "_deleted", "_dirty", "_local")

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
        # The saved form of each key a checkpoint looked at, or a view nested
        # in its step saved (durable runs; None: deleted); one not in it is
        # as at the fork (`changed_keys`, `replayed_into`).
        self._bf_last: dict[Any, bytes | None] = {}
        self._assumed: set[Any] = set()  # keys whose value at the fork is an assumed default

    def _take_dirty(self) -> set[Any]:
        """The keys touched since the last call (durable runs checkpoint those)."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    def _forked(self, key: Any) -> Any:
        """The value at the fork of a key the branch touched (MISSING: none)."""
        return self._before.get(key, MISSING)

    def _at_fork(self, key: Any) -> Any:
        """The value at the fork of a key first touched by a write or a delete
        (``in`` first: a defaultdict store must not make the key)."""
        base = self._base
        return snapshot(base[key]) if key in base else MISSING

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
        if type(value) in SCALARS:
            self._before[key] = value
            return value
        copied = data_copy(value)
        if copied is value:
            self._before[key] = value
            return value
        local[key] = copied
        self._before[key] = snapshot(value)
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
            base = self._base
            # (a key it never touched: a checkpoint may look at one that a
            # view nested in it saved; not copied by the view around either)
            return base._peek(key) if type(base) is SharedView else base[key]
        if before is MISSING:
            raise KeyError(key)
        return before

    def __setitem__(self, key: Any, value: Any) -> None:
        if key not in self._before:
            self._before[key] = self._at_fork(key)
        self._dirty.add(key)
        self._local[key] = value
        self._deleted.discard(key)

    def assume(self, key: Any, value: Any) -> None:
        """Take ``value`` for a key the store lacks as if the store had it at
        the fork (a typed sub-flow's default): the branch reads it, and it is
        a change of the branch's only if the branch changes it, and then the
        join starts from ``value`` (`Changes.assumed`)."""
        self._assumed.add(key)
        self._before[key] = snapshot(value)
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
        assumed = self._assumed
        for key, before in self._before.items():
            if key in local:
                now = local[key]
            elif key in deleted:
                now = MISSING
            else:  # only read, and shared with the store: the branch's value is the store's
                continue
            if now is not before and not same(now, before):
                changed[key] = now
                at_fork[key] = before
        changed.assumed = frozenset(key for key in changed if key in assumed) if assumed else _NONE
        return changed
