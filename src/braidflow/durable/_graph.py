"""A flow's graph described as text, to tell on resume whether the flow changed.

One line per node reachable from the start: its display name, class and
successors, nested flows and branches inside. The same graph gives the same
lines; `first_difference` says in words where two descriptions part.
"""

from __future__ import annotations

import weakref
from typing import Any

from .._wiring import display_names, graph_of, wiring_version

__all__ = ["describe_graph", "first_difference"]

_described: weakref.WeakKeyDictionary[Any, tuple[int, str]] = weakref.WeakKeyDictionary()


def describe_graph(node: Any) -> str:
    """One line per node reachable from ``node``: its name, class and successors,
    nested flows and branches inside. Kept until any wiring or name changes."""
    version = wiring_version()
    cached = _described.get(node)
    if cached is not None and cached[0] == version:
        return cached[1]
    text = "\n".join(_lines(node))
    _described[node] = (version, text)
    return text


def _lines(node: Any) -> list[str]:
    lines: list[str] = []
    seen: set[int] = set()

    def walk(start: Any, prefix: str) -> None:
        names = display_names(start)
        for member in graph_of(start):
            name = names[id(member)]
            wiring = ", ".join(
                f"{action}->{'end' if target is None else names.get(id(target), '?')}"
                for action, target in member.successors.items()
            )
            lines.append(f"{prefix}{name}: {type(member).__qualname__} [{wiring}]")
            if id(member) in seen:
                continue
            seen.add(id(member))
            if member._bf_is_flow and member.start_node is not None:
                walk(member.start_node, f"{prefix}{name}/")
            for index, head in enumerate(getattr(member, "branches", ())):
                walk(head, f"{prefix}{name}/branch {index}/")

    walk(node, "")
    return lines


def first_difference(recorded: str, now: str) -> str:
    """The first line where two graph descriptions differ, said in words."""
    before, after = recorded.splitlines(), now.splitlines()
    for old, new in zip(before, after, strict=False):
        if old != new:
            return f"it had {old!r} where the flow now has {new!r}"
    if len(before) > len(after):
        return f"it had {before[len(after)]!r}, which the flow no longer has"
    return f"the flow now also has {after[len(before)]!r}"
