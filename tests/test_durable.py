"""Durable runs: what is recorded, resuming where a run stopped, interrupts."""

import asyncio
import itertools
import json
import threading

import pytest

import braidflow as bf
import braidflow._run as bf_run
import braidflow._threads as bf_threads
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    CheckpointError,
    Flow,
    InvalidParameterError,
    MemoryStore,
    Node,
    Parallel,
    ResumeError,
    RunError,
    SQLiteStore,
    StoreError,
    Suspended,
    interrupt,
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    return SQLiteStore(tmp_path / "runs.db") if request.param == "sqlite" else MemoryStore()


class Count(Node):
    """Counts its runs in `ran`, writes shared[name] = runs so far."""

    ran: dict = {}  # noqa: RUF012 - reset by a fixture for each test

    def post(self, shared, prep_res, exec_res):
        Count.ran[self.name] = Count.ran.get(self.name, 0) + 1
        shared[self.name] = Count.ran[self.name]


class Fails(Node):
    """Fails while `failing` is true."""

    failing = True

    def exec(self, prep_res):
        if Fails.failing:
            raise ConnectionError("upstream down")
        return "fine"

    def post(self, shared, prep_res, exec_res):
        shared["fails"] = exec_res


@pytest.fixture(autouse=True)
def fresh_counts():
    Count.ran = {}
    Fails.failing = True


def chain(*nodes):
    for left, right in itertools.pairwise(nodes):
        left >> right
    return nodes[0]


def test_a_durable_run_records_its_run_and_updates_shared(store):
    shared = {"input": 1}
    Flow(start=chain(Count(name="a"), Count(name="b")), name="job").run(
        shared, store=store, run_id="r"
    )
    assert shared == {"input": 1, "a": 1, "b": 1}
    record = store.get("r")
    assert (record.run_id, record.flow, record.status) == ("r", "job", "completed")
    assert [r.run_id for r in store.runs(status="completed")] == ["r"]


def test_the_run_id_is_new_by_default_and_readable(store):
    flow = Flow(start=chain(Count(name="a"), Fails()), name="job")
    with pytest.raises(ConnectionError) as caught:
        flow.run({}, store=store)
    (record,) = store.runs()
    assert len(record.run_id) == 32
    assert record.status == "failed"
    assert any(record.run_id in note and "resume" in note for note in caught.value.__notes__)


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


class RaisesUnprintable(Node):
    def exec(self, prep_res):
        raise Unprintable("x")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_an_error_whose_str_raises_comes_out_as_it_is_and_is_recorded(store, durability):
    flow = Flow(start=chain(Count(name="a"), RaisesUnprintable(name="bad")), name="job")
    with pytest.raises(Unprintable):  # not the RuntimeError of describing it
        flow.run({}, store=store, run_id="r", durability=durability)
    record = store.get("r")
    assert record.status == "failed"
    assert record.error == "Unprintable: <Unprintable whose str() fails>"


def test_a_failed_run_resumes_after_the_last_finished_node(store):
    flow = Flow(start=chain(Count(name="a"), Fails(), Count(name="c")), name="job")
    with pytest.raises(ConnectionError):
        flow.run({"x": 1}, store=store, run_id="r")
    assert store.get("r").status == "failed"
    Fails.failing = False
    final = flow.resume("r", store=store)
    assert final == {"x": 1, "a": 1, "fails": "fine", "c": 1}
    assert Count.ran == {"a": 1, "c": 1}  # a did not run again
    assert store.get("r").status == "completed"


def test_a_batch_in_progress_reuses_every_finished_item(store):
    ran = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(8))

        async def exec_async(self, item):
            ran.append(item)
            if item == 5 and Fails.failing:
                raise ValueError("item 5")
            return item * 10

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow = AsyncFlow(start=Items(max_concurrency=1, name="items"))
    with pytest.raises(ValueError, match="item 5"):
        flow.run({}, store=store, run_id="r")
    assert ran == [0, 1, 2, 3, 4, 5]
    Fails.failing = False
    ran.clear()
    assert flow.resume("r", store=store)["results"] == [i * 10 for i in range(8)]
    assert ran == [5, 6, 7]


def test_items_that_differ_on_resume_are_a_clear_error(store):
    items = [1, 2, 3]

    class Items(BatchNode):
        def prep(self, shared):
            return list(items)

        def exec(self, item):
            if item == 3 and Fails.failing:
                raise ValueError("3")
            return item

    flow = Flow(start=Items(name="items"))
    with pytest.raises(ValueError, match="3"):
        flow.run({}, store=store, run_id="r")
    items[0] = 100
    with pytest.raises(ResumeError, match="item 0 is not the one recorded"):
        flow.resume("r", store=store)


async def test_nested_flows_resume_at_their_depth(store):
    inner = Flow(start=chain(Count(name="in1"), Fails(), Count(name="in2")), name="inner")
    flow = AsyncFlow(start=chain(Count(name="outer1"), inner, Count(name="outer2")), name="job")
    with pytest.raises(ConnectionError):
        await flow.run_async({}, store=store, run_id="r")
    Fails.failing = False
    final = await flow.resume_async("r", store=store)
    assert final == {"outer1": 1, "in1": 1, "fails": "fine", "in2": 1, "outer2": 1}
    assert Count.ran == {"outer1": 1, "in1": 1, "in2": 1, "outer2": 1}


async def test_a_finished_branch_is_not_redone(store):
    class Slow(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            if Fails.failing:
                raise TimeoutError("slow branch timed out")
            shared["slow"] = "done"

    flow = AsyncFlow(start=Parallel(Count(name="fast"), Slow(name="slow")), name="job")
    with pytest.raises(TimeoutError):
        await flow.run_async({}, store=store, run_id="r")
    Fails.failing = False
    assert await flow.resume_async("r", store=store) == {"fast": 1, "slow": "done"}
    assert Count.ran == {"fast": 1}


# A sync branch's step runs in a thread, which a cancel cannot stop: when a
# sibling's failure (or a drain) cancels the fork as that step ends there,
# the step has finished, and a resume must not run it again.


@pytest.fixture
def stop_asked(monkeypatch):
    """A condition notified when the caller of a thread's code is cancelled
    (braidflow's `_threads.stop_requested()` is then true in that thread)."""
    condition = threading.Condition()
    stopped = bf_threads._stopped

    async def noting(job, cancel, *timed):
        job.stop_requested = True
        with condition:
            condition.notify_all()
        await stopped(job, cancel, *timed)

    monkeypatch.setattr(bf_threads, "_stopped", noting)
    return condition


class StopsTheFork(Node):
    """Once the other branch is in its post: fails, or drains the run at once."""

    def __init__(self, how, other_in_post):
        super().__init__(name="stops")
        self.how, self.other_in_post = how, other_in_post

    def exec(self, prep_res):
        if Fails.failing:
            self.other_in_post.wait()
            if self.how == "fail":
                raise ConnectionError("upstream down")
            bf.drain("r")
            bf.drain("r")  # asked again: what runs is stopped at once
        return "fine"

    def post(self, shared, prep_res, exec_res):
        shared["stops"] = exec_res


class EndsAfterTheStop(Node):
    """Counts its runs; its post ends only once the fork has stopped it."""

    def __init__(self, in_post, stop_asked, **options):
        super().__init__(name="ends", **options)
        self.in_post, self.stop_asked = in_post, stop_asked

    def exec(self, prep_res):
        Count.ran["ends"] = Count.ran.get("ends", 0) + 1

    def post(self, shared, prep_res, exec_res):
        if Fails.failing:
            self.in_post.set()
            with self.stop_asked:
                self.stop_asked.wait_for(bf_threads.stop_requested)
        shared["ends"] = "done"


class EndsInItsOwnRun(EndsAfterTheStop):
    def _run(self, shared):  # a class's own _run: the whole step in one thread
        return super()._run(shared)


@pytest.mark.parametrize("how", ["fail", "drain"])
@pytest.mark.parametrize("shape", ["node", "retried node", "own run", "flow"])
@pytest.mark.parametrize("kind", [Flow, AsyncFlow])
def test_a_branch_that_finished_in_its_thread_as_the_fork_stopped_is_not_redone(
    store, stop_asked, kind, shape, how
):
    in_post = threading.Event()
    if shape == "own run":
        branch = EndsInItsOwnRun(in_post, stop_asked)
    else:  # retried: its phases go to threads one at a time, its post last
        branch = EndsAfterTheStop(
            in_post, stop_asked, max_retries=2 if shape == "retried node" else 1
        )
    if shape == "flow":
        branch = Flow(start=branch, name="sub")
    options = {"offload_sync": True} if kind is AsyncFlow else {}
    flow = kind(start=Parallel(StopsTheFork(how, in_post), branch), name="job", **options)
    with pytest.raises(ConnectionError if how == "fail" else bf.Drained):
        flow.run({}, store=store, run_id="r")
    Fails.failing = False
    assert flow.resume("r", store=store) == {"stops": "fine", "ends": "done"}
    assert Count.ran == {"ends": 1}


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_step_that_finished_in_its_thread_as_the_run_was_cancelled_is_not_redone(
    store, stop_asked, durability
):
    in_post = threading.Event()
    first = EndsAfterTheStop(in_post, stop_asked)
    first >> Count(name="next")
    flow = AsyncFlow(start=first, offload_sync=True, name="job")
    running = asyncio.ensure_future(
        flow.run_async({}, store=store, run_id="r", durability=durability)
    )
    await asyncio.to_thread(in_post.wait)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    Fails.failing = False
    assert await flow.resume_async("r", store=store) == {"ends": "done", "next": 1}
    assert Count.ran == {"ends": 1, "next": 1}


# A batch item's sync code runs in a thread, which a stop cannot interrupt:
# when a sibling's failure, a drain or a cancel stops the batch as the item
# returns there, the item has finished: it is recorded, and a resume must
# not run it again (nor a parameter set whose walk ended there).


class LateItem:
    """What items (or parameter sets) 0 and 1 run, in a thread. Item 1 runs
    on until its batch is stopped, then returns; item 0, once item 1 runs,
    stops the batch ("fail"; "drain": with no grace period, so what runs is
    cancelled), or returns ("cancel": the test cancels the run)."""

    def __init__(self, how, stop_asked):
        self.how, self.stop_asked = how, stop_asked
        self.item_1_runs = threading.Event()

    def __call__(self, item):
        Count.ran[item] = Count.ran.get(item, 0) + 1
        if Fails.failing and item == 1:
            self.item_1_runs.set()
            with self.stop_asked:
                self.stop_asked.wait_for(bf_threads.stop_requested)
        elif Fails.failing:
            self.item_1_runs.wait()
            if self.how == "fail":
                raise ConnectionError("upstream down")
            if self.how == "drain":
                bf.drain("r", timeout=0)
        return item * 10


def late_batch(shape, late):
    """A flow whose step ``b`` is a batch of ``shape`` running ``late`` on
    items 0 and 1, and what the flow ends with."""
    if shape.startswith("ParallelBatchNode"):

        class Items(bf.ParallelBatchNode):
            def prep(self, shared):
                return [0, 1]

            def exec(self, item):
                return late(item)

            def post(self, shared, prep_res, exec_res):
                shared["out"] = exec_res

        kind = Flow if shape == "ParallelBatchNode" else AsyncFlow
        return kind(start=Items(name="b"), name="job"), {"out": [0, 10]}
    if shape.startswith("AsyncParallelBatchNode"):

        class AsyncItems(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return [0, 1]

            def exec(self, item):  # sync, under a timeout: in a thread
                return late(item)

            async def post_async(self, shared, prep_res, exec_res):
                shared["out"] = exec_res

        return AsyncFlow(start=AsyncItems(name="b", timeout=60), name="job"), {"out": [0, 10]}

    class Step(Node):  # the set's one step; its post runs in a thread
        def post(self, shared, prep_res, exec_res):
            shared[f"out{self.params['set']}"] = late(self.params["set"])

    class LateSets(bf.AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"set": 0}, {"set": 1}]

    isolate = shape.endswith("isolated")
    sets = LateSets(start=Step(name="step"), name="b", offload_sync=True, isolate=isolate)
    return AsyncFlow(start=sets, name="job"), {"out0": 0, "out1": 10}


def run_late(flow, store, late):
    """Run ``flow`` as run ``r``; under "cancel", cancel it once item 1 runs."""

    async def run_then_cancel():
        running = asyncio.ensure_future(flow.run_async({}, store=store, run_id="r"))
        await asyncio.to_thread(late.item_1_runs.wait)
        running.cancel()
        await running

    if late.how == "cancel":
        asyncio.run(run_then_cancel())
    else:
        flow.run({}, store=store, run_id="r")


LATE_SHAPES = [
    ("ParallelBatchNode", "fail"),
    ("ParallelBatchNode", "drain"),
    *(
        (shape, how)
        for shape in [
            "ParallelBatchNode in an AsyncFlow",
            "AsyncParallelBatchNode, sync exec under a timeout",
            "AsyncParallelBatchFlow",
            "AsyncParallelBatchFlow, isolated",
        ]
        for how in ["fail", "drain", "cancel"]
    ),
]
STOPPED_BY = {"fail": ConnectionError, "drain": bf.Drained, "cancel": asyncio.CancelledError}


@pytest.mark.parametrize(("shape", "how"), LATE_SHAPES)
def test_an_item_that_finished_in_its_thread_as_its_batch_stopped_is_not_redone(
    store, stop_asked, shape, how
):
    late = LateItem(how, stop_asked)
    flow, final = late_batch(shape, late)
    with pytest.raises(STOPPED_BY[how]):
        run_late(flow, store, late)
    (batch,) = [step for step in bf.history("r", store=store) if step.path == "b"]
    assert batch.items_done == (1 if how == "fail" else 2)  # item 0 failed, or finished too
    Fails.failing = False
    assert flow.resume("r", store=store) == final
    assert Count.ran == {0: 2 if how == "fail" else 1, 1: 1}


@pytest.mark.parametrize("how", ["fail", "cancel"])
def test_an_item_that_finished_as_its_batch_stopped_and_could_not_be_recorded_runs_again(
    stop_asked, how
):
    store = FailingWrites()
    late = LateItem(how, stop_asked)
    flow, final = late_batch("ParallelBatchNode in an AsyncFlow", late)
    with pytest.raises(STOPPED_BY[how]) as stopped:  # what stopped the batch stays the outcome
        run_late(flow, store, late)
    assert any("StoreError('disk full')" in note for note in stopped.value.__notes__)
    store.refusing = False
    Fails.failing = False
    assert flow.resume("r", store=store) == final
    assert Count.ran == {0: 2, 1: 2}  # (nor could item 0's result be, under a cancel)


# A branch works on a view of the store, rebuilt on resume from the steps it
# replays: what a finished step's nested walks wrote must come back with it.


def test_a_flow_that_finished_inside_a_branch_keeps_its_writes_on_resume(store):
    inner = Flow(start=chain(Count(name="in1"), Count(name="in2")), name="inner")
    branch = Flow(start=chain(inner, Fails()), name="branch")
    flow = Flow(start=Parallel(branch, Count(name="other")), name="job")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    Fails.failing = False
    final = flow.resume("r", store=store)
    assert final == {"in1": 1, "in2": 1, "fails": "fine", "other": 1}
    assert Count.ran == {"in1": 1, "in2": 1, "other": 1}


class Sets(bf.BatchFlow):
    def prep(self, shared):
        return [{"set": index} for index in range(3)]


class AsyncSets(bf.AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"set": index} for index in range(3)]


class Writes(Node):
    """Writes shared[f"w{set}"]; the set numbered 1 fails while `Fails.failing`."""

    def exec(self, prep_res):
        if self.params["set"] == 1 and Fails.failing:
            raise ConnectionError("upstream down")
        return self.params["set"]

    def post(self, shared, prep_res, exec_res):
        Count.ran[exec_res] = Count.ran.get(exec_res, 0) + 1
        shared[f"w{exec_res}"] = exec_res


@pytest.mark.parametrize("sets", [Sets, AsyncSets])
def test_the_parameter_sets_that_finished_inside_a_branch_keep_their_writes_on_resume(store, sets):
    batch = sets(start=Writes(name="write"), name="sets")
    flow = AsyncFlow(start=Parallel(batch, Count(name="other")), name="job")
    with pytest.raises(ConnectionError):
        asyncio.run(flow.run_async({}, store=store, run_id="r"))
    Fails.failing = False
    final = asyncio.run(flow.resume_async("r", store=store))
    assert final == {"w0": 0, "w1": 1, "w2": 2, "other": 1}
    assert Count.ran == {0: 1, 1: 1, 2: 1, "other": 1}


def test_a_batch_flow_inside_an_isolated_parameter_set_keeps_its_writes_on_resume(store):
    class WritesInSet(Writes):
        def post(self, shared, prep_res, exec_res):
            outer = self.params["outer"]
            Count.ran[outer, exec_res] = Count.ran.get((outer, exec_res), 0) + 1
            shared[f"w{outer}{exec_res}"] = exec_res

    inner = Sets(start=WritesInSet(name="write"), name="inner")

    class Outer(bf.AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"outer": index} for index in range(2)]

    flow = AsyncFlow(start=Outer(start=inner, isolate=True, name="outer"), name="job")
    with pytest.raises(ConnectionError):
        asyncio.run(flow.run_async({}, store=store, run_id="r"))
    Fails.failing = False
    final = asyncio.run(flow.resume_async("r", store=store))
    assert final == {"w00": 0, "w01": 1, "w02": 2, "w10": 0, "w11": 1, "w12": 2}
    assert set(Count.ran.values()) == {1}  # no set ran twice


# -- interrupt -------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["prep", "exec", "post"])
def test_interrupt_suspends_the_run_and_resume_answers_it(store, phase):
    asked = []

    class Approve(Node):
        def prep(self, shared):
            return interrupt("ok to ship?") if phase == "prep" else None

        def exec(self, prep_res):
            return interrupt("ok to ship?") if phase == "exec" else prep_res

        def post(self, shared, prep_res, exec_res):
            answer = interrupt("ok to ship?") if phase == "post" else (prep_res or exec_res)
            asked.append(answer)
            shared["approved"] = answer

    flow = Flow(start=chain(Count(name="before"), Approve(max_retries=3), Count(name="after")))
    with pytest.raises(Suspended) as caught:
        flow.run({}, store=store, run_id="r")
    suspended = caught.value
    assert (suspended.run_id, suspended.prompt) == ("r", "ok to ship?")
    record = store.get("r")
    assert suspended.node == record.node == "Flow/Approve"  # the names on its path
    assert (record.status, record.prompt) == ("waiting", "ok to ship?")
    final = flow.resume("r", store=store, input="yes")
    assert final == {"before": 1, "approved": "yes", "after": 1}
    assert asked == ["yes"]
    assert Count.ran == {"before": 1, "after": 1}


def test_a_node_asking_again_in_a_loop_gets_each_answer_once(store):
    class Review(Node):
        def exec(self, prep_res):
            return interrupt("good?")

        def post(self, shared, prep_res, exec_res):
            shared.setdefault("answers", []).append(exec_res)
            return "again" if len(shared["answers"]) < 2 else None

    review = Review()
    review - "again" >> review
    review >> Count(name="done")
    flow = Flow(start=review)
    with pytest.raises(Suspended):
        flow.run({}, store=store, run_id="r")
    with pytest.raises(Suspended) as second:  # the second visit asks again
        flow.resume("r", store=store, input="no")
    assert second.value.node == "Flow/Review"
    assert flow.resume("r", store=store, input="yes") == {"answers": ["no", "yes"], "done": 1}


@pytest.mark.parametrize("where", ["exec", "prep and post"])
def test_a_node_that_asks_twice_gets_its_answers_in_order(store, where):
    class Form(Node):
        def prep(self, shared):
            return interrupt("name?") if where != "exec" else None

        def exec(self, name):
            if where == "exec":
                return [interrupt("name?"), interrupt("age?")]
            return name

        def post(self, shared, prep_res, exec_res):
            answers = exec_res if where == "exec" else [exec_res, interrupt("age?")]
            shared["answers"] = answers

    flow = Flow(start=Form())
    with pytest.raises(Suspended, match="name"):
        flow.run({}, store=store, run_id="r")
    with pytest.raises(Suspended) as second:
        flow.resume("r", store=store, input="Ann")
    assert second.value.prompt == "age?"
    assert flow.resume("r", store=store, input=42) == {"answers": ["Ann", 42]}


async def test_interrupt_in_an_async_node_and_resuming_without_input_asks_again(store):
    class Ask(AsyncNode):
        async def exec_async(self, prep_res):
            return interrupt({"question": "name?"})

        async def post_async(self, shared, prep_res, exec_res):
            shared["name"] = exec_res

    flow = AsyncFlow(start=Ask())
    with pytest.raises(Suspended):
        await flow.run_async({}, store=store, run_id="r")
    with pytest.raises(Suspended) as again:
        await flow.resume_async("r", store=store)
    assert again.value.prompt == {"question": "name?"}
    assert await flow.resume_async("r", store=store, input="Ada") == {"name": "Ada"}


def test_an_interrupt_is_never_retried_nor_given_to_the_fallback(store):
    calls = []

    class Ask(Node):
        def exec(self, prep_res):
            calls.append("exec")
            return interrupt("?")

        def exec_fallback(self, prep_res, exc):
            calls.append("fallback")
            return "fallback"

        def on_error(self, shared, error):
            calls.append("on_error")
            return True

    with pytest.raises(Suspended):
        Flow(start=Ask(max_retries=3)).run({}, store=store)
    assert calls == ["exec"]


def test_a_retried_exec_gets_the_answers_its_failed_attempt_got(store):
    """Calls are matched to answers per attempt: a retry asks nothing it was
    answered before, and the calls after exec (in post) go on from there."""
    attempts = []

    class Ask(Node):
        def prep(self, shared):
            return interrupt("p?")

        def exec(self, prep_res):
            answers = (prep_res, interrupt("a?"), interrupt("b?"))
            attempts.append(answers)
            if len(attempts) == 1:
                raise ConnectionError("flaky")
            return answers

        def post(self, shared, prep_res, exec_res):
            shared["got"] = [*exec_res, interrupt("c?")]

    flow = Flow(start=Ask(max_retries=2, name="ask"))
    with pytest.raises(Suspended) as asked:
        flow.run({}, store=store, run_id="r")
    for answer, next_prompt in (("P", "a?"), ("A", "b?"), ("B", "c?")):
        assert asked.value.prompt == {"p": "p?", "a": "a?", "b": "b?", "c": "c?"}[answer.lower()]
        with pytest.raises(Suspended) as asked:
            flow.resume("r", store=store, input=answer)
        assert asked.value.prompt == next_prompt
    assert attempts == [("P", "A", "B"), ("P", "A", "B")]  # the retry asked nothing again
    assert flow.resume("r", store=store, input="C")["got"] == ["P", "A", "B", "C"]


async def test_each_retried_item_gets_its_own_answers_again(store):
    failed = set()

    class Items(bf.AsyncBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            answer = interrupt(f"item {item}?")
            if item not in failed:
                failed.add(item)
                raise ConnectionError("flaky")
            return [item, answer]

        async def post_async(self, shared, prep_res, exec_res):
            shared["got"] = exec_res

    flow = AsyncFlow(start=Items(max_retries=2, name="items"))
    with pytest.raises(Suspended, match="item 0"):
        await flow.run_async({}, store=store, run_id="r")
    with pytest.raises(Suspended, match="item 1"):
        await flow.resume_async("r", store=store, input="zero")
    done = await flow.resume_async("r", store=store, input="one")
    assert done["got"] == [[0, "zero"], [1, "one"]]


def test_interrupt_without_a_store_is_a_clear_error():
    class Ask(Node):
        def exec(self, prep_res):
            return interrupt("?")

    with pytest.raises(RunError, match="needs a durable run"):
        Flow(start=Ask()).run({})


# -- what is stored -----------------------------------------------------------------------


def test_a_value_that_cannot_be_saved_stops_the_run_naming_key_and_node(store):
    class Keeps(Node):
        def post(self, shared, prep_res, exec_res):
            shared["client"] = object()

    with pytest.raises(CheckpointError, match=r"'keeps'.*shared\['client'\]") as caught:
        Flow(start=chain(Keeps(name="keeps"), Count(name="after"))).run({}, store=store)
    assert caught.value.key == "client"
    assert Count.ran == {}  # the run did not go on past the loss


def test_a_key_that_is_not_a_string_cannot_be_saved_as_json(store):
    class Numbers(Node):
        def post(self, shared, prep_res, exec_res):
            shared[1] = "one"

    with pytest.raises(CheckpointError, match="key of type int"):
        Flow(start=Numbers()).run({}, store=store)


@pytest.mark.parametrize("kind", ["set", "cycle"])
def test_an_item_result_that_cannot_be_saved_names_node_and_item(store, kind):
    def unsavable():
        if kind == "set":
            return {1, 2}
        loop = []
        loop.append(loop)
        return loop

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            return unsavable() if item == 1 else item

    flow = AsyncFlow(start=Items(name="items"))
    with pytest.raises(CheckpointError, match=r"'items'.*item 1 is a (set|list)"):
        flow.run({}, store=store, run_id="r")
    assert store.get("r").status == "failed"


class FailingWrites(MemoryStore):
    """Refuses to write item rows while `refusing`."""

    refusing = True

    def append(self, run_id, rows):
        if self.refusing and any(row.kind == "items" for row in rows):
            raise StoreError("disk full")
        super().append(run_id, rows)


class Gate(AsyncParallelBatchNode):
    """Items 0-4 finish together; item 5 fails once the others are stored."""

    failing = True

    async def prep_async(self, shared):
        return list(range(6))

    async def exec_async(self, item):
        if item == 5:
            await asyncio.sleep(0.01)
            if Gate.failing:
                raise ValueError("item 5")
        return {"item": item}

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


def _item_rows(store, run_id):
    return [row for row in store._rows[run_id] if row.kind == "items"]


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_items_finishing_together_share_one_row_and_resume_from_it(serializer):
    store = MemoryStore(serializer)
    Gate.failing = True
    flow = AsyncFlow(start=Gate(name="gate"))
    with pytest.raises(ValueError, match="item 5"):
        flow.run({}, store=store, run_id="r")
    rows = _item_rows(store, "r")
    assert [(row.kind, row.position, row.node) for row in rows] == [("items", 5, "gate")]
    Gate.failing = False
    assert flow.resume("r", store=store)["results"] == [{"item": i} for i in range(6)]


def test_a_failed_group_commit_stops_the_batch_and_the_run_resumes_later():
    store = FailingWrites()
    ran = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):
            ran.append(item)
            await asyncio.sleep(0)
            return item * 10

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow = AsyncFlow(start=Items(max_concurrency=1, name="items"))
    with pytest.raises(StoreError, match="disk full"):
        flow.run({}, store=store, run_id="r")
    assert len(ran) < 6  # the batch stopped at the first item after the failure
    assert store.get("r").status == "failed"
    store.refusing = False
    ran.clear()
    assert flow.resume("r", store=store)["results"] == [i * 10 for i in range(6)]
    assert ran == list(range(6))  # nothing was recorded: everything ran again


@pytest.mark.parametrize("kind", ["sequential", "parallel"])
async def test_items_that_finished_before_a_failure_are_recorded_with_it(store, kind):
    """The group commit is due at the next turn of the loop; a failure in the
    same turn (no item here ever yields) still leaves the finished items in
    the store when the run ends, not a turn later."""
    ran = []

    class Items(AsyncParallelBatchNode if kind == "parallel" else bf.AsyncBatchNode):
        async def prep_async(self, shared):
            return list(range(4))

        async def exec_async(self, item):
            ran.append(item)
            if item == 2 and Fails.failing:
                raise ValueError("item 2")
            return item

    flow = AsyncFlow(start=Items(name="items"))
    with pytest.raises(ValueError, match="item 2"):
        await flow.run_async({}, store=store, run_id="r")
    Fails.failing = False
    ran.clear()
    await flow.resume_async("r", store=store)  # reads the store before the loop turns
    # in parallel all four started together, and 3 finished before 2 failed
    assert ran == ([2] if kind == "parallel" else [2, 3])


class Recording(MemoryStore):
    """Counts the item rows written so far."""

    def __init__(self):
        super().__init__()
        self.items_written = 0

    def append(self, run_id, rows):
        super().append(run_id, rows)
        self.items_written += sum(row.position for row in rows if row.kind == "items")


@pytest.mark.parametrize("kind", ["sequential", "parallel"])
async def test_every_item_is_in_the_store_before_post_uses_the_results(kind):
    store = Recording()
    seen = []

    class Items(AsyncParallelBatchNode if kind == "parallel" else bf.AsyncBatchNode):
        async def prep_async(self, shared):
            return list(range(5))

        async def exec_async(self, item):  # never yields: all in one turn of the loop
            return item

        async def post_async(self, shared, prep_res, exec_res):
            seen.append(store.items_written)

    await AsyncFlow(start=Items()).run_async({}, store=store)
    assert seen == [5]


async def test_a_worker_takes_no_other_item_before_its_finished_one_is_stored():
    """So a crash can only lose the items that were in flight (at most
    max_concurrency), never one that finished while its worker went on."""
    store = Recording()
    stored_when_started = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):  # never yields
            stored_when_started.append(store.items_written)
            return item

    await AsyncFlow(start=Items(max_concurrency=2)).run_async({}, store=store)
    # two workers: items 0 and 1 start on nothing stored, then each next item
    # starts only once the one its worker finished is in the store
    assert stored_when_started == [0, 0, 2, 2, 4, 4]


def test_an_item_that_exec_changes_in_place_still_resumes(store):
    class Mark(BatchNode):
        def prep(self, shared):
            return [{"n": n} for n in range(4)]

        def exec(self, doc):
            doc["seen"] = True  # changes the item itself
            if doc["n"] == 2 and Fails.failing:
                raise ValueError("2")
            return doc["n"] * 10

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow = Flow(start=Mark(name="mark"))
    with pytest.raises(ValueError, match="2"):
        flow.run({}, store=store, run_id="r")
    Fails.failing = False
    assert flow.resume("r", store=store) == {"results": [0, 10, 20, 30]}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ({1: "one"}, r"the key 1 \(int\) would come back as the string \"1\""),
        ({"pair": (1, 2)}, r"the tuple at \['pair'\] would come back as a list"),
        ([{"a": {None: 0}}], r"the key None \(NoneType\) at \[0\]\['a'\]"),
    ],
)
def test_json_refuses_a_value_it_would_give_back_changed(store, value, said):
    class Keeps(Node):
        def post(self, shared, prep_res, exec_res):
            shared["scores"] = value

    with pytest.raises(CheckpointError, match=rf"'keeps'.*shared\['scores'\].*{said}"):
        Flow(start=chain(Keeps(name="keeps"), Count(name="after"))).run({}, store=store)
    assert Count.ran == {}


def test_a_tuple_result_is_refused_with_what_to_do(store):
    class Pairs(BatchNode):
        def prep(self, shared):
            return ["a"]

        def exec(self, item):
            return (item, 1)

    with pytest.raises(CheckpointError, match=r"item 0 is a tuple.*return plain data"):
        Flow(start=Pairs(name="pairs")).run({}, store=store)


def test_every_way_of_updating_shared_is_recorded(store):
    class Writes(Node):
        def post(self, shared, prep_res, exec_res):
            shared |= {"merged": 1}
            shared.update(updated=2)
            shared.setdefault("defaulted", 3)
            del shared["gone"]
            shared.pop("popped")

    flow = Flow(start=chain(Writes(), Fails()))
    with pytest.raises(ConnectionError):
        flow.run({"gone": 0, "popped": 0}, store=store, run_id="r")
    Fails.failing = False
    resumed = flow.resume("r", store=store)
    assert resumed == {"merged": 1, "updated": 2, "defaulted": 3, "fails": "fine"}


def test_what_an_unfinished_flow_prep_wrote_is_not_applied_twice(store):
    class Counts(Flow):
        def prep(self, shared):  # runs again when the flow resumes
            shared["attempts"] = shared.get("attempts", 0) + 1

    inner = Counts(start=chain(Count(name="first"), Fails()), name="inner")
    flow = Flow(start=inner, name="outer")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    Fails.failing = False
    resumed = flow.resume("r", store=store)
    assert resumed == {"attempts": 1, "first": 1, "fails": "fine"}


async def test_a_run_this_process_is_running_cannot_be_resumed_at_once(store):
    entered, release = asyncio.Event(), asyncio.Event()

    class Waits(AsyncNode):
        async def exec_async(self, prep_res):
            entered.set()
            await release.wait()

    flow = AsyncFlow(start=Waits())
    first = asyncio.create_task(flow.run_async({}, store=store, run_id="r"))
    await entered.wait()
    with pytest.raises(StoreError, match="running in this process"):
        await flow.resume_async("r", store=store)
    release.set()
    await first
    assert store.get("r").status == "completed"


def test_a_failed_run_names_the_node_that_failed_among_branches(store):
    class Bad(Node):
        def exec(self, prep_res):
            raise RuntimeError("bad")

    slow = Count(name="slow")
    slow >> Count(name="slow2")
    flow = Flow(start=Parallel(slow, Bad(name="bad"), name="fork"), name="job")
    with pytest.raises(RuntimeError, match="bad"):
        flow.run({}, store=store, run_id="r")
    assert store.get("r").node == "job/fork/bad/bad"


def test_pickle_stores_what_json_cannot(tmp_path):
    store = SQLiteStore(tmp_path / "p.db", serializer="pickle")

    class Keeps(Node):
        def post(self, shared, prep_res, exec_res):
            shared["when"] = {1, 2, 3}

    flow = Flow(start=chain(Keeps(), Fails()))
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    Fails.failing = False
    assert flow.resume("r", store=store) == {"when": {1, 2, 3}, "fails": "fine"}


def test_in_place_changes_are_recorded(store):
    class Appends(Node):
        def post(self, shared, prep_res, exec_res):
            shared["log"].append(self.name)

    flow = Flow(start=chain(Appends(name="one"), Appends(name="two"), Fails()))
    with pytest.raises(ConnectionError):
        flow.run({"log": []}, store=store, run_id="r")
    Fails.failing = False
    assert flow.resume("r", store=store)["log"] == ["one", "two"]


# -- identity and bad input ----------------------------------------------------------------


def test_resuming_with_a_changed_graph_says_what_changed(store):
    flow = Flow(start=chain(Count(name="a"), Fails()), name="job")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    other = Flow(start=chain(Count(name="a"), Count(name="new"), Fails()), name="job")
    before = store.get("r")
    with pytest.raises(ResumeError, match=r"another graph.*default->new"):
        other.resume("r", store=store)
    assert store.get("r") == before  # nothing ran, nothing changed: still resumable


class Asks(Node):
    def exec(self, prep_res):
        return interrupt("ok?")

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res


def test_a_mistaken_resume_leaves_a_waiting_run_waiting(store):
    flow = Flow(start=Asks(name="asks"), name="job")
    with pytest.raises(Suspended):
        flow.run({}, store=store, run_id="r")
    waiting = store.get("r")
    other = Flow(start=chain(Asks(name="asks"), Count(name="new")), name="job")
    with pytest.raises(ResumeError, match="another graph"):
        other.resume("r", store=store, input="yes")
    with pytest.raises(
        CheckpointError, match=r"answer to question \w+ of run 'r' \(at job/asks\) is a set"
    ):
        flow.resume("r", store=store, input={1, 2})
    assert store.get("r") == waiting
    assert [record.run_id for record in store.runs(status="waiting")] == ["r"]
    assert flow.resume("r", store=store, input="yes") == {"answer": "yes"}


def test_input_for_a_run_that_is_not_waiting_is_refused(store):
    flow = Flow(start=chain(Count(name="a"), Fails()), name="job")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    failed = store.get("r")
    with pytest.raises(ResumeError, match="'r' is failed, not waiting for input"):
        flow.resume("r", store=store, input="yes")
    assert store.get("r") == failed


def test_bad_store_input_is_refused_and_nothing_is_overwritten(store):
    flow = Flow(start=Count(name="a"))
    with pytest.raises(StoreError, match="no run 'missing'") as caught:
        flow.resume("missing", store=store)
    # An empty store is most often a mistyped path: the error says to look.
    assert "holds no run at all: is its path right?" in "\n".join(caught.value.__notes__)
    flow.run({}, store=store, run_id="done")
    with pytest.raises(StoreError, match="no run 'missing'") as caught:
        flow.resume("missing", store=store)
    assert not any("holds no run" in note for note in getattr(caught.value, "__notes__", []))
    with pytest.raises(StoreError, match="completed"):
        flow.resume("done", store=store)
    with pytest.raises(StoreError, match="already used"):
        flow.run({}, store=store, run_id="done")
    assert store.get("done").status == "completed"
    with pytest.raises(InvalidParameterError, match="store="):
        flow.run({}, store="runs.db")
    with pytest.raises(InvalidParameterError, match="pass store="):
        flow.run({}, run_id="x")
    with pytest.raises(InvalidParameterError, match="needs shared to be a dict"):
        flow.run([], store=store)


# -- events -------------------------------------------------------------------------------


def test_events_are_kept_when_asked_and_a_timeline_can_be_drawn_from_them(store, tmp_path):
    flow = Flow(start=chain(Count(name="a"), Fails()), name="job")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r", record_events=True)
    Fails.failing = False
    seen = []
    flow.resume("r", store=store, observers=[seen.append], record_events=True)
    started = [e.node for e in seen if e.kind == "node_start"]
    assert started == ["job", "Fails"]  # only what ran this time
    kept = bf.recorded_events(store, "r")
    kinds = [event.kind for event in kept]
    assert kinds.count("run_start") == 2
    failed = next(event for event in kept if event.kind == "error")
    assert type(failed.error).__name__ == "ConnectionError"
    assert str(failed.error) == "upstream down"
    ended = next(event for event in kept if event.kind == "run_end")
    assert ended.error.__notes__ == [  # where it failed, as the run's caller was told
        "braidflow: node 'Fails' failed in flow 'job' (Flow)"
    ]
    from braidflow.tracing._timeline import timeline_data

    first_run = kept[: kinds.index("run_end") + 1]
    assert timeline_data(first_run)["run"]["name"] == "job"
    assert json.loads(store.events("r")[0])["kind"] == "run_start"


def test_a_run_started_keeping_its_events_keeps_those_of_its_resumes(store):
    flow = Flow(start=chain(Count(name="a"), Fails()), name="job")
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r", record_events=True)
    with pytest.raises(ConnectionError):
        flow.resume("r", store=store)  # as it started: kept
    with pytest.raises(ConnectionError):
        flow.resume("r", store=store, record_events=False)  # not this part
    Fails.failing = False
    flow.resume("r", store=store)
    kinds = [event.kind for event in bf.recorded_events(store, "r")]
    assert kinds.count("run_start") == 3

    flow.run({}, store=store, run_id="quiet")  # not asked: none kept, resumes neither
    assert bf.recorded_events(store, "quiet") == []
    Fails.failing = True
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="later")
    Fails.failing = False
    flow.resume("later", store=store, record_events=True)  # from this part on
    assert next(event.kind for event in bf.recorded_events(store, "later")) == "run_start"
    assert store.get("later").metadata["braidflow.record_events"] is True


async def test_a_resumed_run_can_be_cancelled_and_resumed_again(store):
    gate = asyncio.Event()

    class Waits(AsyncNode):
        async def exec_async(self, prep_res):
            await gate.wait()

        async def post_async(self, shared, prep_res, exec_res):
            shared["waited"] = True

    flow = AsyncFlow(start=chain(Count(name="a"), Waits()))
    run = asyncio.create_task(flow.run_async({}, store=store, run_id="r"))
    while "a" not in Count.ran:
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stopped = store.get("r")
    assert (stopped.status, stopped.node, stopped.error) == (
        "interrupted",
        "AsyncFlow/Waits",
        "cancelled (Ctrl-C, or its task was cancelled)",  # said in words (issue 18.9)
    )
    gate.set()
    assert await flow.resume_async("r", store=store) == {"a": 1, "waited": True}


class CancelledAsCreated(MemoryStore):
    """A store whose ``create_run`` is where the run's task is cancelled: as
    ``asyncio.run`` does on Ctrl-C while a store records the run."""

    def create_run(self, *args, **kwargs):
        super().create_run(*args, **kwargs)
        asyncio.current_task().cancel()


class Retried(AsyncNode):
    async def exec_async(self, prep_res):
        await asyncio.sleep(0)


class ThreeSets(bf.AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"k": k} for k in range(3)]


@pytest.mark.parametrize(
    "flow",
    [
        lambda: AsyncFlow(start=Retried(name="retried", max_retries=3)),
        lambda: ThreeSets(start=Count(name="sub"), name="sets"),
    ],
    ids=["retried node", "parallel batch flow"],
)
def test_a_cancel_asked_as_a_durable_run_is_created_stops_the_run(flow):
    # Not the node's own CancelledError (a failure, or retried away): the
    # run's cancellation, stored as interrupted (Ctrl-C: KeyboardInterrupt).
    store = CancelledAsCreated()
    with pytest.raises(asyncio.CancelledError):
        flow().run({}, store=store, run_id="r")
    assert store.get("r").status == "interrupted"


async def test_a_cancel_pending_as_a_run_starts_in_a_task_stops_the_run():
    store = MemoryStore()

    async def cancelled_then_run():
        asyncio.current_task().cancel()  # asked, not delivered yet
        await AsyncFlow(start=Retried(name="retried", max_retries=3)).run_async(
            {}, store=store, run_id="r"
        )

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(cancelled_then_run())
    assert store.get("r").status == "interrupted"


class CtrlCOnce(MemoryStore):
    """A store where Ctrl-C lands once, in ``where`` (a method name), as the
    run's end is recorded."""

    def __init__(self, where):
        super().__init__()
        self.where = where

    def _ctrl_c(self, method):
        if method == self.where:
            self.where = None
            raise KeyboardInterrupt

    def append(self, run_id, rows):
        self._ctrl_c("append")
        super().append(run_id, rows)

    def finish(self, run_id, status, **fields):
        self._ctrl_c("finish")
        super().finish(run_id, status, **fields)


@pytest.mark.parametrize(
    "where", ["an observer of run_end", "the end of the run's threads", "finish", "append"]
)
def test_a_ctrl_c_as_a_durable_run_ends_stores_it_interrupted_and_it_resumes_here(
    where, monkeypatch
):
    # However the end is interrupted, the store is told (not left running
    # in this process, which then could not resume it) and the run released.
    store, observers = CtrlCOnce(where), []
    if where == "an observer of run_end":

        def ctrl_c_at_run_end(event):
            if event.kind == "run_end":
                raise KeyboardInterrupt

        observers.append(ctrl_c_at_run_end)
    elif where == "the end of the run's threads":
        leave_run = bf_run.leave_run

        def ctrl_c_in_leave_run():
            leave_run()
            raise KeyboardInterrupt

        monkeypatch.setattr(bf_run, "leave_run", ctrl_c_in_leave_run)
    # (append: a failed run's rows, written as it ends: the Ctrl-C was lost)
    flow = Flow(start=chain(Count(name="a"), Fails(name="fails")))
    Fails.failing = where == "append"
    with pytest.raises(KeyboardInterrupt):
        flow.run({}, store=store, run_id="r", observers=observers, durability="exit")
    monkeypatch.undo()
    stopped = store.get("r")
    assert (stopped.status, stopped.error) == ("interrupted", "stopped (Ctrl-C)")
    Fails.failing = False
    redone = where == "append"  # its rows were not written: "a" runs again
    assert flow.resume("r", store=store) == {"a": 2 if redone else 1, "fails": "fine"}


class FailsOnThree(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return list(range(5))

    async def exec_async(self, item):
        if item == 3:
            raise ValueError("item 3")
        return item


class CancelsItself(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return [0]

    async def exec_async(self, item):
        raise asyncio.CancelledError  # its own: the item's failure, not the run's


@pytest.mark.parametrize("bound", [None, 2])
async def test_a_durable_batch_labels_an_item_failure_as_a_plain_one_does(store, bound):
    flow = AsyncFlow(start=FailsOnThree(max_concurrency=bound, name="items"))
    with pytest.raises(ValueError, match="item 3") as caught:
        await flow.run_async({}, store=store, run_id="r")
    assert "braidflow: node 'items' (FailsOnThree) failed on item 3" in caught.value.__notes__
    flow = AsyncFlow(start=CancelsItself(max_concurrency=bound, name="cancels"))
    with pytest.raises(bf.NodeCancelledError) as cancelled:
        await flow.run_async({}, store=store, run_id="s")
    assert cancelled.value.item_index == 0
    assert [store.get(run).status for run in ("r", "s")] == ["failed", "failed"]


@pytest.mark.parametrize(
    "item",
    [0, 7, -12, 2**70, "", "plain", 'quote " and \\ slash', "é ü ☃ \U0001f600", "\n\t\x00"],
)
def test_an_item_s_fingerprint_is_the_crc_of_its_json(item):
    import zlib

    from braidflow.durable._codec import JSON_TEXT as _JSON
    from braidflow.durable._codec import Codec
    from braidflow.durable._fingerprint import fingerprint

    assert fingerprint(Codec("json"), item) == zlib.crc32(_JSON(item).encode())


@pytest.mark.parametrize("result", [0, -5, 2**80, True, None, 2.5, "text", [1, {"a": "b"}]])
async def test_an_item_s_result_is_queued_as_json_writes_it(result):
    from braidflow.durable import DurableRun as Durable

    durable = Durable(MemoryStore(), "r")
    durable.record_item(("stage", 1), 4, 99, result, Node(name="n"))
    (marker, queued) = durable.writer._queued
    assert marker[0] == ("stage", 1)
    assert queued == json.dumps([4, 99, result], separators=(",", ":")).encode()


async def test_items_queued_while_a_thread_takes_the_queue_keep_their_batch():
    """The loop queues items without the lock; a write from a thread takes what
    is queued. Items queued after a take, with no marker of their own, are the
    last marker's, and each batch's items end up in its own row."""
    from braidflow.durable import DurableRun as Durable

    store = MemoryStore()
    store.create_run("r", "flow", "g", b"{}", "owner")
    durable = Durable(store, "r")
    first, second = Node(name="first"), Node(name="second")
    a, b = ("a", 1, None), ("b", 2, "1")  # a batch is one object for all its items
    durable.record_item(a, 0, 10, 0, first)
    durable.record_item(a, 1, 11, 1, first)
    durable.write([])  # as a thread's write would: takes both
    durable.record_item(a, 2, 12, 2, first)  # after the take: no new marker
    assert durable.writer._queued == [b"[2,12,2]"]
    durable.record_item(b, 0, 20, 5, second)
    durable.record_item(a, 3, 13, 3, first)
    durable.flush()
    rows = [(row.frame, row.node, json.loads(row.payload)) for row in store._rows["r"]]
    assert rows == [
        ("a", "first", [[0, 10, 0], [1, 11, 1]]),
        ("a", "first", [[2, 12, 2], [3, 13, 3]]),
        ("b", "second", [[0, 20, 5]]),
    ]


@pytest.mark.parametrize("bound", [None, 1, 2])
async def test_parallel_items_each_get_their_own_answers(store, bound):
    """Items in a task each, or in workers taking item after item: every
    item's interrupt is told apart by its index, and post's by none; the
    items ask together, and those answered go on while the others wait."""

    class Asks(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            await asyncio.sleep(0)
            return [item, interrupt(f"item {item}?")]

        async def post_async(self, shared, prep_res, exec_res):
            shared["got"] = exec_res
            shared["final"] = interrupt("done?")

    flow = AsyncFlow(start=Asks(max_concurrency=bound, name="asks"))
    with pytest.raises(Suspended) as suspended:
        await flow.run_async({}, store=store, run_id="r")
    questions = suspended.value.questions
    assert sorted((q.item, q.prompt, q.where) for q in questions) == [
        (item, f"item {item}?", f"AsyncFlow/asks#{item}") for item in range(3)
    ]
    by_item = {question.item: question for question in questions}
    answers = {by_item[0].id: "to item 0?", by_item[2].id: "to item 2?"}
    with pytest.raises(Suspended) as suspended:
        await flow.resume_async("r", store=store, answers=answers)
    assert [q.id for q in suspended.value.questions] == [by_item[1].id]
    with pytest.raises(Suspended, match="done"):
        await flow.resume_async("r", store=store, input="to item 1?")
    done = await flow.resume_async("r", store=store, input="to done?")
    assert done["got"] == [[item, f"to item {item}?"] for item in range(3)]
    assert done["final"] == "to done?"


@pytest.mark.parametrize(
    "value", [0, -5, 2**80, "", 'é\n"\\ ☃', True, None, 2.5, [1, "a", None], {"k": {"é": [2]}}]
)
def test_the_json_codec_writes_what_json_writes(value):
    from braidflow.durable._codec import Codec
    from braidflow.durable._codec import action_text as _action_text

    codec = Codec("json")
    expected = json.dumps(value, separators=(",", ":")).encode()
    assert codec.encode(value) == expected
    packed = codec.pack([("k", expected), ('é "key"', None)])
    assert json.loads(packed) == [["k", 1, value], ['é "key"', 0]]
    assert codec.unpack(packed) == [("k", value), ('é "key"', bf._merge.MISSING)]
    if isinstance(value, str):
        assert _action_text(value, "node") == expected.decode()


class WrittenItems(MemoryStore):
    """Notes the index of every item row it writes."""

    def __init__(self):
        super().__init__()
        self.written = set()

    def append(self, run_id, rows):
        super().append(run_id, rows)
        for row in rows:
            if row.kind == "items":
                self.written.update(entry[0] for entry in json.loads(row.payload))


@pytest.mark.parametrize("kind", ["parallel node", "sequential node", "parallel flow"])
async def test_no_item_starts_before_the_one_before_it_is_in_the_store(kind):
    """With one item at a time, item k starts only once item k - 1 is
    recorded: a crash can cost only the item in flight."""
    store = WrittenItems()
    started = []

    def starting(index):
        assert index == 0 or index - 1 in store.written, f"item {index} started too early"
        started.append(index)

    if kind == "parallel flow":

        class Work(AsyncNode):
            async def exec_async(self, prep_res):
                starting(self.params["index"])

        class Each(bf.AsyncParallelBatchFlow):
            async def prep_async(self, shared):
                return [{"index": index} for index in range(6)]

        flow = AsyncFlow(start=Each(start=Work(), max_concurrency=1, name="each"))
    else:
        base = AsyncParallelBatchNode if kind == "parallel node" else bf.AsyncBatchNode

        class Items(base):
            async def prep_async(self, shared):
                return list(range(6))

            async def exec_async(self, index):
                starting(index)  # no await: it would run on at once without the wait
                return index

        options = {"max_concurrency": 1} if kind == "parallel node" else {}
        flow = AsyncFlow(start=Items(name="items", **options))
    await flow.run_async({}, store=store, run_id="r")
    assert started == list(range(6))
    assert store.written == set(range(6))


@pytest.mark.slow  # a second: the period its events wait at most
def test_a_run_s_recorded_events_are_in_the_store_while_it_waits(store):
    """A run killed while it waits on a call keeps the events before it: they
    are written within a second, not only with every 500th event or the end."""
    import threading
    import time as clock

    release, seen = threading.Event(), []

    class Waits(Node):
        def exec(self, prep_res):
            deadline = clock.monotonic() + 30
            while not seen and clock.monotonic() < deadline:  # until they are there
                kinds = [event.kind for event in bf.recorded_events(store, "w")]
                if "node_end" in kinds:
                    seen.append(kinds)
                clock.sleep(0.01)
            release.set()

    Flow(start=chain(Count(name="a"), Waits()), name="job").run(
        {}, store=store, run_id="w", record_events=True
    )
    assert release.is_set()
    assert seen
    assert seen[0][:2] == ["run_start", "node_start"]
    assert "run_end" not in seen[0]  # seen while the run went on
    before = threading.active_count()
    Flow(start=Count(name="b"), name="short").run({}, store=store, record_events=True)
    assert threading.active_count() == before  # its recording's timer did not outlive it
