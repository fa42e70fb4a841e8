"""Squaring numbers with a slow async step: sequential batch vs parallel batch.

Each item waits ``number * 0.1`` seconds. The sequential batch takes the sum
of the waits, the parallel batch about the longest one, and a bound of two
in flight lands in between.
"""

import asyncio
import time

from braidflow import AsyncBatchNode, AsyncFlow, AsyncParallelBatchNode

NUMBERS = [1, 2, 3, 4, 5]


class SquareMixin:
    """The three phases, shared by the sequential and the parallel node below."""

    async def prep_async(self, shared):
        return shared["numbers"]

    async def exec_async(self, number):
        await asyncio.sleep(number * 0.1)  # a slow call, proportional to the input
        return number * number

    async def post_async(self, shared, prep_res, exec_res):
        shared["squares"] = exec_res
        return "done"


class SequentialSquares(SquareMixin, AsyncBatchNode):
    pass


class ParallelSquares(SquareMixin, AsyncParallelBatchNode):
    pass


async def timed(node) -> tuple[float, list[int]]:
    shared = {"numbers": NUMBERS}
    started = time.perf_counter()
    await AsyncFlow(start=node).run_async(shared)
    return time.perf_counter() - started, shared["squares"]


async def main() -> None:
    sequential, squares = await timed(SequentialSquares())
    parallel, parallel_squares = await timed(ParallelSquares())
    bounded, bounded_squares = await timed(ParallelSquares(max_concurrency=2))
    assert squares == parallel_squares == bounded_squares == [n * n for n in NUMBERS]
    print(f"squares: {squares}")
    print(f"sequential (AsyncBatchNode):             {sequential:.2f} s")
    print(f"parallel (AsyncParallelBatchNode):       {parallel:.2f} s")
    print(f"parallel, max_concurrency=2:             {bounded:.2f} s")
    print(f"parallel is {sequential / parallel:.1f}x faster than sequential")


if __name__ == "__main__":
    asyncio.run(main())
