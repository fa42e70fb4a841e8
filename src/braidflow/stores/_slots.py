"""The slots of shared limiters, as rows: the one rule for taking one, written
once for every database (SQLite, PostgreSQL) and run in the caller's transaction.

A held slot is a row of ``braidflow_limiter_slots`` with the time its lease
ends; a start, for a rate, a row of ``braidflow_limiter_starts``. Rows whose
lease ended (their process died, or stopped renewing) are dropped by the next
take: their slots are free again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Execute", "renew_slots", "take_slot"]

# Runs one statement (``?`` placeholders) in the caller's transaction; gives a cursor.
Execute = Callable[[str, Sequence[Any]], Any]


def take_slot(
    execute: Execute,
    name: Any,
    *,
    max_concurrent: int | None,
    capacity: float | None,
    period: float,
    lease: float,
    now: float,
) -> tuple[int | None, float]:
    """Take a slot of limiter ``name`` if its limits allow it at ``now``, in one
    transaction that holds the limiter's rows (the caller's): see `Slots.take`."""
    execute("DELETE FROM braidflow_limiter_slots WHERE name=? AND lease_ends<=?", (name, now))
    if max_concurrent is not None:
        held = execute(
            "SELECT COUNT(*) FROM braidflow_limiter_slots WHERE name=?", (name,)
        ).fetchone()[0]
        if held >= max_concurrent:
            return None, -1.0
    if capacity is not None:
        execute(
            "DELETE FROM braidflow_limiter_starts WHERE name=? AND started<=?",
            (name, now - period),
        )
        count, first = execute(
            "SELECT COUNT(*), MIN(started) FROM braidflow_limiter_starts WHERE name=?", (name,)
        ).fetchone()
        if count + 1 > capacity:  # each start one unit, as in `Limiter`: floor(capacity)
            return None, max(first + period - now, 1e-6)
        execute("INSERT INTO braidflow_limiter_starts (name, started) VALUES (?, ?)", (name, now))
    if max_concurrent is None:  # a rate alone: nothing is held
        return 0, 0.0
    slot = execute(
        "INSERT INTO braidflow_limiter_slots (name, lease_ends) VALUES (?, ?) RETURNING id",
        (name, now + lease),
    ).fetchone()[0]
    return int(slot), 0.0


def renew_slots(execute: Execute, slots: list[int], lease_ends: float) -> None:
    """Extend the leases of ``slots`` to ``lease_ends`` (those already dropped stay gone)."""
    for slot in slots:
        execute("UPDATE braidflow_limiter_slots SET lease_ends=? WHERE id=?", (lease_ends, slot))
