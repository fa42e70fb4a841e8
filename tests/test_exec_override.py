"""PocketFlow calls self._exec(prep_res) for the exec stage; a subclass that
overrides it (to cache, say) is honoured in every node kind, sync and async."""

import asyncio

import pytest

from braidflow import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    Node,
    ParallelBatchNode,
)

SYNC_KINDS = [Node, BatchNode, ParallelBatchNode]
ASYNC_KINDS = [AsyncNode, AsyncBatchNode, AsyncParallelBatchNode]


def is_batch(kind):
    return issubclass(kind, BatchNode)


def caching(kind, cache, attempts):
    """A node of `kind` whose _exec override serves repeated input from `cache`;
    its exec fails once per input, so super()._exec must apply the retries."""
    sync = kind in SYNC_KINDS

    def prep(self, shared):
        return shared["input"]

    def exec_(self, item):
        attempts.append(item)
        if self.cur_retry == 0:
            raise ConnectionError("first attempt fails")
        return f"done {item}"

    def post(self, shared, prep_res, exec_res):
        shared["output"] = exec_res

    key = tuple if is_batch(kind) else str
    if sync:

        def _exec(self, prep_res):
            if key(prep_res) not in cache:
                cache[key(prep_res)] = super(Cached, self)._exec(prep_res)
            return cache[key(prep_res)]

        body = {"prep": prep, "exec": exec_, "post": post, "_exec": _exec}
    else:

        async def _exec(self, prep_res):
            if key(prep_res) not in cache:
                cache[key(prep_res)] = await super(Cached, self)._exec(prep_res)
            return cache[key(prep_res)]

        async def aprep(self, shared):
            return prep(self, shared)

        async def aexec(self, item):
            await asyncio.sleep(0)
            return exec_(self, item)

        async def apost(self, shared, prep_res, exec_res):
            post(self, shared, prep_res, exec_res)

        body = {"prep_async": aprep, "exec_async": aexec, "post_async": apost, "_exec": _exec}
    Cached = type("Cached", (kind,), body)
    return Cached


@pytest.mark.parametrize("kind", SYNC_KINDS + ASYNC_KINDS)
async def test_an_exec_override_is_called_and_super_runs_the_exec_stage(kind):
    cache, attempts = {}, []
    node = caching(kind, cache, attempts)(max_retries=2)
    value = ["a", "b"] if is_batch(kind) else "a"
    expected = ["done a", "done b"] if is_batch(kind) else "done a"
    flow = (AsyncFlow if kind in ASYNC_KINDS else Flow)(start=node)
    for _ in range(2):  # the second run is served from the cache
        shared = {"input": value}
        if kind in ASYNC_KINDS:
            await flow.run_async(shared)
        else:
            flow.run(shared)
        assert shared["output"] == expected
    assert sorted(attempts) == sorted((value if is_batch(kind) else [value]) * 2)


def test_an_exec_override_on_a_sync_node_is_honoured_in_plain_sync_code():
    cache, attempts = {}, []
    node = caching(Node, cache, attempts)(max_retries=2)
    shared = {"input": "x"}
    node.run(shared)
    node.run(shared)
    assert shared["output"] == "done x"
    assert attempts == ["x", "x"]  # one failed and one good attempt, then the cache


def test_the_old_exec_shared_first_form_still_gets_the_store_through_an_override():
    class Old(Node):
        def exec(self, shared, prep_res):
            return shared["value"] + prep_res

        def _exec(self, prep_res):
            return super()._exec(prep_res) * 2

        def prep(self, shared):
            return 1

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    shared = {"value": 20}
    Flow(start=Old()).run(shared)
    assert shared["out"] == 42
