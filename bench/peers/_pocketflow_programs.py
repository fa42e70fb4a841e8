"""The PocketFlow programs of the workloads: one text, run by PocketFlow and,
unchanged, by braidflow (whose class names are PocketFlow's), given either
library's module as ``lib``."""

import asyncio
import itertools


def chain_flow(lib, n):
    """A flow of ``n`` steps, each adding one to ``shared["count"]``."""

    class Step(lib.AsyncNode):
        async def prep_async(self, shared):
            return shared["count"]

        async def exec_async(self, count):
            return count + 1

        async def post_async(self, shared, prep_res, exec_res):
            shared["count"] = exec_res

    nodes = [Step() for _ in range(n)]
    for left, right in itertools.pairwise(nodes):
        left >> right
    return lib.AsyncFlow(start=nodes[0])


def counted(flow, **options):
    """A run of a chain flow (with ``options`` for run_async), returning its count."""

    async def run():
        shared = {"count": 0}
        await flow.run_async(shared, **options)
        return shared["count"]

    return run


def chain(lib, n):
    return counted(chain_flow(lib, n))


def batch_flow(lib, exec_async, items_of, **options):
    """A flow of one parallel batch node over ``items_of(shared)``."""

    class Items(lib.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return items_of(shared)

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = len(exec_res)

    Items.exec_async = exec_async
    return lib.AsyncFlow(start=Items(**options))


def batch(lib, exec_async, items_of, **options):
    """A run of a batch flow (see `batch_flow`), returning how many results it gathered."""
    flow = batch_flow(lib, exec_async, items_of, **options)

    async def run():
        shared = {}
        await flow.run_async(shared)
        return shared["done"]

    return run


async def sleep_50ms(self, value):
    await asyncio.sleep(0.05)
    return value


async def at_once(self, value):
    return value


def subflows(lib, n):
    class A(lib.AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["steps"] += 1

    class B(lib.AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.sleep(0.02)

        async def post_async(self, shared, prep_res, exec_res):
            shared["steps"] += 1

    class C(A):
        pass

    class Every(lib.AsyncParallelBatchFlow):
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
