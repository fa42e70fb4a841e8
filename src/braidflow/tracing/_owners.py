"""Which batch item an event belongs to, for the observers that count items.

A batch node's item is named by its event's ``(path, item)``. A batch flow's
item runs a sub-flow whose steps' paths carry ``name[index]`` in place of
the flow's name: ``("main", "pages[3]", "download")`` is item 3 of the batch
flow ``("main", "pages")``. An event of such a step (a limiter wait, a retry)
belongs to that item, unless it belongs to an item of a batch nested deeper.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["ItemOwners", "Path"]

Path = tuple[str, ...]
Value = TypeVar("Value")


class ItemOwners(Generic[Value]):
    """The batch items in flight, each with a value of the observer's, found
    from an event's path and item."""

    __slots__ = ("inner", "items")

    def __init__(self) -> None:
        self.items: dict[tuple[Path, int], Value] = {}
        self.inner: dict[Path, tuple[Path, int]] = {}  # a sub-flow's path -> its item

    def start(self, path: Path, index: int, value: Value) -> None:
        """Item ``index`` of the batch at ``path`` starts (``item_start``)."""
        self.items[(path, index)] = value
        if path:
            self.inner[(*path[:-1], f"{path[-1]}[{index}]")] = (path, index)

    def end(self, path: Path, index: int) -> Value | None:
        """Item ``index`` of the batch at ``path`` ends (``item_end``): its value."""
        if path:
            self.inner.pop((*path[:-1], f"{path[-1]}[{index}]"), None)
        return self.items.pop((path, index), None)

    def owner(self, path: Path, item: int | None) -> tuple[Path, int] | None:
        """The item in flight that an event at ``path`` (with ``item``) belongs
        to: its own item, else the nearest batch flow item whose sub-flow
        holds ``path``; ``None`` outside every item."""
        if item is not None and (path, item) in self.items:
            return (path, item)
        inner = self.inner
        if inner:
            for end in range(len(path), 0, -1):
                found = inner.get(path[:end])
                if found is not None:
                    return found
        return None

    def value(self, path: Path, item: int | None) -> Value | None:
        """The value of the item `owner` finds, or ``None``."""
        key = self.owner(path, item)
        return None if key is None else self.items[key]

    def template(self, path: Path) -> Path:
        """``path`` with each sub-flow's ``name[index]`` back to ``name``: the
        same for every parameter set, so that one batch inside a batch flow's
        sub-flow is one thing, however many sub-flows run it."""
        inner = self.inner
        if not inner:
            return path
        parts: list[Any] = list(path)
        for end in range(1, len(path) + 1):
            found = inner.get(path[:end])
            if found is not None:
                parts[end - 1] = found[0][-1]
        return tuple(parts)
