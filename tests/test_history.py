"""Looking into stored runs and going back in time: history, state at a step, fork,
and resuming a flow whose code, names or data changed (rename=, migrate=)."""

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchNode,
    CheckpointError,
    Flow,
    InvalidParameterError,
    MemoryStore,
    Node,
    Parallel,
    ResumeError,
    SQLiteStore,
    StepRecord,
    StoreError,
    Suspended,
    history,
    idempotency_key,
    interrupt,
    stored_state,
)
from braidflow.durable._history import StoredRun


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "runs.db")
        yield made
        made.close()
    else:
        yield MemoryStore()


class Failing:
    """Which item fails, if any: set per test."""

    item: int | None = None


class Load(Node):
    def prep(self, shared):
        return shared.get("n", 5)

    def post(self, shared, prep_res, exec_res):
        shared["items"] = list(range(prep_res))
        return "go"


class Double(BatchNode):
    def prep(self, shared):
        return shared["items"]

    def exec(self, item):
        if item == Failing.item:
            raise RuntimeError(f"item {item} failed")
        return item * 2

    def post(self, shared, prep_res, exec_res):
        shared["doubled"] = exec_res


class Total(Node):
    def post(self, shared, prep_res, exec_res):
        shared["total"] = sum(shared["doubled"])
        shared.pop("scratch", None)


def pipeline():
    load, double, total = Load(name="load"), Double(name="double"), Total(name="total")
    load - "go" >> double >> total
    return Flow(start=load, name="job")


@pytest.fixture(autouse=True)
def _no_failure():
    Failing.item = None
    yield
    Failing.item = None


def test_the_history_of_a_completed_run(store):
    flow = pipeline()
    started = time.time()
    flow.run({"n": 3, "scratch": 1}, store=store, run_id="r")
    steps = flow.history("r", store=store)
    assert [(step.number, step.path, step.status) for step in steps] == [
        (1, "load", "finished"),
        (2, "double", "finished"),
        (3, "total", "finished"),
    ]
    load, double, total = steps
    assert isinstance(load, StepRecord)
    assert load.action == "go"
    assert double.action is None
    assert load.changed == ("items",)
    assert set(total.changed) == {"total", "scratch"}  # written, and deleted
    assert (double.items_done, double.items_total) == (3, 3)
    assert load.items_done is None
    for step in steps:
        assert started <= step.started <= step.ended <= time.time()
        assert (step.run_id, step.part, step.kind) == ("r", 0, "step")
    assert load.ended <= double.started


def test_state_after_each_step(store):
    flow = pipeline()
    flow.run({"n": 2, "scratch": 1}, store=store, run_id="r")
    assert flow.state("r", store=store, at=0) == {"n": 2, "scratch": 1}
    assert flow.state("r", store=store, at=1) == {"n": 2, "scratch": 1, "items": [0, 1]}
    assert flow.state("r", store=store, at=2)["doubled"] == [0, 2]
    final = {"n": 2, "items": [0, 1], "doubled": [0, 2], "total": 2}
    assert flow.state("r", store=store, at=3) == final
    assert flow.state("r", store=store) == final


@pytest.mark.parametrize(
    ("at", "said"),
    [
        (4, "has no step 4: its steps are numbered 1 to 2"),
        (-1, "has no step -1"),
        (2, "step 2 of run 'r' \\(double\\) did not finish"),
        ("1", "give the number of a step"),
        (True, "give the number of a step"),
    ],
)
def test_a_step_that_is_not_there_is_refused(store, at, said):
    flow = pipeline()
    Failing.item = 1
    with pytest.raises(RuntimeError):
        flow.run({"n": 3}, store=store, run_id="r")
    with pytest.raises(ResumeError, match=said):
        flow.state("r", store=store, at=at)


def test_an_unknown_run_is_a_store_error(store):
    with pytest.raises(StoreError, match="no run 'nope'"):
        pipeline().history("nope", store=store)
    with pytest.raises(StoreError, match="no run 'nope'"):
        pipeline().fork("nope", store=store)


def test_a_failed_run_ends_with_the_step_it_failed_in_and_how_far_its_batch_got(store):
    flow = pipeline()
    Failing.item = 3
    with pytest.raises(RuntimeError):
        flow.run({"n": 5}, store=store, run_id="r")
    steps = flow.history("r", store=store)
    assert [(step.path, step.status) for step in steps] == [
        ("load", "finished"),
        ("double", "failed"),
    ]
    failed = steps[-1]
    assert (failed.items_done, failed.items_total) == (3, 5)
    assert failed.error == "RuntimeError: item 3 failed"
    assert failed.key == "0:job/1:double"


def test_resumed_runs_show_every_part_in_one_history(store):
    flow = pipeline()
    Failing.item = 3
    with pytest.raises(RuntimeError):
        flow.run({"n": 5}, store=store, run_id="r")
    Failing.item = 4
    with pytest.raises(RuntimeError):
        flow.resume("r", store=store)
    assert flow.history("r", store=store)[-1].items_done == 4
    Failing.item = None
    flow.resume("r", store=store)
    steps = flow.history("r", store=store)
    assert [(step.path, step.part) for step in steps] == [
        ("load", 0),
        ("double", 2),
        ("total", 2),
    ]
    assert (steps[1].items_done, steps[1].items_total) == (5, 5)
    assert len(store.get("r").metadata["braidflow.resumed"]) == 2


def test_a_waiting_run_ends_with_the_step_that_asked():
    class Ask(Node):
        def exec(self, prep_res):
            return interrupt("ship it?")

        def post(self, shared, prep_res, exec_res):
            shared["answer"] = exec_res

    store = MemoryStore()
    load, ask = Load(name="load"), Ask(name="ask")
    load - "go" >> ask
    flow = Flow(start=load, name="job")
    with pytest.raises(Suspended):
        flow.run({}, store=store, run_id="r")
    steps = flow.history("r", store=store)
    assert [(step.path, step.status) for step in steps] == [
        ("load", "finished"),
        ("ask", "waiting"),
    ]


def test_steps_inside_sub_flows_come_before_their_flow(store):
    class Mark(Node):
        def post(self, shared, prep_res, exec_res):
            shared.setdefault("marks", []).append(self.name)

    first, second = Mark(name="first"), Mark(name="second")
    first >> second
    inner = Flow(start=first, name="inner")
    last = Mark(name="last")
    inner >> last
    flow = Flow(start=inner, name="outer")
    flow.run({}, store=store, run_id="r")
    assert [step.path for step in flow.history("r", store=store)] == [
        "inner/first",
        "inner/second",
        "inner",
        "last",
    ]


def test_a_branch_step_has_the_state_the_run_s_step_before_it_left(store):
    # A branch works on a view: its changes reach shared when its Parallel's
    # step ends, so after one of its steps shared is as "second" left it.
    class Mark(Node):
        def post(self, shared, prep_res, exec_res):
            shared[self.name] = True

    def flow():
        first, second = Mark(name="first"), Mark(name="second")
        first >> second >> Parallel(Mark(name="x"), Mark(name="y"), name="par") >> Mark(name="end")
        return Flow(start=first, name="job")

    flow().run({"start": 1}, store=store, run_id="r")
    steps = flow().history("r", store=store)
    assert [(step.path, step.kind, step.changed) for step in steps[2:6]] == [
        ("par/x/x", "branch step", ("x",)),
        ("par/x", "branch", ("x",)),
        ("par/y/y", "branch step", ("y",)),
        ("par/y", "branch", ("y",)),
    ]
    second = {"start": 1, "first": True, "second": True}
    assert [stored_state("r", store=store, at=number) for number in range(2, 7)] == [second] * 5
    assert stored_state("r", store=store, at=7) == {**second, "x": True, "y": True}
    shared = flow().fork("r", store=store, at=3, update={"late": 1}, run_id="f")
    assert shared == {**second, "late": 1, "x": True, "y": True, "end": True}
    assert [step.run_id for step in flow().history("f", store=store)][2:5] == ["r", "f", "f"]


class Asking(BatchNode):
    """Ten items; the one ``ask`` names asks (or, if ``fail``, fails), once
    ``after`` (a threading.Event, if given) is set."""

    def __init__(self, ask, fail=False, after=None, **options):
        super().__init__(**options)
        self.ask, self.fail, self.after = ask, fail, after

    def prep(self, shared):
        return range(10)

    def exec(self, item):
        if item == self.ask and self.after is not None:
            assert self.after.wait(10)
        if item == self.ask and self.fail:
            raise RuntimeError(f"item {item} failed")
        return interrupt(f"{self.name} {item}?") if item == self.ask else item

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = exec_res


class Mark(Node):
    """Marks its name in shared; sets ``done`` (a threading.Event), if given."""

    def __init__(self, done=None, **options):
        super().__init__(**options)
        self.done = done

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = True
        if self.done is not None:
            self.done.set()


@pytest.mark.parametrize(("fail", "status"), [(False, "waiting"), (True, "failed")])
def test_a_batch_in_a_branch_is_where_the_run_stopped_with_how_far_it_got(store, fail, status):
    plain_done = threading.Event()  # a failing item stops its siblings: plain first
    flow = Flow(
        start=Parallel(
            Asking(7, fail, after=plain_done, name="batch"),
            Mark(done=plain_done, name="plain"),
            name="fan",
        )
    )
    with pytest.raises(Suspended if status == "waiting" else RuntimeError):
        flow.run({}, store=store, run_id="r")
    steps = flow.history("r", store=store)
    assert [(step.path, step.kind, step.status) for step in steps] == [
        ("fan/plain/plain", "branch step", "finished"),
        ("fan/plain", "branch", "finished"),
        ("fan", "step", status),
        ("fan/batch/batch", "branch step", status),
    ]
    at = steps[-1]
    assert (at.key, at.items_done, at.items_total) == ("0:Flow/0:fan/b0:batch/0:batch", 7, 10)
    assert (steps[2].error, at.error) == (None, "RuntimeError: item 7 failed" if fail else None)
    run = StoredRun(store, "r")
    assert run.here() == at
    assert run.unfinished() == steps[2:]


def test_batches_in_several_branches_and_nested_forks_each_show_how_far_they_got(store):
    # A fork in a flow that is a branch of another fork: every branch at work
    # shows, in branch order, outermost first; the run is where it asked first.
    inner_start = Mark(name="first")
    inner_start >> Parallel(Asking(3, name="deep"), Mark(name="done"), name="inner")
    sub = Flow(start=inner_start, name="sub")
    fan = Parallel(Asking(7, name="a"), sub, Asking(5, name="b"), name="fan")
    flow = Flow(start=fan, name="job")
    with pytest.raises(Suspended):
        flow.run({}, store=store, run_id="r")
    unfinished = [step for step in flow.history("r", store=store) if step.status != "finished"]
    assert [(step.path, step.kind, step.items_done) for step in unfinished] == [
        ("fan", "step", None),
        ("fan/a/a", "branch step", 7),
        ("fan/sub/sub", "branch step", None),
        ("fan/sub/sub/inner", "branch step", None),
        ("fan/sub/sub/inner/deep/deep", "branch step", 3),
        ("fan/b/b", "branch step", 5),
    ]
    assert {step.status for step in unfinished} == {"waiting"}
    run = StoredRun(store, "r")
    assert run.here() == unfinished[1]  # the store's node: the first question's
    assert run.record.node == "job/fan/a/a#7"


def test_a_branch_that_recorded_nothing_is_not_shown_as_at_work(store):
    # One branch at a time: the first fails, the second never began.
    fan = Parallel(Asking(2, fail=True, name="a"), Asking(4, name="b"), max_concurrency=1)
    flow = Flow(start=fan, name="job")
    with pytest.raises(RuntimeError):
        flow.run({}, store=store, run_id="r")
    assert [(step.path, step.items_done) for step in flow.history("r", store=store)] == [
        ("Parallel", None),
        ("Parallel/a/a", 2),
    ]


def test_reading_changes_nothing_in_the_store(tmp_path):
    path = tmp_path / "runs.db"
    store = SQLiteStore(path)
    flow = pipeline()
    Failing.item = 2
    with pytest.raises(RuntimeError):
        flow.run({"n": 4}, store=store, run_id="r")

    def everything():
        with sqlite3.connect(path) as db:
            return [
                db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
                for table in ("runs", "checkpoints", "events", "braidflow_meta")
            ]

    before = everything()
    other = SQLiteStore(path)  # as another process would read it
    for reader in (store, other):
        flow.history("r", store=reader)
        flow.state("r", store=reader, at=1)
        reader.read("r")
    assert everything() == before
    other.close()
    store.close()


KILLED = textwrap.dedent(
    """
    import asyncio, sys
    from braidflow import AsyncFlow, AsyncParallelBatchNode, Node, SQLiteStore

    class Load(Node):
        def post(self, shared, prep_res, exec_res):
            shared["items"] = list(range(200))

    class Work(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return shared["items"]

        async def exec_async(self, item):
            if item >= 50:
                await asyncio.Event().wait()  # never ends: the process is killed here
            return item

    load, work = Load(name="load"), Work(name="work", max_concurrency=10)
    load >> work
    AsyncFlow(start=load, name="job").run({}, store=SQLiteStore(sys.argv[1]), run_id="big")
    """
)


@pytest.mark.slow
def test_a_run_going_on_in_another_process_and_then_killed(tmp_path):
    path = tmp_path / "runs.db"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(path)])
    try:
        store = None
        seen: list[StepRecord] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until its 50 items are checkpointed
            if path.exists():
                store = store or SQLiteStore(path)
                try:
                    seen = pipeline().history("big", store=store)
                except StoreError:  # not recorded yet
                    seen = []
                if seen and seen[-1].items_done == 50:
                    break
            assert child.poll() is None
            time.sleep(0.01)
        assert [(step.path, step.status) for step in seen] == [
            ("load", "finished"),
            ("work", "running"),
        ]
        assert (seen[-1].items_done, seen[-1].items_total) == (50, 200)
    finally:
        child.kill()
        child.wait()
    assert store is not None
    steps = pipeline().history("big", store=store)
    assert [(step.path, step.status, step.items_done) for step in steps] == [
        ("load", "finished", None),
        ("work", "interrupted", 50),
    ]
    assert store.get("big").node == "job/work"  # where it is, from its log
    store.close()


# -- fork ---------------------------------------------------------------------------------


def test_a_fork_starts_from_a_step_with_an_update_and_leaves_its_source_alone(store):
    flow = pipeline()
    flow.run({"n": 3}, store=store, run_id="r")
    source = store.read("r")
    final = flow.fork("r", store=store, at=1, update={"items": [10, 20]}, run_id="r2")
    assert final == {"n": 3, "items": [10, 20], "doubled": [20, 40], "total": 60}
    assert store.read("r") == source  # not a row, not a field of it changed
    record = store.get("r2")
    assert record.status == "completed"
    assert record.metadata["braidflow.forked_from"] == {"run": "r", "step": 1, "rows": 1}
    steps = flow.history("r2", store=store)
    assert [(step.path, step.kind, step.run_id) for step in steps] == [
        ("load", "step", "r"),
        ("load", "update", "r2"),
        ("double", "step", "r2"),
        ("total", "step", "r2"),
    ]
    assert steps[1].changed == ("items",)
    assert flow.state("r2", store=store, at=2)["items"] == [10, 20]


def test_forks_get_ids_of_their_own_and_a_taken_id_is_refused(store):
    flow = pipeline()
    flow.run({"n": 1}, store=store, run_id="r")
    flow.fork("r", store=store, at=0)
    flow.fork("r", store=store, at=0, update={"n": 2})
    assert {"r-fork-1", "r-fork-2"} <= {record.run_id for record in store.runs()}
    assert flow.state("r-fork-2", store=store)["total"] == 2
    with pytest.raises(StoreError, match="already used"):
        flow.fork("r", store=store, run_id="r-fork-1")


def test_a_fork_of_a_waiting_run_can_answer_differently(store):
    class Ask(Node):
        def exec(self, prep_res):
            return interrupt("ship it?")

        def post(self, shared, prep_res, exec_res):
            shared["answer"] = exec_res

    load, ask = Load(name="load"), Ask(name="ask")
    load - "go" >> ask
    flow = Flow(start=load, name="job")
    with pytest.raises(Suspended):
        flow.run({}, store=store, run_id="r")
    assert flow.resume("r", store=store, input="yes")["answer"] == "yes"
    with pytest.raises(Suspended):  # at its last step: the question comes again
        flow.fork("r", store=store, at=1, run_id="again")
    assert flow.resume("again", store=store, input="no")["answer"] == "no"
    assert flow.state("r", store=store)["answer"] == "yes"


def test_a_fork_with_an_update_that_cannot_be_stored_is_refused_before_it_is_made(store):
    flow = pipeline()
    flow.run({"n": 1}, store=store, run_id="r")
    with pytest.raises(CheckpointError, match=r"flow 'job': update\['items'\] holds an? object"):
        flow.fork("r", store=store, at=1, update={"items": object()}, run_id="bad")
    with pytest.raises(StoreError):
        store.get("bad")


def test_a_fork_needs_the_flow_the_run_had(store):
    flow = pipeline()
    flow.run({"n": 1}, store=store, run_id="r")
    other = Flow(start=Load(name="load"), name="job")
    with pytest.raises(ResumeError, match="another graph"):
        other.fork("r", store=store, at=1)


# -- resuming what changed ------------------------------------------------------------------


def test_a_node_whose_class_changed_resumes(store):
    flow = pipeline()
    Failing.item = 1
    with pytest.raises(RuntimeError):
        flow.run({"n": 2}, store=store, run_id="r")

    class BetterDouble(BatchNode):
        def prep(self, shared):
            return shared["items"]

        def exec(self, item):
            return item * 2

        def post(self, shared, prep_res, exec_res):
            shared["doubled"] = exec_res

    load, double, total = Load(name="load"), BetterDouble(name="double"), Total(name="total")
    load - "go" >> double >> total
    assert Flow(start=load, name="job").resume("r", store=store)["total"] == 2


def test_a_renamed_node_resumes_with_rename_and_the_run_keeps_the_rename(store):
    flow = pipeline()
    Failing.item = 1
    with pytest.raises(RuntimeError):
        flow.run({"n": 3}, store=store, run_id="r")
    load, double, total = Load(name="fetch"), Double(name="double"), Total(name="total")
    load - "go" >> double >> total
    renamed = Flow(start=load, name="job")
    with pytest.raises(ResumeError) as refused:
        renamed.resume("r", store=store)
    said = str(refused.value)
    assert "node 'job/load'" in said
    assert "node 'job/fetch'" in said
    assert "rename=" in said
    Failing.item = 2
    with pytest.raises(RuntimeError):
        renamed.resume("r", store=store, rename={"load": "fetch"})
    Failing.item = None
    assert renamed.resume("r", store=store)["total"] == 6  # the rename was kept
    assert [step.node for step in renamed.history("r", store=store)] == [
        "load",
        "double",
        "total",
    ]


def test_a_node_named_as_its_flow_is_renamed_alone_and_a_renamed_flow_resumes(store):
    # The flow "load" and its node "load": renaming the node leaves the flow.
    Failing.item = 1
    load, double, total = Load(name="load"), Double(name="double"), Total(name="total")
    load - "go" >> double >> total
    with pytest.raises(RuntimeError):
        Flow(start=load, name="load").run({"n": 3}, store=store, run_id="r")
    fetch, double, total = Load(name="fetch"), Double(name="double"), Total(name="total")
    fetch - "go" >> double >> total
    Failing.item = None
    renamed = Flow(start=fetch, name="load")
    assert renamed.resume("r", store=store, rename={"load": "fetch"})["total"] == 6
    # The flow itself renamed (no node of that name): the rename names it.
    Failing.item = 1
    with pytest.raises(RuntimeError):
        pipeline().run({"n": 3}, store=store, run_id="s")  # a flow named "job"
    Failing.item = None
    load, double, total = Load(name="load"), Double(name="double"), Total(name="total")
    load - "go" >> double >> total
    moved = Flow(start=load, name="work")
    with pytest.raises(ResumeError, match="rename="):
        moved.resume("s", store=store)
    assert moved.resume("s", store=store, rename={"job": "work"})["total"] == 6


def test_a_rename_keeps_idempotency_keys_question_ids_and_item_counts(store):
    # What a node did under its first name is the same work under the new one:
    # its idempotency key, the ids of its open questions, its items.
    keys, failing = [], [True]

    class Pay(Node):
        def exec(self, prep_res):
            keys.append(idempotency_key())
            if failing[0]:
                failing[0] = False
                raise ConnectionError("after the charge")

    with pytest.raises(ConnectionError):
        Flow(start=Pay(name="pay")).run({}, store=store, run_id="pay")
    Flow(start=Pay(name="charge")).resume("pay", store=store, rename={"pay": "charge"})
    assert keys[0] == keys[1]

    class Ask(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            return interrupt(f"item {item}?") if item else item

    with pytest.raises(Suspended) as asked:
        AsyncFlow(start=Ask(name="b")).run({}, store=store, run_id="ask")
    first, second = asked.value.questions
    with pytest.raises(Suspended) as again:
        AsyncFlow(start=Ask(name="b2")).resume(
            "ask", store=store, rename={"b": "b2"}, answers={first.id: "one"}
        )
    assert [question.id for question in again.value.questions] == [second.id]
    done = AsyncFlow(start=Ask(name="b2")).resume("ask", store=store, answers={second.id: "two"})
    assert done == {}

    class Items(BatchNode):
        def prep(self, shared):
            return list(range(10))

        def exec(self, item):
            if item == 6 and failing[0]:
                failing[0] = False
                raise RuntimeError("item 6")
            return item

    failing[0] = True
    with pytest.raises(RuntimeError):
        Flow(start=Items(name="old")).run({}, store=store, run_id="items")
    Flow(start=Items(name="new")).resume("items", store=store, rename={"old": "new"})
    assert [
        (step.path, step.items_done, step.items_total) for step in history("items", store=store)
    ] == [("new", 10, 10)]


def test_migrate_upgrades_shared_once_and_the_run_keeps_it(store):
    flow = pipeline()
    Failing.item = 1
    with pytest.raises(RuntimeError):
        flow.run({"n": 2, "old_key": "v"}, store=store, run_id="r")

    def migrate(shared):
        shared["new_key"] = shared.pop("old_key").upper()

    with pytest.raises(RuntimeError):  # item 1 fails again
        flow.resume("r", store=store, migrate=migrate)
    Failing.item = None
    final = flow.resume("r", store=store)  # no migrate: the migrated shared was kept
    assert final["new_key"] == "V"
    assert "old_key" not in final
    update = [step for step in flow.history("r", store=store) if step.kind == "update"]
    assert [set(step.changed) for step in update] == [{"new_key", "old_key"}]


def test_migrate_may_return_a_new_dict_but_nothing_else(store):
    flow = pipeline()
    Failing.item = 0
    with pytest.raises(RuntimeError):
        flow.run({"n": 1}, store=store, run_id="r")
    Failing.item = None
    with pytest.raises(ResumeError, match="migrate= returned a list"):
        flow.resume("r", store=store, migrate=lambda shared: [])
    assert (
        flow.resume("r", store=store, migrate=lambda shared: {**shared, "extra": 1})["extra"] == 1
    )


def test_a_changed_wiring_is_refused_with_the_edge_that_differs(store):
    flow = pipeline()
    Failing.item = 0
    with pytest.raises(RuntimeError):
        flow.run({"n": 1}, store=store, run_id="r")
    load, double, total = Load(name="load"), Double(name="double"), Total(name="total")
    load - "other" >> double >> total
    with pytest.raises(ResumeError, match="wired go->double where the flow now has") as refused:
        Flow(start=load, name="job").resume("r", store=store)
    assert "wired other->double" in str(refused.value)


async def test_history_of_an_async_parallel_batch():
    class Work(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(20)

        async def exec_async(self, item):
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = len(exec_res)

    store = MemoryStore()
    flow = AsyncFlow(start=Work(name="work", max_concurrency=4), name="job")
    await flow.run_async({}, store=store, run_id="r")
    (step,) = flow.history("r", store=store)
    assert (step.path, step.items_done, step.items_total) == ("work", 20, 20)
    assert json.dumps(flow.state("r", store=store)) == '{"done": 20}'


def test_a_store_without_read_says_to_add_one_and_one_added_works():
    store = MemoryStore()
    pipeline().run({"n": 1}, store=store, run_id="r")

    class OlderStore:  # a store written before read() was in the protocol
        serializer = "json"

        def get(self, run_id):
            return store.get(run_id)

    with pytest.raises(ResumeError, match=r"has no read\(\) method; add one"):
        pipeline().history("r", store=OlderStore())
    OlderStore.read = lambda self, run_id: store.read(run_id)
    assert len(pipeline().history("r", store=OlderStore())) == 3


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"rename": ["load"]}, "must map old node names to new ones"),
        ({"rename": {"load": 1}}, "must map old node names to new ones"),
        ({"migrate": "upgrade"}, "must be a function that takes shared"),
    ],
)
def test_bad_resume_options_say_what_they_must_be(store, options, said):
    flow = pipeline()
    Failing.item = 0
    with pytest.raises(RuntimeError):
        flow.run({"n": 1}, store=store, run_id="r")
    with pytest.raises((ResumeError, InvalidParameterError), match=said):
        flow.resume("r", store=store, **options)
    Failing.item = None
    assert flow.resume("r", store=store, rename={}, migrate=lambda shared: None)["total"] == 0


def test_a_bad_update_says_it_must_be_a_dict(store):
    flow = pipeline()
    flow.run({"n": 1}, store=store, run_id="r")
    with pytest.raises(ResumeError, match="must be a dict of keys of shared"):
        flow.fork("r", store=store, update=[("n", 2)])
    assert flow.fork("r", store=store, at=0, update={"n": 2})["total"] == 2


def test_history_and_state_need_no_flow():
    store = MemoryStore()
    first = Node(name="first")
    first >> Node(name="second")
    Flow(start=first, name="job").run({"x": 1}, store=store, run_id="r")
    assert [step.node for step in history("r", store=store)] == ["first", "second"]
    assert history("r", store=store) == Flow().history("r", store=store)
    assert stored_state("r", store=store, at=0) == {"x": 1}
    with pytest.raises(InvalidParameterError, match=r"braidflow.history\(\): store='r.db'"):
        history("r", store="r.db")
    with pytest.raises(InvalidParameterError, match="is not a braidflow Store"):
        stored_state("r", store=None)


def test_a_failed_parameter_set_of_a_parallel_batch_flow_shows_as_the_batch_flow_failing():
    # Set 0's first step finished (its walk recorded it under sub[0]) and no
    # set finished when set 1 failed: the run is at the batch flow itself,
    # not at a step "sub/first" that no walk has.
    first_done = asyncio.Event()

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"k": 0}, {"k": 1}]

    class First(AsyncNode):
        async def exec_async(self, prep_res):
            if self.params["k"] == 0:
                first_done.set()
            else:
                await first_done.wait()
                raise RuntimeError("set 1 fails")

    class Then(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.Event().wait()  # cancelled when set 1 fails

    first = First(name="first")
    first >> Then(name="then")
    flow = AsyncFlow(start=Sets(start=first, name="sub", isolate=True), name="top")
    store = MemoryStore()
    with pytest.raises(RuntimeError, match="set 1 fails"):
        asyncio.run(flow.run_async({}, store=store, run_id="r"))
    unfinished = [step for step in history("r", store=store) if step.status != "finished"]
    assert [step.path for step in unfinished] == ["sub"]
    assert "set 1 fails" in unfinished[0].error


class SetA(Node):
    """A node run alone: it counts its runs, and fails while ``failing``."""

    runs = 0
    failing = False

    def post(self, shared, prep_res, exec_res):
        SetA.runs += 1
        shared["a"] = shared.get("a", 0) + 1
        if SetA.failing:
            raise RuntimeError("a failed")
        return "set"


@pytest.fixture
def set_a():
    SetA.runs, SetA.failing = 0, False
    yield SetA
    SetA.runs, SetA.failing = 0, False


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_node_run_alone_is_one_step_with_the_state_it_left(store, set_a, durability):
    set_a(name="a").run({"x": 1}, store=store, run_id="n", durability=durability)
    (step,) = history("n", store=store)
    assert (step.number, step.path, step.key, step.kind, step.status, step.action) == (
        1,
        "a",
        "0:a",
        "step",
        "finished",
        "set",
    )
    # Under async and exit a step records no changes: the state after it is stored.
    assert step.changed == (("a",) if durability == "sync" else ())
    assert stored_state("n", store=store) == {"x": 1, "a": 1}
    assert stored_state("n", store=store, at=1) == {"x": 1, "a": 1}
    assert stored_state("n", store=store, at=0) == {"x": 1}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_batch_node_run_alone_records_its_items_then_its_step(store, durability):
    class Twice(BatchNode):
        def prep(self, shared):
            return [1, 2, 3]

        def exec(self, item):
            return item * 2

        def post(self, shared, prep_res, exec_res):
            shared["twice"] = exec_res

    Twice(name="twice").run({}, store=store, run_id="b", durability=durability)
    (step,) = history("b", store=store)
    assert (step.path, step.key, step.items_done, step.items_total) == ("twice", "0:twice", 3, 3)
    assert stored_state("b", store=store, at=1) == {"twice": [2, 4, 6]}
    kinds = [row.kind for row in store.read("b")[3] if row.kind != "state"]
    assert kinds[-1] in ("step", "steps")  # after every item's row
    assert "items" in kinds[:-1]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_failed_node_run_alone_resumes_and_runs_the_node_again(store, set_a, durability):
    set_a.failing = True
    with pytest.raises(RuntimeError, match="a failed"):
        set_a(name="a").run({"x": 1}, store=store, run_id="n", durability=durability)
    assert [(step.path, step.status) for step in history("n", store=store)] == [("a", "failed")]
    assert stored_state("n", store=store) == {"x": 1}  # what the failed step wrote is not kept
    set_a.failing = False
    assert set_a(name="a").resume("n", store=store, durability=durability) == {"x": 1, "a": 1}
    assert set_a.runs == 2
    assert store.get("n").status == "completed"
    assert [(step.path, step.status, step.part) for step in history("n", store=store)] == [
        ("a", "finished", 1)
    ]
    assert stored_state("n", store=store) == {"x": 1, "a": 1}
    with pytest.raises(StoreError, match="has completed"):
        set_a(name="a").resume("n", store=store)
    assert set_a.runs == 2


async def test_an_async_node_run_alone_is_one_step():
    class Ask(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["asked"] = True

    store = MemoryStore()
    await Ask(name="ask").run_async({}, store=store, run_id="n")
    assert [(step.path, step.status) for step in history("n", store=store)] == [("ask", "finished")]
    assert stored_state("n", store=store) == {"asked": True}


def test_a_fork_of_a_node_run_alone_runs_it_only_from_before_its_step(store, set_a):
    set_a(name="a").run({"x": 1}, store=store, run_id="n")
    assert set_a(name="a").fork("n", store=store, at=1, run_id="after") == {"x": 1, "a": 1}
    assert set_a.runs == 1  # its step finished in the run forked: it is taken over
    assert [(step.path, step.run_id) for step in history("after", store=store)] == [("a", "n")]
    forked = set_a(name="a").fork("n", store=store, at=0, update={"x": 2}, run_id="before")
    assert forked == {"x": 2, "a": 1}
    assert set_a.runs == 2
    assert [(step.kind, step.path) for step in history("before", store=store)] == [
        ("update", ""),
        ("step", "a"),
    ]


def test_a_node_run_alone_whose_end_was_not_recorded_resumes_without_running_it(set_a):
    class EndlessStore(MemoryStore):  # cannot record that a run completed, once
        refuse = True

        def finish(self, run_id, status, **options):
            if status == "completed" and self.refuse:
                self.refuse = False
                raise StoreError("cannot record the end")
            super().finish(run_id, status, **options)

    store = EndlessStore()
    node = set_a(name="a")
    node >> set_a(name="b")  # not followed: the node runs alone
    with pytest.raises(StoreError), pytest.warns(UserWarning, match="successors"):
        node.run({}, store=store, run_id="n")
    assert (store.get("n").status, store.get("n").node) == ("interrupted", "a")
    assert [(step.path, step.status) for step in history("n", store=store)] == [
        ("a", "finished"),
        ("a", "interrupted"),  # the run's own node: its run has not ended
    ]
    assert node.resume("n", store=store) == {"a": 1}
    assert set_a.runs == 1  # its step had finished: not run again
    assert [(step.path, step.status) for step in history("n", store=store)] == [("a", "finished")]


class Doubling(Flow):
    """A flow whose own prep and post write to shared: no step holds that."""

    def prep(self, shared):
        shared["runs"] = shared.get("runs", 0) + 1

    def post(self, shared, prep_res, exec_res):
        shared["count"] *= 2
        shared["done"] = True


class AddOne(Node):
    def post(self, shared, prep_res, exec_res):
        shared["count"] = shared.get("count", 0) + 1


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_the_stored_state_of_a_completed_run_has_what_its_flow_s_post_wrote(store, durability):
    shared = {}
    Doubling(start=AddOne(name="add")).run(shared, store=store, run_id="r", durability=durability)
    assert stored_state("r", store=store) == shared == {"runs": 1, "count": 2, "done": True}
    # After the step: with what prep wrote before it, without what post wrote after.
    assert stored_state("r", store=store, at=1) == {"runs": 1, "count": 1}
    assert [step.path for step in history("r", store=store)] == ["add"]


def test_a_value_the_run_s_flow_leaves_that_cannot_be_stored_fails_the_run(store):
    class Leaves(Flow):
        def post(self, shared, prep_res, exec_res):
            shared["seen"] = {1, 2}  # a set: JSON cannot hold it

    with pytest.raises(CheckpointError, match="seen"):
        Leaves(start=AddOne(name="add")).run({}, store=store, run_id="r")
    assert store.get("r").status == "failed"


# -- the serializer a run was written with ------------------------------------------------


class Gather(Node):
    """Keeps what JSON cannot: a set."""

    def post(self, shared, prep_res, exec_res):
        shared["seen"] = {1, 2}


class Approve(Node):
    def exec(self, prep_res):
        return interrupt("ok?")

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res


def gather_then_ask():
    gather = Gather(name="gather")
    gather >> Approve(name="approve")
    return Flow(start=gather, name="job")


def pickle_run(path, run_id="pk"):
    """A run written through a pickle store object, waiting after a step
    that put a set in shared."""
    with SQLiteStore(path, serializer="pickle") as pickled, pytest.raises(Suspended):
        gather_then_ask().run({"n": 1}, store=pickled, run_id=run_id)


def without_mark(path, run_id="pk"):
    """The run as a braidflow from before runs kept their serializer wrote it."""
    with SQLiteStore(path) as store:
        store.set_metadata(run_id, {"braidflow.serializer": None})


def test_a_pickle_run_is_read_only_through_a_store_object_opened_for_pickle(tmp_path):
    # Unpickling runs code: a run's own mark never makes a JSON reader unpickle.
    pickle_run(tmp_path / "p.db")
    with SQLiteStore(tmp_path / "p.db") as store:
        assert store.get("pk").metadata["braidflow.serializer"] == "pickle"  # (no decoding)
        for read in (lambda: history("pk", store=store), lambda: stored_state("pk", store=store)):
            with pytest.raises(StoreError, match=r"serializer='pickle'.* if you trust the store"):
                read()
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as store:
        steps = history("pk", store=store)
        assert [(step.path, step.status, step.changed) for step in steps] == [
            ("gather", "finished", ("seen",)),
            ("approve", "waiting", ()),
        ]
        assert stored_state("pk", store=store, at=0) == {"n": 1}
        assert stored_state("pk", store=store, at=1) == {"n": 1, "seen": {1, 2}}
        assert gather_then_ask().state("pk", store=store) == {"n": 1, "seen": {1, 2}}
        assert gather_then_ask().history("pk", store=store) == steps


def test_a_pickle_run_resumes_and_forks_as_pickle(tmp_path):
    pickle_run(tmp_path / "p.db")
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as store:
        flow = gather_then_ask()
        with pytest.raises(Suspended):  # a fork after its first step asks again
            flow.fork("pk", store=store, at=1, run_id="forked", update={"more": {3}})
        assert store.get("forked").metadata["braidflow.serializer"] == "pickle"
        assert flow.resume("forked", store=store, input={"yes"}) == {
            "n": 1,
            "seen": {1, 2},
            "more": {3},
            "answer": {"yes"},  # an answer only pickle keeps: the run is written on as pickle
        }
        assert flow.resume("pk", store=store, input="yes")["seen"] == {1, 2}
        assert stored_state("pk", store=store)["answer"] == "yes"
        assert stored_state("forked", store=store)["answer"] == {"yes"}


def test_a_json_run_stays_json_and_unmarked_through_a_pickle_store_object(tmp_path):
    flow = pipeline()
    Failing.item = 1
    with SQLiteStore(tmp_path / "j.db") as store, pytest.raises(RuntimeError):
        # (a mark given for a JSON run would misname it: it is not kept)
        flow.run({"n": 2}, store=store, run_id="j", metadata={"braidflow.serializer": "pickle"})
    Failing.item = None
    with SQLiteStore(tmp_path / "j.db", serializer="pickle") as pickled:
        assert history("j", store=pickled)[0].changed == ("items",)
        assert flow.resume("j", store=pickled)["total"] == 2
        flow.fork("j", store=pickled, at=1, run_id="j2", update={"n": 3})
    with SQLiteStore(tmp_path / "j.db") as store:
        for run_id in ("j", "j2"):
            assert "braidflow.serializer" not in store.get(run_id).metadata
            assert stored_state(run_id, store=store)["total"] == 2
        _, _, initial, rows = store.read("j")
        assert initial.startswith(b"[")  # written on as JSON
        assert all(not row.payload.startswith(b"\x80") for row in rows)


def test_an_unmarked_pickle_run_is_refused_in_one_line_naming_the_serializer_to_read_it_with(
    tmp_path,
):
    pickle_run(tmp_path / "p.db")
    without_mark(tmp_path / "p.db")
    flow = gather_then_ask()
    with SQLiteStore(tmp_path / "p.db") as store:
        for read in (
            lambda: history("pk", store=store),
            lambda: stored_state("pk", store=store, at=1),
            lambda: flow.resume("pk", store=store, input="yes"),
            lambda: flow.fork("pk", store=store, at=1),
        ):
            with pytest.raises(StoreError) as caught:
                read()
            said = str(caught.value)
            assert "\n" not in said
            assert said.startswith("run 'pk' was stored with serializer='pickle'")
            assert caught.value.run_id == "pk"
        assert store.get("pk").status == "waiting"  # left as it was, and no fork made
        assert [record.run_id for record in store.runs()] == ["pk"]
    # As it says: read through a store opened with serializer='pickle'.
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as pickled:
        assert stored_state("pk", store=pickled, at=1)["seen"] == {1, 2}


def test_an_unmarked_pickle_run_resumed_through_a_pickle_store_object_is_marked(tmp_path):
    pickle_run(tmp_path / "p.db")
    without_mark(tmp_path / "p.db")
    flow = gather_then_ask()
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as pickled:
        with pytest.raises(Suspended):
            flow.fork("pk", store=pickled, at=1, run_id="forked")
        assert flow.resume("pk", store=pickled, input="yes")["seen"] == {1, 2}
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as store:
        for run_id in ("pk", "forked"):
            assert store.get(run_id).metadata["braidflow.serializer"] == "pickle"
            assert stored_state(run_id, store=store, at=1)["seen"] == {1, 2}


@pytest.mark.parametrize(
    ("mark", "data"), [("json", "pickle"), ("yaml", "pickle")], ids=["wrong", "unknown"]
)
def test_a_mark_the_data_belies_is_refused_and_setting_it_right_works(tmp_path, mark, data):
    pickle_run(tmp_path / "p.db")
    with SQLiteStore(tmp_path / "p.db", serializer="pickle") as store:
        store.set_metadata("pk", {"braidflow.serializer": mark})
        with pytest.raises(StoreError) as caught:
            history("pk", store=store)
        said = str(caught.value)
        assert said.startswith(f"run 'pk' cannot be read as {mark!r}, the serializer its")
        assert f"its data is {data}" in said
        eval(re.findall(r"`(store\.set_metadata\(.*?\))`", said)[0], {"store": store})
        assert stored_state("pk", store=store)["seen"] == {1, 2}


def test_data_that_cannot_be_decoded_is_a_store_error_naming_the_run(store):
    flow = pipeline()
    Failing.item = 1
    with pytest.raises(RuntimeError):
        flow.run({"n": 2}, store=store, run_id="r")
    row = store.read("r")[3][0]
    store.append("r", [row._replace(payload=b"[damaged")])
    for read in (
        lambda: history("r", store=store),
        lambda: stored_state("r", store=store),
        lambda: flow.resume("r", store=store),
    ):
        with pytest.raises(StoreError, match=r"^run 'r' holds data that cannot be decoded as json"):
            read()
    assert store.get("r").status == "failed"  # left as it was


def test_a_fork_with_an_update_inside_parallel_branches_is_refused_and_its_advice_works(store):
    # The branches' changes are merged against the base they began from: an
    # update between them was lost, or merged as a difference (a sum gave -95).
    class Add(Node):
        def post(self, shared, prep_res, exec_res):
            shared["n"] += 1

    def flow():
        first = Add(name="a")
        par = Parallel(Add(name="px"), Add(name="py"), name="par", merge={"n": "sum"})
        first >> par >> Add(name="z")
        return Flow(start=first, name="f")

    flow().run({"n": 0}, store=store, run_id="src")
    kinds = [step.kind for step in flow().history("src", store=store)]
    assert kinds == ["step", "branch step", "branch", "branch step", "branch", "step", "step"]
    for at in (2, 3, 4, 5):
        with pytest.raises(ResumeError, match=rf"step {at} of run 'src' is inside parallel"):
            flow().fork("src", store=store, at=at, update={"n": 100}, run_id=f"in{at}")
        assert flow().fork("src", store=store, at=at, run_id=f"plain{at}") == {"n": 4}
        other = flow().fork("src", store=store, at=at, update={"m": 1}, run_id=f"m{at}")
        assert other == {"n": 4, "m": 1}  # a key no branch changed: kept as it is
    # As it says: before the branches began, or at the join's step.
    assert flow().fork("src", store=store, at=1, update={"n": 100}, run_id="before") == {"n": 103}
    assert flow().fork("src", store=store, at=6, update={"n": 100}, run_id="join") == {"n": 101}
