"""braidflow: each workload as its docs write it (PocketFlow's programs, where
PocketFlow can run them, unchanged)."""

import asyncio
import tempfile
from pathlib import Path

import _pocketflow_programs as programs

import braidflow
from braidflow import AsyncFlow, AsyncNode, Parallel, SQLiteStore

LABEL = "braidflow"
PACKAGE = "braidflow"


def chain(n):
    return programs.chain(braidflow, n)


def fanout(n):
    return programs.batch(braidflow, programs.sleep_50ms, lambda shared: range(n))


def items(n):
    return programs.batch(braidflow, programs.at_once, lambda shared: range(n))


def bounded(n):
    async def exec_async(self, value):
        await asyncio.sleep(0)
        return True

    items_of = lambda shared: (i for i in range(n))  # noqa: E731 - lazy: a generator
    return programs.batch(braidflow, exec_async, items_of, max_concurrency=1000)


def subflows(n):
    return programs.subflows(braidflow, n)


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
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "runs.db")
    return programs.counted(programs.chain_flow(braidflow, n), store=store)
