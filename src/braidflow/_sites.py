"""Where in the caller's code a wiring happened: catching ``>>`` inside the
expression that needed its left side (``plan >> [p >> a, web]``).

``a >> b`` returns ``b`` so that chains read left to right. Inside a fan-out
or a flow's start that turns against the writer: ``plan >> [p >> a, web]``
gives the fan-out ``a`` as a branch and ``p`` never runs; ``Flow(start=p >> a)``
starts at ``a``. Each wiring notes the caller's frame and the instruction
that wired; a fan-out (or a flow given its start) asks whether a node it gets
was wired by an operator inside the very expression it is evaluating now:
same frame, same code, and that operator's source span (Python 3.11's
``co_positions``) lies within the span of the instruction running now.
Wiring on separate statements, in loops, comprehensions or helper
functions is never within the span, so it is never taken for the mistake.
Only wiring pays for this, never a run.
"""

from __future__ import annotations

import ast
import itertools
import linecache
import sys
import weakref
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

__all__ = ["WiredHere", "note_wiring", "user_stacklevel", "wired_here"]

# The most recent wirings, by id of the node wired to: enough for any one
# expression, however long (an older wiring can only be another statement's).
_RECENT = 512
_wired: dict[int, tuple[weakref.ref[Any], str, int, CodeType, int]] = {}

Span = tuple[tuple[int, int], tuple[int, int]]


def _callers_frame() -> tuple[FrameType | None, int]:
    """The innermost frame outside braidflow, and how many frames up it is
    from the function that called this one (for a warning's ``stacklevel``)."""
    frame = sys._getframe(2)
    depth = 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "braidflow" or module.startswith("braidflow.")):
            return frame, depth
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return None, depth


def user_stacklevel() -> int:
    """For a warning from the function that calls this: the ``stacklevel``
    of the innermost frame outside braidflow and asyncio (the code that ran
    the flow: an async run's awaiting coroutines are on the stack too, and a
    sync call of an async flow runs its loop from there), else 2."""
    frame = sys._getframe(1)  # the function warning: stacklevel 1
    depth = 1
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(("braidflow.", "asyncio.")) and module != "braidflow":
            return depth
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return 2


def note_wiring(source: Any, target: Any, frame: FrameType) -> None:
    """Remember that ``source >> target`` (or ``source - "x" >> target``, or
    ``source.next(target)``) was evaluated by ``frame``, at its current instruction."""
    key = id(target)
    _wired.pop(key, None)
    # The source by name: nothing else may lead to it (`Flow(start=p) >> a`).
    name = source._display_name()
    _wired[key] = (weakref.ref(target), name, id(frame), frame.f_code, frame.f_lasti)
    if len(_wired) > _RECENT:
        try:
            del _wired[next(iter(_wired))]
        except (RuntimeError, StopIteration, KeyError):  # another thread got there first
            pass


@dataclass(frozen=True)
class WiredHere:
    """A node that was wired inside the expression being evaluated now.

    Attributes:
        node: The node the wiring returned (and that was then given on).
        source: The name of the node wired to it, which nothing leads to.
        wiring: The wiring's source text (``p >> a``), or ``None`` if unknown.
        first: What to write first, a statement each (``p >> a``); empty if unknown.
        rewired: The expression with the wiring replaced by its left side
            (``plan >> [p, web]``), or ``None`` if unknown.
        stacklevel: For a warning: how far up the caller's frame is.
    """

    node: Any
    source: str
    wiring: str | None
    first: tuple[str, ...]
    rewired: str | None
    stacklevel: int

    def advice(self) -> str:
        """What to write instead: the wiring on its own line first, then the
        expression given the chain's first node."""
        if self.first and self.rewired is not None:
            lines = "a line" if len(self.first) == 1 else "lines"
            steps = "`, then `".join((*self.first, self.rewired))
            return f"Wire the chain first, on {lines} of its own: `{steps}`"
        return (
            f"Wire the chain first, in a statement of its own ({self.source!r} to "
            f"{self.node._display_name()!r}), then give its first node, {self.source!r}"
        )

    def explained(self, what: str) -> str:
        """The mistake, said of ``what`` (``branch 'a'``), and what to write instead."""
        made_by = f"`{self.wiring}`" if self.wiring else f"wiring {self.source!r} to it"
        return (
            f"{what} comes from {made_by} in this same expression, and wiring gives back its "
            f"right-hand node: {self.source!r} would never run. {self.advice()}"
        )


def wired_here(nodes: Any) -> WiredHere | None:
    """The first of ``nodes`` that a wiring inside the caller's current
    expression returned, or ``None`` (nearly always, and then cheaply)."""
    candidates = []
    for node in nodes:
        record = _wired.get(id(node))
        if record is not None and record[0]() is node:
            candidates.append((node, record))
    if not candidates:
        return None
    frame, depth = _callers_frame()
    if frame is None:
        return None
    code, now = frame.f_code, frame.f_lasti
    outer = _span(code, now)
    if outer is None:
        return None
    for node, (_, source, frame_id, wired_code, offset) in candidates:
        if frame_id != id(frame) or wired_code is not code or offset >= now:
            continue
        inner = _span(code, offset)
        if inner is None or not (outer[0] <= inner[0] and inner[1] <= outer[1]):
            continue
        wiring = _text(code, inner)
        whole = _text(code, outer)
        first: tuple[str, ...] = ()
        rewired = None
        if wiring is not None and whole is not None and "\n" not in whole + wiring:
            wiring = wiring.strip()
            left = _left_side(wiring)
            if left is not None and whole.count(wiring) == 1:
                text, named = left
                rewired = whole.replace(wiring, text if named else "first")
                # A left side that makes a new node each time is named once.
                first = (wiring,) if named else (f"first = {text}", f"first{wiring[len(text) :]}")
        return WiredHere(node, source, wiring, first, rewired, depth)
    return None


def _span(code: CodeType, offset: int) -> Span | None:
    """The source span of the instruction at byte ``offset`` of ``code``."""
    position = next(itertools.islice(code.co_positions(), offset // 2, None), None)
    if position is None or None in position:
        return None
    line, end_line, column, end_column = position
    return (line, column), (end_line, end_column)  # type: ignore[return-value]


def _text(code: CodeType, span: Span) -> str | None:
    """The source text of ``span``, when the file can be read (columns are
    UTF-8 byte offsets)."""
    (line, column), (end_line, end_column) = span
    lines = linecache.getlines(code.co_filename)
    if not lines or end_line > len(lines):
        return None
    chosen = [text.encode() for text in lines[line - 1 : end_line]]
    if len(chosen) == 1:
        return chosen[0][column:end_column].decode(errors="replace")
    chosen[0] = chosen[0][column:]
    chosen[-1] = chosen[-1][:end_column]
    return b"".join(chosen).decode(errors="replace")


def _left_side(wiring: str) -> tuple[str, bool] | None:
    """The node a wiring starts from: ``p`` in ``p >> a``, ``p - "x" >> a``
    and ``p.next(a)``, as its text and whether it is a name (or an attribute
    of one), which gives the same node each time it is read."""
    try:
        tree = ast.parse(wiring, mode="eval").body
    except SyntaxError:
        return None
    if isinstance(tree, ast.BinOp) and isinstance(tree.op, ast.RShift):
        left = tree.left
        if isinstance(left, ast.BinOp) and isinstance(left.op, ast.Sub):
            left = left.left
    elif isinstance(tree, ast.Call) and isinstance(tree.func, ast.Attribute):
        left = tree.func.value
    else:
        return None
    text = ast.get_source_segment(wiring, left)
    if text is None or not wiring.startswith(text):
        return None
    named = left
    while isinstance(named, ast.Attribute):
        named = named.value
    return text, isinstance(named, ast.Name)
