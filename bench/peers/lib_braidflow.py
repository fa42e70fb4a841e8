"""braidflow: each workload as its docs write it."""

import asyncio
import itertools
import tempfile
from pathlib import Path

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    Parallel,
    SQLiteStore,
)

LABEL = "braidflow"
PACKAGE = "braidflow"


class Step(AsyncNode):
    async def prep_async(self, shared):
        return shared["count"]

    async def exec_async(self, count):
        return count + 1

    async def post_async(self, shared, prep_res, exec_res):
        shared["count"] = exec_res


def _chain_flow(n):
    nodes = [Step() for _ in range(n)]
    for left, right in itertools.pairwise(nodes):
        left >> right
    return AsyncFlow(start=nodes[0])


def chain(n):
    flow = _chain_flow(n)

    async def run():
        shared = {"count": 0}
        await flow.run_async(shared)
        return shared["count"]

    return run


def _batch(exec_async, items_of, **options):
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return items_of(shared)

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = len(exec_res)

    Items.exec_async = exec_async
    return AsyncFlow(start=Items(**options))


async def _run_batch(flow):
    shared = {}
    await flow.run_async(shared)
    return shared["done"]


def fanout(n):
    async def exec_async(self, value):
        await asyncio.sleep(0.05)
        return value

    flow = _batch(exec_async, lambda shared: range(n))
    return lambda: _run_batch(flow)


def items(n):
    async def exec_async(self, value):
        return value

    flow = _batch(exec_async, lambda shared: range(n))
    return lambda: _run_batch(flow)


def bounded(n):
    async def exec_async(self, value):
        await asyncio.sleep(0)
        return True

    flow = _batch(exec_async, lambda shared: (i for i in range(n)), max_concurrency=1000)
    return lambda: _run_batch(flow)


def subflows(n):
    class A(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["steps"] += 1

    class B(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.sleep(0.02)

        async def post_async(self, shared, prep_res, exec_res):
            shared["steps"] += 1

    class C(A):
        pass

    class Every(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"run": i} for i in range(n)]

    a = A()
    a >> B() >> C()
    flow = Every(start=a)

    async def run():
        shared = {"steps": 0}
        await flow.run_async(shared)
        return shared["steps"]

    return run


def fork(n):
    class First(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["branches"] = 0

    class Branch(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["branches"] += 1

    class Join(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["total"] += shared["branches"]

    first = First()
    # Every branch adds one to "branches": merged by summing at the join.
    first >> Parallel(*(Branch() for _ in range(16)), merge={"branches": "sum"}) >> Join()
    flow = AsyncFlow(start=first)

    async def run():
        shared = {"total": 0}
        for _ in range(n):
            await flow.run_async(shared)
        return shared["total"]

    return run


def checkpointed(n):
    flow = _chain_flow(n)
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "runs.db")

    async def run():
        shared = {"count": 0}
        await flow.run_async(shared, store=store)
        return shared["count"]

    return run


WORKLOADS = {
    "chain": chain,
    "fanout": fanout,
    "items": items,
    "subflows": subflows,
    "bounded": bounded,
    "fork": fork,
    "checkpointed": checkpointed,
}
