"""PocketFlow 0.0.3: each workload as its docs write it (where it can)."""

import asyncio
import itertools

from pocketflow import AsyncFlow, AsyncNode, AsyncParallelBatchFlow, AsyncParallelBatchNode

LABEL = "PocketFlow"
PACKAGE = "pocketflow"


class Step(AsyncNode):
    async def prep_async(self, shared):
        return shared["count"]

    async def exec_async(self, count):
        return count + 1

    async def post_async(self, shared, prep_res, exec_res):
        shared["count"] = exec_res


def chain(n):
    nodes = [Step() for _ in range(n)]
    for left, right in itertools.pairwise(nodes):
        left >> right
    flow = AsyncFlow(start=nodes[0])

    async def run():
        shared = {"count": 0}
        await flow.run_async(shared)
        return shared["count"]

    return run


def _batch(exec_async, n):
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(n))  # PocketFlow gathers a list: no lazy input

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = len(exec_res)

    Items.exec_async = exec_async
    flow = AsyncFlow(start=Items())

    async def run():
        shared = {}
        await flow.run_async(shared)
        return shared["done"]

    return run


def fanout(n):
    async def exec_async(self, value):
        await asyncio.sleep(0.05)
        return value

    return _batch(exec_async, n)


def items(n):
    async def exec_async(self, value):
        return value

    return _batch(exec_async, n)


def bounded(n):
    raise NotImplementedError("PocketFlow has no concurrency bound (it gathers every item)")


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
    raise NotImplementedError("PocketFlow cannot run different nodes at the same time")


def checkpointed(n):
    raise NotImplementedError("PocketFlow has no persistence")


WORKLOADS = {
    "chain": chain,
    "fanout": fanout,
    "items": items,
    "subflows": subflows,
    "bounded": bounded,
    "fork": fork,
    "checkpointed": checkpointed,
}
