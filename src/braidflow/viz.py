"""Drawing a graph: ``flow.to_mermaid()`` returns a mermaid flowchart.

Every node is drawn once (so loops end), actions label the edges, nested
flows become subgraphs, batch and parallel kinds say so, and explicit ends
(``node - "done" >> None``) are drawn as end points. When the flow or its
nodes declare a state type, the table of its keys follows as comments.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._state_table import state_table
from ._wiring import DEFAULT_ACTION, display_names, graph_of

__all__ = ["to_markdown", "to_mermaid"]


def _kind(node: Any) -> str:
    """A short note of what kind of node this is, for its label."""
    batch = node._bf_batch
    if batch == "branches":
        return f"{len(node.branches)} parallel branches, joined"
    parts = ["async"] if node._bf_async else []
    if batch == "parallel":
        parts.append("parallel batch")
    elif batch == "sequential":
        parts.append("batch")
    parts.append("flow" if node._bf_is_flow else "node")
    return " ".join(parts)


def _text(value: str) -> str:
    """Make a label safe inside mermaid's double quotes."""
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


class _Drawing:
    def __init__(self) -> None:
        self.lines: list[str] = ["flowchart TD"]
        self.ids: dict[int, str] = {}
        self.count = 0
        self.drawing: set[int] = set()  # flows whose graph is being drawn

    def new_id(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def graph(self, start: Any, indent: str) -> list[Any]:
        """Draw every node reachable from ``start``, then the edges between them;
        return those nodes (`graph_of`'s walk)."""
        nodes = graph_of(start)
        names = display_names(start)
        for node in nodes:
            self.node(node, names[id(node)], indent)
        end_id: str | None = None
        for node in nodes:
            for action, successor in node.successors.items():
                label = "" if action == DEFAULT_ACTION else f'|"{_text(action)}"|'
                if successor is None:
                    if end_id is None:
                        end_id = self.new_id("end")
                        self.lines.append(f'{indent}{end_id}(["end"])')
                    target = end_id
                else:
                    target = self.ids[id(successor)]
                self.lines.append(f"{indent}{self.ids[id(node)]} -->{label} {target}")
        return nodes

    def branches(self, node: Any, node_id: str, label: str, indent: str) -> None:
        """A fan-out: a fork, each branch's graph, and a join after the ends."""
        self.drawing.add(id(node))
        inner = indent + "  "
        self.lines.append(f'{indent}subgraph {node_id} ["{label}"]')
        self.lines.append(f"{inner}direction TB")
        fork, join = self.new_id("fork"), self.new_id("join")
        self.lines.append(f"{inner}{fork}((fork))")
        walked = []
        for head in node.branches:
            walked.append(self.graph(head, inner))
            self.lines.append(f"{inner}{fork} --> {self.ids[id(head)]}")
        self.lines.append(f"{inner}{join}((join))")
        for members in walked:
            for member in members:
                if not any(successor is not None for successor in member.successors.values()):
                    self.lines.append(f"{inner}{self.ids[id(member)]} --> {join}")
        self.lines.append(f"{indent}end")
        self.drawing.discard(id(node))

    def node(self, node: Any, name: str, indent: str) -> None:
        node_id = self.ids[id(node)] = self.new_id("n")
        label = f"{_text(name)}<br/><small>{_kind(node)}</small>"
        if node._bf_batch == "branches" and id(node) not in self.drawing:
            self.branches(node, node_id, label, indent)
        elif node._bf_is_flow and node.start_node is not None and id(node) not in self.drawing:
            self.drawing.add(id(node))
            self.lines.append(f'{indent}subgraph {node_id} ["{label}"]')
            self.lines.append(f"{indent}  direction TB")
            self.graph(node.start_node, indent + "  ")
            self.lines.append(f"{indent}end")
            self.drawing.discard(id(node))
        elif node._bf_batch != "single":
            self.lines.append(f'{indent}{node_id}[["{label}"]]')
        else:
            self.lines.append(f'{indent}{node_id}["{label}"]')


def to_mermaid(node: Any, *, table: bool = True, observed: Iterable[Any] | None = None) -> str:
    """Return a mermaid flowchart (``flowchart TD``) of ``node`` and what follows it.

    For a flow, its own graph is drawn from its start node inside a subgraph;
    for a plain node, the node and its successors. If the flow has a state
    type (``state=``) or its nodes are typed against one, the table of its
    keys (type, merge rule, the nodes that read and write each) follows as
    mermaid comments (``%% | key | ...``), which viewers do not draw. Given
    ``observed``, the steps of a stored run (``flow.history(run_id,
    store=...)``), the table follows for any flow, with the keys each step
    changed among what it writes.
    """
    drawing = _Drawing()
    start = drawing.new_id("start")
    drawing.lines.append(f"  {start}((start))")
    drawing.graph(node, "  ")
    drawing.lines.append(f"  {start} --> {drawing.ids[id(node)]}")
    rows = state_table(node, observed) if table else None
    if rows is not None:
        drawing.lines.extend(f"%% {line}".rstrip() for line in rows)
    return "\n".join(drawing.lines) + "\n"


def to_markdown(node: Any, observed: Iterable[Any] | None = None) -> str:
    """The drawing of `to_mermaid` in a Markdown ```` ```mermaid ```` block,
    followed by the table of the state's keys as a Markdown table (if the
    flow or its nodes declare a state type, or a run's steps are given)."""
    text = f"```mermaid\n{to_mermaid(node, table=False)}```\n"
    rows = state_table(node, observed)
    return text if rows is None else text + "\n" + "\n".join(rows) + "\n"
