"""Controlled concurrency: shared limits, failure policies, retries, timeouts,
lazy input, and sync code off the event loop. Each section prints what it shows.
"""

import asyncio
import threading
import time

from braidflow import (
    AsyncFlow,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    Failure,
    Limiter,
    Node,
    ParallelBatchNode,
    Retry,
)


async def shared_limiter() -> None:
    """One Limiter shared by two nodes inside parallel sub-flows is one limit."""
    llm = Limiter(max_concurrent=3, rate=200, per=1.0, name="llm")
    in_flight = {"now": 0, "peak": 0}

    class CallModel(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [f"{self.params['doc']}-chunk{i}" for i in range(4)]

        async def exec_async(self, chunk):
            in_flight["now"] += 1
            in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
            await asyncio.sleep(0.01)
            in_flight["now"] -= 1
            return chunk.upper()

        async def post_async(self, shared, prep_res, exec_res):
            shared.setdefault("outputs", []).extend(exec_res)

    class PerDocument(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"doc": f"doc{d}"} for d in range(5)]

    summarize, translate = CallModel(limits=[llm]), CallModel(limits=[llm])
    summarize >> translate
    shared: dict = {}
    await PerDocument(start=summarize).run_async(shared)
    stats = llm.statistics()
    print(f"  {len(shared['outputs'])} calls through {llm!r}")
    print(f"  peak in flight: {stats.peak_in_flight} (limit 3), acquired: {stats.acquired}")
    assert stats.peak_in_flight <= 3
    assert in_flight["peak"] <= 3


async def collect_failures() -> None:
    """on_error="collect": every item runs; failures stay in place as Failure objects."""

    class Parse(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["12", "x", "7", ""]

        async def exec_async(self, text):
            await asyncio.sleep(0)
            return int(text)

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    results = await Parse(on_error="collect").run_async({})
    for result in results:
        if isinstance(result, Failure):
            print(f"  item {result.index} ({result.item!r}) failed: {result.error!r}")
        else:
            print(f"  parsed {result}")


async def retry_policy() -> None:
    """Retry: exponential backoff with a cap; cur_retry is the attempt number."""
    attempts: list[int] = []

    class Flaky(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a"]

        async def exec_async(self, item):
            attempts.append(self.cur_retry)
            if self.cur_retry < 2:
                raise ConnectionError("upstream busy")
            return f"{item} on attempt {self.cur_retry}"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    policy = Retry(attempts=3, delay=0.01, backoff=2.0, max_delay=0.05)
    print(f"  {await Flaky(retry=policy).run_async({})} (attempts seen: {attempts})")


async def timeouts() -> None:
    """timeout= bounds each exec attempt; a late one fails like any error."""

    class SlowSearch(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0.01, 5.0]

        async def exec_async(self, seconds):
            await asyncio.sleep(seconds)
            return f"answered in {seconds} s"

        async def exec_fallback_async(self, seconds, exc):
            return f"gave up: {exc}"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    for line in await SlowSearch(timeout=0.1).run_async({}):
        print(f"  {line}")


async def lazy_input() -> None:
    """A generator of 10,000 items, read only as fast as max_concurrency allows."""
    read = {"count": 0, "finished": 0, "ahead": 0}

    def items():
        for i in range(10_000):
            read["count"] += 1
            yield i

    class Double(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return items()

        async def exec_async(self, item):
            read["ahead"] = max(read["ahead"], read["count"] - read["finished"])
            await asyncio.sleep(0)
            read["finished"] += 1
            return item * 2

        async def post_async(self, shared, prep_res, exec_res):
            return len(exec_res)

    done = await Double(max_concurrency=100).run_async({})
    print(f"  {done} items done; at most {read['ahead']} read and unfinished at once (bound 100)")


async def offloading() -> None:
    """offload=True runs a blocking sync node in a thread; the loop keeps ticking."""
    ticks = 0

    class Blocking(Node):
        def exec(self, prep_res):
            time.sleep(0.2)  # a sync SDK call
            return "sync call finished"

        def post(self, shared, prep_res, exec_res):
            shared["result"] = exec_res

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.02)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    shared: dict = {}
    await AsyncFlow(start=Blocking(offload=True)).run_async(shared)
    ticking.cancel()
    print(f"  {shared['result']}; the event loop ticked {ticks} times meanwhile")


def thread_pool() -> None:
    """ParallelBatchNode: a sync node's items in a bounded thread pool, in order."""
    threads: set[str] = set()

    class Fetch(ParallelBatchNode):
        def prep(self, shared):
            return range(8)

        def exec(self, item):
            threads.add(threading.current_thread().name)
            time.sleep(0.02)
            return item * item

        def post(self, shared, prep_res, exec_res):
            return exec_res

    print(f"  {Fetch(max_concurrency=4).run({})} using {len(threads)} threads")


async def main() -> None:
    for title, section in [
        ("A limiter shared across nodes and sub-flows", shared_limiter),
        ('on_error="collect"', collect_failures),
        ("Retry policy", retry_policy),
        ("Timeouts with a fallback", timeouts),
        ("Lazy input", lazy_input),
        ("Offloading sync code", offloading),
    ]:
        print(title)
        await section()
    print("A sync ParallelBatchNode")
    await asyncio.to_thread(thread_pool)


if __name__ == "__main__":
    asyncio.run(main())
