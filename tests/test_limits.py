"""Limiter: in-flight and rate limits, shared across nodes, copies and sub-flows."""

import asyncio
import multiprocessing
import threading

import pytest

from _support import Gauge
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    InvalidParameterError,
    Limiter,
    LimiterStatistics,
    Node,
    ParallelBatchNode,
    RunError,
)
from braidflow.testing import VirtualClock, other_tasks


async def test_limiter_counts_in_flight_waiting_peak_and_acquired():
    limiter = Limiter(2, name="api")
    await limiter.acquire()
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert limiter.statistics() == LimiterStatistics(
        in_flight=2, waiting=1, peak_in_flight=2, acquired=2
    )
    limiter.release()
    await waiter
    assert limiter.statistics() == LimiterStatistics(
        in_flight=2, waiting=0, peak_in_flight=2, acquired=3
    )
    limiter.release()
    limiter.release()
    assert limiter.statistics().in_flight == 0


async def test_limiter_serves_waiters_first_come_first_served():
    limiter = Limiter(1)
    order = []
    await limiter.acquire()

    async def take(label):
        async with limiter:
            order.append(label)

    tasks = [asyncio.create_task(take(label)) for label in "abcd"]
    await asyncio.sleep(0)
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == list("abcd")


async def test_cancelled_waiter_takes_nothing_and_frees_its_place():
    limiter = Limiter(1)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    limiter.release()
    await second
    assert limiter.statistics() == LimiterStatistics(1, 0, 1, 2)


def test_release_without_acquire_is_an_error():
    with pytest.raises(RunError, match="release"):
        Limiter(1).release()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_limiter_in_a_forked_child_has_none_of_the_parent_s_holders_or_waiters():
    # In a child made by os.fork, the parent's holder and waiter are threads
    # that are not there: they would never give the slot back or take their turn.
    fork = multiprocessing.get_context("fork")
    limiter = Limiter(1)
    limiter.acquire_blocking()
    queued = threading.Thread(target=limiter.acquire_blocking)
    queued.start()
    while limiter.statistics().waiting == 0:
        threading.Event().wait(0.001)
    reports, report = fork.Pipe(duplex=False)

    def child():
        before = limiter.statistics()
        took = limiter.try_acquire()
        report.send((before.in_flight, before.waiting, took, limiter.statistics().in_flight))
        limiter.release()

    forked = fork.Process(target=child)
    forked.start()
    try:
        assert reports.poll(30)
        assert reports.recv() == (0, 0, True, 1)
    finally:
        forked.join(30)
        limiter.release()
        queued.join(30)
        limiter.release()
    assert forked.exitcode == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": -2}, "max_concurrent"),
        ({"max_concurrent": 2.5}, "max_concurrent"),
        ({"rate": 0}, "rate"),
        ({"rate": -1}, "rate"),
        ({"rate": 1, "per": 0}, "per"),
    ],
)
def test_bad_limiter_settings_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Limiter(**kwargs, name="llm")


def test_nodes_only_take_limiter_objects():
    with pytest.raises(InvalidParameterError, match="Limiter"):
        Node(limits=[3], name="x")  # type: ignore[list-item]


async def test_rate_limit_waits_for_the_window_on_a_virtual_clock():
    clock = VirtualClock()
    limiter = Limiter(rate=2, per=1.0, clock=clock)
    await limiter.acquire()
    limiter.release()
    clock.advance(0.4)
    await limiter.acquire()
    limiter.release()
    third = asyncio.create_task(limiter.acquire())
    while clock.sleepers == 0:
        await asyncio.sleep(0)
    assert not third.done()
    assert limiter.statistics().waiting == 1
    clock.advance(0.5)  # t = 0.9: the first start is still inside the window
    for _ in range(5):
        await asyncio.sleep(0)
    assert not third.done()
    clock.advance(0.2)  # t = 1.1: the first start has left the window
    await third
    assert limiter.statistics().acquired == 3


async def test_fractional_rate_spaces_acquisitions():
    clock = VirtualClock()
    limiter = Limiter(rate=0.5, per=1.0, clock=clock)  # one every 2 s
    await limiter.acquire()
    second = asyncio.create_task(limiter.acquire())
    while clock.sleepers == 0:
        await asyncio.sleep(0)
    clock.advance(1.9)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not second.done()
    clock.advance(0.1)
    await second


def test_rate_limit_in_threads_on_a_virtual_clock():
    clock = VirtualClock()
    limiter = Limiter(rate=1, per=1.0, clock=clock)
    limiter.acquire_blocking()
    limiter.release()
    done = threading.Event()

    def take():
        with limiter:
            done.set()

    thread = threading.Thread(target=take)
    thread.start()
    while clock.sleepers == 0:
        threading.Event().wait(0.001)
    assert not done.is_set()
    clock.advance(1.0)
    thread.join(timeout=5)
    assert done.is_set()


def make_limited_node(limiter, gauge):
    class Call(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(6)

        async def exec_async(self, item):
            gauge.enter()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            gauge.leave()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared.setdefault("results", []).append(exec_res)

    return Call(limits=[limiter])


async def test_one_limiter_shared_by_nodes_in_parallel_sub_flows_is_one_limit():
    limiter = Limiter(3, name="llm")
    gauge = Gauge()
    first = make_limited_node(limiter, gauge)
    second = make_limited_node(limiter, gauge)
    first >> second

    class Docs(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"doc": d} for d in range(4)]

    shared = {}
    await AsyncFlow(start=Docs(start=first)).run_async(shared)
    assert gauge.peak == 3
    stats = limiter.statistics()
    assert stats.peak_in_flight == 3
    assert stats.acquired == 4 * 2 * 6
    assert stats.in_flight == 0
    assert len(shared["results"]) == 8
    assert other_tasks() == set()


async def test_every_attempt_holds_the_limiter_and_releases_it_on_failure():
    limiter = Limiter(1)

    class Flaky(AsyncNode):
        async def exec_async(self, prep_res):
            assert limiter.statistics().in_flight == 1
            if self.cur_retry < 2:
                raise ConnectionError
            return "ok"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Flaky(max_retries=3, limits=limiter).run_async({}) == "ok"
    assert limiter.statistics().acquired == 3
    assert limiter.statistics().in_flight == 0


async def test_limiters_are_acquired_in_one_global_order():
    first, second = Limiter(1, name="a"), Limiter(1, name="b")
    one = AsyncNode(limits=[second, first])
    other = AsyncNode(limits=[first, second])
    assert one._bf_limits == other._bf_limits == (first, second)


def test_sync_parallel_batch_node_respects_a_shared_limiter_in_threads():
    limiter = Limiter(2)
    lock = threading.Lock()
    gauge = Gauge()
    both_in = threading.Barrier(2, timeout=5)

    class Threads(ParallelBatchNode):
        def prep(self, shared):
            return range(8)

        def exec(self, item):
            with lock:
                gauge.enter()
            if item < 2:
                both_in.wait()  # the first two must overlap
            with lock:
                gauge.leave()
            return item

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Threads(max_concurrency=4, limits=[limiter]).run({}) == list(range(8))
    assert gauge.peak == 2
    assert limiter.statistics().peak_in_flight == 2


async def test_sync_node_with_limits_in_async_flow_does_not_block_the_loop():
    limiter = Limiter(1)
    ran = []

    class Sync(Node):
        def exec(self, prep_res):
            ran.append("sync")

    await limiter.acquire()  # held by "another task": the sync node must wait
    task = asyncio.create_task(AsyncFlow(start=Sync(limits=[limiter])).run_async({}))
    while limiter.statistics().waiting == 0:
        await asyncio.sleep(0)
    assert ran == []  # the loop is still live while the node waits in its thread
    limiter.release()
    await task
    assert ran == ["sync"]


async def test_try_acquire_never_waits_and_never_jumps_the_queue():
    limiter = Limiter(1)
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # the slot goes to the queued waiter, not to a later try
    assert limiter.try_acquire() is False
    await waiter
    limiter.release()
    assert limiter.try_acquire() is True


async def test_the_default_clock_follows_the_event_loop_clock(monkeypatch):
    loop = asyncio.get_running_loop()
    now = [1000.0]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    limiter = Limiter(rate=1, per=10.0)
    await limiter.acquire()
    limiter.release()
    assert limiter.try_acquire() is False  # the window is full at t=1000
    now[0] = 1010.0
    assert limiter.try_acquire() is True  # and has moved on at t=1010


@pytest.mark.parametrize(("rate", "per", "most"), [(2.5, 1.0, 2), (3.9, 2.0, 3), (1.5, 1.0, 1)])
async def test_fractional_rate_above_one_never_exceeds_rate_in_any_window(rate, per, most):
    clock = VirtualClock()
    limiter = Limiter(rate=rate, per=per, clock=clock)
    starts = []

    async def take():
        await limiter.acquire()
        starts.append(clock.now())
        limiter.release()

    tasks = [asyncio.create_task(take()) for _ in range(12)]
    while len(starts) < 12:
        await asyncio.sleep(0)
        if clock.sleepers:
            clock.advance(0.05)
    await asyncio.gather(*tasks)
    for first in starts:  # every window [first, first + per) holds at most `most` starts
        assert sum(first <= t < first + per for t in starts) <= most <= rate


async def test_cancelling_many_waiters_leaves_a_consistent_queue():
    limiter = Limiter(1)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(2000)]
    await asyncio.sleep(0)
    assert limiter.statistics().waiting == 2000
    for waiter in waiters[:-1]:
        waiter.cancel()
    await asyncio.gather(*waiters[:-1], return_exceptions=True)
    assert limiter.statistics().waiting == 1
    limiter.release()
    await waiters[-1]  # the one left is served
    assert limiter.statistics() == LimiterStatistics(
        in_flight=1, waiting=0, peak_in_flight=1, acquired=2
    )
    limiter.release()


async def test_raising_max_concurrent_wakes_waiters_at_once():
    limiter = Limiter(1)
    await limiter.acquire()
    waiters = [asyncio.create_task(limiter.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    limiter.max_concurrent = 4
    await asyncio.gather(*waiters)
    assert limiter.statistics().in_flight == 4
    assert repr(limiter) == "Limiter(max_concurrent=4)"
