"""Wiring: successors by action, the ``>>`` and ``- "action" >>`` operators, routing.

A node keeps a dict ``successors`` from action string to the next node (or
``None``, an explicit end). Routing a finished node to its successor is
decided here, for sync and async flows alike.
"""

from __future__ import annotations

import itertools
import sys
import warnings
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, overload

from ._errors import WiringError, WiringWarning
from ._sites import note_wiring, user_stacklevel

__all__ = [
    "DEFAULT_ACTION",
    "Successors",
    "Wirable",
    "_ConditionalTransition",
    "as_node",
    "changed",
    "display_names",
    "graph_of",
    "route",
    "wiring_version",
]

DEFAULT_ACTION = "default"
_MODULE_GLOBALS = globals()

_Target = TypeVar("_Target", bound="Wirable | None")


class Successors(dict[str, Any]):
    """A node's successors by action: a plain dict to read (routing reads it
    at every step), whose writes note the change (`changed`), so that cached
    names and graph descriptions also see edges set directly, as PocketFlow
    code does with ``node.successors[action] = other``."""

    __slots__ = ()

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        changed()

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        changed()

    def __ior__(self, other: Any) -> Successors:  # type: ignore[override,misc]
        dict.update(self, other)
        changed()
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        changed()

    def pop(self, key: str, *default: Any) -> Any:
        value = dict.pop(self, key, *default)
        changed()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = dict.popitem(self)
        changed()
        return item

    def clear(self) -> None:
        dict.clear(self)
        changed()

    def setdefault(self, key: str, default: Any = None) -> Any:
        value = dict.setdefault(self, key, default)
        changed()
        return value


def as_node(node: Any, owner: Wirable, role: str) -> Any:
    """``node`` checked as a successor or a flow's start: a node, a flow or
    ``None``; a list or tuple of nodes becomes a fan-out (`Parallel`).

    Raises:
        WiringError: If ``node`` is anything else; ``role`` says what it was for.
    """
    if isinstance(node, list | tuple):
        node = Wirable._fan_out(*node)
        node._bf_listed = True  # a conflict at its join says how to give it rules
    if node is not None and not isinstance(node, Wirable):
        if isinstance(node, type) and issubclass(node, Wirable):
            got = f"the class {node.__name__} itself; give a node made from it: {node.__name__}()"
        else:
            got = type(node).__name__
        raise WiringError(
            f"{role} must be a node, a flow or None, got {got}", node=owner._display_name()
        )
    return node


class Wirable:
    """What every node and flow can do to be wired into a graph."""

    successors: dict[str, Any]
    # What a list of nodes becomes when wired (`braidflow.Parallel`, which sets
    # itself here: it is defined above the wiring, since it runs a fork).
    _fan_out: ClassVar[Callable[..., Any]]

    def _display_name(self) -> str:  # overridden by BaseNode
        return type(self).__name__

    @overload
    def next(self, node: list[Any] | tuple[Any, ...], action: str = ...) -> Any: ...
    @overload
    def next(self, node: _Target, action: str = ...) -> _Target: ...

    def next(self, node: Any, action: str = DEFAULT_ACTION) -> Any:
        """Make ``node`` the successor for ``action``; return ``node`` so chains read left to right.

        ``None`` as the node marks an explicit end for that action. A list of
        nodes fans out: they run as parallel branches (`Parallel`), and
        the ``Parallel`` is returned, so ``a >> [b, c] >> d`` runs ``d`` after both.

        Raises:
            WiringError: If ``action`` is not a string or ``node`` is not a node,
                a flow or ``None``.
        """
        if not isinstance(action, str):
            raise WiringError(
                f"Action must be a string: node {self._display_name()!r} got action "
                f"{action!r} of type {type(action).__name__}",
                node=self._display_name(),
            )
        node = as_node(node, self, f"Successor of {self._display_name()!r} for action {action!r}")
        # The user's frame: the caller, or past our own >> operators.
        caller = sys._getframe(1)
        via_operator = caller.f_globals is _MODULE_GLOBALS
        if action in self.successors:
            warnings.warn(  # pointing at the user's wiring line
                f"Overwriting successor for action '{action}'", stacklevel=3 if via_operator else 2
            )
        self.successors[action] = node
        changed()  # also when ``successors`` was replaced by a plain dict
        if node is not None:  # to tell `plan >> [p >> a, web]` from `plan >> [p, web]`
            note_wiring(self, node, caller.f_back if via_operator else caller)  # type: ignore[arg-type]
        return node

    @overload
    def __rshift__(self, other: list[Any] | tuple[Any, ...]) -> Any: ...
    @overload
    def __rshift__(self, other: _Target) -> _Target: ...

    def __rshift__(self, other: Any) -> Any:
        return self.next(other)

    def __sub__(self, action: str) -> _ConditionalTransition:
        if isinstance(action, str):
            return _ConditionalTransition(self, action)
        raise WiringError(
            f"Action must be a string: node {self._display_name()!r} - {action!r} "
            f'({type(action).__name__}); write node - "action" >> next_node',
            node=self._display_name(),
        )


class _ConditionalTransition:
    """The half-built edge ``node - "action"``, completed by ``>> target``.

    One never completed wired nothing, silently in PocketFlow: it warns
    (`WiringWarning`) when it is dropped, pointing at the line that made it.
    """

    __slots__ = ("_made_at", "action", "src")

    def __init__(self, src: Wirable, action: str) -> None:
        self.src = src
        self.action = action
        frame = sys._getframe(2)  # the `node - "action"` expression, past __sub__
        self._made_at: tuple[str, int, dict[str, Any]] | None = (
            frame.f_code.co_filename,
            frame.f_lineno,
            frame.f_globals,
        )

    def __del__(self) -> None:
        made_at = getattr(self, "_made_at", None)
        if made_at is None or sys.is_finalizing():
            return
        filename, line, module_globals = made_at
        source = self.src._display_name()
        warnings.warn_explicit(
            f"`{source} - {self.action!r}` was never completed with `>> node`, so no "
            f"successor was wired for action {self.action!r}; write `node - "
            f"{self.action!r} >> next_node` (or `>> None` to end the flow there)",
            WiringWarning,
            filename,
            line,
            module=module_globals.get("__name__"),
            registry=module_globals.setdefault("__warningregistry__", {}),
            module_globals=module_globals,
        )

    @overload
    def __rshift__(self, target: list[Any] | tuple[Any, ...]) -> Any: ...
    @overload
    def __rshift__(self, target: _Target) -> _Target: ...

    def __rshift__(self, target: Any) -> Any:
        self._made_at = None  # completed (even if the target is refused)
        return self.src.next(target, self.action)


def route(node: Any, action: Any) -> Any:
    """Return the successor of ``node`` for ``action``, or ``None`` when the flow ends.

    ``None`` or an empty action means "default". An action with no successor
    ends the flow, with a warning only when the node has other actions wired
    (it then looks like a typo), if only to ``>> None``. An action wired as
    ``>> None`` is an explicit end and never causes that warning.
    """
    successors = node.successors
    try:
        return successors[action or DEFAULT_ACTION]
    except KeyError:
        if successors:
            if not action:
                wire = "node >> next_node"
            elif isinstance(action, str):
                wire = f"node - {action!r} >> next_node"
            else:  # wiring takes strings: the action must be one
                wire = f"node - {str(action)!r} >> next_node and return {str(action)!r}"
            warnings.warn(
                f"Flow ends: '{action}' not found in {list(successors)} (from node "
                f"{node._display_name()!r}; wire it with {wire}, or return one of those)",
                stacklevel=user_stacklevel(),  # the code that ran the flow
            )
        return None
    except TypeError:
        raise WiringError(
            f"Node {node._display_name()!r} returned action {action!r} of type "
            f"{type(action).__name__} from post; an action must be a string or None",
            node=node._display_name(),
        ) from None


def graph_of(start: Any) -> list[Any]:
    """Every node reachable from ``start`` by successors, in a stable order
    (breadth first, successors in the order they were wired); loops end."""
    if start is None:
        return []
    order = [start]
    seen = {id(start)}
    for node in order:  # grows while it is read
        for successor in node.successors.values():
            if successor is not None and id(successor) not in seen:
                seen.add(id(successor))
                order.append(successor)
    return order


_version = itertools.count()
_current = next(_version)
_names_cache: weakref.WeakKeyDictionary[Any, tuple[int, dict[int, str]]] = (
    weakref.WeakKeyDictionary()
)


def changed() -> None:
    """Note that some graph's wiring or some node's name changed."""
    global _current
    _current = next(_version)


def wiring_version() -> int:
    """A number that changes whenever any graph's wiring or any node's name
    changes: what is computed from a graph can be kept until it moves on."""
    return _current


def display_names(start: Any) -> dict[int, str]:
    """The name each node of a graph shows in events and drawings, by ``id``.

    A node's name is its ``name=`` or its class name; when two different
    nodes of the graph share one, the later ones (in `graph_of`'s order)
    get ``#2``, ``#3``, ... so the names are unique and stable. Kept until any
    wiring or name changes.
    """
    cached = _names_cache.get(start)
    if cached is not None and cached[0] == _current:
        return cached[1]
    version = _current
    names: dict[int, str] = {}
    seen: dict[str, int] = {}
    for node in graph_of(start):
        name = str(node.name)
        count = seen.get(name, 0) + 1
        seen[name] = count
        names[id(node)] = name if count == 1 else f"{name}#{count}"
    _names_cache[start] = (version, names)
    return names
