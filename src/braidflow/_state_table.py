"""The state of a flow's graph: the table of its keys and the nodes that read and write them.

`state_table` finds the state type (a flow's ``state=``, or the one its
nodes are typed against) and, for each typed node, the keys its code reads
and writes (`_state_access`), plus what each step of a stored run changed
if given one; the rows are Markdown, which the mermaid drawing carries as
comments and ``braidflow graph --format markdown`` prints. `check_nodes`
refuses a node typed against another state than the flow it runs in.
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Iterable
from typing import Any

from ._errors import WiringError
from ._options import on_error_of
from ._state import declared_state, state_type
from ._state_access import accesses
from ._state_check import describe
from ._wiring import display_names, graph_of, wiring_version

__all__ = ["check_nodes", "state_table"]


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


# A typed flow whose nodes were checked, and the wiring version they were checked at.
_CHECKED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def check_nodes(flow: Any) -> None:
    """Refuse a node typed against a state type (``Node[..., Draft]``) that
    is not the one of the typed flow it runs in, and a ``Parallel`` that
    collects its failures in a key the state type lacks (or a frozen field
    of it): checked when a run starts, once per wiring.

    Raises:
        WiringError: Naming the node, its state type and the flow's (or the key).
    """
    version = wiring_version()
    if _CHECKED.get(flow) == version:
        return
    start = flow.__dict__.get("start_node")
    found: list[tuple[Any, str, Any]] = []
    if start is not None:  # none: the walk says so
        _members(start, found, flow._bf_state, set())
    for member, name, state in found:
        if (
            state is not None
            and member._bf_batch == "branches"
            and on_error_of(member) == "collect"
            and member.failures_key not in state.writable
        ):
            key = member.failures_key
            if key in state.hints:  # (the join writes it, not through a node's view)
                raise WiringError(
                    f"{member._describe()} collects its failed branches in shared[{key!r}] "
                    f"(on_error='collect'), and {state.name}.{key} is a frozen field: "
                    "declare it without `frozen=True`, or give failures_key= another key",
                    node=name,
                )
            raise WiringError(
                f"{member._describe()} collects its failed branches in shared[{key!r}] "
                f"(on_error='collect'), which the state type {state.name} does not have: "
                f"declare it in {state.name} ({key}: list[braidflow.Failure], with an empty "
                "default), or give failures_key= a key it has",
                node=name,
            )
        inner = member._bf_state if member._bf_is_flow else None
        if inner is not None and state is not None and inner.cls is not state.cls:
            _check_sub_flow(member, name, inner, state)
        declared = declared_state(type(member))
        if declared is None or state is None or declared is state.cls:
            continue
        shown = describe(declared)
        raise WiringError(
            f"node {name!r} ({type(member).__name__}) is typed against {shown}, and it "
            f"runs in a flow whose state is {state.name}, which its prep and post get: "
            f"derive {type(member).__name__} from "
            f"`{_retyped(type(member), declared, state.name)}`"
        )
    _CHECKED[flow] = version


def _check_sub_flow(flow: Any, name: str, inner: Any, outer: Any) -> None:
    """Refuse a sub-flow whose state type lacks keys the state of the flow
    it runs in always has (required, or given a default): its check, when
    reached, would refuse the store, after the nodes before it ran.

    Raises:
        WiringError: Naming the sub-flow, both types and the keys.
    """
    always = {*outer.required, *outer.defaults}
    lacking = [key for key in outer.hints if key in always and key not in inner.hints]
    if lacking:
        keys = ", ".join(map(repr, lacking))
        raise WiringError(
            f"flow {name!r} ({type(flow).__name__}) runs on the state type {inner.name}, and "
            f"the flow around it on {outer.name}, whose keys {keys} {inner.name} lacks "
            f"(the store always holds them): declare them in {inner.name}, or give the "
            f"sub-flow state={outer.name}",
            node=name,
        )


def _retyped(cls: type, declared: Any, name: str) -> str:
    """The generic base of ``cls`` that declares its state, written with ``name``
    as the state: ``Node[str, str, Research]``."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            args = typing.get_args(base)
            if args and args[-1] is declared:
                shown = [describe(arg) for arg in args[:-1]]
                return f"{typing.get_origin(base).__name__}[{', '.join([*shown, name])}]"
    return name  # not reached: declared_state found it in such a base


def _cell(values: list[str]) -> str:
    return ", ".join(values).replace("|", "\\|")


def _state_of(node: Any, found: list[tuple[Any, str, Any]]) -> Any:
    """The state type of the graph: a flow's ``state=``, else the one its
    nodes are typed against; ``None`` if there is neither."""
    state = next((where for _, _, where in found if where is not None), None)
    if state is not None:
        return state
    for member, _, _ in found:
        declared = declared_state(type(member))
        if declared is not None:
            try:
                return state_type(declared, False, f"{node._describe()}'s nodes")
            except Exception:  # not a class a state can be (a plain dict type)
                return None
    return None


def state_table(node: Any, observed: Iterable[Any] | None = None) -> list[str] | None:
    """The Markdown table of the state of ``node``'s graph, one line a row.

    Its keys are the state type's, and its readers and writers those the
    typed nodes' code shows. Given ``observed``, the steps of a stored run
    (`StepRecord` objects, from ``flow.history``), every node's code is read
    and the keys each step changed count as written, typed or not. ``None``
    if there is no state type and no run was given.
    """
    found: list[tuple[Any, str, Any]] = []
    _members(node, found, None, set())
    state = _state_of(node, found)
    steps = None if observed is None else list(observed)
    if state is None and steps is None:
        return None
    readers: dict[str, list[str]] = {key: [] for key in (state.hints if state else ())}
    writers: dict[str, list[str]] = {key: [] for key in readers}

    def note(table: dict[str, list[str]], key: str, name: str) -> None:
        if state is not None and key not in state.hints:
            return  # an attribute of the class, not a key (or a typo mypy reports)
        if key not in readers:
            readers[key], writers[key] = [], []
        if name not in table[key]:
            table[key].append(name)

    unread = []
    for member, name, where in found:
        if member._bf_is_flow or member._bf_batch == "branches":
            continue
        if steps is None and where is None and declared_state(type(member)) is None:
            continue  # an untyped node in an untyped flow: not read
        seen = accesses(type(member))
        if seen is None:
            unread.append(name)
            continue
        for key in sorted(seen[0]):
            note(readers, key, name)
        for key in sorted(seen[1]):
            note(writers, key, name)
    for step in steps or ():
        if step.kind in ("step", "branch step"):
            for key in step.changed:
                if isinstance(key, str):
                    note(writers, key, step.node)
    source = "their code" if steps is None else "their code and a stored run"
    if state is None:  # keys seen only: no type or rule to show
        lines = [
            f"state keys: each key and the nodes that read and write it (from {source})",
            "",
            "| key | read by | written by |",
            "|---|---|---|",
        ]
        lines += [f"| {key} | {_cell(readers[key])} | {_cell(writers[key])} |" for key in readers]
    else:
        lines = [
            f"state {state.name}: each key, its type, merge rule, and the nodes that read "
            f"and write it (from {source})",
            "",
            "| key | type | merge | read by | written by |",
            "|---|---|---|---|---|",
        ]
        for key in readers:
            rule = state.rules.get(key, "")
            rule = "add" if rule == "sum" else getattr(rule, "__name__", rule)
            shown = describe(state.hints[key]).replace("|", "\\|")
            lines.append(
                f"| {key} | {shown} | {rule} | {_cell(readers[key])} | {_cell(writers[key])} |"
            )
    if unread:
        lines.append("")
        lines.append(f"(the code of {', '.join(unread)} could not be read)")
    return lines
