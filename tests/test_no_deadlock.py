"""No run deadlocks on braidflow's own machinery: limiters are awaited on the loop,
sync code runs in braidflow's own bounded threads, not the loop's default executor."""

import asyncio
import threading

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncUsageError,
    BatchFlow,
    BatchNode,
    Flow,
    InvalidParameterError,
    Limiter,
    Node,
    ParallelBatchNode,
    RunError,
    thread_limiter,
)
from braidflow.testing import other_tasks


class Record(Node):
    """A sync node that records its name in shared["ran"]."""

    def prep(self, shared):
        return self.name

    def exec(self, name):
        return name

    def post(self, shared, prep_res, exec_res):
        shared.setdefault("ran", []).append(exec_res)


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0)


@pytest.mark.parametrize("offload", [None, False, True])
async def test_limited_sync_node_in_a_nested_sync_flow_waits_on_the_loop(offload):
    # The limiter's holder is a task on this loop: a sync wait on the loop's
    # thread would never see it release.
    limiter = Limiter(1)
    inner = Flow(start=Record(limits=[limiter], offload=offload, name="limited"))
    outer = AsyncFlow(start=Flow(start=inner))
    await limiter.acquire()
    shared = {}
    run = asyncio.create_task(outer.run_async(shared))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    assert shared == {}
    limiter.release()
    await run
    assert shared == {"ran": ["limited"]}


async def test_limited_sync_batch_in_a_sync_batch_flow_waits_on_the_loop():
    limiter = Limiter(1)

    class Items(BatchNode):
        def prep(self, shared):
            return [self.params["n"]] * 2

        def exec(self, item):
            return item

        def post(self, shared, prep_res, exec_res):
            shared.setdefault("seen", []).extend(exec_res)

    class Sets(BatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2}]

    await limiter.acquire()
    shared = {}
    run = asyncio.create_task(
        AsyncFlow(start=Sets(start=Items(limits=[limiter], offload=False))).run_async(shared)
    )
    await wait_until(lambda: limiter.statistics().waiting == 1)
    limiter.release()
    await run
    assert shared == {"seen": [1, 1, 2, 2]}


async def test_run_async_of_a_sync_flow_waits_for_limiters_on_the_loop():
    limiter = Limiter(1)
    flow = Flow(start=Record(limits=[limiter], name="limited"))
    await limiter.acquire()
    shared = {}
    run = asyncio.create_task(flow.run_async(shared))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    limiter.release()
    await run
    assert shared == {"ran": ["limited"]}


async def test_sync_run_that_must_wait_on_the_loop_thread_says_to_await_instead():
    limiter = Limiter(1)
    await limiter.acquire()
    try:
        with pytest.raises(AsyncUsageError, match=r"await flow\.run_async") as caught:
            Flow(start=Record(limits=[limiter], name="limited")).run({})
        assert "limited" in str(caught.value)
        assert limiter.statistics().in_flight == 1  # nothing else taken
    finally:
        limiter.release()


async def test_many_offloaded_waiters_leave_the_loops_default_executor_free():
    # More sync nodes wait for the limiter than the default executor has
    # threads; the holder then needs that executor (as getaddrinfo does).
    limiter = Limiter(1)
    waiters = 64

    class Sub(AsyncParallelBatchFlow):
        def prep(self, shared):
            return [{"n": n} for n in range(waiters)]

    flow = AsyncFlow(start=Sub(start=Record(limits=[limiter], offload=True, name="call")))
    await limiter.acquire()
    shared = {}
    run = asyncio.create_task(flow.run_async(shared))
    await wait_until(lambda: limiter.statistics().waiting == waiters)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, lambda: "executor is free") == "executor is free"
    assert await loop.getaddrinfo("localhost", 80)
    limiter.release()
    await run
    assert shared["ran"] == ["call"] * waiters
    assert other_tasks() == set()


async def test_offloaded_sync_code_runs_in_braidflows_own_threads():
    where = []

    class Where(Node):
        def prep(self, shared):
            where.append(threading.current_thread().name)

        def exec(self, prep_res):
            where.append(threading.current_thread().name)

    await AsyncFlow(start=Where(offload=True)).run_async({})
    assert len(where) == 2
    assert all(name.startswith("braidflow-worker") for name in where)


def test_braidflow_threads_are_bounded_by_one_adjustable_limiter():
    threads = thread_limiter()
    assert isinstance(threads, Limiter)
    before = threads.max_concurrent
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(12)

        def exec(self, item):
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            threading.Event().wait(0.002)
            with lock:
                running[0] -= 1
            return item

        def post(self, shared, prep_res, exec_res):
            return exec_res

    threads.max_concurrent = 3
    try:
        assert Items(max_concurrency=12).run({}) == list(range(12))
    finally:
        threads.max_concurrent = before
    assert running[1] <= 3
    assert threads.statistics().in_flight == 0
    with pytest.raises(InvalidParameterError, match="max_concurrent"):
        threads.max_concurrent = 0


def test_a_limiter_listed_twice_is_refused():
    llm = Limiter(1, name="llm")
    with pytest.raises(InvalidParameterError, match=r"'llm'.*more than once"):
        Node(limits=[llm, llm], name="twice")


def test_nested_sync_runs_inside_worker_threads_cannot_starve_the_pool():
    # Each item's exec runs a sync flow whose node is timed (so it needs a
    # thread of its own) while the pool is full of such items.
    threads = thread_limiter()
    before = threads.max_concurrent

    class Inner(Node):
        def exec(self, prep_res):
            return "inner"

        def post(self, shared, prep_res, exec_res):
            shared["inner"] = exec_res

    class Outer(ParallelBatchNode):
        def prep(self, shared):
            return range(4)

        def exec(self, item):
            shared = {}
            Flow(start=Inner(timeout=5)).run(shared)
            return shared["inner"]

        def post(self, shared, prep_res, exec_res):
            return exec_res

    threads.max_concurrent = 2
    try:
        assert Outer(max_concurrency=4).run({}) == ["inner"] * 4
    finally:
        threads.max_concurrent = before
    assert threads.statistics().in_flight == 0


async def test_exec_acquiring_a_limiter_its_own_attempt_holds_fails_instead_of_hanging():
    llm = Limiter(1, name="llm")

    class Reenters(AsyncNode):
        async def exec_async(self, prep_res):
            async with llm:  # the attempt already holds llm's only slot
                return "never"

    class ReentersInThread(Node):
        def exec(self, prep_res):
            with llm:
                return "never"

    with pytest.raises(RunError, match=r"'llm'.*wait for itself"):
        await Reenters(limits=[llm]).run_async({})
    with pytest.raises(RunError, match=r"'llm'.*wait for itself"):
        await AsyncFlow(start=ReentersInThread(limits=[llm], offload=True)).run_async({})
    with pytest.raises(RunError, match=r"'llm'.*wait for itself"):
        Flow(start=ReentersInThread(limits=[llm], timeout=5)).run({})
    assert llm.statistics().in_flight == 0


async def test_a_nested_run_may_take_another_slot_of_a_limiter_it_holds():
    llm = Limiter(2, name="llm")

    class Inner(AsyncNode):
        async def exec_async(self, prep_res):
            return llm.statistics().in_flight

        async def post_async(self, shared, prep_res, exec_res):
            shared["inner_saw"] = exec_res

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            shared = {}
            await AsyncFlow(start=Inner(limits=[llm])).run_async(shared)
            return shared["inner_saw"]

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Outer(limits=[llm]).run_async({}) == 2


def test_worker_threads_waiting_for_a_limiter_lend_their_thread_slot():
    # Items run nested sync flows that wait for a limiter whose holders need
    # a thread of their own (timed attempts): waiting workers must not hold
    # every thread slot meanwhile.
    threads = thread_limiter()
    before = threads.max_concurrent
    llm = Limiter(1, name="llm")

    class Call(Node):
        def exec(self, prep_res):
            return "called"

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(6)

        def exec(self, item):
            shared = {}
            Flow(start=Call(limits=[llm], timeout=5)).run(shared)
            return shared["out"]

        def post(self, shared, prep_res, exec_res):
            return exec_res

    threads.max_concurrent = 2
    try:
        assert Items(max_concurrency=6).run({}) == ["called"] * 6
    finally:
        threads.max_concurrent = before
