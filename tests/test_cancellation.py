"""Cancellation reaches every item, attempt, limiter wait and thread; an item's
own CancelledError is its failure; the user's exceptions come out as raised."""

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    Failure,
    Flow,
    Limiter,
    Node,
    NodeCancelledError,
    ParallelBatchNode,
    thread_limiter,
)
from braidflow._threads import stop_requested
from braidflow.testing import other_tasks


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0)


# -- an item's own CancelledError is that item's failure ------------------------------


class CancelsItself(AsyncParallelBatchNode):
    """Item 1 raises CancelledError by itself; the others return their value."""

    async def prep_async(self, shared):
        return [0, 1, 2, 3]

    async def exec_async(self, item):
        if item == 1:
            raise asyncio.CancelledError
        await asyncio.sleep(0)
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res
        return "done"


@pytest.mark.parametrize("options", [{}, {"max_concurrency": 1}, {"max_retries": 2}])
async def test_item_raising_cancelled_error_fails_the_run_instead_of_vanishing(options):
    shared = {}
    with pytest.raises(NodeCancelledError, match="item 1") as caught:
        await AsyncFlow(start=CancelsItself(**options)).run_async(shared)
    assert caught.value.item_index == 1
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert shared == {}  # post never saw a None for the item
    assert other_tasks() == set()


@pytest.mark.parametrize("limit", [None, 1])
async def test_item_raising_cancelled_error_is_collected_and_the_others_run(limit):
    shared = {}
    await CancelsItself(on_error="collect", max_concurrency=limit).run_async(shared)
    results = shared["results"]
    assert [results[0], results[2], results[3]] == [0, 2, 3]
    assert isinstance(results[1], Failure)
    assert isinstance(results[1].error, NodeCancelledError)


async def test_own_cancelled_error_is_retried_and_reaches_the_fallback():
    attempts = []

    class Flaky(AsyncNode):
        async def exec_async(self, prep_res):
            attempts.append(self.cur_retry)
            raise asyncio.CancelledError

        async def exec_fallback_async(self, prep_res, exc):
            return type(exc).__name__

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Flaky(max_retries=3).run_async({}) == "NodeCancelledError"
    assert attempts == [0, 1, 2]


async def test_cancelled_error_from_post_or_sync_exec_is_not_the_runs_cancellation():
    class BadPost(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            raise asyncio.CancelledError

    class SyncExec(ParallelBatchNode):
        def prep(self, shared):
            return [1]

        def exec(self, item):
            raise asyncio.CancelledError

    with pytest.raises(NodeCancelledError):
        await AsyncFlow(start=BadPost()).run_async({})
    with pytest.raises(NodeCancelledError):
        await AsyncFlow(start=SyncExec()).run_async({})
    with pytest.raises(NodeCancelledError):
        SyncExec().run({})


async def test_cancelling_the_run_still_ends_it_as_cancelled():
    started = asyncio.Event()

    class Waits(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(3)

        async def exec_async(self, item):
            started.set()
            await asyncio.Event().wait()

    run = asyncio.create_task(Waits(max_retries=2).run_async({}))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert other_tasks() == set()


# -- the user's exceptions come out as raised --------------------------------------------


async def fail_with(error):
    await asyncio.sleep(0)
    raise error


class RaisesGroup(AsyncParallelBatchNode):
    """Item 1 runs its own task group, which fails with ValueError and KeyError."""

    async def prep_async(self, shared):
        return [0, 1, 2]

    async def exec_async(self, item):
        if item == 1:
            async with asyncio.TaskGroup() as group:
                group.create_task(fail_with(ValueError("v")))
                group.create_task(fail_with(KeyError("k")))
        return item


@pytest.mark.parametrize("options", [{}, {"max_concurrency": 2}, {"max_retries": 2}])
async def test_a_users_exception_group_comes_out_whole(options):
    with pytest.raises(ExceptionGroup) as caught:
        await RaisesGroup(**options).run_async({})
    kinds = sorted(type(error).__name__ for error in caught.value.exceptions)
    assert kinds == ["KeyError", "ValueError"]
    caught_key = []
    try:
        await RaisesGroup(**options).run_async({})
    except* KeyError as group:
        caught_key.append(group)
    except* ValueError:
        pass
    assert caught_key


async def test_a_users_exception_group_from_a_parallel_sub_flow_comes_out_whole():
    class Inner(AsyncNode):
        async def exec_async(self, prep_res):
            if self.params["n"] == 1:
                raise ExceptionGroup("mine", [ValueError("a"), KeyError("b")])

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 0}, {"n": 1}]

    with pytest.raises(ExceptionGroup, match="mine") as caught:
        await Sets(start=Inner()).run_async({})
    assert len(caught.value.exceptions) == 2


# -- cancellation reaches offloaded sync work --------------------------------------------


async def test_cancelled_while_waiting_for_a_limiter_runs_no_exec_and_no_post():
    limiter = Limiter(1)
    ran = []

    class Sync(Node):
        def exec(self, prep_res):
            ran.append("exec")

        def post(self, shared, prep_res, exec_res):
            shared["written"] = True

    await limiter.acquire()
    shared = {}
    run = asyncio.create_task(AsyncFlow(start=Flow(start=Sync(limits=[limiter]))).run_async(shared))
    await wait_until(lambda: limiter.statistics().waiting == 1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    limiter.release()
    assert (ran, shared) == ([], {})
    assert limiter.statistics().waiting == 0
    assert limiter.statistics().in_flight == 0


async def test_cancelled_sync_parallel_batch_starts_no_new_item_and_waits_for_running_ones():
    release = threading.Event()
    started = []
    lock = threading.Lock()

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(40)

        def exec(self, item):
            with lock:
                started.append(item)
            release.wait(10)
            return item

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    run = asyncio.create_task(AsyncFlow(start=Items(max_concurrency=4)).run_async(shared))
    await wait_until(lambda: len(started) == 4)
    run.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert not run.done()  # waiting for the four running threads
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert sorted(started) == [0, 1, 2, 3]
    assert shared == {}
    assert other_tasks() == set()
    assert thread_limiter().statistics().in_flight == 0


async def test_sibling_failure_waits_for_a_timed_sync_attempt_before_raising():
    # The legacy exec(shared, item) form writes to shared from its thread.
    b_started = threading.Event()
    release = threading.Event()
    b_finished = threading.Event()

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "b"]

        def exec(self, shared, item):
            if item == "a":
                b_started.wait(10)
                raise ValueError("a failed")
            b_started.set()
            release.wait(10)
            shared["b"] = "written"
            b_finished.set()
            return item

    shared = {}
    run = asyncio.create_task(Items(timeout=30).run_async(shared))
    await wait_until(b_started.is_set)
    for _ in range(10):
        await asyncio.sleep(0)
    assert not run.done()  # a has failed; b's thread is still running
    release.set()
    with pytest.raises(ValueError, match="a failed"):
        await run
    assert b_finished.is_set()  # b's write landed before the run raised, not after
    assert shared == {"b": "written"}


# -- a cancel asked while a phase runs without ever awaiting -----------------------------
# (Ctrl-C's handler cancels the run's task while its code runs; asyncio
# delivers that at the next await that waits, which such phases never reach.)


def test_a_cancel_asked_in_a_phase_that_never_waits_starts_no_later_node():
    log = []

    class Fetch(AsyncNode):
        async def prep_async(self, shared):
            log.append("Fetch.prep")
            asyncio.current_task().cancel()  # as Ctrl-C's handler does, mid-phase

        async def post_async(self, shared, prep_res, exec_res):
            log.append("Fetch.post")

    class Save(AsyncNode):
        async def prep_async(self, shared):
            log.append("Save.prep")

    async def main():
        fetch = Fetch()
        fetch >> Save()
        task = asyncio.create_task(AsyncFlow(start=fetch).run_async({}))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not other_tasks()

    asyncio.run(main())
    assert "Save.prep" not in log  # the next node never started
    assert log[0] == "Fetch.prep"


def test_an_error_raised_after_a_cancel_asked_in_a_phase_that_never_waited_is_not_retried():
    log = []

    class Items(AsyncNode):
        async def exec_async(self, prep_res):
            log.append(("exec", self.cur_retry))
            asyncio.current_task().cancel()
            raise ValueError("failed as the cancel came")

        async def exec_fallback_async(self, prep_res, error):
            log.append("fallback")

    async def main():
        task = asyncio.create_task(Items(max_retries=3).run_async({}))
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await task
        assert isinstance(cancelled.value.__cause__, ValueError)  # kept, not lost

    asyncio.run(main())
    assert log == [("exec", 0)]  # no retry, no fallback


# -- Ctrl-C under a SIGINT handler of the program's own ----------------------------------
# asyncio makes Ctrl-C a cancel only under Python's own handler; another that
# raises KeyboardInterrupt raises it wherever the signal lands, inside asyncio
# too, where it lost a wake-up (a run that never ended) or a limiter's slot.


class CtrlC:
    """One Ctrl-C, the first time ``where`` is reached on the main thread (where the loop runs)."""

    def __init__(self, where):
        self.where, self.came = where, False

    def due(self, point):
        if (
            self.came
            or point != self.where
            or threading.current_thread() is not threading.main_thread()
        ):
            return False
        self.came = True
        return True


class CtrlCOnTaking(Limiter):
    """A limiter: taking it on the loop is followed by `ctrl_c`, where due."""

    def __init__(self, ctrl_c):
        super().__init__(3)
        self.ctrl_c = ctrl_c

    def try_acquire(self):
        taken = super().try_acquire()
        if taken and self.ctrl_c.due("limiter taken"):
            signal.raise_signal(signal.SIGINT)
        return taken


@pytest.mark.parametrize("where", ["thread job settled", "limiter taken"])
def test_ctrl_c_under_the_programs_own_handler_ends_a_sync_parallel_batch_cancelled(
    where, monkeypatch
):
    # The Ctrl-C lands at an exact point of the loop's machinery: in the
    # callback that hands a thread's outcome to the loop (unfixed, the run
    # never ended), or in a task just after it took a limiter (unfixed, the
    # slot was never given back).
    import braidflow._threads as threads

    assert threading.current_thread() is threading.main_thread()
    ctrl_c, interrupts, safety, lost = CtrlC(where), [], [], []
    settle = threads._Job._settle

    def hand_over(job):  # unfixed, the outcome was lost: the test fails rather than hangs
        lost.append(job)
        with contextlib.suppress(RuntimeError):  # the loop has closed
            job.loop.call_soon_threadsafe(settle, job)

    def settle_interrupted(job):
        if ctrl_c.due("thread job settled"):
            later = threading.Timer(10, hand_over, (job,))
            later.daemon = True
            later.start()
            safety.append(later)
            signal.raise_signal(signal.SIGINT)
        settle(job)

    monkeypatch.setattr(threads._Job, "_settle", settle_interrupted)

    def handler(signum, frame):
        interrupts.append(signum)
        raise KeyboardInterrupt

    limiter = CtrlCOnTaking(ctrl_c)

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(20)

        def exec(self, item):
            return item

    before = signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            Items(max_concurrency=4, limits=[limiter]).run({})
        assert signal.getsignal(signal.SIGINT) is handler  # put back
    finally:
        signal.signal(signal.SIGINT, before)
        for timer in safety:
            timer.cancel()
    assert ctrl_c.came  # where it was meant to
    assert interrupts == [signal.SIGINT]  # the program's handler ran, once
    assert lost == []  # the thread's outcome reached the loop
    assert limiter.statistics().in_flight == 0
    assert thread_limiter().statistics().in_flight == 0


def test_the_programs_own_sigint_handler_that_raises_nothing_leaves_the_run_alone():
    heard = []

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(4)

        def exec(self, item):
            if item == 0:
                signal.raise_signal(signal.SIGINT)  # heard on the main thread, by the loop
            return item * 10

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    before = signal.signal(signal.SIGINT, lambda signum, frame: heard.append(signum))
    try:
        shared = {}
        Flow(start=Items()).run(shared)
    finally:
        signal.signal(signal.SIGINT, before)
    assert heard == [signal.SIGINT]
    assert shared == {"results": [0, 10, 20, 30]}


@pytest.mark.slow
def test_ctrl_c_at_any_moment_under_the_programs_own_handler_ends_every_run():
    # 60 runs, a sync batch or an AsyncFlow holding one, Ctrl-C'd from 0 to
    # 50 ms in, four at a time (the load widens the windows): each ends,
    # cancelled or finished, with nothing left taken.
    job = Path(__file__).parent / "jobs" / "ctrl_c_job.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def trial(index):
        shape = ("sync", "async")[index % 2]
        done = subprocess.run(
            [sys.executable, str(job), f"{index * 0.05 / 60:.4f}", shape],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        return shape, done.returncode, done.stdout.strip(), done.stderr

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(trial, range(60)))
    ended = {(0, "interrupted", ""), (0, "finished", "")}
    assert [outcome for outcome in outcomes if outcome[1:] not in ended] == []


# -- an error kept on the way out is not kept past the run -------------------------------


class CleanupFailed(RuntimeError):
    """An error of the node's own (a class of its own: one a weak reference can watch)."""


class FailsOnTheWayOut(AsyncNode):
    """Turns its cancellation into an error of its own, once it has started."""

    started: asyncio.Event

    async def exec_async(self, prep_res):
        self.started.set()
        try:
            await asyncio.sleep(30)  # a call (its timer's context holds the run, and so the task)
        except asyncio.CancelledError:
            raise CleanupFailed from None


class FailsInItsThread(Node):
    """Sync code in one of braidflow's threads that fails once its caller,
    cancelled, has asked it to stop (the error is noted in the thread)."""

    started: threading.Event

    def exec(self, prep_res):
        self.started.set()
        while not stop_requested():
            time.sleep(0.001)
        raise CleanupFailed


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda node: node, id="alone"),
        pytest.param(lambda node: AsyncFlow(start=node), id="flow"),
        pytest.param(lambda node: AsyncFlow(start=AsyncFlow(start=node)), id="sub-flow"),
        pytest.param(lambda node: AsyncFlow(start=[node, AsyncNode()]), id="branches"),
    ],
)
@pytest.mark.parametrize("options", [{}, {"timeout": 30}, {"max_retries": 3}])
@pytest.mark.parametrize("in_thread", [False, True], ids=["async", "thread"])
async def test_a_cancelled_run_whose_node_fails_on_the_way_out_leaves_nothing_behind(
    make, options, in_thread
):
    if in_thread:
        node = FailsInItsThread(offload=True, **options)
        node.started = threading.Event()
        started = asyncio.get_running_loop().run_in_executor(None, node.started.wait, 30)
    else:
        node = FailsOnTheWayOut(**options)
        node.started = asyncio.Event()
        started = node.started.wait()
    run = asyncio.create_task(make(node).run_async({}))
    await started
    run.cancel()
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await run
    assert isinstance(cancelled.value.__cause__, CleanupFailed)  # kept, not lost
    task, error = weakref.ref(run), weakref.ref(cancelled.value.__cause__)
    del run, cancelled
    await asyncio.sleep(0)  # the task's done callbacks run
    gc.collect()
    assert task() is None
    assert error() is None
