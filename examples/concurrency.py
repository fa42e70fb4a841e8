"""Bounded, safe concurrency: limits, failure policies, retries, timeouts, lazy input
and sync code kept off the event loop. Each section prints what it shows.

Run it with: python examples/concurrency.py (about 2 seconds)
"""

import asyncio
import inspect
import threading
import time

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    Failure,
    Limiter,
    Node,
    ParallelBatchNode,
    Retry,
)


class InFlight:
    """Counts the blocks running inside ``with in_flight:`` now, and the most at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self.now -= 1


async def shared_limiter() -> None:
    """One Limiter held by two nodes, in sub-flows that run in parallel, is one limit."""
    api = Limiter(max_concurrent=3, rate=20, per=0.5, name="api")
    in_flight = InFlight()

    class CallModel(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            document = self.params["document"]  # set by the batch flow for this sub-flow
            return [f"{document}/part{number}" for number in range(5)]

        async def exec_async(self, part):
            with in_flight:
                await asyncio.sleep(0.02)  # the model call
            return f"{self.name}({part})"

        async def post_async(self, shared, prep_result, exec_result):
            shared.setdefault("calls", []).extend(exec_result)

    class EachDocument(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"document": f"doc{number}"} for number in range(4)]

    summarize = CallModel(name="summarize", limits=[api])
    translate = CallModel(name="translate", limits=[api])  # the same limiter object
    summarize >> translate

    shared: dict = {}
    started = time.perf_counter()
    await EachDocument(start=summarize).run_async(shared)
    elapsed = time.perf_counter() - started

    statistics = api.statistics()
    print(f"  {len(shared['calls'])} calls by 2 nodes in 4 parallel sub-flows, {elapsed:.2f} s")
    print(f"  peak in flight: {statistics.peak_in_flight} (limit 3)")
    print("  rate: at most 20 starts per 0.5 s, so 40 calls need more than 0.5 s")
    print(f"  {statistics}")
    assert statistics.peak_in_flight <= 3
    assert in_flight.peak <= 3


async def collect_failures() -> None:
    """on_error="collect": every item runs; a failed item's place holds a Failure."""

    class ParseNumbers(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return shared["texts"]

        async def exec_async(self, text):
            await asyncio.sleep(0.01)
            return int(text)

        async def post_async(self, shared, prep_result, exec_result):
            shared["parsed"] = exec_result

    shared = {"texts": ["12", "seven", "7", "", "40"]}
    await ParseNumbers(on_error="collect").run_async(shared)
    for result in shared["parsed"]:
        if isinstance(result, Failure):
            print(f"  item {result.index}: {result.item!r} failed with {result.error!r}")
        else:
            print(f"  parsed {result}")


async def retry_with_backoff() -> None:
    """Retry(attempts=3, delay=0.01, backoff=2): waits of 0.01 s, then 0.02 s."""
    started = time.perf_counter()

    class FlakyApi(AsyncNode):
        async def exec_async(self, prep_result):
            moment = time.perf_counter() - started
            if self.cur_retry < 2:  # the 0-based attempt number
                print(f"  attempt {self.cur_retry + 1} at {moment:.3f} s: 503, retrying")
                raise ConnectionError("503 Service Unavailable")
            print(f"  attempt {self.cur_retry + 1} at {moment:.3f} s: 200")
            return "payload"

        async def post_async(self, shared, prep_result, exec_result):
            shared["response"] = exec_result

    shared: dict = {}
    await FlakyApi(retry=Retry(attempts=3, delay=0.01, backoff=2)).run_async(shared)
    print(f"  response: {shared['response']!r}")


async def timeout_with_fallback() -> None:
    """timeout= bounds each exec attempt; a late one goes to exec_fallback."""

    class Search(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["cats", "a query that hangs", "dogs"]

        async def exec_async(self, query):
            await asyncio.sleep(5 if "hangs" in query else 0.05)
            return f"results for {query!r}"

        def exec_fallback(self, query, error):
            return f"no results for {query!r} ({type(error).__name__}: {error})"

        async def post_async(self, shared, prep_result, exec_result):
            shared["results"] = exec_result

    shared: dict = {}
    started = time.perf_counter()
    await Search(timeout=0.2).run_async(shared)
    for line in shared["results"]:
        print(f"  {line}")
    print(f"  done in {time.perf_counter() - started:.2f} s, not 5 s")


async def lazy_input() -> None:
    """A generator of 10,000 items is read only as fast as max_concurrency=100 allows."""
    counts = {"read": 0, "finished": 0, "most_pending": 0}

    def numbers():
        for number in range(10_000):
            counts["read"] += 1
            yield number

    class Square(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return numbers()  # a generator: never turned into a list up front

        async def exec_async(self, number):
            pending = counts["read"] - counts["finished"]
            counts["most_pending"] = max(counts["most_pending"], pending)
            await asyncio.sleep(0)
            counts["finished"] += 1
            return number * number

        async def post_async(self, shared, prep_result, exec_result):
            shared["total"] = sum(exec_result)

    shared: dict = {}
    await Square(max_concurrency=100).run_async(shared)
    print(f"  {counts['finished']:,} items, sum of squares {shared['total']:,}")
    print(f"  at most {counts['most_pending']} items read but not finished at once (bound 100)")
    assert counts["most_pending"] <= 100


async def offloaded_sync_node() -> None:
    """offload=True runs a blocking sync node in a thread; the event loop keeps ticking."""

    class LegacyClient(Node):
        def exec(self, prep_result):
            time.sleep(0.3)  # a blocking SDK call
            return "response"

        def post(self, shared, prep_result, exec_result):
            shared["response"] = exec_result

    for offload in (False, True):
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # let the ticker start
        await AsyncFlow(start=LegacyClient(offload=offload)).run_async({})
        ticking.cancel()
        print(f"  offload={offload}: the ticker ticked {ticks} times during a 0.3 s blocking call")


def thread_pool() -> None:
    """ParallelBatchNode(max_concurrency=4): sync items in a pool of at most 4 threads."""
    in_flight = InFlight()

    class Download(ParallelBatchNode):
        def prep(self, shared):
            return shared["urls"]

        def exec(self, url):
            with in_flight:
                time.sleep(0.1)  # a blocking HTTP call
            return f"200 {url}"

        def post(self, shared, prep_result, exec_result):
            shared["statuses"] = exec_result  # input order

    shared = {"urls": [f"https://example.test/page{number}" for number in range(8)]}
    started = time.perf_counter()
    Download(max_concurrency=4).run(shared)
    elapsed = time.perf_counter() - started
    print(f"  {len(shared['statuses'])} downloads in {elapsed:.2f} s (0.80 s one at a time)")
    print(f"  first {shared['statuses'][0]!r}, last {shared['statuses'][-1]!r}")
    print(f"  at most {in_flight.peak} threads at once (bound 4)")
    assert in_flight.peak <= 4


SECTIONS = [
    ("One Limiter shared by two nodes in parallel sub-flows", shared_limiter),
    ('on_error="collect"', collect_failures),
    ("Retry with exponential backoff", retry_with_backoff),
    ("A timeout per exec attempt, with a fallback", timeout_with_fallback),
    ("Lazy input", lazy_input),
    ("Offloading a blocking sync node", offloaded_sync_node),
    ("A sync ParallelBatchNode", thread_pool),
]


def main() -> None:
    for number, (title, section) in enumerate(SECTIONS, start=1):
        print(f"{number}. {title}")
        if inspect.iscoroutinefunction(section):
            asyncio.run(section())
        else:
            section()


if __name__ == "__main__":
    main()
