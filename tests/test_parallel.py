"""Parallel batch nodes and flows: bounds, failure policies, cancellation, lazy input."""

import asyncio

import pytest

from _support import Gauge
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchItemsError,
    Budget,
    Failure,
    Flow,
    InvalidParameterError,
    Node,
    Parallel,
    ParallelBatchNode,
)
from braidflow.testing import other_tasks


def make_square_node(gauge, gate=None, **kwargs):
    class Square(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return shared["items"]

        async def exec_async(self, item):
            gauge.enter()
            try:
                await asyncio.sleep(0)
                if gate is not None:
                    await gate.wait()
                return item * item
            finally:
                gauge.leave()

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res
            return "done"

    return Square(**kwargs)


async def test_parallel_batch_node_runs_items_concurrently_in_input_order():
    gauge = Gauge()
    gate = asyncio.Event()
    node = make_square_node(gauge, gate)
    shared = {"items": list(range(10))}
    task = asyncio.create_task(node.run_async(shared))
    while gauge.now < 10:
        await asyncio.sleep(0)
    gate.set()
    assert await task == "done"
    assert shared["out"] == [i * i for i in range(10)]
    assert gauge.peak == 10


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_max_concurrency_bounds_items_in_flight_exactly(limit):
    gauge = Gauge()
    node = make_square_node(gauge, max_concurrency=limit)
    shared = {"items": list(range(20))}
    await node.run_async(shared)
    assert gauge.peak == limit
    assert shared["out"] == [i * i for i in range(20)]


async def test_max_concurrency_as_a_class_attribute():
    gauge = Gauge()

    class Bounded(AsyncParallelBatchNode):
        max_concurrency = 2

        async def prep_async(self, shared):
            return range(10)

        async def exec_async(self, item):
            gauge.enter()
            await asyncio.sleep(0)
            gauge.leave()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Bounded().run_async({}) == list(range(10))
    assert gauge.peak == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_max_concurrency_is_a_value_error_naming_the_node(bad):
    with pytest.raises(ValueError, match="max_concurrency") as caught:
        AsyncParallelBatchNode(max_concurrency=bad, name="fan-out")
    assert "fan-out" in str(caught.value)


def test_max_concurrency_on_a_non_parallel_node_is_rejected():
    with pytest.raises(InvalidParameterError, match="parallel"):
        Node(max_concurrency=3)


def test_unknown_on_error_is_a_value_error():
    with pytest.raises(ValueError, match="on_error='ignore'"):
        AsyncParallelBatchNode(on_error="ignore")
    with pytest.raises(ValueError, match="on_error"):
        AsyncParallelBatchFlow(on_error="skip")


async def test_prep_that_is_not_iterable_is_a_type_error_naming_the_node():
    class Wrong(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return 3.5

    with pytest.raises(TypeError, match=r"Wrong.*not iterable") as caught:
        await Wrong().run_async({})
    assert isinstance(caught.value, BatchItemsError)


@pytest.mark.parametrize("prep_value", [None, []])
async def test_parallel_node_with_no_items_gives_an_empty_list(prep_value):
    class Empty(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return prep_value

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Empty()._run_async({}) == []


def failing_node(fail_on, started, finished, **kwargs):
    """Item ``fail_on`` fails once every other item has started; others then block."""

    class Fails(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return shared["items"]

        async def exec_async(self, item):
            started.append(item)
            if item == fail_on:
                while len(started) < len(self.params.get("expect", [])) or len(started) < 3:
                    await asyncio.sleep(0)
                raise ValueError(f"item {item} failed")
            await asyncio.Event().wait()  # never set: only cancellation ends it
            finished.append(item)

        async def post_async(self, shared, prep_res, exec_res):
            shared["written"] = True

    return Fails(**kwargs)


async def test_failure_cancels_siblings_and_leaves_no_task():
    started, finished = [], []
    node = failing_node(1, started, finished)
    shared = {"items": [0, 1, 2]}
    with pytest.raises(ValueError, match="item 1 failed") as caught:
        await node.run_async(shared)
    assert sorted(started) == [0, 1, 2]
    assert finished == []
    assert "written" not in shared
    assert other_tasks() == set()
    assert any("item 1" in note for note in caught.value.__notes__)


async def test_collect_runs_every_item_and_keeps_order_with_failures():
    class Some(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "bad", "c", "worse"]

        async def exec_async(self, item):
            await asyncio.sleep(0)
            if item.startswith(("bad", "worse")):
                raise ValueError(item)
            return item.upper()

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    results = await Some(on_error="collect", max_concurrency=2).run_async({})
    assert results[0] == "A"
    assert results[2] == "C"
    assert isinstance(results[1], Failure)
    assert isinstance(results[3], Failure)
    assert (results[1].item, results[1].index, str(results[1].error)) == ("bad", 1, "bad")
    assert (results[3].item, results[3].index) == ("worse", 3)


async def test_collect_applies_after_retries_and_fallback():
    class Flaky(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2]

        async def exec_async(self, item):
            if item == 2 and self.cur_retry == 0:
                raise ConnectionError
            return item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Flaky(max_retries=2, on_error="collect").run_async({}) == [1, 2]


async def test_lazy_input_is_read_only_as_fast_as_the_bound_allows():
    pulled = []
    gauge = Gauge()

    def items():
        for i in range(50):
            pulled.append(i)
            yield i

    class Lazy(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return items()

        async def exec_async(self, item):
            gauge.enter()
            # Never more than the bound has been read ahead of the finished items.
            assert len(pulled) - item <= 4
            await asyncio.sleep(0)
            gauge.leave()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Lazy(max_concurrency=4).run_async({}) == list(range(50))
    assert gauge.peak == 4


async def test_async_iterator_input_with_and_without_bound():
    async def numbers(count):
        for i in range(count):
            await asyncio.sleep(0)
            yield i

    for limit in (None, 3):

        class FromAsync(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return numbers(10)

            async def exec_async(self, item):
                await asyncio.sleep(0)
                return item * 10

            async def post_async(self, shared, prep_res, exec_res):
                return exec_res

        result = await FromAsync(max_concurrency=limit).run_async({})
        assert result == [i * 10 for i in range(10)]


async def test_failing_input_iterator_propagates_and_stops_items():
    def broken():
        yield 1
        raise OSError("source broke")

    class FromBroken(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return broken()

        async def exec_async(self, item):
            await asyncio.sleep(0)
            return item

    with pytest.raises(OSError, match="source broke"):
        await FromBroken(max_concurrency=2).run_async({})
    assert other_tasks() == set()


async def test_cancelling_the_run_cancels_every_item_and_sub_flow():
    started = asyncio.Event()
    in_flight = Gauge()

    class Block(AsyncNode):
        async def exec_async(self, prep_res):
            in_flight.enter()
            if in_flight.now == 4:
                started.set()
            try:
                await asyncio.Event().wait()
            finally:
                in_flight.leave()

        async def post_async(self, shared, prep_res, exec_res):
            shared["after"] = True

    class Many(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(4)]

    shared = {}
    task = asyncio.create_task(AsyncFlow(start=Many(start=Block())).run_async(shared))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert in_flight.now == 0
    assert shared == {}
    assert other_tasks() == set()


async def test_parallel_flow_runs_sub_flows_concurrently_with_merged_params():
    gauge = Gauge()
    gate = asyncio.Event()

    class Load(AsyncNode):
        async def prep_async(self, shared):
            gauge.enter()
            await gate.wait()
            gauge.leave()
            return self.params

        async def post_async(self, shared, prep_res, exec_res):
            shared.setdefault("seen", []).append((prep_res["image"], prep_res["mode"]))

    class Images(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"image": i} for i in range(5)]

        async def post_async(self, shared, prep_res, exec_res):
            shared["post"] = exec_res
            return "all done"

    flow = Images(start=Load())
    flow.set_params({"mode": "fast"})
    shared = {}
    task = asyncio.create_task(flow.run_async(shared))
    while gauge.now < 5:
        await asyncio.sleep(0)
    gate.set()
    assert await task == "all done"
    assert sorted(shared["seen"]) == [(i, "fast") for i in range(5)]
    assert shared["post"] is None


async def test_parallel_flow_max_concurrency_and_collect():
    gauge = Gauge()

    class Work(AsyncNode):
        async def exec_async(self, prep_res):
            gauge.enter()
            await asyncio.sleep(0)
            gauge.leave()
            if self.params["i"] == 2:
                raise ValueError("two")

        async def post_async(self, shared, prep_res, exec_res):
            return f"ok-{self.params['i']}"

    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(5)]

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    results = await Each(start=Work(), max_concurrency=2, on_error="collect").run_async({})
    assert gauge.peak == 2
    assert results[:2] == ["ok-0", "ok-1"]
    assert results[3:] == ["ok-3", "ok-4"]
    assert isinstance(results[2], Failure)
    assert results[2].item == {"i": 2}


async def test_a_collecting_batch_flow_in_a_flow_routes_by_failed_or_goes_on():
    class Work(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            if self.params["i"] == shared.get("fails"):
                raise ValueError("this one")
            shared.setdefault("done", []).append(self.params["i"])

    class Each(AsyncParallelBatchFlow):  # post as it comes: no action of its own
        async def prep_async(self, shared):
            return [{"i": i} for i in range(3)]

    class Mark(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared[self.name] = True

    def flow():
        each = Each(start=Work(), on_error="collect")
        each >> Mark(name="went on")
        each - "failed" >> Mark(name="handled")
        return AsyncFlow(start=each)

    shared = {}
    await flow().run_async(shared)  # its results are no action
    assert shared == {"done": [0, 1, 2], "went on": True}
    shared = {"fails": 1}
    await flow().run_async(shared)
    assert shared == {"fails": 1, "done": [0, 2], "handled": True}
    alone = Each(start=Work(), on_error="collect")
    assert await alone.run_async({"fails": 1}) is None  # "failed" is not wired


async def test_parallel_flow_failure_cancels_siblings_and_nothing_is_written_after():
    release = asyncio.Event()
    started = Gauge()

    class Step(AsyncNode):
        async def exec_async(self, prep_res):
            started.enter()
            if self.params["i"] == 0:
                while started.now < 3:
                    await asyncio.sleep(0)
                raise RuntimeError("sub-flow 0 failed")
            await release.wait()

        async def post_async(self, shared, prep_res, exec_res):
            shared.setdefault("writes", []).append(self.params["i"])

    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": i} for i in range(3)]

    shared = {}
    with pytest.raises(RuntimeError, match="sub-flow 0 failed"):
        await Each(start=Step()).run_async(shared)
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert shared == {}
    assert other_tasks() == set()


async def test_parallel_flow_reads_a_generator_of_param_sets_within_its_bound():
    gauge = Gauge()
    read = []

    def param_sets():
        for i in range(12):
            read.append(i)
            yield {"i": i}

    class Work(AsyncNode):
        async def exec_async(self, prep_res):
            gauge.enter()
            await asyncio.sleep(0)
            gauge.leave()

        async def post_async(self, shared, prep_res, exec_res):
            shared.setdefault("done", []).append(self.params["i"])

    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return param_sets()

    shared = {}
    await Each(start=Work(), max_concurrency=3).run_async(shared)
    assert sorted(shared["done"]) == list(range(12))
    assert read == list(range(12))
    assert gauge.peak == 3


async def test_errors_in_parallel_sub_flows_name_the_param_set():
    class Inner(AsyncNode):
        async def exec_async(self, prep_res):
            if self.params["doc"] == 2:
                raise KeyError("missing field")

    class Docs(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"doc": d} for d in range(4)]

    with pytest.raises(KeyError) as caught:
        await Docs(start=Inner(), name="docs").run_async({})
    assert any("param set 2: {'doc': 2}" in note for note in caught.value.__notes__)


async def test_on_error_as_a_class_attribute():
    class Collecting(AsyncParallelBatchNode):
        on_error = "collect"

        async def prep_async(self, shared):
            return [1, 0]

        async def exec_async(self, item):
            return 1 / item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    results = await Collecting().run_async({})
    assert results[0] == 1.0
    assert isinstance(results[1], Failure)


def test_a_method_named_on_error_is_a_hook_not_a_policy():
    seen = []

    class WithHook(Node):
        def on_error(self, shared, error):  # KayGraph's lifecycle hook name
            seen.append(error)

    class ParallelWithHook(AsyncParallelBatchNode):
        def on_error(self, shared, error):
            seen.append(error)

    node = WithHook()
    node.on_error({}, "called")
    ParallelWithHook().on_error({}, "also called")
    assert seen == ["called", "also called"]


def test_items_that_raise_the_same_error_while_stopping_are_counted_not_listed():
    # (a budget's stop is raised alike by every item that meets it)
    import threading

    all_in = threading.Barrier(3, timeout=5)

    class Alike(ParallelBatchNode):
        def prep(self, shared):
            return ["a", "b", "c"]

        def exec(self, item):
            all_in.wait()
            if item == "c":
                raise KeyError(item)
            raise ValueError("the same")

    with pytest.raises((ValueError, KeyError)) as caught:
        Alike(max_concurrency=3, name="alike").run({})
    notes = "\n".join(caught.value.__notes__)
    if isinstance(caught.value, ValueError):
        assert "1 more item(s) failed while stopping: KeyError('c')" in notes
        assert "1 more item(s) stopped with this same error" in notes
    else:
        assert "2 more item(s) failed while stopping: ValueError('the same')" in notes
        assert "same error" not in notes


def test_sync_parallel_batch_node_notes_the_other_failures_while_stopping():
    import threading

    both_in = threading.Barrier(2, timeout=5)

    class Both(ParallelBatchNode):
        def prep(self, shared):
            return ["a", "b"]

        def exec(self, item):
            both_in.wait()  # both fail while the other is running
            raise ValueError(item)

    with pytest.raises(ValueError, match=r"^[ab]\n") as caught:
        Both(max_concurrency=2, name="both").run({})
    notes = "\n".join(caught.value.__notes__)
    assert "1 more item(s) failed while stopping: ValueError(" in notes
    assert "node 'both' (Both) failed on item" in notes


# -- a SetupError is never collected ---------------------------------------------------
#
# braidflow refusing what an item's exec gave it (here a usage report with no
# cost under a cost budget) is a mistake no item mends: under "collect" it
# stops the batch as under "raise", rather than let every item make its call.

ITEMS = [0, 1, 2, 3]


def _item_exec(node, ran, index, refuse):
    ran.append(index)
    if index == 1:
        if refuse == "setup":
            node.report_usage(input_tokens=500, output_tokens=15)  # no cost: refused
        else:
            raise ValueError(f"item {index} failed")


def _shape(shape, ran, refuse):
    """A collecting batch of ``ITEMS`` of one shape, one item at a time;
    item 1 fails (``refuse``: with a `SetupError`, or the user's own error)."""

    class Step(Node):
        def exec(self, prep_res):
            _item_exec(self, ran, self.params.get("i", getattr(self, "i", None)), refuse)

    class AsyncStep(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.sleep(0)
            _item_exec(self, ran, self.params.get("i", getattr(self, "i", None)), refuse)

    options = {"max_concurrency": 1, "on_error": "collect"}
    if shape == "ParallelBatchNode":

        class Items(ParallelBatchNode):
            def prep(self, shared):
                return ITEMS

            def exec(self, item):
                _item_exec(self, ran, item, refuse)

        return Items(name="items", **options)
    if shape == "AsyncParallelBatchNode":

        class AsyncItems(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return ITEMS

            async def exec_async(self, item):
                await asyncio.sleep(0)
                _item_exec(self, ran, item, refuse)

        return AsyncItems(name="items", **options)
    if shape.startswith("AsyncParallelBatchFlow"):

        class Sets(AsyncParallelBatchFlow):
            async def prep_async(self, shared):
                return [{"i": index} for index in ITEMS]

        isolate = shape.endswith("isolated")
        return Sets(start=AsyncStep(), name="items", isolate=isolate, **options)
    step = Step if shape == "Parallel in a Flow" else AsyncStep
    branches = []
    for index in ITEMS:
        branch = step(name=f"b{index}")
        branch.i = index
        branches.append(branch)
    fork = Parallel(*branches, name="items", **options)
    return Flow(start=fork) if shape == "Parallel in a Flow" else AsyncFlow(start=fork)


SHAPES = [
    "ParallelBatchNode",
    "AsyncParallelBatchNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchFlow isolated",
    "Parallel in a Flow",
    "Parallel in an AsyncFlow",
]


def _run(runnable, shared):
    budget = Budget(cost=1.0)
    if runnable._bf_async:
        return asyncio.run(runnable.run_async(shared, budget=budget))
    return runnable.run(shared, budget=budget)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_setup_error_under_collect_stops_the_batch_as_under_raise(shape):
    ran = []
    shared = {}
    with pytest.raises(InvalidParameterError, match="reported usage with no cost") as caught:
        _run(_shape(shape, ran, "setup"), shared)
    assert ran == [0, 1]  # no item started after it
    notes = "\n".join(caught.value.__notes__)
    if shape.startswith("Parallel in"):
        assert "failed in branch 'b1' of node 'items' (Parallel)" in notes
        assert "branch_failures" not in shared
    elif shape.startswith("AsyncParallelBatchFlow"):
        assert "flow 'items' (Sets) failed on param set 1: {'i': 1}" in notes
    else:
        assert "Items) failed on item 1" in notes


@pytest.mark.parametrize("shape", SHAPES)
def test_the_users_own_errors_are_still_collected(shape):
    ran = []
    shared = {}
    _run(_shape(shape, ran, "user"), shared)
    assert ran == ITEMS
    if shape.startswith("Parallel in"):
        [failure] = shared["branch_failures"]
        assert (failure.item, failure.index) == ("b1", 1)


async def test_a_setup_error_under_collect_cancels_the_items_in_flight():
    started, cancelled = [], []
    gate = asyncio.Event()  # set only if the run has not stopped by itself

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ITEMS

        async def exec_async(self, item):
            started.append(item)
            if item == 1:
                while len(started) < len(ITEMS):  # the others are in flight
                    await asyncio.sleep(0)
                raise InvalidParameterError("refused")
            try:
                await gate.wait()
            except asyncio.CancelledError:
                cancelled.append(item)
                raise

    task = asyncio.create_task(Items(name="items", on_error="collect").run_async({}))
    for _ in range(100):  # turns of the loop, not time
        if task.done():
            break
        await asyncio.sleep(0)
    gate.set()  # without the stop, this lets the others finish
    with pytest.raises(InvalidParameterError, match="refused") as caught:
        await task
    assert sorted(cancelled) == [0, 2, 3]
    assert "braidflow: node 'items' (Items) failed on item 1" in caught.value.__notes__
    assert other_tasks() == set()
