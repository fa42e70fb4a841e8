"""The table of a flow's state: each key, its type and merge rule, the nodes that read and write it.

`state_table` finds the state type (a flow's ``state=``, or the one its
nodes are typed against) and, for each typed node, the keys its code reads
and writes (`_state_access`); the rows are Markdown, which the mermaid
drawing carries as comments and ``braidflow graph --format markdown`` prints.
"""

from __future__ import annotations

from typing import Any

from ._state import declared_state, state_type
from ._state_access import accesses
from ._state_check import describe
from ._wiring import display_names, graph_of

__all__ = ["state_table"]


def _members(start: Any, found: list[tuple[Any, str, Any]], state: Any, seen: set[int]) -> None:
    """Every node of the graph from ``start``, nested flows and branches
    included (each once: a flow may hold itself), with its display name and
    the state type it runs on."""
    names = display_names(start)
    for node in graph_of(start):
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.append((node, names[id(node)], state))
        if node._bf_batch == "branches":
            for head in node.branches:
                _members(head, found, state, seen)
        elif node._bf_is_flow and node.__dict__.get("start_node") is not None:
            _members(node.start_node, found, node._bf_state or state, seen)


def _cell(values: list[str]) -> str:
    return ", ".join(values).replace("|", "\\|")


def state_table(node: Any) -> list[str] | None:
    """The Markdown table of the state of ``node``'s graph, one line a row;
    ``None`` if neither the flows nor the nodes declare a state type."""
    found: list[tuple[Any, str, Any]] = []
    _members(node, found, None, set())
    state = next((where for _, _, where in found if where is not None), None)
    if state is None:  # no flow has state=: the type the nodes are typed against
        declared = next(
            (
                declared_state(type(member))
                for member, _, _ in found
                if declared_state(type(member))
            ),
            None,
        )
        if declared is None:
            return None
        try:
            state = state_type(declared, False, f"{node._describe()}'s nodes")
        except Exception:  # not a class the state can be (a plain dict type): no table
            return None
    readers: dict[str, list[str]] = {key: [] for key in state.hints}
    writers: dict[str, list[str]] = {key: [] for key in state.hints}
    unread = []
    for member, name, where in found:
        if member._bf_is_flow or member._bf_batch == "branches":
            continue
        if where is None and declared_state(type(member)) is None:
            continue  # an untyped node in an untyped flow: not read
        seen = accesses(type(member))
        if seen is None:
            unread.append(name)
            continue
        reads, writes = seen
        for key in state.hints:
            if key in reads and name not in readers[key]:
                readers[key].append(name)
            if key in writes and name not in writers[key]:
                writers[key].append(name)
    rules = {key: getattr(rule, "__name__", rule) for key, rule in state.rules.items()}
    lines = [
        f"state {state.name}: each key, its type, merge rule, and the nodes that read and "
        "write it (from their code)",
        "",
        "| key | type | merge | read by | written by |",
        "|---|---|---|---|---|",
    ]
    for key in state.hints:
        rule = rules.get(key, "")
        shown = describe(state.hints[key]).replace("|", "\\|")
        lines.append(
            f"| {key} | {shown} | {'add' if rule == 'sum' else rule} | "
            f"{_cell(readers[key])} | {_cell(writers[key])} |"
        )
    if unread:
        lines.append("")
        lines.append(f"(the code of {', '.join(unread)} could not be read)")
    return lines
