"""braidflow benchmarks, side by side with raw asyncio and PocketFlow 0.0.3.

Every figure comes from a fresh interpreter (so peak RSS belongs to one
measurement) and is the median over ``--repeat`` processes. The table gives
ratios against PocketFlow and raw asyncio measured in the same run.

    python bench/run.py            # full run, a few minutes
    python bench/run.py --quick    # smaller sizes, one process each: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from state_writes import state_writes

IMPLEMENTATIONS = ("asyncio", "pocketflow", "braidflow")
RESULTS = Path(__file__).parent / "results"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- chain: 1,000 async nodes in a row ------------------------------------------------


def chain(
    impl: str, size: int, policies: bool = False, observe: str | None = None
) -> dict[str, float]:
    runs = 20

    if impl == "asyncio":

        async def prep(shared: dict[str, int]) -> int:
            return shared["count"]

        async def work(value: int) -> int:
            return value + 1

        async def post(shared: dict[str, int], value: int) -> None:
            shared["count"] = value

        async def run_once() -> float:
            shared = {"count": 0}
            started = time.perf_counter()
            for _ in range(size):
                await post(shared, await work(await prep(shared)))
            return time.perf_counter() - started

    else:
        lib = importlib.import_module(impl)

        class Step(lib.AsyncNode):  # type: ignore[misc, name-defined]
            async def prep_async(self, shared: dict[str, int]) -> int:
                return shared["count"]

            async def exec_async(self, value: int) -> int:
                return value + 1

            async def post_async(self, shared: dict[str, int], prep_res: int, exec_res: int):
                shared["count"] = exec_res

        if policies:  # every node holds a limiter and may retry: the cost of policies
            limiter = lib.Limiter(10)
            nodes = [Step(max_retries=2, limits=[limiter]) for _ in range(size)]
        else:
            nodes = [Step() for _ in range(size)]
        for left, right in itertools.pairwise(nodes):
            left >> right
        if observe == "typed":  # a TypedDict state: checked once, nodes get the dict itself
            from typing import TypedDict

            counted = TypedDict("counted", {"count": int})  # type: ignore[operator]  # noqa: UP013
            flow = lib.AsyncFlow(start=nodes[0], state=counted)
        else:
            flow = lib.AsyncFlow(start=nodes[0])

        observers: list[Any] = []
        options: dict[str, Any] = {}
        if observe and observe.startswith("durable"):
            import tempfile

            store_dir = Path(tempfile.mkdtemp())
            options["store"] = lib.SQLiteStore(store_dir / "runs.db")
            if observe != "durable":  # durable_async, durable_exit: a cheaper mode
                options["durability"] = observe.removeprefix("durable_")
        elif observe == "postgres":
            options["store"] = postgres_store()
        elif observe == "noop":
            observers = [lambda event: None]
        elif observe == "jsonl":
            import tempfile

            from braidflow.tracing import JSONLTrace

            trace_dir = tempfile.mkdtemp()
            observers = [JSONLTrace(Path(trace_dir) / "trace.jsonl")]

        async def run_once() -> float:
            shared = {"count": 0}
            started = time.perf_counter()
            if observers:
                options["observers"] = observers
            await flow.run_async(shared, **options)
            elapsed = time.perf_counter() - started
            assert shared["count"] == size
            return elapsed

    async def main() -> list[float]:
        await run_once()  # warm-up
        return [await run_once() for _ in range(runs)]

    timings = asyncio.run(main())
    return {"us_per_node": statistics.median(timings) / size * 1e6}


# -- fanout: N items each sleeping 50 ms ----------------------------------------------

SLEEP = 0.05


def parallel_node(lib: Any, exec_async: Callable[[Any, Any], Any], store_len: bool) -> Any:
    """An AsyncParallelBatchNode class reading shared["items"] (a list or a generator)."""

    class Fan(lib.AsyncParallelBatchNode):  # type: ignore[misc, name-defined]
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return shared["items"]

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any):
            shared["result"] = len(exec_res) if store_len else exec_res

    Fan.exec_async = exec_async
    return Fan


def fanout(impl: str, size: int) -> dict[str, float]:
    if impl == "asyncio":

        async def item(value: int) -> int:
            await asyncio.sleep(SLEEP)
            return value

        async def main() -> float:
            started = time.perf_counter()
            results = await asyncio.gather(*(item(i) for i in range(size)))
            elapsed = time.perf_counter() - started
            assert len(results) == size
            return elapsed

    else:
        lib = importlib.import_module(impl)

        async def exec_async(self: Any, value: int) -> int:
            await asyncio.sleep(SLEEP)
            return value

        flow = lib.AsyncFlow(start=parallel_node(lib, exec_async, store_len=False)())

        async def main() -> float:
            shared: dict[str, Any] = {"items": list(range(size))}
            started = time.perf_counter()
            await flow.run_async(shared)
            elapsed = time.perf_counter() - started
            assert len(shared["result"]) == size
            return elapsed

    elapsed = asyncio.run(main())
    return {"overhead_s": elapsed - SLEEP, "peak_rss_mb": peak_rss_mb()}


# -- bounded: N items from a generator, at most 1,000 in flight -----------------------

BOUND = 1000


def bounded(impl: str, size: int) -> dict[str, float]:
    if impl == "pocketflow":
        raise NotImplementedError("PocketFlow has no bound on parallel items")
    if impl == "asyncio":

        async def item(value: int) -> bool:
            await asyncio.sleep(0)
            return True

        async def main() -> float:
            semaphore = asyncio.Semaphore(BOUND)
            results: list[Any] = []
            tasks: set[asyncio.Task[None]] = set()

            async def run(index: int, value: int) -> None:
                try:
                    results[index] = await item(value)
                finally:
                    semaphore.release()

            started = time.perf_counter()
            for index, value in enumerate(i for i in range(size)):
                await semaphore.acquire()
                results.append(None)
                task = asyncio.create_task(run(index, value))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            assert len(results) == size
            return elapsed

    else:
        lib = importlib.import_module(impl)

        async def exec_async(self: Any, value: int) -> bool:
            await asyncio.sleep(0)
            return True

        node = parallel_node(lib, exec_async, store_len=True)(max_concurrency=BOUND)
        flow = lib.AsyncFlow(start=node)

        async def main() -> float:
            shared: dict[str, Any] = {"items": (i for i in range(size))}
            started = time.perf_counter()
            await flow.run_async(shared)
            elapsed = time.perf_counter() - started
            assert shared["result"] == size
            return elapsed

    elapsed = asyncio.run(main())
    return {"time_s": elapsed, "peak_rss_mb": peak_rss_mb()}


# -- subflows: 100 parallel sub-flows a -> b (20 ms) -> c -----------------------------


def subflows(impl: str, size: int) -> dict[str, float]:
    step_sleep = 0.02
    if impl == "asyncio":

        async def one(index: int, shared: dict[str, Any]) -> None:
            value = index
            await asyncio.sleep(step_sleep)
            shared[index] = value + 1

        async def main() -> float:
            shared: dict[str, Any] = {}
            started = time.perf_counter()
            await asyncio.gather(*(one(i, shared) for i in range(size)))
            return time.perf_counter() - started

    else:
        lib = importlib.import_module(impl)

        class Load(lib.AsyncNode):  # type: ignore[misc, name-defined]
            async def prep_async(self, shared: dict[str, Any]) -> int:
                return int(self.params["index"])

        class Work(lib.AsyncNode):  # type: ignore[misc, name-defined]
            async def exec_async(self, prep_res: Any) -> None:
                await asyncio.sleep(step_sleep)

        class Save(lib.AsyncNode):  # type: ignore[misc, name-defined]
            async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any):
                shared[self.params["index"]] = self.params["index"] + 1

        class Each(lib.AsyncParallelBatchFlow):  # type: ignore[misc, name-defined]
            async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, int]]:
                return [{"index": i} for i in range(size)]

        load = Load()
        load >> Work() >> Save()
        flow = Each(start=load)

        async def main() -> float:
            shared: dict[str, Any] = {}
            started = time.perf_counter()
            await flow.run_async(shared)
            elapsed = time.perf_counter() - started
            assert len(shared) == size
            return elapsed

    return {"wall_s": asyncio.run(main())}


# -- items: 100,000 items, no sleep ---------------------------------------------------


def items(impl: str, size: int) -> dict[str, float]:
    if impl == "asyncio":

        async def item(value: int) -> int:
            return value * 2

        async def main() -> float:
            started = time.perf_counter()
            await asyncio.gather(*(item(i) for i in range(size)))
            return time.perf_counter() - started

    else:
        lib = importlib.import_module(impl)

        async def exec_async(self: Any, value: int) -> int:
            return value * 2

        flow = lib.AsyncFlow(start=parallel_node(lib, exec_async, store_len=True)())

        async def main() -> float:
            shared: dict[str, Any] = {"items": list(range(size))}
            started = time.perf_counter()
            await flow.run_async(shared)
            return time.perf_counter() - started

    return {"us_per_item": asyncio.run(main()) / size * 1e6}


def items_limited(impl: str, size: int) -> dict[str, float]:
    """The same items, each holding one shared limiter of 10,000 slots."""
    if impl == "pocketflow":
        raise NotImplementedError("PocketFlow has no limiter")
    if impl == "asyncio":
        semaphore: asyncio.Semaphore | None = None

        async def item(value: int) -> int:
            assert semaphore is not None
            async with semaphore:
                return value * 2

        async def main() -> float:
            nonlocal semaphore
            semaphore = asyncio.Semaphore(10_000)
            started = time.perf_counter()
            await asyncio.gather(*(item(i) for i in range(size)))
            return time.perf_counter() - started

    else:
        lib = importlib.import_module(impl)

        async def exec_async(self: Any, value: int) -> int:
            return value * 2

        node_class = parallel_node(lib, exec_async, store_len=True)
        flow = lib.AsyncFlow(start=node_class(limits=[lib.Limiter(10_000)]))

        async def main() -> float:
            shared: dict[str, Any] = {"items": list(range(size))}
            started = time.perf_counter()
            await flow.run_async(shared)
            return time.perf_counter() - started

    return {"us_per_item": asyncio.run(main()) / size * 1e6}


def items_weighted(impl: str, size: int) -> dict[str, float]:
    """The same items through the same limiter counted by weight: each takes 1.5 units."""
    if impl != "braidflow":
        raise NotImplementedError("weighted limits are braidflow's")
    lib = importlib.import_module(impl)

    async def exec_async(self: Any, value: int) -> int:
        return value * 2

    node_class = parallel_node(lib, exec_async, store_len=True)
    flow = lib.AsyncFlow(start=node_class(limits=[lib.Limiter(10_000).weighted(1.5)]))

    async def main() -> float:
        shared: dict[str, Any] = {"items": list(range(size))}
        started = time.perf_counter()
        await flow.run_async(shared)
        return time.perf_counter() - started

    return {"us_per_item": asyncio.run(main()) / size * 1e6}


def weighted_acquire(impl: str, size: int) -> dict[str, float]:
    """An acquire and release of a limiter with a bound and a rate window, as
    an exec attempt does it: plain (one slot), then weighted (the attempt's
    claim of units, made beforehand), then the claim's making alone; us
    each, best of 5 rounds."""
    if impl != "braidflow":
        raise NotImplementedError("weighted limits are braidflow's")
    from braidflow._weights import Claim  # what an attempt of a weighted node takes

    lib = importlib.import_module(impl)
    plain = lib.Limiter(1000, rate=1e12, per=1.0)
    weighted = lib.Limiter(1000, rate=1e12, per=1.0).weighted(2.5)

    def plain_round() -> float:
        started = time.perf_counter()
        for _ in range(size):
            plain.try_acquire()
            plain.release()
        return time.perf_counter() - started

    def made() -> tuple[float, list[Any]]:
        started = time.perf_counter()
        claims = [Claim(weighted, 2.5) for _ in range(size)]
        return time.perf_counter() - started, claims

    def weighted_round() -> float:
        claims = made()[1]
        started = time.perf_counter()
        for claim in claims:
            claim.try_acquire()
            claim.release()
        return time.perf_counter() - started

    rounds = 5
    return {
        "plain_us": min(plain_round() for _ in range(rounds)) / size * 1e6,
        "weighted_us": min(weighted_round() for _ in range(rounds)) / size * 1e6,
        "claim_us": min(made()[0] for _ in range(rounds)) / size * 1e6,
    }


def stop_waiters(impl: str, size: int) -> dict[str, float]:
    """A batch whose items queue on a 100-slot limiter, then one fails: seconds
    from the failure until the run has stopped every waiting item."""
    if impl == "pocketflow":
        raise NotImplementedError("PocketFlow has no limiter")
    failed_at = 0.0
    if impl == "asyncio":

        async def main() -> float:
            nonlocal failed_at
            semaphore = asyncio.Semaphore(100)
            all_queued = asyncio.Event()
            entered = 0

            async def item(value: int) -> None:
                nonlocal entered, failed_at
                async with semaphore:
                    entered += 1
                    if value == 0:
                        await all_queued.wait()
                        failed_at = time.perf_counter()
                        raise ValueError(value)
                    await asyncio.Event().wait()

            async def watch() -> None:
                while entered < 100:
                    await asyncio.sleep(0)
                all_queued.set()

            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(watch())
                    for value in range(size):
                        group.create_task(item(value))
            except* ValueError:
                pass
            return time.perf_counter() - failed_at

    else:
        lib = importlib.import_module(impl)
        limiter = lib.Limiter(100)
        all_queued = asyncio.Event()

        async def exec_async(self: Any, value: int) -> None:
            nonlocal failed_at
            if value == 0:
                while limiter.statistics().waiting < size - 100:
                    await asyncio.sleep(0)
                failed_at = time.perf_counter()
                raise ValueError(value)
            await all_queued.wait()

        node_class = parallel_node(lib, exec_async, store_len=True)
        flow = lib.AsyncFlow(start=node_class(limits=[limiter]))

        async def main() -> float:
            shared: dict[str, Any] = {"items": list(range(size))}
            try:
                await flow.run_async(shared)
            except ValueError:
                pass
            return time.perf_counter() - failed_at

    return {"stop_s": asyncio.run(main())}


def branches(impl: str, size: int, big: bool = False) -> dict[str, float]:
    """Fork/join of `size` trivial branches, many times: microseconds per branch.
    With `big`, shared also holds a 10 MB value that no branch touches."""
    runs = max(20, 2000 // size)
    if impl == "pocketflow":
        raise NotImplementedError("PocketFlow cannot run different nodes at once")
    if impl == "asyncio":

        async def branch(shared: dict[str, Any], index: int) -> None:
            shared[f"b{index}"] = index

        async def once(shared: dict[str, Any]) -> None:
            await asyncio.gather(*(branch(shared, index) for index in range(size)))

    else:
        lib = importlib.import_module(impl)

        class Branch(lib.AsyncNode):  # type: ignore[misc, name-defined]
            async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
                shared[self.name] = True

        flow = lib.AsyncFlow(start=lib.Parallel(*(Branch(name=f"b{i}") for i in range(size))))

        async def once(shared: dict[str, Any]) -> None:
            await flow.run_async(shared)

    async def main() -> float:
        shared: dict[str, Any] = {"blob": {"data": list(range(1_250_000))}} if big else {}
        await once(shared)
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            await once(shared)
            timings.append(time.perf_counter() - started)
        return statistics.median(timings)

    return {"us_per_branch": asyncio.run(main()) / size * 1e6}


def branches_big(impl: str, size: int) -> dict[str, float]:
    return branches(impl, size, big=True)


def sync_chain(impl: str, size: int) -> dict[str, float]:
    runs = 20
    if impl == "asyncio":  # the raw baseline here is three plain calls per node

        def prep(shared: dict[str, int]) -> int:
            return shared["count"]

        def work(value: int) -> int:
            return value + 1

        def post(shared: dict[str, int], value: int) -> None:
            shared["count"] = value

        def run_once() -> float:
            shared = {"count": 0}
            started = time.perf_counter()
            for _ in range(size):
                post(shared, work(prep(shared)))
            return time.perf_counter() - started

    else:
        lib = importlib.import_module(impl)

        class Step(lib.Node):  # type: ignore[misc, name-defined]
            def prep(self, shared: dict[str, int]) -> int:
                return shared["count"]

            def exec(self, value: int) -> int:
                return value + 1

            def post(self, shared: dict[str, int], prep_res: int, exec_res: int) -> None:
                shared["count"] = exec_res

        nodes = [Step() for _ in range(size)]
        for left, right in itertools.pairwise(nodes):
            left >> right
        flow = lib.Flow(start=nodes[0])

        def run_once() -> float:
            shared = {"count": 0}
            started = time.perf_counter()
            flow.run(shared)
            elapsed = time.perf_counter() - started
            assert shared["count"] == size
            return elapsed

    run_once()
    timings = [run_once() for _ in range(runs)]
    return {"us_per_node": statistics.median(timings) / size * 1e6}


def chain_with_policies(impl: str, size: int) -> dict[str, float]:
    if impl != "braidflow":
        raise NotImplementedError("limiters and retry policies are braidflow's")
    return chain(impl, size, policies=True)


def chain_noop_observer(impl: str, size: int) -> dict[str, float]:
    """The chain with one observer that does nothing: the cost of building and
    handing over events (two per node: node_start and node_end)."""
    if impl != "braidflow":
        raise NotImplementedError("observers are braidflow's")
    return chain(impl, size, observe="noop")


def chain_typed(impl: str, size: int) -> dict[str, float]:
    """The chain in a flow with a TypedDict state type (``state=``)."""
    if impl != "braidflow":
        raise NotImplementedError("state types are braidflow's")
    return chain(impl, size, observe="typed")


def chain_durable(impl: str, size: int) -> dict[str, float]:
    """The chain as a durable run: a checkpoint in SQLite after every node."""
    if impl != "braidflow":
        raise NotImplementedError("durable runs are braidflow's")
    return chain(impl, size, observe="durable")


# -- PostgreSQL: checkpoints on a local server, and shared limiters --------------------

_SERVERS: list[Any] = []  # kept running until the measuring process exits


def postgres_store() -> Any:
    """A PostgresStore on a server of its own, started here (tests/_postgres.py):
    PostgreSQL's default settings, every commit synced to disk."""
    import contextlib

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    try:
        from _postgres import binaries, postgres_server
        from braidflow.stores import PostgresStore
    except ImportError as missing:
        raise NotImplementedError("psycopg is not installed") from missing
    if binaries() is None:
        raise NotImplementedError("PostgreSQL is not installed")
    stack = contextlib.ExitStack()
    server = stack.enter_context(postgres_server(durable=True))
    _SERVERS.append(stack)
    import atexit

    atexit.register(stack.close)
    return PostgresStore(server.dsn)


def chain_postgres(impl: str, size: int) -> dict[str, float]:
    """The chain as a durable run: a checkpoint in PostgreSQL (local) after every node."""
    if impl != "braidflow":
        raise NotImplementedError("durable runs are braidflow's")
    return chain(impl, size, observe="postgres")


def items_postgres(impl: str, size: int) -> dict[str, float]:
    """`size` items x sleep(10 ms), bound 1000, checkpointed in PostgreSQL: extra per item."""
    return items_durable(impl, size, store="postgres")


def shared_limiter(impl: str, size: int) -> dict[str, float]:
    """Acquire and release of a shared limiter with a free slot, `size` times in a
    row: µs each, its slots in PostgreSQL (local) and in SQLite; a Limiter's for scale."""
    if impl != "braidflow":
        raise NotImplementedError("shared limiters are braidflow's")
    import tempfile

    import braidflow as bf

    def timed(limiter: Any) -> float:
        for _ in range(20):  # warm-up: connections made, statements prepared
            limiter.acquire_blocking()
            limiter.release()
        started = time.perf_counter()
        for _ in range(size):
            limiter.acquire_blocking()
            limiter.release()
        return (time.perf_counter() - started) / size * 1e6

    sqlite = bf.SQLiteStore(Path(tempfile.mkdtemp()) / "runs.db")
    figures = {
        "us_postgres": timed(postgres_store().limiter("api", max_concurrent=8)),
        "us_sqlite": timed(sqlite.limiter("api", max_concurrent=8)),
        "us_limiter": timed(bf.Limiter(8)),
    }
    return figures


def _spin(item: int) -> int:
    """About 20 ms of pure-Python work (it holds the GIL throughout)."""
    value = item
    for step in range(150_000):
        value = (value * 31 + step) % 1_000_003
    return value


def cpu_batch(impl: str, size: int) -> dict[str, float]:
    """`size` CPU-bound items: one after another, in 2 threads, and as Ray tasks
    on a local 2-CPU instance (started before timing); then Ray's round trip
    per item (trivial exec, one item at a time)."""
    if impl != "braidflow":
        raise NotImplementedError("executors are braidflow's")
    import braidflow as bf

    try:
        from braidflow.executors import RayExecutor
    except ImportError as missing:
        raise NotImplementedError("ray is not installed") from missing

    def timed(node: Any) -> float:
        shared: dict[str, Any] = {}
        started = time.perf_counter()
        bf.Flow(start=node).run(shared)
        elapsed = time.perf_counter() - started
        assert len(shared["result"]) == node.count
        return elapsed

    def batch(kind: Any, work: Callable[[int], int], count: int, **options: Any) -> Any:
        class Work(kind):  # type: ignore[misc, valid-type]
            def prep(self, shared: dict[str, Any]) -> Any:
                return list(range(count))

            def exec(self, item: int) -> int:
                return work(item)

            def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
                shared["result"] = exec_res

        node = Work(**options)
        node.count = count
        return node

    figures = {
        "in_process_s": timed(batch(bf.BatchNode, _spin, size)),
        "threads_s": timed(batch(bf.ParallelBatchNode, _spin, size, max_concurrency=2)),
    }
    with RayExecutor(num_cpus=2) as ray_cluster:
        timed(batch(bf.ParallelBatchNode, abs, 4, executor=ray_cluster))  # workers warm
        figures["ray_s"] = timed(
            batch(bf.ParallelBatchNode, _spin, size, executor=ray_cluster, max_concurrency=8)
        )
        started = time.perf_counter()
        timed(batch(bf.BatchNode, abs, size, executor=ray_cluster))
        figures["ray_round_trip_ms"] = (time.perf_counter() - started) / size * 1000
    return figures


def chain_durable_async(impl: str, size: int) -> dict[str, float]:
    """The chain as a durable run with durability="async": checkpoints written
    by a thread of the writer, off the run's path."""
    if impl != "braidflow":
        raise NotImplementedError("durable runs are braidflow's")
    return chain(impl, size, observe="durable_async")


def chain_durable_exit(impl: str, size: int) -> dict[str, float]:
    """The chain as a durable run with durability="exit": checkpoints kept in
    memory and written when the run ends."""
    if impl != "braidflow":
        raise NotImplementedError("durable runs are braidflow's")
    return chain(impl, size, observe="durable_exit")


def items_durable(
    impl: str, size: int, bound: int | None = 1000, store: str = "sqlite"
) -> dict[str, float]:
    """`size` items x sleep(10 ms), at most `bound` at once, each checkpointed in SQLite
    (under a bound, before its worker takes another), or in PostgreSQL; seconds over
    the plain run, per item."""
    if impl != "braidflow":
        raise NotImplementedError("durable runs are braidflow's")
    import tempfile

    lib = importlib.import_module(impl)

    async def exec_async(self: Any, value: int) -> int:
        await asyncio.sleep(0.01)
        return value * 2

    node_class = parallel_node(lib, exec_async, store_len=True)
    flow = lib.AsyncFlow(start=node_class(max_concurrency=bound))
    if store == "postgres":
        kept = postgres_store()
    else:
        kept = lib.SQLiteStore(Path(tempfile.mkdtemp()) / "runs.db")

    async def main() -> tuple[float, float]:
        timings = []
        for durable in (False, True) * 4:  # alternated; the best of each
            shared: dict[str, Any] = {"items": list(range(size))}
            started = time.perf_counter()
            await flow.run_async(shared, **({"store": kept} if durable else {}))
            timings.append(time.perf_counter() - started)
        return min(timings[0::2]), min(timings[1::2])

    plain, durable = asyncio.run(main())
    return {"us_per_item": (durable - plain) / size * 1e6}


def items_durable_unbounded(impl: str, size: int) -> dict[str, float]:
    """The same with no bound: a task per item."""
    return items_durable(impl, size, bound=None)


def stored_state(impl: str, size: int) -> dict[str, float]:
    """Looking into a stored run: `state()` and `history()` of a SQLite run of
    `size` steps and a 10,000-item batch (milliseconds a call, the best of 5)."""
    if impl != "braidflow":
        raise NotImplementedError("stored runs are braidflow's")
    import tempfile

    lib = importlib.import_module(impl)

    class Step(lib.Node):  # type: ignore[misc, name-defined]
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
            shared["count"] = shared.get("count", 0) + 1
            return "again" if shared["count"] < size - 1 else "done"

    class Batch(lib.BatchNode):  # type: ignore[misc, name-defined]
        def prep(self, shared: dict[str, Any]) -> Any:
            return range(10_000)

        def exec(self, item: int) -> int:
            return item

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["results"] = len(exec_res)

    step, batch = Step(name="step"), Batch(name="batch")
    step - "again" >> step
    step - "done" >> batch
    flow = lib.Flow(start=step)
    path = Path(tempfile.mkdtemp()) / "runs.db"
    flow.run({}, store=lib.SQLiteStore(path), run_id="r")
    figures = {}
    for name, read in (("state_ms", flow.state), ("history_ms", flow.history)):
        timings = []
        for _ in range(5):
            store = lib.SQLiteStore(path)  # as a reader that just opened the file
            started = time.perf_counter()
            read("r", store=store)
            timings.append(time.perf_counter() - started)
            store.close()
        figures[name] = min(timings) * 1000
    assert len(flow.history("r", store=lib.SQLiteStore(path))) == size
    return figures


def cache_hits(impl: str, size: int) -> dict[str, float]:
    """`size` items of a parallel batch with a result cache in SQLite, run a
    second time so that every item is a hit: µs per item of that run, and
    what a hit costs over the same batch with no cache and an exec that
    returns at once (the best of 5 runs of each, alternated)."""
    if impl != "braidflow":
        raise NotImplementedError("the result cache is braidflow's")
    import tempfile

    lib = importlib.import_module(impl)
    calls = 0

    async def exec_async(self: Any, value: int) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"item": value, "answer": f"text of item {value}"}

    node_class = parallel_node(lib, exec_async, store_len=True)
    store = lib.SQLiteStore(Path(tempfile.mkdtemp()) / "cache.db")
    cached = lib.AsyncFlow(start=node_class(cache=lib.Cache(store=store)))
    plain = lib.AsyncFlow(start=node_class())

    async def timed(flow: Any) -> float:
        shared: dict[str, Any] = {"items": list(range(size))}
        started = time.perf_counter()
        await flow.run_async(shared)
        elapsed = time.perf_counter() - started
        assert shared["result"] == size
        return elapsed

    async def main() -> tuple[float, float]:
        await timed(cached)  # fills the cache
        assert calls == size
        timings = {True: [], False: []}
        for hits in (False, True) * 5:
            timings[hits].append(await timed(cached if hits else plain))
        assert calls == size * 6  # the plain runs call exec; the cached runs never do
        return min(timings[False]), min(timings[True])

    plain_time, hit_time = asyncio.run(main())
    return {
        "hit_us": hit_time / size * 1e6,
        "extra_us": (hit_time - plain_time) / size * 1e6,
    }


def chain_jsonl(impl: str, size: int) -> dict[str, float]:
    """The chain with a JSONLTrace writing every event to a file."""
    if impl != "braidflow":
        raise NotImplementedError("observers are braidflow's")
    return chain(impl, size, observe="jsonl")


WORKLOADS: dict[str, Callable[[str, int], dict[str, float]]] = {
    "chain": chain,
    "chain_policies": chain_with_policies,
    "chain_noop": chain_noop_observer,
    "chain_jsonl": chain_jsonl,
    "cache_hits": cache_hits,
    "chain_durable": chain_durable,
    "chain_typed": chain_typed,
    "state_writes": state_writes,
    "chain_durable_async": chain_durable_async,
    "chain_durable_exit": chain_durable_exit,
    "items_durable": items_durable,
    "items_durable_unbounded": items_durable_unbounded,
    "chain_postgres": chain_postgres,
    "items_postgres": items_postgres,
    "shared_limiter": shared_limiter,
    "stored_state": stored_state,
    "sync_chain": sync_chain,
    "fanout": fanout,
    "bounded": bounded,
    "subflows": subflows,
    "items": items,
    "items_limited": items_limited,
    "items_weighted": items_weighted,
    "weighted_acquire": weighted_acquire,
    "branches": branches,
    "branches_big": branches_big,
    "cpu_batch": cpu_batch,
    "stop_waiters": stop_waiters,
}

# (workload, size, label) for the full and the quick run.
PLAN = [
    ("chain", 1000, "chain of 1,000 async nodes"),
    ("chain_policies", 1000, "same, each with a Limiter and max_retries=2"),
    ("chain_noop", 1000, "same chain, a no-op observer (2 events/node)"),
    ("chain_jsonl", 1000, "same chain, a JSONLTrace observer"),
    ("chain_durable", 1000, "same chain, durable: a SQLite checkpoint per node"),
    ("chain_durable_async", 1000, 'same, durability="async": written in batches'),
    ("chain_durable_exit", 1000, 'same, durability="exit": written when the run ends'),
    ("chain_typed", 1000, "same chain, a typed flow (TypedDict state)"),
    ("sync_chain", 1000, "sync chain of 1,000 nodes (raw: plain calls)"),
    ("fanout", 10_000, "10k items x sleep(50 ms)"),
    ("bounded", 100_000, "100k items from a generator, bound 1000"),
    ("bounded", 1_000_000, "1M items from a generator, bound 1000"),
    ("subflows", 100, "100 parallel sub-flows a->b(20 ms)->c"),
    ("items", 100_000, "100k items, no sleep"),
    ("items_limited", 100_000, "same, each through a Limiter(10,000)"),
    ("items_weighted", 100_000, "same, the Limiter weighted: 1.5 units each"),
    ("weighted_acquire", 100_000, "acquire+release: plain, then weighted (a claim)"),
    ("stop_waiters", 50_000, "50k items queued on a Limiter(100), one fails"),
    ("items_durable", 10_000, "10k items x sleep(10 ms), bound 1000, durable: extra/item"),
    ("items_durable_unbounded", 10_000, "same, no bound (a task per item): extra per item"),
    ("chain_postgres", 1000, "same chain, durable: a PostgreSQL checkpoint per node"),
    ("items_postgres", 10_000, "10k items, bound 1000, in PostgreSQL: extra/item"),
    ("shared_limiter", 2000, "acquire+release of a shared limiter: PG, SQLite"),
    ("stored_state", 1000, "state() and history() of a stored run: 1,000 steps, 10k items"),
    ("cache_hits", 10_000, "10k items, all cache hits in SQLite (2nd run)"),
    ("branches", 2, "fork/join of 2 trivial branches"),
    ("branches", 16, "fork/join of 16 trivial branches"),
    ("branches_big", 16, "same, shared holds 10 MB no branch touches"),
    ("cpu_batch", 200, "200 CPU-bound items (20 ms): here, threads, Ray"),
    ("state_writes", 10_000, "one write to shared: dict, typed, validated"),
]
QUICK_SIZES = {
    ("chain", 1000): 200,
    ("chain_policies", 1000): 200,
    ("chain_noop", 1000): 200,
    ("chain_jsonl", 1000): 200,
    ("chain_durable", 1000): 200,
    ("chain_typed", 1000): 200,
    ("state_writes", 10_000): 1000,
    ("chain_durable_async", 1000): 200,
    ("chain_durable_exit", 1000): 200,
    ("items_durable", 10_000): 1000,
    ("items_durable_unbounded", 10_000): 1000,
    ("chain_postgres", 1000): 200,
    ("items_postgres", 10_000): 1000,
    ("shared_limiter", 2000): 200,
    ("stored_state", 1000): 100,
    ("cache_hits", 10_000): 1000,
    ("sync_chain", 1000): 200,
    ("fanout", 10_000): 1000,
    ("bounded", 100_000): 10_000,
    ("bounded", 1_000_000): 50_000,
    ("items", 100_000): 10_000,
    ("items_limited", 100_000): 10_000,
    ("items_weighted", 100_000): 10_000,
    ("weighted_acquire", 100_000): 20_000,
    ("stop_waiters", 50_000): 10_000,
    ("cpu_batch", 200): 20,
}


def measure_once(workload: str, impl: str, size: int) -> dict[str, float] | None:
    """Run one measurement in a fresh interpreter; None if it does not apply."""
    completed = subprocess.run(
        [sys.executable, __file__, "--one", workload, impl, str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        if "NotImplementedError" in completed.stderr or "ModuleNotFoundError" in completed.stderr:
            return None
        raise RuntimeError(f"{workload}/{impl} failed:\n{completed.stderr}")
    result: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def measure(workload: str, impl: str, size: int, repeat: int) -> dict[str, float] | None:
    runs = []
    for _ in range(repeat):
        result = measure_once(workload, impl, size)
        if result is None:
            return None
        runs.append(result)
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or denominator is None or denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one process each")
    parser.add_argument("--repeat", type=int, default=3, help="processes per figure (median)")
    parser.add_argument("--only", nargs="+", metavar="WORKLOAD", help="run only these workloads")
    parser.add_argument(
        "--one", nargs=3, metavar=("WORKLOAD", "IMPL", "SIZE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        workload, impl, size = args.one
        print(json.dumps(WORKLOADS[workload](impl, int(size))))
        return 0

    repeat = 1 if args.quick else args.repeat
    rows: list[dict[str, Any]] = []
    header = f"{'workload':50} {'metric':12} {'asyncio':>9} {'pocketflow':>10} {'braidflow':>10}"
    header += f" {'bf/pf':>7} {'bf/asyncio':>10}"
    print(header)
    print("-" * len(header))
    for workload, size, label in PLAN:
        if args.only and workload not in args.only:
            continue
        if args.quick:
            size = QUICK_SIZES.get((workload, size), size)
            label = f"{label} [{size:,}]"
        figures = {impl: measure(workload, impl, size, repeat) for impl in IMPLEMENTATIONS}
        measured = [f for f in figures.values() if f is not None]
        if not measured:  # (chain_postgres without psycopg or the PostgreSQL programs)
            print(f"{label:50} skipped: no implementation runs here (a module or program missing)")
            continue
        metrics = measured[0]
        for metric in metrics:
            value = {impl: (f or {}).get(metric) for impl, f in figures.items()}
            rows.append({"workload": workload, "size": size, "metric": metric, **value})
            print(
                f"{label:50} {metric:12} {fmt(value['asyncio']):>9} "
                f"{fmt(value['pocketflow']):>10} {fmt(value['braidflow']):>10} "
                f"{ratio(value['braidflow'], value['pocketflow']):>7} "
                f"{ratio(value['braidflow'], value['asyncio']):>10}"
            )
            label = ""
    print()
    bounded_rss = {
        row["size"]: row
        for row in rows
        if row["workload"] == "bounded" and row["metric"] == "peak_rss_mb"
    }
    bounded_time = {
        row["size"]: row
        for row in rows
        if row["workload"] == "bounded" and row["metric"] == "time_s"
    }
    if len(bounded_rss) == 2:
        small, large = sorted(bounded_rss)
        growth = bounded_rss[large]["braidflow"] - bounded_rss[small]["braidflow"]
        raw_growth = bounded_rss[large]["asyncio"] - bounded_rss[small]["asyncio"]
        print(
            f"bounded: braidflow RSS growth {small:,} -> {large:,} items: {growth:.1f} MB "
            f"(target < 40 MB; raw semaphore loop: {raw_growth:.1f} MB)"
        )
        time_ratio = ratio(bounded_time[large]["braidflow"], bounded_time[large]["asyncio"])
        print(
            f"bounded: braidflow time / raw semaphore loop at {large:,} items: {time_ratio} "
            "(target <= 1.5x)"
        )
    bare = next((r for r in rows if r["workload"] == "chain"), None)
    for workload in ("chain_noop", "chain_jsonl"):
        row = next((r for r in rows if r["workload"] == workload), None)
        if bare and row and bare["braidflow"] and row["braidflow"]:
            extra = row["braidflow"] - bare["braidflow"]
            print(
                f"observers: {workload}: +{extra:.2f} us per node, "
                f"{extra / 2:.2f} us per event (target: no-op a few us, JSONL 10-30 us per node)"
            )
    durable = next((r for r in rows if r["workload"] == "chain_durable"), None)
    if bare and durable and bare["braidflow"] and durable["braidflow"]:
        print(
            f"durable: a checkpoint costs +{durable['braidflow'] - bare['braidflow']:.2f} us "
            "per node (target < 50 us)"
        )
    for workload in ("items_durable", "items_durable_unbounded"):
        durable = next((r for r in rows if r["workload"] == workload), None)
        if durable and durable["braidflow"]:
            print(f"durable: {workload}: +{durable['braidflow']:.2f} us per item (target < 10 us)")
    cpu = {r["metric"]: r["braidflow"] for r in rows if r["workload"] == "cpu_batch"}
    if cpu.get("ray_s") and cpu.get("in_process_s"):
        print(
            f"ray: CPU-bound batch {cpu['in_process_s'] / cpu['ray_s']:.2f}x faster than in "
            f"process (threads: {cpu['in_process_s'] / cpu['threads_s']:.2f}x), "
            f"{cpu['ray_round_trip_ms']:.1f} ms round trip per item"
        )
    hits = {r["metric"]: r["braidflow"] for r in rows if r["workload"] == "cache_hits"}
    if hits.get("hit_us") is not None:
        print(
            f"cache: a hit in SQLite costs {hits['hit_us']:.1f} us per item in all "
            f"({hits['extra_us']:+.1f} us over calling a trivial exec; target <= 50 us)"
        )
    plain = next((r for r in rows if r["workload"] == "items"), None)
    limited = next((r for r in rows if r["workload"] == "items_limited"), None)
    if plain and limited:
        print(
            "limiter: an item through a Limiter costs "
            f"{ratio(limited['braidflow'], plain['braidflow'])} the unbounded path (target <= 2x)"
        )
    weighted = next((r for r in rows if r["workload"] == "items_weighted"), None)
    if limited and weighted:
        print(
            "weighted limiter: an item through it costs "
            f"{ratio(weighted['braidflow'], limited['braidflow'])} one through a plain Limiter"
        )
    acquire = {r["metric"]: r["braidflow"] for r in rows if r["workload"] == "weighted_acquire"}
    if acquire.get("plain_us") and acquire.get("weighted_us"):
        print(
            "weighted acquire: "
            f"{ratio(acquire['weighted_us'], acquire['plain_us'])} a plain one (target <= 1.2x), "
            f"+{acquire['claim_us']:.2f} us to make the attempt's claim"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=2))
    print(f"results written to {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
