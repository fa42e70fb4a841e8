"""Durability modes: what each costs on the run's path is measured in bench/;
what each keeps through a crash is tested here, with SIGKILL.

``sync``: every step and item finished before the kill is kept; ``async``:
the store always holds a prefix of the run, so it resumes to the same end
however often it is killed; ``exit``: a kill loses the run's progress, and
anything else that stops it (an end, a failure, a question) writes it all.
"""

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import braidflow as bf
from braidflow import InvalidParameterError, SQLiteStore

JOB = Path(__file__).parent / "jobs" / "modes_job.py"


def start(durability, store, log, mode):
    return subprocess.Popen(
        [sys.executable, str(JOB), durability, str(store), str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def lines(log):
    return log.read_text().splitlines() if log.exists() else []


def finish(process):
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()


def started(log):
    return Counter(line.removeprefix("start ") for line in lines(log) if line.startswith("start "))


def kill_after(job, log, count):
    """SIGKILL the job once it has started ``count`` steps and items."""
    deadline = time.monotonic() + 60
    while sum(started(log).values()) < count:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """The final ``shared`` of the job, never interrupted."""
    where = tmp_path_factory.mktemp("reference")
    finish(start("sync", where / "reference.db", where / "reference.log", "run"))
    return [line for line in lines(where / "reference.log") if line.startswith("result ")]


@pytest.mark.slow
def test_sync_keeps_every_step_and_item_finished_before_a_kill(tmp_path, expected):
    store, log = tmp_path / "job.db", tmp_path / "job.log"
    kill_after(start("sync", store, log, "run"), log, 300)  # 200 steps, then items
    before = started(log)
    finish(start("sync", store, log, "resume"))
    assert [line for line in lines(log) if line.startswith("result ")] == expected
    after = started(log)
    assert len(after) == 400  # nothing missing
    again = [unit for unit, count in after.items() if count > 1]
    assert not [unit for unit in again if unit.startswith("step")]  # steps: none redone
    assert len(again) <= 20, again  # items: only those in flight
    assert set(before) <= set(after)


@pytest.mark.slow
def test_exit_loses_the_progress_of_a_killed_run_and_resume_does_it_all_again(tmp_path, expected):
    store, log = tmp_path / "job.db", tmp_path / "job.log"
    kill_after(start("exit", store, log, "run"), log, 150)
    before = started(log)
    with SQLiteStore(store) as opened:  # the run is known, its steps are not
        assert opened.get("job").status == "interrupted"
        steps = bf.AsyncFlow().history("job", store=opened)
        assert not [step for step in steps if step.status == "finished"]
    finish(start("exit", store, log, "resume"))
    assert [line for line in lines(log) if line.startswith("result ")] == expected
    after = started(log)
    assert all(after[unit] == 2 for unit in before)  # everything before the kill, again


@pytest.mark.slow
def test_async_killed_at_random_moments_always_resumes_to_the_same_end(tmp_path, expected):
    store, log = tmp_path / "job.db", tmp_path / "job.log"
    chance = random.Random(2107)
    mode, kills = "run", 0
    for _attempt in range(8):
        begun = sum(started(log).values())
        job = start("async", store, log, mode)
        while sum(started(log).values()) == begun and job.poll() is None:
            time.sleep(0.002)  # until it works (a kill before is no test)
        time.sleep(chance.uniform(0.0, 0.06))  # then a random moment, wherever the run is
        if job.poll() is not None:
            finish(job)
            break
        os.kill(job.pid, signal.SIGKILL)
        kills += 1
        _out, err = job.communicate(timeout=30)
        if mode == "resume":  # a resume that had not claimed the run yet is no harm
            assert b"Traceback" not in err or b"KeyboardInterrupt" in err, err.decode()
        if not store.exists():
            continue  # killed before its store was made
        with SQLiteStore(store) as opened:  # never a store a resume cannot read
            if "job" in {run.run_id for run in opened.runs()}:
                mode = "resume"
                bf.AsyncFlow().history("job", store=opened)
    else:
        finish(start("async", store, log, mode))
    if not any(line.startswith("result ") for line in lines(log)):
        finish(start("async", store, log, mode))
    assert [line for line in lines(log) if line.startswith("result ")] == expected
    assert len(started(log)) == 400  # nothing missing
    assert kills >= 2, kills  # it was killed mid-run, more than once


@pytest.mark.slow
def test_async_keeps_most_of_a_killed_run(tmp_path, expected):
    store, log = tmp_path / "job.db", tmp_path / "job.log"
    kill_after(start("async", store, log, "run"), log, 300)  # all 200 steps began
    with SQLiteStore(store) as opened:
        steps = bf.AsyncFlow().history("job", store=opened)
        kept = [step for step in steps if step.status == "finished"]
        where = opened.get("job").node  # from its last row: the killed run did not say
    # Written every few milliseconds: the kill lost at most the last few.
    assert len(kept) >= 150, len(kept)
    assert where in {f"AsyncFlow/step {n}" for n in range(200)} | {"AsyncFlow/squares"}, where
    finish(start("async", store, log, "resume"))
    assert [line for line in lines(log) if line.startswith("result ")] == expected


# -- in this process ---------------------------------------------------------------------


class Count(bf.Node):
    """Adds its number to shared["total"]; fails when shared["fail"] names it,
    asks when shared["ask"] does; ``seen`` is called after its step."""

    def __init__(self, number, calls, seen=None, **options):
        super().__init__(name=f"n{number}", **options)
        self.number, self.calls, self.seen = number, calls, seen

    def prep(self, shared):
        if shared.get("ask") == self.number:
            shared["answer"] = bf.interrupt(f"a number for n{self.number}?")
        if shared.get("fail") == self.number:
            raise RuntimeError(f"n{self.number} fails")

    def exec(self, prep_res):
        self.calls[self.number] += 1

    def post(self, shared, prep_res, exec_res):
        shared["total"] += self.number


class Look(bf.Node):
    """Calls ``look()`` in its exec: what the store holds at that point."""

    def __init__(self, look):
        super().__init__(name="look")
        self.look = look

    def exec(self, prep_res):
        self.look()


def chain(calls, *nodes):
    nodes = nodes or tuple(Count(number, calls) for number in range(5))
    for left, right in itertools.pairwise(nodes):
        left >> right
    return bf.Flow(start=nodes[0])


def finished(store, run_id="run"):
    steps = bf.Flow().history(run_id, store=store)
    return [step.node for step in steps if step.status == "finished"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_every_mode_ends_with_the_whole_run_in_the_store(durability):
    store, calls = bf.MemoryStore(), Counter()
    shared = {"total": 0}
    chain(calls).run(shared, store=store, run_id="run", durability=durability)
    assert shared["total"] == 10
    assert finished(store) == ["n0", "n1", "n2", "n3", "n4"]
    assert bf.Flow().state("run", store=store) == {"total": 10}
    assert store.get("run").status == "completed"


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_a_run_that_fails_writes_what_finished_and_resumes_after_it(durability):
    store, calls = bf.MemoryStore(), Counter()
    with pytest.raises(RuntimeError, match="n3 fails"):
        chain(calls).run({"total": 0, "fail": 3}, store=store, run_id="run", durability=durability)
    assert finished(store) == ["n0", "n1", "n2"]

    def fixed(shared):
        shared["fail"] = None

    shared = chain(calls).resume("run", store=store, migrate=fixed, durability=durability)
    assert shared["total"] == 10
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}  # nothing before the failure again


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_a_run_that_asks_writes_what_finished_and_the_answer_goes_on_from_there(durability):
    store, calls = bf.MemoryStore(), Counter()
    with pytest.raises(bf.Suspended):
        chain(calls).run({"total": 0, "ask": 2}, store=store, run_id="run", durability=durability)
    assert finished(store) == ["n0", "n1"]
    shared = chain(calls).resume("run", store=store, input=7, durability=durability)
    assert shared["answer"] == 7
    assert shared["total"] == 10
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_a_strict_node_is_in_the_store_with_everything_before_it_before_the_run_goes_on(
    durability,
):
    store, calls, looked = bf.MemoryStore(), Counter(), []
    nodes = (
        Count(0, calls),
        Count(1, calls, durability="sync"),  # e.g. it charged a card
        Look(lambda: looked.append(finished(store))),
    )
    chain(calls, *nodes).run({"total": 0}, store=store, run_id="run", durability=durability)
    assert looked == [["n0", "n1"]]


def test_without_a_strict_node_exit_writes_nothing_until_the_run_ends():
    store, calls, looked = bf.MemoryStore(), Counter(), []
    nodes = (Count(0, calls), Count(1, calls), Look(lambda: looked.append(finished(store))))
    chain(calls, *nodes).run({"total": 0}, store=store, run_id="run", durability="exit")
    assert looked == [[]]
    assert finished(store) == ["n0", "n1", "look"]


def test_a_strict_batch_node_in_an_exit_run_has_its_items_in_the_store_before_post():
    store, looked = bf.MemoryStore(), []

    class Items(bf.BatchNode):
        def prep(self, shared):
            return [1, 2, 3]

        def exec(self, item):
            return item * 10

        def post(self, shared, prep_res, exec_res):
            _record, _graph, _initial, rows = store.read("run")
            looked.append(sum(row.position for row in rows if row.kind == "items"))
            shared["items"] = exec_res

    flow = bf.Flow(start=Items(name="items", durability="sync"))
    shared = {}
    flow.run(shared, store=store, run_id="run", durability="exit")
    assert shared["items"] == [10, 20, 30]
    assert looked == [3]  # all three items, in rows written before post ran


def test_durability_is_checked_when_it_is_given():
    flow = bf.Flow(start=Count(0, Counter()))
    with pytest.raises(InvalidParameterError, match=r"durability='fast' must be 'sync'.*'exit'"):
        flow.run({"total": 0}, store=bf.MemoryStore(), durability="fast")
    with pytest.raises(InvalidParameterError, match=r"durability= are for\s+durable runs"):
        flow.run({"total": 0}, durability="async")
    with pytest.raises(InvalidParameterError, match=r"n1.*can only ask for durability='sync'"):
        Count(1, Counter(), durability="exit")
    with pytest.raises(InvalidParameterError, match="must be 'sync'"):
        flow.resume("x", store=bf.MemoryStore(), durability="later")


class Failing(bf.MemoryStore):
    """A store whose appends fail once ``broken`` is set."""

    broken = False

    def append(self, run_id, rows):
        if self.broken:
            raise bf.StoreError("the disk is gone")
        super().append(run_id, rows)


def test_an_async_run_whose_writes_fail_stops_with_the_error_and_resumes_from_what_was_written():
    store, calls = Failing(), Counter()

    class Break(bf.Node):
        def exec(self, prep_res):
            store.broken = True

    nodes = (Count(0, calls), Count(1, calls, durability="sync"), Break(name="break"))
    nodes += tuple(Count(number, calls) for number in range(2, 5))
    with pytest.raises(bf.StoreError, match="the disk is gone"):
        chain(calls, *nodes).run({"total": 0}, store=store, run_id="run", durability="async")
    kept = finished(store)
    assert kept[:2] == ["n0", "n1"]  # a prefix of the run, at least up to the strict node
    store.broken = False
    nodes = (Count(0, calls), Count(1, calls, durability="sync"), bf.Node(name="break"))
    nodes += tuple(Count(number, calls) for number in range(2, 5))
    shared = chain(calls, *nodes).resume("run", store=store, durability="async")
    assert shared["total"] == 10
    assert calls[0] == calls[1] == 1


def test_async_on_a_loop_writes_its_batch_when_due_though_nothing_else_is_written(monkeypatch):
    import asyncio

    from braidflow.durable import _writer

    monkeypatch.setattr(_writer, "PERIOD", 0.0)  # due at once: at the loop's next turn
    store, looked = bf.MemoryStore(), []

    class First(bf.AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["first"] = True

    class Waits(bf.AsyncNode):
        async def exec_async(self, prep_res):
            for _ in range(3):  # turns of the loop, no checkpoint written meanwhile
                await asyncio.sleep(0)
            looked.append(finished(store))

    first = First(name="first")
    first >> Waits(name="waits")
    bf.AsyncFlow(start=first).run({}, store=store, run_id="run", durability="async")
    assert looked == [["first"]]


@pytest.mark.parametrize("period", [0.0, 3600.0], ids=["due", "not due"])
def test_async_without_a_loop_writes_its_batch_at_the_first_step_after_it_is_due(
    monkeypatch, period
):
    # A sync run has no loop to call it back: a step that ends once the
    # batch is due writes it (and none before).
    from braidflow.durable import _writer

    monkeypatch.setattr(_writer, "PERIOD", period)
    store, calls, looked = bf.MemoryStore(), Counter(), []

    class Look(bf.Node):
        def exec(self, prep_res):
            looked.append(finished(store))

    flow = chain(calls, Count(0, calls), Count(1, calls), Look(name="look"))
    flow.run({"total": 0}, store=store, run_id="run", durability="async")
    assert looked == [["n0", "n1"] if period == 0.0 else []]
    assert finished(store) == ["n0", "n1", "look"]


class Busy:
    """A value whose saving writes ``shared``: it stands for a thread the step
    started that goes on writing while the step is recorded (forced here, at
    the one moment a thread could only hit by chance)."""

    def __init__(self, shared):
        self.shared = shared

    def __reduce__(self):
        for index in range(20):
            self.shared[f"late{index}"] = index
        return (int, (5,))


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_step_whose_keys_grow_while_it_is_recorded_is_recorded(durability):
    class Start(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["busy"] = Busy(shared)

    class Then(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["then"] = 1

    start = Start()
    start >> Then()
    store = bf.MemoryStore(serializer="pickle")
    bf.Flow(start=start).run({}, store=store, run_id="run", durability=durability)
    assert store.get("run").status == "completed"
    assert bf.Flow().state("run", store=store)["busy"] == 5


# -- a flow's own prep, run again when a run resumes inside the flow ------------------


class Fails:
    """Fails the first time it is asked to, then no more."""

    def __init__(self):
        self.armed = True

    def now(self):
        armed, self.armed = self.armed, False
        return armed


def counting_flow(failing):
    class Inner(bf.Flow):
        def prep(self, shared):
            shared["count"] = shared.get("count", 0) + 1  # the flow's own prep

    class Add(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["count"] += 10  # a step inside the flow touches the same key

    class Last(bf.Node):
        def exec(self, prep_res):
            if failing.now():
                raise RuntimeError("last fails once")

    add = Add(name="add")
    add >> Last(name="last")
    return bf.Flow(start=Inner(start=add, name="inner"), name="top")


def collecting_flow(failing):
    class EachDoc(bf.BatchFlow):
        def prep(self, shared):
            shared["results"] = []  # a fresh list, which the sets append to
            return [{"doc": doc} for doc in ("a", "b", "c")]

    class Summarize(bf.Node):
        def exec(self, prep_res):
            if self.params["doc"] == "b" and failing.now():
                raise RuntimeError("b fails once")
            return self.params["doc"].upper()

        def post(self, shared, prep_res, exec_res):
            shared["results"].append(exec_res)

    return bf.Flow(start=EachDoc(start=Summarize(name="sum"), name="each"), name="top")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize(
    ("make", "expected"),
    [(counting_flow, {"count": 11}), (collecting_flow, {"results": ["A", "B", "C"]})],
)
def test_a_flow_s_prep_run_again_on_resume_counts_once(make, expected, durability):
    # The steps that finished inside the flow recorded the keys they touched
    # with prep's first writes in them: prep's second run must not add to them.
    failing = Fails()
    store = bf.MemoryStore()
    with pytest.raises(RuntimeError, match="fails once"):
        make(failing).run({}, store=store, run_id="run", durability=durability)
    assert make(failing).resume("run", store=store) == expected


def test_a_fork_inside_a_flow_counts_its_prep_once():
    failing = Fails()
    failing.armed = False
    store = bf.MemoryStore()
    counting_flow(failing).run({}, store=store, run_id="run")
    assert counting_flow(failing).state("run", store=store, at=1) == {"count": 11}
    forked = counting_flow(failing).fork("run", store=store, at=1, run_id="again")
    assert forked == {"count": 11}


def reads(shared):
    """A flow's prep that returns a list held in shared."""
    return shared["doc"]["lines"]


def changes(shared):
    """One that changes that list and the dict around it, then returns the list."""
    doc = shared["doc"]
    doc["opened"] = doc.get("opened", 0) + 1
    doc["lines"].append("opened")
    return doc["lines"]


def holding_flow(prep, failing, fail_at, flow_kind):
    """A sub-flow whose ``prep`` returns a list of shared that its post
    appends to, in place; ``failing`` fails its step ``fail_at`` (1 or 2) once."""
    is_async = flow_kind == "async"
    base = bf.AsyncFlow if is_async else bf.Flow

    class Holds(base):
        def prep(self, shared):
            return prep(shared)

        def post(self, shared, prep_res, exec_res):
            prep_res.append("end")

    class Step(bf.Node):
        def __init__(self, number):
            super().__init__(name=f"step{number}")
            self.number = number

        def exec(self, prep_res):
            if self.number == fail_at and failing.now():
                raise RuntimeError("a step fails once")

        def post(self, shared, prep_res, exec_res):
            shared["steps"] = shared.get("steps", 0) + 1

    class AsyncStep(bf.AsyncNode, Step):
        async def exec_async(self, prep_res):
            Step.exec(self, prep_res)

        async def post_async(self, shared, prep_res, exec_res):
            Step.post(self, shared, prep_res, exec_res)

    make = AsyncStep if is_async else Step
    first = make(1)
    first >> make(2)
    return base(start=Holds(start=first, name="holds"), name="top")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("flow_kind", ["sync", "async"])
@pytest.mark.parametrize("fail_at", [1, 2])
@pytest.mark.parametrize("prep", [reads, changes])
def test_a_list_a_flow_s_prep_returns_from_shared_is_still_shared_s_after_a_resume(
    prep, fail_at, flow_kind, durability
):
    # Resuming inside the flow, its prep runs again and the keys it touched
    # get back their recorded values: in the objects shared holds, which its
    # result is one of, so what its post appends to that list is kept.
    def start():
        return {"doc": {"lines": []}}

    uninterrupted = start()
    holding_flow(prep, Fails(), 0, flow_kind).run(uninterrupted)
    assert uninterrupted["doc"]["lines"][-1] == "end"
    failing = Fails()
    store = bf.MemoryStore()
    with pytest.raises(RuntimeError, match="fails once"):
        holding_flow(prep, failing, fail_at, flow_kind).run(
            start(), store=store, run_id="run", durability=durability
        )
    resumed = holding_flow(prep, failing, fail_at, flow_kind).resume("run", store=store)
    assert resumed == uninterrupted
    assert bf.stored_state("run", store=store) == uninterrupted


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_question_a_flow_s_prep_asks_keeps_what_it_writes_once_answered(durability):
    # The question is kept under the flow's key, though its prep did not
    # return: on the answered resume prep runs again, and what it writes stays.
    class Asks(bf.Flow):
        def prep(self, shared):
            shared["answer"] = bf.interrupt("go?")
            shared["log"] = ["prep"]

    class Step(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["log"].append("step")

    class Before(bf.Node):  # (under async and exit, the state row after the question
        def post(self, shared, prep_res, exec_res):  # stands where the question does)
            shared["before"] = True

    def flow():
        before = Before(name="before")
        before >> Asks(start=Step(name="step"), name="asks")
        return bf.Flow(start=before, name="top")

    store = bf.MemoryStore()
    with pytest.raises(bf.Suspended):
        flow().run({}, store=store, run_id="run", durability=durability)
    shared = flow().resume("run", store=store, input="yes", durability=durability)
    assert shared == {"before": True, "answer": "yes", "log": ["prep", "step"]}
    assert bf.stored_state("run", store=store) == shared


class _PrepListFlow(bf.Flow):
    """Its prep hands out a list of shared; its post appends to it in place."""

    def prep(self, shared):
        return shared.setdefault("log", [])

    def post(self, shared, prep_res, exec_res):
        prep_res.append(f"inner post {self.params['k']}")  # not through shared


class _FailsOnce(bf.AsyncNode):
    armed = False

    async def post_async(self, shared, prep_res, exec_res):
        if _FailsOnce.armed:
            _FailsOnce.armed = False
            raise RuntimeError("boom")
        shared["log"].append(f"after {self.params['k']}")


class _OneSet(bf.AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"k": 0}]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_an_isolated_set_s_flow_post_changing_its_prep_result_in_place_is_kept_on_resume(
    durability,
):
    def build():
        inner = _PrepListFlow(start=bf.Node(name="quiet"), name="inner")
        inner >> _FailsOnce(name="after")
        sets = _OneSet(start=inner, isolate=True, merge={"log": "last"}, name="sets")
        return bf.AsyncFlow(start=sets, name="top")

    store = bf.MemoryStore()
    _FailsOnce.armed = True
    with pytest.raises(RuntimeError, match="boom"):
        build().run({"log": []}, store=store, run_id="r", durability=durability)
    # The view's checkpoint of the sub-flow's step held the append, though
    # its nested step had taken the key's mark and the post never read it.
    assert build().resume("r", store=store, durability=durability) == {
        "log": ["inner post 0", "after 0"]
    }
