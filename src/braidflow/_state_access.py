"""Which keys of ``shared`` a node's code reads and writes, read from its source.

`accesses` parses a node class's ``prep``/``post`` (and their async forms)
and finds ``shared["key"]``, ``shared.get("key")`` and ``shared.key``: a
key is written where it is assigned, deleted or changed in place
(``shared.notes.append(...)``), read otherwise. Nothing runs.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any, Final

__all__ = ["accesses"]

_PHASES: Final = ("prep", "prep_async", "post", "post_async")
# Methods that change a container in place: calling one on a key writes it.
_CHANGING: Final = frozenset(
    {
        "append", "extend", "insert", "remove", "pop", "popitem", "clear", "update",
        "add", "discard", "setdefault", "sort", "reverse",
    }
)  # fmt: skip
# Methods of shared itself whose first argument is a key it reads or writes.
_READING: Final = frozenset({"get"})
_WRITING: Final = frozenset({"pop", "setdefault"})


def _key_of(node: ast.AST, name: str) -> str | None:
    """The key ``node`` names if it is ``shared["key"]`` or ``shared.key``."""
    if isinstance(node, ast.Subscript) and _is_name(node.value, name):
        index = node.slice
        if isinstance(index, ast.Constant) and isinstance(index.value, str):
            return index.value
    if isinstance(node, ast.Attribute) and _is_name(node.value, name):
        return node.attr
    return None


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


class _Finder(ast.NodeVisitor):
    def __init__(self, name: str) -> None:
        self.name = name
        self.reads: set[str] = set()
        self.writes: set[str] = set()

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self._note(node, node.ctx)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr not in _READING | _WRITING or not _is_name(node.value, self.name):
            self._note(node, node.ctx)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        key = _key_of(node.target, self.name)
        if key is not None:
            self.reads.add(key)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        if isinstance(function, ast.Attribute):
            key = _key_of(function.value, self.name)
            if key is not None and function.attr in _CHANGING:
                self.writes.add(key)
            if _is_name(function.value, self.name) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if function.attr in _READING | _WRITING:
                        self.reads.add(first.value)
                    if function.attr in _WRITING:
                        self.writes.add(first.value)
        self.generic_visit(node)

    def _note(self, node: ast.AST, context: ast.expr_context) -> None:
        key = _key_of(node, self.name)
        if key is None:
            return
        if isinstance(context, ast.Load):
            self.reads.add(key)
        else:  # Store, Del
            self.writes.add(key)


def _tree(function: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):  # defined where its source cannot be read
        return None
    try:
        module = ast.parse(source)
    except SyntaxError:
        return None
    found = module.body[0] if module.body else None
    return found if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef) else None


def accesses(cls: type) -> tuple[set[str], set[str]] | None:
    """The keys of ``shared`` that the ``prep`` and ``post`` a node class
    defines (itself or a braidflow user base) read and write: ``(reads,
    writes)``; ``None`` if their source cannot be read."""
    reads: set[str] = set()
    writes: set[str] = set()
    for phase in _PHASES:
        function = getattr(cls, phase, None)
        if function is None or (getattr(function, "__module__", None) or "").startswith(
            "braidflow."
        ):
            continue  # braidflow's own default phases touch no key
        tree = _tree(function)
        if tree is None:
            return None
        arguments = tree.args.posonlyargs + tree.args.args
        if len(arguments) < 2:  # (self, shared, ...)
            continue
        finder = _Finder(arguments[1].arg)
        for statement in tree.body:
            finder.visit(statement)
        reads |= finder.reads
        writes |= finder.writes
    return reads, writes
