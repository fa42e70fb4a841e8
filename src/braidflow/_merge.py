"""Merging branches at the join: the rules that combine what several branches changed.

`merge` applies what each branch changed (`SharedView.changes`), and
refuses two branches changing one key unless a rule says how to combine
them; a rule combines each branch's change onto the store's value at the join.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Final

from ._errors import InvalidParameterError, MergeConflict, add_note
from ._isolation import MISSING, same
from ._views import Changes, SharedView
from .merge import MergeRule

__all__ = [
    "MERGE_RULES",
    "Advice",
    "Merged",
    "apply_changes",
    "check_rules",
    "merge",
    "rule_where",
]

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
            or not same(value[: len(start)], start)
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
        touched = [k for k in value if k not in start or not same(value[k], start[k])]
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
    checked: dict[str, Rule] = {}
    for key, rule in rules.items():
        if isinstance(rule, MergeRule):  # braidflow.merge.extend, .add, .rule(function)...
            rule = rule.applied
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
        checked[key] = rule
    return checked


def _value_in(store: Mapping[Any, Any], key: Any) -> Any:
    return store[key] if key in store else MISSING


def _likely_rule(values: Writers) -> str:
    """The built-in rule that would combine these values: an example to give."""
    now = [value for _, _, value in values]
    if all(isinstance(value, list) for value in now):
        return "extend"
    if all(isinstance(value, int | float) and not isinstance(value, bool) for value in now):
        return "sum"
    if all(isinstance(value, Mapping) for value in now):
        return "update"
    return "last"


def rule_where(
    key: Any, rule: str, owner: str, kind: str, rules: dict[str, Rule], listed: bool = False
) -> str:
    """How to give ``key`` the rule ``rule`` on ``owner``, a fork or an
    isolated parallel batch flow of class ``kind`` that has ``rules`` already
    (``listed``: a fork written as a list, which has no place for them)."""
    entry = f"{key!r}: {rule!r}"
    if listed:
        return (
            "a fan-out written as a list (`a >> [b, c]`) has no place for rules, so write "
            f"`Parallel(b, c, merge={{{entry}}})` in place of the list: "
            f"`a >> Parallel(b, c, merge={{{entry}}})`"
        )
    if rules:
        return f"add {entry} to the merge= of {owner}"
    if kind == "Parallel":
        return f"`Parallel(..., merge={{{entry}}})`"
    return f"`{kind}(..., isolate=True, merge={{{entry}}})`"


# Says, for a conflict on a key, how to give it an example rule (`rule_where`).
Advice = Callable[[Any, str], str]


class Merged(dict[Any, Any]):
    """The merged changes of a join, to apply to the store; `assumed` holds
    those keys whose merge started from a default a branch filled in (the
    store lacks them), with that default."""

    __slots__ = ("assumed",)
    assumed: dict[Any, Any]


def merge(
    store: Mapping[Any, Any],
    changes: Sequence[tuple[str, Mapping[Any, Any]]],
    rules: dict[str, Rule],
    advice: Advice | None = None,
) -> Merged:
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
    the key. A key ``store`` lacks that a branch filled with a default (a
    typed sub-flow's, `Changes.assumed`) is combined as if ``store`` held
    that default, the first such branch's in branch order: once, whatever
    the number of branches that filled it (unless a branch known by its
    recorded changes only changed it too: its value holds the default
    already, if it filled it).

    Raises:
        MergeConflict: For a key changed by several branches and no rule, or
            changes a rule cannot combine.
        Exception: What a rule raised (a function's error, ``"sum"`` of a
            string), with a note naming the key, the rule and the branches.
    """
    writers: dict[Any, Writers] = {}
    defaults: dict[Any, Any] = {}  # key -> the default a branch filled it with, the first's
    recorded: set[Any] = set()  # keys changed by a branch known only by its recorded changes
    for name, changed in changes:
        at_fork = None
        if isinstance(changed, Changes):
            at_fork = changed.before
            for key in changed.assumed:
                defaults.setdefault(key, at_fork[key])
        else:
            recorded.update(changed)
        for key, value in changed.items():
            before = at_fork[key] if at_fork is not None else _value_in(store, key)
            writers.setdefault(key, []).append((name, before, value))
    # A branch that finished before a resumed run stopped is known by what it
    # changed only, not by the defaults it filled in: its value holds the
    # default already if it filled it, so the join does not add it again.
    for key in recorded & defaults.keys():
        del defaults[key]
    merged = Merged()
    merged.assumed = {}

    def there(key: Any) -> Any:
        """The store's value at the join, or the default a branch assumed for it."""
        now_there = _value_in(store, key)
        if now_there is MISSING and key in defaults:
            merged.assumed[key] = now_there = defaults[key]
        return now_there

    for key, values in writers.items():
        rule = rules.get(key)
        if rule is None and len(values) == 1:  # the common case: no look at the store
            merged[key] = values[0][2]
            if key in defaults and key not in store:
                merged.assumed[key] = defaults[key]
            continue
        if rule is None:
            names = [name for name, _, _ in values]
            shown = ", ".join(repr(name) for name in names)
            rule = _likely_rule(values)
            how = advice(key, rule) if advice is not None else f"merge={{{key!r}: {rule!r}}}"
            raise MergeConflict(
                f"key {key!r} was written by branches {shown}; declare how to combine them: "
                f"{how} (a rule is 'extend', 'sum', 'update', 'last' or a function)",
                key=key,
                branches=names,
            )
        now_there = there(key)
        if len(values) == 1 and same(now_there, values[0][1]):  # the store did not move
            merged[key] = values[0][2]
        else:
            merged[key] = _combined(key, rule, now_there, values)
    return merged


def _combined(key: Any, rule: Rule, now_there: Any, values: Writers) -> Any:
    """``key``'s value by ``rule``. An error the rule raises gets a note naming
    the key, the rule and the branches, but for a built-in rule's conflict,
    which names them already."""
    try:
        if isinstance(rule, str):
            return MERGE_RULES[rule](key, now_there, values)
        return rule(values[0][1], [value for _, _, value in values])
    except Exception as error:
        if not (isinstance(error, MergeConflict) and isinstance(rule, str)):
            shown = repr(rule) if isinstance(rule, str) else _function_name(rule)
            names = ", ".join(repr(name) for name, _, _ in values)
            which = "branch" if len(values) == 1 else "branches"
            add_note(
                error,
                f"merge rule {shown} failed on key {key!r}, combining the values of "
                f"{which} {names}",
            )
        raise


def _function_name(function: Any) -> str:
    """A merge function as a note shows it: ``pick()``."""
    name = getattr(function, "__name__", None)
    return f"{name}()" if isinstance(name, str) else repr(function)


def apply_changes(target: MutableMapping[Any, Any], changes: Mapping[Any, Any]) -> None:
    """Write merged changes into the store (or the view) the fork started from.

    Onto a branch's view (a fork inside a branch), a key whose merge started
    from a default a branch filled in (`Merged.assumed`) has that default at
    the fork of the view's own branch too, so the joins further out start
    from it as well, rather than adding it once per join."""
    assumed = getattr(changes, "assumed", None)
    if assumed and type(target) is SharedView:
        for key, default in assumed.items():
            if key not in target:
                target.assume(key, default)
    for key, value in changes.items():
        if value is MISSING:
            target.pop(key, None)
        else:
            target[key] = value
