"""Squaring numbers with a slow async step: one batch run in sequence, then in parallel.

Squaring ``n`` waits ``n * 0.1`` seconds, standing in for an API call. The
same three phases run in an AsyncBatchNode (one item after another: the sum
of the waits, 1.5 s) and in an AsyncParallelBatchNode (all items at once:
about the longest wait, 0.5 s). With ``max_concurrency=2`` at most two items
are in flight, which lands in between.

Run it with: python examples/parallel_squares.py
"""

import asyncio
import time

from braidflow import AsyncBatchNode, AsyncFlow, AsyncParallelBatchNode

NUMBERS = [1, 2, 3, 4, 5]
SECONDS_PER_UNIT = 0.1


class SquarePhases:
    """prep, exec and post for squaring; mixed into both batch kinds below."""

    async def prep_async(self, shared):
        return shared["numbers"]  # the items: exec_async runs once for each

    async def exec_async(self, number):
        await asyncio.sleep(number * SECONDS_PER_UNIT)
        return number * number

    async def post_async(self, shared, prep_result, exec_result):
        shared["squares"] = exec_result  # results in input order, whatever finished first
        return "done"


class SequentialSquares(SquarePhases, AsyncBatchNode):
    """One number at a time."""


class ParallelSquares(SquarePhases, AsyncParallelBatchNode):
    """All numbers at once (or at most max_concurrency at once)."""


async def timed_run(node) -> tuple[float, list[int]]:
    """Run ``node`` in an AsyncFlow; return the seconds it took and the squares."""
    shared = {"numbers": NUMBERS}
    started = time.perf_counter()
    await AsyncFlow(start=node).run_async(shared)
    return time.perf_counter() - started, shared["squares"]


async def main() -> None:
    sequential_time, squares = await timed_run(SequentialSquares())
    parallel_time, parallel_squares = await timed_run(ParallelSquares())
    bounded_time, bounded_squares = await timed_run(ParallelSquares(max_concurrency=2))
    assert squares == parallel_squares == bounded_squares == [n * n for n in NUMBERS]

    print(f"squares: {squares}")
    speedup = sequential_time / parallel_time
    print(
        f"sequential {sequential_time:.2f} s, parallel {parallel_time:.2f} s, {speedup:.1f}x faster"
    )
    print(f"parallel with max_concurrency=2: {bounded_time:.2f} s (two items in flight at most)")


if __name__ == "__main__":
    asyncio.run(main())
