"""Behaviour every batch kind shares, checked across all of them."""

import asyncio

import pytest

from braidflow import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchItemsError,
    BatchNode,
    Node,
    ParallelBatchNode,
)

NODE_KINDS = [BatchNode, ParallelBatchNode, AsyncBatchNode, AsyncParallelBatchNode]
FLOW_KINDS = [BatchFlow, AsyncBatchFlow, AsyncParallelBatchFlow]


def run(node, shared):
    if isinstance(node, AsyncNode):
        return asyncio.run(node.run_async(shared))
    return node.run(shared)


@pytest.mark.parametrize("kind", NODE_KINDS)
@pytest.mark.parametrize("prep_value", [None, [], (), 0, False])
def test_prep_returning_nothing_means_no_items_for_batch_nodes(kind, prep_value):
    # PocketFlow reads `prep(shared) or []`: any false value is no items.
    calls = []

    class Empty(kind):
        def prep(self, shared):
            return prep_value

        def exec(self, item):
            calls.append(item)

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert run(Empty(), {}) == []
    assert calls == []


@pytest.mark.parametrize("kind", FLOW_KINDS)
@pytest.mark.parametrize("prep_value", [None, 0, False])
def test_prep_returning_nothing_means_no_runs_for_batch_flows(kind, prep_value):
    calls = []

    class Step(Node):
        def prep(self, shared):
            calls.append(self.params)

    class Sets(kind):
        def prep(self, shared):
            return prep_value

        def post(self, shared, prep_res, exec_res):
            shared["prep_res"] = prep_res

    shared = {}
    assert run(Sets(start=Step()), shared) is None
    assert calls == []
    assert shared["prep_res"] == []  # PocketFlow's post gets `prep(shared) or []`


@pytest.mark.parametrize("kind", NODE_KINDS)
def test_every_batch_node_kind_keeps_input_order(kind):
    class Double(kind):
        def prep(self, shared):
            return (n for n in range(7))

        def exec(self, item):
            return item * 2

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert run(Double(), {}) == [0, 2, 4, 6, 8, 10, 12]


@pytest.mark.parametrize("kind", NODE_KINDS + FLOW_KINDS)
def test_every_batch_kind_rejects_a_non_iterable_prep(kind):
    class Wrong(kind):
        def prep(self, shared):
            return 7

    extra = {"start": Node()} if kind in FLOW_KINDS else {}
    with pytest.raises(BatchItemsError, match="not iterable"):
        run(Wrong(**extra), {})


@pytest.mark.parametrize("kind", FLOW_KINDS)
def test_every_batch_flow_kind_merges_params(kind):
    seen = []

    class Step(Node):  # a sync node runs in sync and async flows alike
        def prep(self, shared):
            seen.append(dict(self.params))

    class Each(kind):
        def prep(self, shared):
            return [{"item": 1}, {"item": 2, "base": "override"}]

    flow = Each(start=Step())
    flow.set_params({"base": "flow"})
    run(flow, {})
    assert sorted(seen, key=lambda p: p["item"]) == [
        {"base": "flow", "item": 1},
        {"base": "override", "item": 2},
    ]


def test_sync_batch_node_rejects_an_async_iterator():
    async def letters():
        yield "a"

    class Wrong(BatchNode):
        def prep(self, shared):
            return letters()

    with pytest.raises(BatchItemsError, match="async iterator"):
        Wrong().run({})
