"""How an event's error says its part of a run ended where it did not fail.

The timeline, the OpenTelemetry spans and `Progress` read it the same way:
a question or a suspending budget makes it wait, a drain drains it, and a
cancellation or Ctrl-C cancels it. An error read back from a store is a
stand-in of the original's class name (`RecordedError`), told by that name.
"""

from __future__ import annotations

import asyncio

from .._budget import OverBudget
from ..durable._drain import DrainStop
from ..durable._exceptions import RecordedError
from ..durable._interrupt import Interrupted

__all__ = ["CANCELLED", "DRAINED", "WAITING", "is_a", "stop_of"]

WAITING, DRAINED, CANCELLED = "waiting", "drained", "cancelled"


def is_a(error: BaseException, cls: type[BaseException]) -> bool:
    """``error`` is a ``cls``, or one read back from a store (a stand-in of its name)."""
    if isinstance(error, cls):
        return True
    return isinstance(error, RecordedError) and type(error).__name__ == cls.__name__


def stop_of(error: BaseException | None) -> str | None:
    """`WAITING`, `DRAINED` or `CANCELLED` for an error that stopped a part
    of a run without failing it; ``None`` for a failure (or no error)."""
    if error is None:
        return None
    if is_a(error, Interrupted) or is_a(error, OverBudget):
        return WAITING
    if is_a(error, DrainStop):
        return DRAINED
    if is_a(error, asyncio.CancelledError) or is_a(error, KeyboardInterrupt):
        return CANCELLED
    return None
