"""A flow's graph described as text, to tell on resume whether the flow changed.

One line per node reachable from the start: its display name, class and
successors, nested flows and branches inside (``job/review: Review
[default->send, redo->review]``). A resume compares names and wiring, not
classes: a node whose code changed resumes. `first_difference` says in
words where two descriptions part; `walks_of` reads one back, to follow a
stored run's walks.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from .._wiring import display_names, graph_of, wiring_version

__all__ = [
    "ANOTHER_FLOW",
    "WalkNodes",
    "Walks",
    "describe_graph",
    "first_difference",
    "renamed_graph",
    "same_root",
    "walks_of",
    "wiring_of",
]

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


# How `first_difference` begins when no node of the run is in the flow given:
# then no rename can help, and the advice is to give the run's own flow.
ANOTHER_FLOW = "it is another flow"

_LINE = re.compile(r"^(?P<path>.*): (?P<cls>\S+) \[(?P<wiring>.*)\]$")


def wiring_of(graph: str) -> list[str]:
    """The lines of a description without the classes: what a resume compares."""
    lines = []
    for line in graph.splitlines():
        match = _LINE.match(line)
        lines.append(f"{match['path']} [{match['wiring']}]" if match else line)
    return lines


def first_difference(recorded: str, now: str) -> str | None:
    """Where two graph descriptions differ in names or wiring, said in words;
    ``None`` if they differ in no more than classes."""
    before, after = wiring_of(recorded), wiring_of(now)
    had, has = _nodes(before), _nodes(after)
    names = {path.rpartition("/")[2] for path in had}
    if had and has and not names & {path.rpartition("/")[2] for path in has}:
        # No node of the run's is in the flow given, by name: another flow.
        return f"{ANOTHER_FLOW}: the run has {_some(had)}, the flow given has {_some(has)}"
    for old, new in zip(before, after, strict=False):
        if old != new:
            return f"it had {_said(old)} where the flow now has {_said(new)}"
    if len(before) > len(after):
        return f"it had {_said(before[len(after)])}, which the flow no longer has"
    if len(after) > len(before):
        return f"the flow now also has {_said(after[len(before)])}"
    return None


def _nodes(lines: list[str]) -> list[str]:
    """The node paths of `wiring_of`'s lines (the flow's own line left out)."""
    paths = [line.rpartition(" [")[0] for line in lines if " [" in line]
    return [path for path in paths if "/" in path]


def _some(paths: list[str]) -> str:
    """A few node paths, in words: nodes 'a', 'b' and 3 more."""
    shown = ", ".join(repr(path) for path in paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"node{'s' if len(paths) > 1 else ''} {shown}{more}"


def _said(line: str) -> str:
    """A line of `wiring_of` in words: node 'a' wired default->b."""
    path, _, wiring = line.rpartition(" [")
    wiring = wiring.rstrip("]")
    return f"node {path!r} wired {wiring}" if wiring else f"node {path!r} with no successor"


def same_root(recorded: str, now: str) -> bool:
    """Whether two graph descriptions are of flows of one name (their first
    lines'): a rename then leaves the flow's own name alone, and renames
    only the node of that name, if one has it."""
    first = _LINE.match(recorded.partition("\n")[0])
    second = _LINE.match(now.partition("\n")[0])
    return bool(first and second and first["path"] == second["path"])


def renamed_graph(graph: str, renamed: dict[str, str], keep_root: bool = False) -> str:
    """A description with the nodes in ``renamed`` (old name: new) renamed
    (the flow's own name too, unless ``keep_root``)."""
    if not renamed:
        return graph
    lines = []
    for line in graph.splitlines():
        match = _LINE.match(line)
        if match is None:
            lines.append(line)
            continue
        parts = match["path"].split("/")
        path = "/".join(
            part if keep_root and index == 0 else renamed.get(part, part)
            for index, part in enumerate(parts)
        )
        wiring = ", ".join(
            f"{action}->{renamed.get(target, target)}"
            for action, _, target in (
                part.partition("->") for part in match["wiring"].split(", ") if part
            )
        )
        lines.append(f"{path}: {match['cls']} [{wiring}]")
    return "\n".join(lines)


class WalkNodes:
    """The nodes of one walk of a described graph: its start, and each node's
    successors by action (``None`` for an end)."""

    __slots__ = ("start", "wiring")

    def __init__(self) -> None:
        self.start: str | None = None
        self.wiring: dict[str, dict[str, str | None]] = {}

    def successor(self, name: str, action: str) -> str | None:
        """The node after ``name`` for ``action``; ``None`` where the walk ends."""
        return self.wiring.get(name, {}).get(action)


Walks = dict[str, WalkNodes]  # by the walk's prefix: "" for the flow's own, "job/" inside job


def walks_of(graph: str) -> Walks | None:
    """The walks a description holds; ``None`` if it is not one (a store's own)."""
    walks: Walks = {}
    for line in graph.splitlines():
        match = _LINE.match(line)
        if match is None:
            return None
        prefix, _, name = match["path"].rpartition("/")
        nodes = walks.setdefault(f"{prefix}/" if prefix else "", WalkNodes())
        if nodes.start is None:
            nodes.start = name
        wiring: dict[str, str | None] = {}
        for part in match["wiring"].split(", "):
            if part:
                action, _, target = part.partition("->")
                wiring[action] = None if target == "end" else target
        nodes.wiring.setdefault(name, wiring)
    return walks
