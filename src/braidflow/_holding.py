"""An exec attempt's limiters, taken together: in the one global order every
holder takes them in (so no two attempts deadlock each other), counted as taken."""

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
    limiters: Sequence[Limiter],
    taken: list[int],
    node: Any = None,
    index: int | None = None,
    stop: Any = None,
) -> None:
    """Acquire the limiters after the first ``taken[0]`` in order, for an exec
    attempt of ``node`` (on item ``index``) that holds those already.

    ``taken[0]`` counts each as it is taken, with no call in between (where a
    Ctrl-C could land), and this call gives nothing back when it fails or is
    cancelled: the attempt gives back what ``taken[0]`` says it holds.
    ``stop``: what may end a wait early (the run's drain, for an attempt that
    has not begun: see `Limiter._stop_waits`), or ``None``.

    Raises:
        LimiterDeadlock: If a wait could never end (see `Limiter.acquire`).
        DrainStop: If ``stop`` ended a wait.
    """
    for limiter in limiters[taken[0] :]:
        if not limiter.try_acquire():
            held = tuple(limiters[: taken[0]])
            await limiter._acquire_queued(held, node, index, stop)
        taken[0] += 1


def acquire_all_blocking(
    limiters: Sequence[Limiter],
    holder: Any,
    taken: list[int],
    lending: Any = contextlib.nullcontext,
    index: int | None = None,
    stop: Any = None,
) -> bool:
    """Thread version of `acquire_all`, for an attempt of ``holder`` (a node) on
    item ``index`` that holds the first ``taken[0]`` of ``limiters`` already
    (and counts there those it takes, and may be stopped by ``stop``, as in
    `acquire_all`).

    ``lending`` is a context manager entered around any wait (braidflow's
    threads give their own slot back while they wait). Returns whether it waited.

    Raises:
        AsyncUsageError: If a limiter is not free and this thread runs an event
            loop: waiting here would freeze the loop, and deadlock it if a
            holder is a task on that loop.
        LimiterDeadlock: If a wait could never end (see `Limiter.acquire`).
        DrainStop: If ``stop`` ended a wait.
    """
    waited = False
    for limiter in limiters[taken[0] :]:
        if limiter.try_acquire():
            taken[0] += 1
            continue
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
            held = tuple(limiters[: taken[0]])
            limiter._acquire_queued_blocking(held, holder, index, stop)
            taken[0] += 1  # (in the `with`: its end runs code, where a Ctrl-C can land)
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
    """Release limiters in the reverse of the order they were taken: all of
    them, even if an error stops the release of one (a Ctrl-C landing there,
    a release called once too often), which is raised once all were given back."""
    backwards = limiters[::-1]
    done = 0
    try:
        for limiter in backwards:
            done += 1  # (counted first: one whose release raised was given back)
            limiter.release()
    finally:
        if done < len(backwards):
            release_all(backwards[done:][::-1])
