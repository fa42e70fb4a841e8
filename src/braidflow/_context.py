"""Per-run state that must not live on shared node instances.

Concurrent batch items share one node object, so the attempt counter that
PocketFlow kept in ``self.cur_retry`` lives here, in context variables that
each item's task (and each thread it runs code in) sees on its own.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._limits import Limiter

__all__ = ["ATTEMPT", "EXECUTOR", "GATES", "HELD", "SHARED", "AttemptState"]


class AttemptState:
    """Which node is executing which item, and on which attempt (0-based)."""

    __slots__ = ("attempt", "item_index", "node")

    def __init__(self, node: Any, item_index: int | None) -> None:
        self.node = node
        self.item_index = item_index
        self.attempt = 0


ATTEMPT: ContextVar[AttemptState | None] = ContextVar("braidflow_attempt", default=None)

# The bounds (max_concurrency) of the parallel stages enclosing this code, as
# limiters, outermost first. An exec attempt that may be abandoned in a thread
# (sync code under a timeout) holds them too, so the abandoned thread keeps
# counting against each bound until it really ends.
GATES: ContextVar[tuple[Limiter, ...]] = ContextVar("braidflow_gates", default=())

# The holding record of the innermost exec attempt this code runs inside (what
# it holds, its node and item, and the record of the attempt around it), or
# None; see _deadlock.hold. A limiter that must make such code wait checks that
# the wait could end, instead of deadlocking.
HELD: ContextVar[list[Any] | None] = ContextVar("braidflow_held", default=None)

# The shared store, for a node whose class overrides PocketFlow's _exec(prep_res):
# the exec stage it calls back into still needs the store for the old
# exec(shared, prep_res) form.
SHARED: ContextVar[Any] = ContextVar("braidflow_shared", default=None)

# The executor a flow gives the batch nodes inside it that have none of their
# own (``Flow(executor=...)``); None: items run in this process.
EXECUTOR: ContextVar[Any] = ContextVar("braidflow_executor", default=None)
