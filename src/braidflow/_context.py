"""Per-run state that must not live on shared node instances.

Concurrent batch items share one node object, so the attempt counter that
PocketFlow kept in ``self.cur_retry`` lives here, in a context variable that
each item's task sees on its own.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["ATTEMPT", "AttemptState"]


class AttemptState:
    """Which node is executing which item, and on which attempt (0-based)."""

    __slots__ = ("attempt", "item_index", "node")

    def __init__(self, node: Any, item_index: int | None) -> None:
        self.node = node
        self.item_index = item_index
        self.attempt = 0


ATTEMPT: ContextVar[AttemptState | None] = ContextVar("braidflow_attempt", default=None)
