"""A sync attempt abandoned to its timeout keeps every bound it held until its
thread really ends: limiters, max_concurrency and braidflow's thread bound."""

import asyncio
import threading

import pytest

from braidflow import (
    AsyncParallelBatchNode,
    Failure,
    Flow,
    Limiter,
    Node,
    ParallelBatchNode,
    thread_limiter,
)
from braidflow.testing import other_tasks


class Calls:
    """Counts sync calls running right now, across threads, and their peak."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.started = 0
        self.failed = 0  # final failures, counted by the fallback

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.started += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc_info):
        with self.lock:
            self.now -= 1


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0)


def blocking_items(calls, release, count=10):
    class Blocking(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(count)

        def exec(self, item):  # sync code in an async node: timed in a thread
            with calls:
                release.wait(10)
            return item

        async def exec_fallback_async(self, item, exc):
            calls.failed += 1
            raise exc

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    return Blocking


async def test_timed_out_attempts_keep_their_limiter_slots_until_their_threads_end():
    calls, release = Calls(), threading.Event()
    limiter = Limiter(max_concurrent=2)
    node = blocking_items(calls, release)(timeout=0.01, limits=[limiter], on_error="collect")
    run = asyncio.create_task(node.run_async({}))
    # Two attempts time out; their threads still hold both slots.
    await wait_until(lambda: calls.failed == 2)
    assert calls.now == 2
    assert limiter.statistics().in_flight == 2
    release.set()
    results = await run
    assert calls.peak == 2
    assert limiter.statistics().peak_in_flight == 2
    assert sum(isinstance(result, Failure) for result in results) == 2
    # The run does not wait for the abandoned threads: each gives its slot
    # back as it ends, which may be just after the run returned.
    await wait_until(lambda: limiter.statistics().in_flight == 0)


@pytest.mark.parametrize("retries", [1, 3])
async def test_timed_out_threads_keep_counting_against_max_concurrency(retries):
    calls, release = Calls(), threading.Event()
    node = blocking_items(calls, release)(
        timeout=0.01, max_concurrency=2, max_retries=retries, on_error="collect"
    )
    run = asyncio.create_task(node.run_async({}))
    await wait_until(lambda: calls.now == 2)
    for _ in range(50):
        await asyncio.sleep(0.001)  # timeouts fire; retries must not start more threads
    assert calls.now == 2
    release.set()
    await run
    assert calls.peak == 2


async def test_timed_sync_attempts_without_a_bound_take_threads_from_the_bounded_pool():
    calls, release = Calls(), threading.Event()
    threads = thread_limiter()
    before = threads.max_concurrent
    threads.max_concurrent = 4
    try:
        node = blocking_items(calls, release, count=200)(timeout=0.01, on_error="collect")
        run = asyncio.create_task(node.run_async({}))
        await wait_until(lambda: calls.now == 4)
        for _ in range(50):
            await asyncio.sleep(0.001)
        assert calls.now == 4
        assert threads.statistics().in_flight == 4
        release.set()
        results = await run
    finally:
        threads.max_concurrent = before
    assert calls.peak == 4
    assert len(results) == 200
    await wait_until(lambda: threads.statistics().in_flight == 0)  # abandoned ones end too
    assert other_tasks() == set()


def test_timed_out_thread_in_sync_code_keeps_its_limiter_slot():
    calls, release = Calls(), threading.Event()
    limiter = Limiter(1)

    class Hangs(Node):
        def exec(self, prep_res):
            with calls:
                release.wait(10)
            return "late"

        def exec_fallback(self, prep_res, exc):
            return type(exc).__name__

        def post(self, shared, prep_res, exec_res):
            shared["result"] = exec_res

    shared = {}
    Flow(start=Hangs(timeout=0.01, limits=[limiter])).run(shared)
    assert shared == {"result": "NodeTimeoutError"}
    assert limiter.statistics().in_flight == 1  # the abandoned thread still holds it
    assert not limiter.try_acquire()
    release.set()
    finished = threading.Event()

    def freed():
        while limiter.statistics().in_flight:
            threading.Event().wait(0.001)
        finished.set()

    freed()
    assert finished.is_set()
    assert calls.peak == 1


def test_sync_parallel_batch_node_times_out_items_within_its_bound():
    calls, release = Calls(), threading.Event()
    timed_out = threading.Semaphore(0)

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(6)

        def exec(self, item):
            with calls:
                if item < 2:
                    release.wait(10)
            return item

        def exec_fallback(self, item, exc):
            timed_out.release()
            return type(exc).__name__

        def post(self, shared, prep_res, exec_res):
            return exec_res

    def release_after_both_timed_out():
        timed_out.acquire()
        timed_out.acquire()
        release.set()  # until now the two abandoned threads held both slots

    helper = threading.Thread(target=release_after_both_timed_out)
    helper.start()
    results = Items(max_concurrency=2, timeout=0.25).run({})
    helper.join()
    assert calls.peak == 2
    assert results == ["NodeTimeoutError", "NodeTimeoutError", 2, 3, 4, 5]


def test_an_abandoned_attempt_keeps_its_own_cur_retry_while_the_next_one_runs():
    seen, second_began, first_looked = {}, threading.Event(), threading.Event()

    class Slow(Node):
        def exec(self, prep_res):
            began = self.cur_retry
            if began == 0:  # abandoned to the timeout, it looks again once attempt 1 ran
                second_began.wait(10)
                seen[0] = (began, self.cur_retry)
                first_looked.set()
                return "late"
            second_began.set()
            seen[1] = (began, self.cur_retry)
            return "second"

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    shared = {}
    Flow(start=Slow(timeout=0.05, max_retries=2)).run(shared)
    assert first_looked.wait(10)
    assert shared["out"] == "second"
    assert seen == {0: (0, 0), 1: (1, 1)}
