"""Merge rules as values: declared once on a state type, or given to ``merge=``.

``Annotated[list[str], merge.extend]`` on a key of a flow's state type is
the rule every join of that flow uses for the key (a ``Parallel``'s or an
isolated parallel batch flow's own ``merge=`` still wins for its join).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

__all__ = ["MergeRule", "add", "extend", "last", "rule", "update"]


class MergeRule:
    """How a key changed by several branches (or isolated sub-flows) is combined.

    Use the ready ones (`extend`, `add`, `update`, `last`) or make one from a
    function with `rule`. A rule is metadata in an ``Annotated`` type of a
    state's key, or a value of ``merge=`` (where the names ``"extend"``,
    ``"sum"``, ``"update"`` and ``"last"`` also work).

    Attributes:
        name: The built-in rule's name (``"extend"``, ``"sum"``, ``"update"``,
            ``"last"``), or ``None`` for a function's rule.
        function: The function of a rule made by `rule`, else ``None``.
    """

    __slots__ = ("function", "name")

    def __init__(self, name: str | None, function: Callable[[Any, list[Any]], Any] | None) -> None:
        self.name = name
        self.function = function

    @property
    def applied(self) -> str | Callable[[Any, list[Any]], Any]:
        """What the join applies: the built-in rule's name, or the function."""
        if self.function is not None:
            return self.function
        assert self.name is not None
        return self.name

    def __repr__(self) -> str:
        if self.function is not None:
            return f"braidflow.merge.rule({getattr(self.function, '__name__', self.function)})"
        return f"braidflow.merge.{'add' if self.name == 'sum' else self.name}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MergeRule):
            return NotImplemented
        return self.name == other.name and self.function is other.function

    def __hash__(self) -> int:
        return hash((self.name, id(self.function)))


def rule(function: Callable[[Any, list[Any]], Any]) -> MergeRule:
    """A merge rule made from ``function(value_before, [values]) -> merged``.

    ``value_before`` is the key's value at the fork and ``values`` those of
    the branches that changed it, in branch order; `braidflow.MISSING` stands
    for a key that was absent, or that a branch deleted. (LangGraph's
    reducers take ``(current, update)`` instead: wrap such a function in
    one of these rather than passing it as it is.)

    Raises:
        TypeError: If ``function`` is not callable.
    """
    if not callable(function) or isinstance(function, MergeRule):
        raise TypeError(
            f"braidflow.merge.rule({function!r}): give a function "
            "(value before the fork, list of the branches' values) -> merged value"
        )
    return MergeRule(None, function)


extend: Final = MergeRule("extend", None)
"""A list: what each branch appended, in branch order (changing existing items
is a conflict). The ``"extend"`` of ``merge=``."""

add: Final = MergeRule("sum", None)
"""Numbers: the value at the fork plus each branch's change. The ``"sum"`` of ``merge=``."""

update: Final = MergeRule("update", None)
"""A dict: the keys each branch set or removed (one inner key changed by two
branches is a conflict). The ``"update"`` of ``merge=``."""

last: Final = MergeRule("last", None)
"""The value of the last branch, in branch order, that changed the key."""
