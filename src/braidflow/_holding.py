"""An exec attempt's limiters, taken together: in the one global order every
holder takes them in (so no two attempts deadlock each other), given back on failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ._errors import AsyncUsageError

__all__ = ["acquire_all", "acquire_all_blocking", "ordered", "release_all", "try_all"]

# A limiter: a `braidflow.Limiter`, or what stands in for one in an attempt's
# holdings (a weighted limiter's claim, a shared limiter).
Limiter = Any


def ordered(limiters: Sequence[Limiter]) -> tuple[Any, ...]:
    """Sort limiters into the one global order every holder acquires them in,
    so two nodes sharing two limiters can never deadlock each other."""
    return tuple(sorted(limiters, key=lambda limiter: limiter._order))


async def acquire_all(
    limiters: Sequence[Limiter], taken: int = 0, node: Any = None, index: int | None = None
) -> None:
    """Acquire ``limiters[taken:]`` in order, for an exec attempt of ``node`` (on
    item ``index``) that holds the first ``taken`` already; on cancellation or
    failure give back what this call took.

    Raises:
        LimiterDeadlock: If a wait could never end (see `Limiter.acquire`).
    """
    first = taken
    try:
        for limiter in limiters[first:]:
            if not limiter.try_acquire():
                held = tuple(limiters[:taken]) if taken else ()
                await limiter._acquire_queued(held, node, index)
            taken += 1
    except BaseException:
        release_all(limiters[first:taken])
        raise


def acquire_all_blocking(
    limiters: Sequence[Limiter],
    holder: Any,
    lending: Any = contextlib.nullcontext,
    index: int | None = None,
    taken: int = 0,
) -> bool:
    """Thread version of `acquire_all`, for an attempt of ``holder`` (a node) on
    item ``index`` that holds the first ``taken`` of ``limiters`` already.

    ``lending`` is a context manager entered around any wait (braidflow's
    threads give their own slot back while they wait). Returns whether it waited.

    Raises:
        AsyncUsageError: If a limiter is not free and this thread runs an event
            loop: waiting here would freeze the loop, and deadlock it if a
            holder is a task on that loop.
        LimiterDeadlock: If a wait could never end (see `Limiter.acquire`).
    """
    first = taken
    waited = False
    try:
        for limiter in limiters[first:]:
            if not limiter.try_acquire():
                waited = True
                if asyncio._get_running_loop() is not None:
                    raise AsyncUsageError(
                        f"{holder._describe()} must wait for {limiter!r}, but it runs "
                        "synchronously on the event loop's thread, where waiting would "
                        "block the loop (and deadlock it if a holder runs on it); run the "
                        "flow with `await flow.run_async(shared)` instead of flow.run(shared)",
                        node=holder._display_name(),
                    )
                with lending():
                    held = tuple(limiters[:taken]) if taken else ()
                    limiter._acquire_queued_blocking(held, holder, index)
            taken += 1
    except BaseException:
        release_all(limiters[first:taken])
        raise
    return waited


def try_all(limiters: Sequence[Limiter]) -> int:
    """Take every limiter that is free right now, in order; return how many.
    If one fails (a shared limiter's database), give back what it took."""
    taken = 0
    try:
        for limiter in limiters:
            if not limiter.try_acquire():
                break
            taken += 1
    except BaseException:
        release_all(limiters[:taken])
        raise
    return taken


def release_all(limiters: Sequence[Limiter]) -> None:
    """Release limiters in the reverse of the order they were taken."""
    for limiter in reversed(limiters):
        limiter.release()
