"""Timeouts per exec attempt, sync work offloaded to threads, sync parallel batches."""

import asyncio
import multiprocessing
import threading
import time

import pytest

import braidflow._threads as bf_threads
from _support import forking_node
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Drained,
    Failure,
    Flow,
    InvalidParameterError,
    MemoryStore,
    Node,
    NodeTimeoutError,
    ParallelBatchNode,
    Retry,
    SQLiteStore,
    Usage,
    drain,
)
from braidflow.testing import VirtualClock, other_tasks


async def test_timeout_fails_the_attempt_and_goes_through_retry_and_fallback():
    never = asyncio.Event()

    class Slow(AsyncNode):
        async def exec_async(self, prep_res):
            if self.cur_retry < 2:
                await never.wait()
            return f"ok on {self.cur_retry}"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Slow(max_retries=3, timeout=0.01).run_async({}) == "ok on 2"


async def test_timeout_error_is_a_timeout_error_naming_the_node():
    class Hangs(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError, match="hangs") as caught:
        await Hangs(timeout=0.01, name="hangs").run_async({})
    assert isinstance(caught.value, NodeTimeoutError)
    assert caught.value.timeout == 0.01
    assert caught.value.attempt == 0


async def test_timeout_fallback_receives_the_timeout_error():
    class Hangs(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.Event().wait()

        async def exec_fallback_async(self, prep_res, exc):
            return type(exc).__name__

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Hangs(timeout=0.01).run_async({}) == "NodeTimeoutError"


async def test_user_timeout_errors_are_not_mistaken_for_the_node_timeout():
    class OwnTimeout(AsyncNode):
        async def exec_async(self, prep_res):
            raise TimeoutError("from the API")

    with pytest.raises(TimeoutError, match="from the API") as caught:
        await OwnTimeout(timeout=5).run_async({})
    assert not isinstance(caught.value, NodeTimeoutError)


async def _past_each_deadline(run, clock, seconds):
    """Move ``clock`` past each attempt's deadline as it is set, until ``run`` ends."""
    while not run.done():
        if clock.sleepers:
            clock.advance(seconds)
        await asyncio.sleep(0)
    return await run


class _CatchesItsTimeout(AsyncNode):
    """An exec that catches the cancellation its timeout delivers: what it does
    then (``late``) is its own business; the attempt has timed out."""

    def __init__(self, late, **options):
        super().__init__(**options)
        self.late = late
        self.attempts = 0

    async def exec_async(self, prep_res):
        self.attempts += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # cleanup that awaits, as an HTTP client's does
            return self.late()

    async def exec_fallback_async(self, prep_res, error):
        return error

    async def post_async(self, shared, prep_res, exec_res):
        shared["result"] = exec_res


async def test_an_exec_that_returns_after_its_timeout_fires_still_times_out():
    clock, shared = VirtualClock(), {}
    node = _CatchesItsTimeout(lambda: "late result", timeout=30)
    await _past_each_deadline(asyncio.create_task(node.run_async(shared, clock=clock)), clock, 30)
    assert isinstance(shared["result"], NodeTimeoutError)  # the late result is dropped
    assert other_tasks() == set()


async def test_an_exec_that_raises_its_own_error_after_its_timeout_fires_still_times_out():
    def converted():
        raise ConnectionError("connection aborted")

    clock, shared = VirtualClock(), {}
    node = _CatchesItsTimeout(converted, timeout=30, retry=Retry(attempts=3, retry_on=TimeoutError))
    await _past_each_deadline(asyncio.create_task(node.run_async(shared, clock=clock)), clock, 30)
    error = shared["result"]
    assert isinstance(error, NodeTimeoutError)
    assert node.attempts == 3  # retried as a timeout
    assert error.attempt == 2
    assert isinstance(error.__cause__, ConnectionError)  # kept, not lost


async def test_an_error_raised_before_the_timeout_fires_is_that_error():
    class Fails(_CatchesItsTimeout):
        async def exec_async(self, prep_res):
            self.attempts += 1
            await asyncio.sleep(0)
            raise ConnectionError("refused")

    clock, shared = VirtualClock(), {}
    node = Fails(None, timeout=30, retry=Retry(attempts=3, retry_on=TimeoutError))
    await node.run_async(shared, clock=clock)
    assert isinstance(shared["result"], ConnectionError)
    assert node.attempts == 1  # not retried: it is no timeout
    assert clock.now() == 0


def test_timeout_fires_on_blocking_sync_code():
    release = threading.Event()

    class Blocks(Node):
        def exec(self, prep_res):
            release.wait(10)
            return "late"

        def exec_fallback(self, prep_res, exc):
            return "timed out"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    try:
        assert Flow(start=Blocks(timeout=0.01)).run({}) == "timed out"
        assert Blocks(timeout=0.01).run({}) == "timed out"
    finally:
        release.set()


async def test_timeout_fires_on_sync_exec_inside_an_async_node():
    release = threading.Event()

    class SyncExec(AsyncNode):
        def exec(self, prep_res):
            release.wait(10)

    try:
        with pytest.raises(NodeTimeoutError):
            await SyncExec(timeout=0.01).run_async({})
    finally:
        release.set()


async def test_timeout_applies_per_item_in_parallel_batches():
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["fast", "hang", "fast"]

        async def exec_async(self, item):
            if item == "hang":
                await asyncio.Event().wait()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    results = await Items(timeout=0.01, on_error="collect").run_async({})
    assert results[0] == "fast"
    assert results[2] == "fast"
    assert isinstance(results[1], Failure)
    assert isinstance(results[1].error, NodeTimeoutError)
    assert results[1].error.item_index == 1


@pytest.mark.parametrize("bad", [0, -1, "5"])
def test_bad_timeout_is_a_value_error(bad):
    with pytest.raises(ValueError, match="timeout"):
        Node(timeout=bad)


async def test_offloaded_sync_node_keeps_the_event_loop_live():
    loop_ran = threading.Event()

    class Blocking(Node):
        def exec(self, prep_res):
            # Only returns True if the event loop ran the ticker meanwhile.
            return loop_ran.wait(5)

        def post(self, shared, prep_res, exec_res):
            shared["loop_was_live"] = exec_res

    async def ticker():
        await asyncio.sleep(0)
        loop_ran.set()

    shared = {}
    tick = asyncio.create_task(ticker())
    await AsyncFlow(start=Blocking(offload=True)).run_async(shared)
    await tick
    assert shared == {"loop_was_live": True}


async def test_offload_sync_on_the_flow_is_the_default_for_its_sync_nodes():
    threads = []

    class Where(Node):
        def exec(self, prep_res):
            threads.append(threading.current_thread())

    pinned = Where(offload=False)
    first = Where()
    first >> pinned
    await AsyncFlow(start=first, offload_sync=True).run_async({})
    assert threads[0] is not threading.main_thread()
    assert threads[1] is threading.main_thread()


def test_offload_options_are_checked():
    with pytest.raises(InvalidParameterError, match="offload"):
        AsyncNode(offload=True)
    with pytest.raises(InvalidParameterError, match="offload_sync"):
        Flow(offload_sync=True)


async def test_cancelled_run_waits_for_offloaded_work_and_runs_no_post():
    entered = threading.Event()
    release = threading.Event()

    class Blocking(Node):
        def exec(self, prep_res):
            entered.set()
            release.wait(5)

        def post(self, shared, prep_res, exec_res):
            shared["written"] = True

    shared = {}
    task = asyncio.create_task(AsyncFlow(start=Blocking(offload=True)).run_async(shared))
    while not entered.is_set():
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()  # still waiting for the thread
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert shared == {}  # a cancelled run starts no post, before or after it ended
    assert other_tasks() == set()


def test_sync_parallel_batch_node_runs_items_in_a_bounded_pool_in_order():
    lock = threading.Lock()
    in_flight = [0, 0]  # now, peak
    all_in = threading.Barrier(3, timeout=5)

    class Threads(ParallelBatchNode):
        def prep(self, shared):
            return (i for i in range(9))

        def exec(self, item):
            with lock:
                in_flight[0] += 1
                in_flight[1] = max(in_flight[1], in_flight[0])
            if item < 3:
                all_in.wait()  # three items must be in flight together
            with lock:
                in_flight[0] -= 1
            return item * 2

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Threads(max_concurrency=3).run({}) == [i * 2 for i in range(9)]
    assert in_flight[1] == 3


def test_sync_parallel_batch_node_failure_stops_new_items_and_raises():
    started = []

    class Fails(ParallelBatchNode):
        def prep(self, shared):
            return range(100)

        def exec(self, item):
            started.append(item)
            if item == 0:
                raise ValueError("item 0")
            return item

    with pytest.raises(ValueError, match="item 0"):
        Fails(max_concurrency=1).run({})
    assert started == [0]


def test_sync_parallel_batch_node_collect():
    class Some(ParallelBatchNode):
        def prep(self, shared):
            return [1, 0, 2]

        def exec(self, item):
            return 10 // item

        def post(self, shared, prep_res, exec_res):
            return exec_res

    results = Some(max_concurrency=2, on_error="collect").run({})
    assert results[0] == 10
    assert results[2] == 5
    assert isinstance(results[1].error, ZeroDivisionError)


class _Doubles(ParallelBatchNode):
    def prep(self, shared):
        return range(4)

    def exec(self, item):
        return item * 2

    def post(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


class _AsyncDoubles(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(4)

    def exec(self, item):  # sync, under a timeout: each attempt in one of braidflow's threads
        return item * 2

    async def post_async(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


def _run_in_child(kind, tmp_path):
    shared = {}
    if kind == "sync":
        _Doubles(max_concurrency=2).run(shared)
    elif kind == "async":
        AsyncFlow(start=_AsyncDoubles(max_concurrency=2, timeout=10)).run(shared)
    else:
        Flow(start=_Doubles(max_concurrency=2)).run(shared, store=SQLiteStore(tmp_path / "c.db"))
    return shared["out"]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("kind", ["sync", "async", "durable"])
def test_a_child_forked_in_one_of_braidflow_s_threads_mid_run_runs_flows_of_its_own(kind, tmp_path):
    # The parent forks in an item's thread (which holds a slot of the thread
    # bound), while another item's thread runs, a third waits idle for work,
    # and the workers' lock is held: the child has none of those threads,
    # and its own run must neither give back the slot nor wait for them.
    fork = multiprocessing.get_context("fork")
    reports, report = fork.Pipe(duplex=False)
    busy, parent_may_end = threading.Event(), threading.Event()

    def child():
        try:
            drained = drain()  # the parent's durable run goes on in the parent only
            out = _run_in_child(kind, tmp_path)
            ours = [t for t in threading.enumerate() if t.name.startswith("braidflow-worker")]
            left = [t.name for t in ours if t is not threading.current_thread()]  # (the forker)
            report.send([drained, out, left])
        except BaseException as error:
            report.send(repr(error))
            raise

    class Outer(ParallelBatchNode):
        def prep(self, shared):
            return ["busy", "fork", "done"]  # "done" last: no other item takes its thread

        def exec(self, item):
            if item == "busy":
                busy.set()
                parent_may_end.wait(10)
            elif item == "fork":
                busy.wait(10)
                while not bf_threads._idle:  # the "done" item's thread waits for work
                    threading.Event().wait(0.001)
                forked = fork.Process(target=child)
                try:
                    with bf_threads._pool_lock:  # as another thread may hold it at the fork
                        forked.start()
                    return reports.recv() if reports.poll(10) else "no report"
                finally:
                    parent_may_end.set()
                    forked.join(10)
                    if forked.is_alive():
                        forked.kill()
            return None

        def post(self, shared, prep_res, exec_res):
            shared["child"] = exec_res[1]

    shared = {}
    store = SQLiteStore(tmp_path / "p.db") if kind == "durable" else None
    Flow(start=Outer(max_concurrency=3)).run(shared, store=store)
    assert shared["child"] == [[], [0, 2, 4, 6], []]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_run_in_a_forked_child_is_not_part_of_the_run_its_parent_forked_in():
    # Started in a node's exec, a run counts its usage in the run around it
    # too; in a forked child that run is the parent's, which the child cannot reach.
    fork = multiprocessing.get_context("fork")
    reports, report = fork.Pipe(duplex=False)
    seen = []  # the parent's run's events (in the child: a copy)

    class Spends(Node):
        def exec(self, prep_res):
            self.report_usage(Usage(input_tokens=5, output_tokens=5))

    def child():
        own = []
        Spends().run({}, observers=[own.append])
        report.send(([e.kind for e in own if e.kind == "usage"], [e.kind for e in seen]))

    shared = {}
    forking_node(child).run(shared, observers=[lambda event: seen.append(event)])
    assert shared["exitcode"] == 0
    assert reports.poll(0)
    own, parent_s = reports.recv()
    assert own == ["usage"]
    assert "usage" not in parent_s


def test_an_autojump_clock_does_not_jump_to_a_sync_exec_s_deadline_by_itself():
    # A timeout is a deadline, not a sleep: a quick exec in its thread is not
    # timed out at once (it was: the clock jumped to the deadline); one the
    # clock is moved past, while it runs, is.
    clock = VirtualClock(autojump=True)
    done = threading.Event()

    class Quick(Node):
        def exec(self, prep_res):
            done.wait(5)  # set below, once the caller waits for this thread
            return "done"

        def exec_fallback(self, prep_res, exc):
            return repr(exc)

        def post(self, shared, prep_res, exec_res):
            shared["result"] = exec_res

    shared = {}
    threading.Timer(0.05, done.set).start()
    Quick(timeout=30).run(shared, clock=clock)
    assert (shared["result"], clock.now()) == ("done", 0.0)

    moved = threading.Event()

    class Late(Quick):
        def exec(self, prep_res):
            clock.advance(60)  # as the test moving the clock while it runs
            moved.wait(5)  # set once the caller gave it up
            return "late"

    def give_up(*_):
        moved.set()

    shared = {}
    late = Late(timeout=30, name="late")
    late.exec_fallback = lambda prep_res, exc: (give_up(), repr(exc))[1]
    late.run(shared, clock=clock)
    assert shared["result"].startswith("NodeTimeoutError(\"node 'late'")


class _SlowFirst:
    """Items whose first sync exec of "slow" runs until its batch stops (a
    sibling failed), then, if ``late``, until the clock is past its deadline."""

    def __init__(self, clock, late):
        self.clock, self.late = clock, late
        self.started, self.release = threading.Event(), threading.Event()
        self.calls = []

    def exec(self, item):
        self.calls.append(item)
        if item == "slow" and self.calls.count("slow") == 1:
            self.started.set()
            while not bf_threads.stop_requested():  # its caller stops: the sibling failed
                time.sleep(0.001)
            if self.late:
                self.clock.advance(60)
                self.release.wait(5)  # set once the run has raised
            return "first"
        return f"again {item}"

    def fail(self):
        if self.calls.count("fails") == 0:
            self.calls.append("fails")
            self.started.wait(5)
            raise ConnectionError("sibling failed")


def _parallel_batch(items):
    class Batch(ParallelBatchNode):
        def prep(self, shared):
            return ["slow", "fails"]

        def exec(self, item):
            if item == "fails":
                items.fail()
            return items.exec(item)

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    return Flow(start=Batch(timeout=30, name="batch"))


def _batch_beside_a_failing_branch(items):
    class Batch(BatchNode):
        def prep(self, shared):
            return ["slow"]

        def exec(self, item):
            return items.exec(item)

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    class Fails(Node):
        def exec(self, prep_res):
            items.fail()

    return Flow(start=[Batch(timeout=30, name="batch"), Fails(name="fails")])


@pytest.mark.parametrize("make", [_parallel_batch, _batch_beside_a_failing_branch])
@pytest.mark.parametrize("late", [False, True], ids=["by-its-deadline", "past-its-deadline"])
def test_a_stopping_batch_waits_for_a_timed_sync_attempt_until_its_deadline_at_most(make, late):
    # A sibling fails while an item's sync exec runs in a thread under a
    # timeout: the batch waits for it until its deadline. One that returns by
    # then has finished, and is recorded; past it, it is abandoned as any
    # late attempt (it was waited for to its end, its late result recorded).
    clock = VirtualClock()
    items = _SlowFirst(clock, late)
    flow, store = make(items), MemoryStore()
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r", clock=clock)
    items.release.set()
    results = flow.resume("r", store=store, clock=clock)["results"]
    assert results[0] == ("again slow" if late else "first")
    assert items.calls.count("slow") == (2 if late else 1)


@pytest.mark.parametrize("late", [False, True], ids=["by-its-deadline", "past-its-deadline"])
def test_a_drain_s_grace_ending_in_a_sync_run_waits_for_a_timed_attempt_until_its_deadline(late):
    # A sync run on the main thread, with no event loop: the grace period's
    # end interrupts it (as Ctrl-C would) while an item's exec runs in a
    # thread under a timeout. It is waited for until its deadline at most:
    # one that returns by then is recorded; past it, it is abandoned.
    clock = VirtualClock()
    items = _SlowFirst(clock, late)

    class Batch(BatchNode):
        def prep(self, shared):
            return ["slow", "next"]

        def exec(self, item):
            if items.calls.count("slow") == 0:
                drain("r", timeout=0)  # its grace ends at once: the run is interrupted
            return items.exec(item)

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow, store = Flow(start=Batch(timeout=30, name="batch")), MemoryStore()
    with pytest.raises(Drained):
        flow.run({}, store=store, run_id="r", clock=clock)
    items.release.set()
    results = flow.resume("r", store=store, clock=clock)["results"]
    assert results == ["again slow" if late else "first", "again next"]
    assert items.calls.count("slow") == (2 if late else 1)
