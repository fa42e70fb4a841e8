"""Drain: a durable run asked to stop at its next safe point starts no new
step or item, lets what runs finish (up to a grace period), stores what
finished and ends as ``drained``; resume carries on and redoes nothing that
finished. From Python (`braidflow.drain`), from another process (through the
store), and on SIGTERM to the command."""

import asyncio
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import braidflow as bf
from _support import forking_node
from braidflow import Drained, InvalidParameterError, SQLiteStore, StoreError
from braidflow._threads import stop_requested
from braidflow.durable import _drain
from braidflow.durable._drain import DRAIN_KEY, Drain
from braidflow.testing import VirtualClock, other_tasks
from braidflow.tracing._stops import stop_of

JOBS = Path(__file__).parent / "jobs"


# -- in this process -----------------------------------------------------------------------


class Items(bf.AsyncParallelBatchNode):
    """100 items, 5 at a time; item ``drain_at`` asks the run to drain."""

    def __init__(self, calls, drain_at=None, timeout=30.0):
        super().__init__(name="items", max_concurrency=5)
        self.calls, self.drain_at, self.timeout = calls, drain_at, timeout

    async def prep_async(self, shared):
        return list(range(100))

    async def exec_async(self, item):
        self.calls[item] += 1
        if item == self.drain_at:
            bf.drain("run", timeout=self.timeout)
        await asyncio.sleep(0)
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["total"] = sum(exec_res)


def test_a_drained_batch_starts_no_new_item_and_resume_runs_each_item_once():
    store, calls = bf.MemoryStore(), Counter()
    with pytest.raises(Drained, match=r"run 'run' was drained.*resume it with") as drained:
        bf.AsyncFlow(start=Items(calls, drain_at=20)).run({}, store=store, run_id="run")
    assert drained.value.run_id == "run"
    assert store.get("run").status == "drained"
    ran = sum(calls.values())
    assert 21 <= ran <= 25  # item 20 and the four beside it finished; no new one started
    shared = bf.AsyncFlow(start=Items(calls)).resume("run", store=store)
    assert shared["total"] == sum(range(100))
    assert calls == dict.fromkeys(range(100), 1)  # each item exactly once


class Step(bf.Node):
    def __init__(self, number, calls, drain=False):
        super().__init__(name=f"s{number}")
        self.number, self.calls, self.drain = number, calls, drain

    def exec(self, prep_res):
        self.calls[self.number] += 1
        if self.drain:
            bf.drain()  # every durable run of this process: this one

    def post(self, shared, prep_res, exec_res):
        shared["steps"] = [*shared.get("steps", []), self.number]


def steps(calls, drain_at=None):
    nodes = [Step(number, calls, drain=number == drain_at) for number in range(5)]
    for left, right in itertools.pairwise(nodes):
        left >> right
    return bf.Flow(start=nodes[0])


class AsksThenDrains(bf.AsyncParallelBatchNode):
    """100 items, 5 at a time: item 3 asks a question; item 10 asks the run to drain."""

    def __init__(self, calls):
        super().__init__(name="items", max_concurrency=5)
        self.calls = calls

    async def prep_async(self, shared):
        return list(range(100))

    async def exec_async(self, item):
        self.calls[item] += 1
        if item == 3:
            return bf.interrupt("item 3: go on?")
        if item == 10:
            bf.drain("run")
        await asyncio.sleep(0)
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


def test_a_drain_while_an_item_waits_on_a_question_ends_drained_and_the_question_stays():
    """A drain wins over a question asked in the same stage: the run ends
    drained, and the resume runs on to the question, which is asked then."""
    store, calls = bf.MemoryStore(), Counter()
    with pytest.raises(Drained):
        bf.AsyncFlow(start=AsksThenDrains(calls)).run({}, store=store, run_id="run")
    assert store.get("run").status == "drained"
    done_before = {item for item, count in calls.items() if item != 3}
    with pytest.raises(bf.Suspended) as asked:  # nothing else stops it now
        bf.AsyncFlow(start=AsksThenDrains(calls)).resume("run", store=store)
    assert [question.prompt for question in asked.value.questions] == ["item 3: go on?"]
    shared = bf.AsyncFlow(start=AsksThenDrains(calls)).resume("run", store=store, input="yes")
    assert shared["results"] == [*range(3), "yes", *range(4, 100)]
    assert all(calls[item] == 1 for item in done_before)  # what finished ran once


def test_a_drained_chain_finishes_its_step_and_starts_no_other():
    store, calls = bf.MemoryStore(), Counter()
    shared = {}
    with pytest.raises(Drained):
        steps(calls, drain_at=1).run(shared, store=store, run_id="run")
    assert shared == {"steps": [0, 1]}  # the step that was running finished
    assert [step.node for step in bf.Flow().history("run", store=store)][:2] == ["s0", "s1"]
    shared = steps(calls).resume("run", store=store)
    assert shared["steps"] == [0, 1, 2, 3, 4]
    assert calls == dict.fromkeys(range(5), 1)


class Branch(bf.AsyncNode):
    def __init__(self, name, calls, started=None, go=None, drain=False):
        super().__init__(name=name)
        self.calls, self.started, self.go, self.drain = calls, started, go, drain

    async def exec_async(self, prep_res):
        self.calls[self.name] += 1
        if self.started is not None:
            self.started.set()
        if self.go is not None:
            await self.go.wait()
        if self.drain:
            await self.drain.wait()
            bf.drain("run")

    async def post_async(self, shared, prep_res, exec_res):
        shared[self.name] = True


def test_a_branch_that_drains_lets_the_others_finish_their_step():
    store, calls = bf.MemoryStore(), Counter()

    async def main():
        slow_started, go = asyncio.Event(), asyncio.Event()

        def flow(first_run):
            fast = Branch("fast", calls, drain=slow_started if first_run else False)
            fast >> Branch("fast 2", calls)
            slow = Branch("slow", calls, started=slow_started, go=go if first_run else None)
            both = bf.Parallel(fast, slow, name="both")
            both >> Branch("join", calls)
            return bf.AsyncFlow(start=both)

        first = flow(True)
        running = asyncio.ensure_future(first.run_async({}, store=store, run_id="run"))
        await slow_started.wait()
        await asyncio.sleep(0)  # fast asks to drain, while slow still runs its step
        go.set()
        with pytest.raises(Drained):
            await running
        return await flow(False).resume_async("run", store=store)

    shared = asyncio.run(main())
    assert shared["fast"]
    assert shared["slow"]
    assert shared["fast 2"]
    assert calls["slow"] == 1  # it finished its step before the run stopped
    assert calls["fast"] == 1
    assert calls["fast 2"] == 1
    assert calls["join"] == 1


class Forever(bf.AsyncParallelBatchNode):
    def __init__(self, calls, blocked):
        super().__init__(name="forever", max_concurrency=3)
        self.calls, self.blocked = calls, blocked

    async def prep_async(self, shared):
        return [0, 1, 2, 3]

    async def exec_async(self, item):
        self.calls[item] += 1
        if self.blocked:
            if item == 2:
                bf.drain("run", timeout=0)  # no grace: what runs is stopped at once
            await asyncio.Event().wait()
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["items"] = exec_res


def test_past_the_grace_period_what_runs_is_stopped_and_runs_again_on_resume():
    store, calls = bf.MemoryStore(), Counter()
    with pytest.raises(Drained):
        bf.AsyncFlow(start=Forever(calls, True)).run({}, store=store, run_id="run")
    assert store.get("run").status == "drained"
    assert calls == {0: 1, 1: 1, 2: 1}  # item 3 never started
    shared = bf.AsyncFlow(start=Forever(calls, False)).resume("run", store=store)
    assert shared["items"] == [0, 1, 2, 3]
    assert calls == {0: 2, 1: 2, 2: 2, 3: 1}  # those stopped ran again


def test_draining_again_stops_what_runs_at_once():
    store, calls = bf.MemoryStore(), Counter()

    class Twice(Forever):
        async def exec_async(self, item):
            self.calls[item] += 1
            if item == 2:
                bf.drain("run", timeout=3600)
                bf.drain("run")  # the second: no grace left
            await asyncio.Event().wait()

    with pytest.raises(Drained):
        bf.AsyncFlow(start=Twice(calls, True)).run({}, store=store, run_id="run")
    assert store.get("run").status == "drained"


def test_a_sync_batch_drains_between_items():
    store, seen = bf.MemoryStore(), []

    class Each(bf.BatchNode):
        def prep(self, shared):
            return list(range(10))

        def exec(self, item):
            seen.append(item)
            if item == 3:
                bf.drain("run")
            return item

        def post(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    flow = bf.Flow(start=Each(name="each"))
    with pytest.raises(Drained):
        flow.run({}, store=store, run_id="run")
    assert seen == [0, 1, 2, 3]
    assert flow.resume("run", store=store)["items"] == list(range(10))
    assert seen == list(range(10))


def test_drain_says_what_is_wrong_with_what_it_is_given():
    store = bf.MemoryStore()
    with pytest.raises(StoreError, match=r"no durable run 'nope' is going on in this process"):
        bf.drain("nope")
    with pytest.raises(InvalidParameterError, match=r"timeout=-1 must be a number of seconds"):
        bf.drain("nope", timeout=-1)
    with pytest.raises(InvalidParameterError, match=r"store= needs the run_id"):
        bf.drain(store=store)
    steps(Counter()).run({}, store=store, run_id="done")
    with pytest.raises(StoreError, match=r"run 'done' is completed .* not running"):
        bf.drain("done", store=store)
    assert bf.drain() == []  # nothing going on: nothing asked


# -- from another process, and on SIGTERM ----------------------------------------------------


def command(*args, log, stderr=subprocess.PIPE):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DRAIN_LOG": str(log)}
    return subprocess.Popen(
        [sys.executable, "-m", "braidflow", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def lines(log, kind):
    if not log.exists():
        return Counter()
    words = (line.split() for line in log.read_text().splitlines())
    return Counter(word[1] for word in words if word[0] == kind)


def wait_for(log, kind, count, process):
    deadline = time.monotonic() + 60
    while sum(lines(log, kind).values()) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
def test_sigterm_drains_a_10000_item_batch_and_resume_does_each_item_once(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "items.log"
    target = f"{JOBS / 'drain_job.py'}:batch"
    job = command("run", target, "--store", str(store), "--run-id", "job", log=log)
    wait_for(log, "end", 500, job)
    job.send_signal(signal.SIGTERM)
    # The grace period is 30 s; items take 5 ms: it ends well within it, plus a second.
    _out, err = job.communicate(timeout=31)
    assert job.returncode == 75, err
    assert "SIGTERM: draining run 'job'" in err
    assert "was drained at" in err
    assert f"braidflow resume job --store {store}" in err
    with SQLiteStore(store) as opened:
        assert opened.get("job").status == "drained"
    before = lines(log, "end")
    assert lines(log, "start") == before  # every item begun had finished
    resumed = command("resume", "job", "--store", str(store), log=log)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert '"total": 49995000' in out
    ended = lines(log, "end")
    assert set(ended) == {str(unit) for unit in range(10_000)}
    assert max(ended.values()) == 1  # none done twice: none of those before ran again


@pytest.mark.slow
def test_sigterm_past_the_grace_period_stops_what_runs_and_resume_redoes_only_that(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "items.log"
    target = f"{JOBS / 'drain_job.py'}:stuck"
    job = command(
        "run", target, "--store", str(store), "--run-id", "job", "--drain-timeout", "0.5", log=log
    )
    wait_for(log, "start", 30, job)  # items from 20 on never end
    job.send_signal(signal.SIGTERM)
    _out, err = job.communicate(timeout=10)
    assert job.returncode == 75, err
    with SQLiteStore(store) as opened:
        assert opened.get("job").status == "drained"
    assert set(lines(log, "end")) == {str(unit) for unit in range(20)}


def test_a_second_sigterm_stops_at_once(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "items.log"
    target = f"{JOBS / 'drain_job.py'}:stuck"
    said = tmp_path / "stderr.txt"
    with said.open("w") as stderr:
        job = command(
            "run", target, "--store", str(store), "--run-id", "job", log=log, stderr=stderr
        )
        wait_for(log, "start", 30, job)
        job.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "SIGTERM: draining" not in said.read_text():  # the first is handled: 30 s of grace
            assert time.monotonic() < deadline
            time.sleep(0.01)
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=10)
    assert job.returncode == 75, said.read_text()
    assert "SIGTERM again: stopping what still runs now" in said.read_text()


SIGTERM_AS_OUTPUT_IS_MADE = """
import os
import signal

import braidflow as bf
from braidflow.cli import _running

shown_json = _running.shown_json


def sigterm_then_shown(shared):  # the run completed; its output is being made
    os.kill(os.getpid(), signal.SIGTERM)
    return shown_json(shared)


_running.shown_json = sigterm_then_shown


class Done(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["done"] = True


flow = Done(name="done")
"""


@pytest.mark.slow
def test_a_sigterm_once_the_run_completed_lets_the_command_print_its_output(tmp_path):
    # It killed the command (the output lost), or said "stopped" (exit 130)
    # of a run stored as completed.
    target = tmp_path / "done.py"
    target.write_text(SIGTERM_AS_OUTPUT_IS_MADE)
    store = tmp_path / "runs.db"
    job = command("run", f"{target}:flow", "--store", str(store), log=tmp_path / "unused")
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    assert '"done": true' in out
    with SQLiteStore(store) as opened:
        assert [record.status for record in opened.runs()] == ["completed"]


@pytest.mark.slow
def test_a_run_in_another_process_drains_when_asked_through_the_store(tmp_path):
    store, log = tmp_path / "runs.db", tmp_path / "items.log"
    target = f"{JOBS / 'drain_job.py'}:batch"
    job = command("run", target, "--store", str(store), "--run-id", "job", log=log)
    wait_for(log, "end", 200, job)
    with SQLiteStore(store) as opened:
        assert bf.drain("job", store=opened, timeout=10) == ["job"]
    _out, err = job.communicate(timeout=30)
    assert job.returncode == 75, err
    with SQLiteStore(store) as opened:
        record = opened.get("job")
        assert record.status == "drained"
        assert "braidflow.drain" not in record.metadata  # the request is done with


def drain_through_the_store_when(started, path, timeout):
    """From another thread, as another process would (its own store object):
    once ``started`` is set, ask run "run" to drain through the store."""
    asked = []

    def ask():
        if started.wait(30):
            with SQLiteStore(path) as other:
                asked.append(bf.drain("run", store=other, timeout=timeout))

    thread = threading.Thread(target=ask)
    thread.start()
    return thread, asked


def threads_since(before):
    """The threads started since ``before`` that still run, but a store's
    lease heartbeat (the store's own, until it is closed). The drain watcher
    of sync runs ends at its first look that finds no run: waited for."""
    while _drain._watcher is not None:
        time.sleep(0.001)
    return [
        thread
        for thread in set(threading.enumerate()) - before
        if not thread.name.startswith("braidflow lease of")
    ]


class StuckItems(bf.AsyncParallelBatchNode):
    """4 items, 2 at a time: 0 and 1 finish; then 2 and 3 (while ``stuck``)
    wait for what never comes, so no worker reaches a safe point again."""

    def __init__(self, calls, stuck=False):
        super().__init__(name="items", max_concurrency=2)
        self.calls, self.stuck = calls, stuck
        self.started, self.waiting, self.cancelled = threading.Event(), set(), []

    async def prep_async(self, shared):
        return [0, 1, 2, 3]

    async def exec_async(self, item):
        self.calls[item] += 1
        if self.stuck and item >= 2:
            self.waiting.add(item)
            if self.waiting == {2, 3}:
                self.started.set()
            try:  # never set: only the drain's cancellation ends this (or, unfixed, 30 s)
                await asyncio.wait_for(asyncio.Event().wait(), 30)
            except asyncio.CancelledError:
                self.cancelled.append(item)
                raise
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["items"] = exec_res


def test_a_drain_asked_through_the_store_is_seen_while_every_worker_is_in_a_long_item(
    tmp_path, monkeypatch
):
    """No safe point comes while both workers wait: the run's watch (a timer
    on its loop) sees the request, the grace period starts and, past it, the
    items still running are cancelled; they run again on resume, once."""
    monkeypatch.setattr(Drain, "POLL", 0.01)
    path, calls = tmp_path / "runs.db", Counter()
    stuck = StuckItems(calls, stuck=True)
    asking, asked = drain_through_the_store_when(stuck.started, path, 0.05)

    async def main():
        with SQLiteStore(path) as store:
            with pytest.raises(Drained):
                await bf.AsyncFlow(start=stuck).run_async({}, store=store, run_id="run")
            assert not other_tasks()  # the watch and the cancelled items left nothing

    asyncio.run(main())
    asking.join()
    assert asked == [["run"]]
    assert sorted(stuck.cancelled) == [2, 3]  # stopped past the grace period
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1}
    with SQLiteStore(path) as store:
        record = store.get("run")
        assert record.status == "drained"
        assert DRAIN_KEY not in record.metadata  # the request is done with
        shared = bf.AsyncFlow(start=StuckItems(calls)).resume("run", store=store)
    assert shared["items"] == [0, 1, 2, 3]
    assert calls == {0: 1, 1: 1, 2: 2, 3: 2}  # those that finished are kept; the rest, once


def test_a_sync_run_on_the_main_thread_sees_a_drain_through_the_store_inside_a_step(
    tmp_path, monkeypatch
):
    """A sync run reaches no safe point inside a long step: the watcher
    thread sees the request; past the grace period, the step is stopped; the
    thread ends once no run is going on."""
    assert threading.current_thread() is threading.main_thread()
    monkeypatch.setattr(Drain, "POLL", 0.01)
    path, seen, stopped = tmp_path / "runs.db", [], []
    started = threading.Event()

    class Long(bf.BatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            seen.append(item)
            if item == 1 and seen.count(1) == 1:
                started.set()
                try:  # 10 s at most: the drain stops it long before (unfixed, it ends)
                    for _ in range(1000):
                        time.sleep(0.01)
                except KeyboardInterrupt:
                    stopped.append(item)
                    raise
            return item

        def post(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    before = set(threading.enumerate())
    asking, asked = drain_through_the_store_when(started, path, 0.05)
    flow = bf.Flow(start=Long(name="long"))
    with SQLiteStore(path) as store:
        with pytest.raises(Drained):
            flow.run({}, store=store, run_id="run")
        asking.join()
        assert asked == [["run"]]
        assert stopped == [1]
        assert store.get("run").status == "drained"
        assert not threads_since(before)  # no watch, no grace timer outlived the run
        assert flow.resume("run", store=store)["items"] == [0, 1, 2]
    assert seen == [0, 1, 1, 2]  # item 1, stopped, ran again; item 0 did not
    assert not threads_since(before)


def test_a_sync_run_past_its_grace_period_is_stopped_and_ends_drained():
    import time as clock

    store, seen = bf.MemoryStore(), []

    class Slow(bf.BatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            seen.append(item)
            if item == 1 and len(seen) == 2:
                bf.drain("run", timeout=0)  # no grace: this item is stopped where it is
                for _ in range(3000):  # 30 s at most; the drain stops it long before
                    clock.sleep(0.01)
            return item

        def post(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    flow = bf.Flow(start=Slow(name="slow"))
    with pytest.raises(Drained):
        flow.run({}, store=store, run_id="run")
    assert store.get("run").status == "drained"
    assert flow.resume("run", store=store)["items"] == [0, 1, 2]
    assert seen == [0, 1, 1, 2]  # item 1, stopped, ran again; item 0 did not


@pytest.mark.parametrize("sigint", ["handled", "ignored"])
def test_a_sync_run_blocked_in_a_call_is_stopped_there_at_the_end_of_its_grace(sigint):
    # A read of a pipe nobody writes to: only a real signal ends it (a safety
    # thread writes after 20 s, so that an unfixed run cannot hang the tests).
    # A job started with `&` by a script has SIGINT ignored, where Python's
    # interrupt of the main thread does nothing: the drain gives SIGINT a
    # handler for the run (ignoring any SIGINT but its own), and puts back
    # what was there when the run ends.
    assert threading.current_thread() is threading.main_thread()
    reading, writing = os.pipe()
    store, seen, wrote = bf.MemoryStore(), [], []
    safety = threading.Timer(20, lambda: (wrote.append(True), os.write(writing, b"x")))
    ignored = sigint == "ignored"

    class Blocked(bf.BatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            seen.append(item)
            if item == 0 and ignored:
                signal.raise_signal(signal.SIGINT)  # someone else's: ignored, as before
            if item == 1 and len(seen) == 2:
                bf.drain("run", timeout=0.01)
                os.read(reading, 1)  # the grace ends in the read
            return item

        def post(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignored else None
    flow = bf.Flow(start=Blocked(name="blocked"))
    events = []
    safety.start()
    try:
        with pytest.raises(Drained):
            flow.run({}, store=store, run_id="run", observers=[events.append])
        if ignored:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # put back
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
        safety.cancel()
        os.close(reading)
        os.close(writing)
    assert wrote == []  # stopped in the read, not once it could end
    # Its events say drained (as an async run's do), not stopped by Ctrl-C.
    assert [type(event.error).__name__ for event in events if event.kind == "run_end"] == [
        "DrainStop"
    ]
    assert flow.resume("run", store=store)["items"] == [0, 1, 2]
    assert seen == [0, 1, 1, 2]


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_in_a_durable_run_has_no_run_to_drain_and_sigint_as_it_was():
    # A sync durable run on the main thread, SIGINT ignored, gives SIGINT the
    # drain's handler while it goes on; a child forked in its node runs none
    # of the parent's runs: drain() there finds none, and SIGINT is as before.
    assert threading.current_thread() is threading.main_thread()
    fork = multiprocessing.get_context("fork")
    reports, report = fork.Pipe(duplex=False)

    def child():
        report.send((bf.drain(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN))

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    shared = {}
    try:
        bf.Flow(start=forking_node(child)).run(shared, store=bf.MemoryStore(), run_id="run")
    finally:
        signal.signal(signal.SIGINT, before)
    assert shared["exitcode"] == 0
    assert reports.poll(0)
    assert reports.recv() == ([], True)


def test_a_sync_parallel_batch_with_sigint_ignored_is_stopped_at_the_end_of_its_grace():
    # The items run in braidflow's threads while its loop runs on the main
    # thread, where a handler of braidflow's stands in for the drain's own
    # (which ignores every SIGINT but the drain's): the drain's still stops the run.
    assert threading.current_thread() is threading.main_thread()
    store, seen, stopped = bf.MemoryStore(), [], []

    class Items(bf.ParallelBatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            seen.append(item)
            if item == 1 and len(seen) == 2:
                bf.drain("run", timeout=0.01)
                for _ in range(2000):  # 20 s at most; the end of the grace stops it long before
                    if stop_requested():
                        stopped.append(item)
                        break
                    time.sleep(0.01)
            return item

        def post(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    flow = bf.Flow(start=Items(name="items", max_concurrency=1))
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(Drained):
            flow.run({}, store=store, run_id="run")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert stopped == [1]  # by the end of the grace, not by the item's own end
    assert flow.resume("run", store=store)["items"] == [0, 1, 2]


class Unbounded(bf.AsyncParallelBatchNode):
    """10 items, no bound (a task each); item 5 asks the run to drain, and the
    items that began wait for ``release`` (``None``: they do not wait)."""

    def __init__(self, calls, finished, release=None):
        super().__init__(name="items")
        self.calls, self.finished, self.release = calls, finished, release

    async def prep_async(self, shared):
        return list(range(10))

    async def exec_async(self, item):
        self.calls[item] += 1
        if self.release is not None:
            if item == 5:
                bf.drain("run")
            await self.release.wait()
        self.finished[item] += 1
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["total"] = sum(exec_res)


async def test_an_unbounded_batch_lets_the_items_running_at_a_drain_finish():
    store, calls, finished, release = bf.MemoryStore(), Counter(), Counter(), asyncio.Event()
    flow = bf.AsyncFlow(start=Unbounded(calls, finished, release))
    run = asyncio.create_task(flow.run_async({}, store=store, run_id="run"))
    while len(calls) < 6:  # items 0 to 5 began; 6 to 9 found the run draining
        await asyncio.sleep(0)
    release.set()
    with pytest.raises(Drained):
        await run
    assert finished == dict.fromkeys(range(6), 1)  # none cancelled: each finished
    shared = await bf.AsyncFlow(start=Unbounded(calls, finished)).resume_async("run", store=store)
    assert shared["total"] == sum(range(10))
    assert calls == dict.fromkeys(range(10), 1)  # each item exactly once


async def test_items_waiting_for_a_limiter_when_the_run_drains_do_not_begin():
    # No max_concurrency: every item's task began, two hold the limiter's
    # slots and the rest wait for them when the run is asked to drain.
    store, calls, release = bf.MemoryStore(), Counter(), asyncio.Event()
    api = bf.Limiter(2, name="api")

    class Limited(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(10))

        async def exec_async(self, item):
            calls[item] += 1
            await release.wait()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["total"] = sum(exec_res)

    flow = bf.AsyncFlow(start=Limited(name="items", limits=[api]))
    run = asyncio.create_task(flow.run_async({}, store=store, run_id="run"))
    while api.statistics().waiting < 8:
        await asyncio.sleep(0)
    bf.drain("run")
    release.set()
    with pytest.raises(Drained):
        await run
    assert calls == {0: 1, 1: 1}  # the items that waited did not begin
    statistics = api.statistics()
    assert (statistics.in_flight, statistics.waiting) == (0, 0)
    shared = await flow.resume_async("run", store=store)
    assert shared["total"] == sum(range(10))
    assert calls == dict.fromkeys(range(10), 1)


# -- waits for a limiter's slot when the run drains ----------------------------------------

QUEUED = 4  # items that wait at once (the rate window's room, for the test to fill)


def queued_flow(kind, limiter, calls):
    """A flow whose exec attempts wait for ``limiter``, and how many wait at
    once: a batch's items (async; a sync parallel batch's, on its private
    loop; parameter sets whose sync step, a ``_run`` of its own, waits in
    braidflow's threads; a sync batch's, in turn on this thread) or a step's
    (async; sync on this thread)."""
    if kind in ("async items", "sync parallel items", "sync items"):
        if kind == "async items":

            class Items(bf.AsyncParallelBatchNode):
                async def prep_async(self, shared):
                    return list(range(QUEUED))

                async def exec_async(self, item):
                    calls[item] += 1

            return bf.AsyncFlow(start=Items(name="items", limits=[limiter])), QUEUED

        class SyncItems(bf.ParallelBatchNode if kind == "sync parallel items" else bf.BatchNode):
            def prep(self, shared):
                return list(range(QUEUED))

            def exec(self, item):
                calls[item] += 1

        at_once = QUEUED if kind == "sync parallel items" else 1
        return bf.Flow(start=SyncItems(name="items", limits=[limiter])), at_once
    if kind == "parameter sets in threads":

        class Call(bf.Node):
            def exec(self, prep_res):
                calls[self.params["item"]] += 1

            def _run(self, shared):  # its own: the whole step runs in a thread
                return super()._run(shared)

        class Sets(bf.AsyncParallelBatchFlow):
            async def prep_async(self, shared):
                return [{"item": item} for item in range(QUEUED)]

        return bf.AsyncFlow(start=Sets(start=Call(name="call", limits=[limiter]))), QUEUED
    if kind == "async step":

        class AsyncStep(bf.AsyncNode):
            async def exec_async(self, prep_res):
                calls[0] += 1

        return bf.AsyncFlow(start=AsyncStep(name="step", limits=[limiter])), 1

    class Step(bf.Node):
        def exec(self, prep_res):
            calls[0] += 1

    return bf.Flow(start=Step(name="step", limits=[limiter])), 1


def drain_once_queued(flow, store, waiting, unblock):
    """Run ``flow`` here; from another thread, drain it once ``waiting()`` says
    its attempts wait for a limiter. Fails if the drain waited for them: the
    run was still going on a while later (then ``unblock()`` ends their wait,
    and a second drain what still runs, so that the run ends)."""
    ended, late = threading.Event(), []

    def drain_them():
        for _ in range(10_000):
            if waiting():
                break
            time.sleep(0.001)
        bf.drain("run")
        if not ended.wait(10):
            late.append(True)
            unblock()  # (a thread's wait cannot be cancelled)
            bf.drain("run")

    helper = threading.Thread(target=drain_them)
    helper.start()
    try:
        with pytest.raises(Drained):
            flow.run({}, store=store, run_id="run")
    finally:
        ended.set()
        helper.join()
    assert not late, "the drain waited for the attempts queued for a limiter"


@pytest.mark.parametrize(
    "kind",
    [
        "async items",
        "sync parallel items",
        "parameter sets in threads",
        "sync items",
        "async step",
        "sync step",
    ],
)
def test_attempts_waiting_for_a_limiter_stop_at_once_when_the_run_drains(kind):
    # The rate window is full (the test took its room), and its clock does not
    # move: the attempts wait until the drain ends their wait. They have not
    # begun: they take no slot, no unit of the rate, and run on resume.
    store, calls, clock = bf.MemoryStore(), Counter(), VirtualClock()
    api = bf.Limiter(rate=QUEUED, per=60, name="api", clock=clock)
    for _ in range(QUEUED):
        assert api.try_acquire()
        api.release()
    flow, at_once = queued_flow(kind, api, calls)

    def unblock():
        clock.advance(60)

    drain_once_queued(flow, store, lambda: api.statistics().waiting == at_once, unblock)
    assert calls == {}
    statistics = api.statistics()
    assert (statistics.acquired, statistics.in_window) == (QUEUED, QUEUED)  # the test's alone
    assert (statistics.in_flight, statistics.waiting) == (0, 0)
    clock.advance(60)
    flow.resume("run", store=store)
    ran = len(calls)
    assert calls == dict.fromkeys(range(ran), 1)  # each item (or the step) exactly once
    assert ran == (1 if kind.endswith("step") else QUEUED)
    assert api.statistics().acquired == QUEUED + ran


@pytest.mark.parametrize("kind", ["async step", "sync step"])
def test_a_wait_for_a_shared_limiter_s_slot_ends_when_the_run_drains(tmp_path, kind):
    # Its slot is held by another process (another store's limiter of the same
    # name): the attempt waits asking the database, and stops there at the drain.
    store, other = SQLiteStore(tmp_path / "runs.db"), SQLiteStore(tmp_path / "runs.db")
    try:
        api = store.limiter("api", max_concurrent=1)
        theirs = other.limiter("api", max_concurrent=1)
        calls = Counter()
        flow, _ = queued_flow(kind, api, calls)
        theirs.acquire_blocking()
        drain_once_queued(flow, store, lambda: api._poller is not None, theirs.release)
        assert calls == {}
        assert (api.statistics().in_flight, theirs.held_everywhere()) == (0, 1)
        theirs.release()
        flow.resume("run", store=store)
        assert calls == {0: 1}
        assert api.held_everywhere() == 0
    finally:
        store.close()
        other.close()


# -- what the events say of what a drain stopped -------------------------------------------


class Held:
    """Holds each item or step that starts in flight until the drain stops it:
    the ``drain_at``-th to start asks the run to drain with no grace, so what
    runs is stopped past the grace period: an async one by the drain's
    cancel, a sync one on the main thread by its Ctrl-C. One in a thread
    cannot be stopped: it returns once its caller was stopped."""

    def __init__(self, drain_at):
        self.drain_at, self.started = drain_at, 0
        self.lock = threading.Lock()

    def began(self):
        with self.lock:
            self.started += 1
            if self.started == self.drain_at:
                bf.drain("run", timeout=0)

    async def hold_async(self):
        self.began()
        await asyncio.Event().wait()  # never set: only the drain's cancel ends it

    def hold(self):
        self.began()
        for _ in range(30000):  # 30 s at most; the drain stops it long before
            if stop_requested():  # in a thread: its caller was stopped
                return
            time.sleep(0.001)


def held_shapes(held):
    """Each shape of step whose items, parameter sets or branches ``held``
    holds, by name: ``(step, how many start, the flow to run it in)``."""

    class Items(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            await held.hold_async()

    class OneByOne(bf.AsyncBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            await held.hold_async()

    class Step(bf.AsyncNode):
        async def exec_async(self, prep_res):
            await held.hold_async()

    class Sets(bf.AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 0}, {"n": 1}, {"n": 2}]

    class SetsOneByOne(bf.AsyncBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 0}, {"n": 1}]

    class SyncItems(bf.BatchNode):
        def prep(self, shared):
            return [0, 1]

        def exec(self, item):
            held.hold()

    class ThreadItems(bf.ParallelBatchNode):
        def prep(self, shared):
            return [0, 1]

        def exec(self, item):
            held.hold()

    class SyncStep(bf.Node):
        def exec(self, prep_res):
            held.hold()

    class SyncSets(bf.BatchFlow):
        def prep(self, shared):
            return [{"n": 0}, {"n": 1}]

    run, run_async = bf.Flow, bf.AsyncFlow
    return {
        "AsyncParallelBatchNode": (Items(name="b", max_concurrency=2), 2, run_async),
        "AsyncParallelBatchNode unbounded": (Items(name="b"), 3, run_async),
        "AsyncBatchNode": (OneByOne(name="b"), 1, run_async),
        "AsyncParallelBatchFlow": (
            Sets(start=Step(name="s"), name="b", max_concurrency=2),
            2,
            run_async,
        ),
        "AsyncBatchFlow": (SetsOneByOne(start=Step(name="s"), name="b"), 1, run_async),
        "Parallel": (bf.Parallel(Step(name="x"), Step(name="y"), name="b"), 2, run_async),
        "BatchNode": (SyncItems(name="b"), 1, run),
        "ParallelBatchNode": (ThreadItems(name="b"), 2, run),
        "BatchFlow": (SyncSets(start=SyncStep(name="s"), name="b"), 1, run),
        "sync Parallel": (bf.Parallel(SyncStep(name="x"), SyncStep(name="y"), name="b"), 2, run),
    }


SHAPES = list(held_shapes(Held(1)))


@pytest.mark.parametrize("shape", SHAPES)
def test_what_a_drain_stops_past_its_grace_period_says_drained_in_every_end_event(shape):
    """The step, each item or parameter set, each branch and the steps in
    them say drained, as the flow and the run do: not cancelled (an async
    run's cancel), nor stopped by Ctrl-C (a sync run's)."""
    held = Held(0)
    step, held.drain_at, flow_class = held_shapes(held)[shape]
    flow = flow_class(start=step, name="flow")
    events = []
    with pytest.raises(Drained):
        flow.run({}, store=bf.MemoryStore(), run_id="run", observers=[events.append])
    ends = [event for event in events if event.kind.endswith("_end")]
    said = {(event.kind, event.path, event.item): stop_of(event.error) for event in ends}
    assert said[("node_end", ("flow", "b"), None)] == "drained"  # the step itself
    assert said[("run_end", ("flow",), None)] == "drained"
    assert held.started == held.drain_at  # all of them were held when the drain stopped them
    if shape == "ParallelBatchNode":  # its items returned in their threads: finished, recorded
        assert [said.pop(("item_end", ("flow", "b"), index)) for index in (0, 1)] == [None, None]
    assert set(said.values()) == {"drained"}, said
    assert not any(event.kind == "error" for event in events)  # a stop is no failure


async def test_a_real_cancel_during_a_drain_s_grace_period_still_says_cancelled():
    """Only the end of the grace period stops what runs on the drain's behalf:
    a task cancelled before it (or a Ctrl-C) was cancelled, and says so."""
    held, events = Held(0), []  # (none of them asks the run to drain)
    step = held_shapes(held)["AsyncParallelBatchNode"][0]
    flow = bf.AsyncFlow(start=step, name="flow")
    run = asyncio.create_task(
        flow.run_async({}, store=bf.MemoryStore(), run_id="run", observers=[events.append])
    )
    while held.started < 2:
        await asyncio.sleep(0)
    bf.drain("run", timeout=3600)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    said = {stop_of(event.error) for event in events if event.kind.endswith("_end")}
    assert said == {"cancelled"}


def test_a_ctrl_c_in_a_durable_batch_item_says_cancelled():
    class CtrlC(bf.BatchNode):
        def prep(self, shared):
            return [0, 1]

        def exec(self, item):
            raise KeyboardInterrupt

    events = []
    with pytest.raises(KeyboardInterrupt):
        bf.Flow(start=CtrlC(name="b"), name="flow").run(
            {}, store=bf.MemoryStore(), run_id="run", observers=[events.append]
        )
    said = {stop_of(event.error) for event in events if event.kind.endswith("_end")}
    assert said == {"cancelled"}


# -- a drain as the run ends ---------------------------------------------------------------


class AsksToDrain(bf.Node):
    def exec(self, prep_res):
        bf.drain("run", timeout=3600)


def ends_the_grace_at_run_end(also_asks):
    """An observer that, as the run ends, ends the drain's grace period
    (asking again: what still runs is stopped at once), having asked first
    if ``also_asks``: a drain asked after the run's last safe point."""

    def observer(event):
        if event.kind == "run_end":
            if also_asks:
                bf.drain("run", timeout=3600)
            bf.drain("run")

    return observer


@pytest.mark.parametrize("sigint", ["handled", "ignored"])
@pytest.mark.parametrize("asked", ["in a step", "as the run ends"])
def test_the_end_of_a_drain_s_grace_period_stops_nothing_once_the_run_is_ending(sigint, asked):
    # A sync run's grace period ends with a SIGINT: sent as the run ended
    # (its events, its store), it stopped its end, the run left running in
    # this process; the command said "stopped" (130), not drained (75).
    first = AsksToDrain(name="first") if asked == "in a step" else bf.Node(name="first")
    first >> bf.Node(name="second")
    flow, store = bf.Flow(start=first), bf.MemoryStore()
    observer = ends_the_grace_at_run_end(also_asks=asked == "as the run ends")
    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if sigint == "ignored" else None
    try:
        if asked == "in a step":
            with pytest.raises(Drained):
                flow.run({}, store=store, run_id="run", observers=[observer])
        else:  # it drained nothing: the run completed
            flow.run({}, store=store, run_id="run", observers=[observer])
    except KeyboardInterrupt:  # (raised as such, it would end the test session)
        pytest.fail("the drain's SIGINT stopped the end of the run")
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)
    if asked == "in a step":
        assert store.get("run").status == "drained"
        assert flow.resume("run", store=store) == {}
    assert store.get("run").status == "completed"


@pytest.mark.parametrize("asked", ["in a step", "as the run ends"])
async def test_the_end_of_a_drain_s_grace_period_cancels_no_caller_once_the_run_is_ending(
    asked,
):
    # An async run's grace period ends by cancelling its task: once the run
    # is ending, that is its caller's, which the cancel hit after the run.
    first = AsksToDrain(name="first") if asked == "in a step" else bf.Node(name="first")
    first >> bf.Node(name="second")
    flow, store = bf.AsyncFlow(start=first), bf.MemoryStore()
    observer = ends_the_grace_at_run_end(also_asks=asked == "as the run ends")
    if asked == "in a step":
        with pytest.raises(Drained):
            await flow.run_async({}, store=store, run_id="run", observers=[observer])
    else:
        await flow.run_async({}, store=store, run_id="run", observers=[observer])
    await asyncio.sleep(0)  # where a cancel sent as the run ended lands
    assert store.get("run").status == ("drained" if asked == "in a step" else "completed")


@pytest.mark.parametrize("asked", ["in a step", "as the run ends"])
def test_a_drain_s_sigint_sent_just_before_the_run_ends_stops_nothing(monkeypatch, asked):
    end = Drain.end

    def expire_then_end(drain):  # the grace period ended just before the run's end began
        drain.ask(3600)
        drain.expire()
        end(drain)

    monkeypatch.setattr(Drain, "end", expire_then_end)
    first = AsksToDrain(name="first") if asked == "in a step" else bf.Node(name="first")
    first >> bf.Node(name="second")
    store = bf.MemoryStore()
    try:
        if asked == "in a step":
            with pytest.raises(Drained):
                bf.Flow(start=first).run({}, store=store, run_id="run")
        else:  # it stopped nothing: the run completed
            bf.Flow(start=first).run({}, store=store, run_id="run")
    except KeyboardInterrupt:  # (raised as such, it would end the test session)
        pytest.fail("the drain's SIGINT stopped the end of the run")
    assert store.get("run").status == ("drained" if asked == "in a step" else "completed")
