"""What a run under ``durability="async"`` or ``"exit"`` stores of its steps:
each step's row without its changes, and ``shared`` as it was after the last
finished step with every batch written. So a resume starts from exactly the
state the last finished step left, whatever the step that stopped the run
did to ``shared`` before it failed; and the history lists every step but
has the state only where one was stored."""

import itertools
import subprocess
import sys
from array import array
from collections import Counter
from typing import TypedDict

import pytest

import braidflow as bf
from braidflow import ResumeError, SQLiteStore
from braidflow.durable._history import _state_rows
from braidflow.durable._lax import StepColumns, expand
from braidflow.stores import Checkpoint

LAX = ["async", "exit"]


class Add(bf.Node):
    """Adds its number to shared["total"] and to the list shared["seen"]."""

    def __init__(self, number, calls):
        super().__init__(name=f"n{number}")
        self.number, self.calls = number, calls

    def exec(self, prep_res):
        self.calls[self.number] += 1

    def post(self, shared, prep_res, exec_res):
        shared["total"] += self.number
        shared["seen"].append(self.number)  # in place: the list stays the same object
        shared["last"] = f"n{self.number}"


class HalfDone(Add):
    """Changes shared as `Add` does, then fails, the first time only."""

    def post(self, shared, prep_res, exec_res):
        super().post(shared, prep_res, exec_res)
        shared["half"] = True
        if self.calls[self.number] == 1:
            raise RuntimeError(f"n{self.number} failed after changing shared")


def chain(*nodes):
    for left, right in itertools.pairwise(nodes):
        left >> right
    return bf.Flow(start=nodes[0], name="job")


def start():
    return {"total": 0, "seen": [], "last": None}


@pytest.mark.parametrize("durability", LAX)
def test_what_a_failed_step_changed_before_it_failed_is_not_kept(durability):
    store, calls = bf.MemoryStore(), Counter()

    def flow():
        return chain(Add(0, calls), Add(1, calls), HalfDone(2, calls), Add(3, calls))

    with pytest.raises(RuntimeError, match="n2 failed"):
        flow().run(start(), store=store, run_id="run", durability=durability)
    # As n1 left it: nothing n2 did, though it changed a list in place.
    assert bf.Flow().state("run", store=store) == {"total": 1, "seen": [0, 1], "last": "n1"}
    shared = flow().resume("run", store=store, durability=durability)
    assert shared == {"total": 6, "seen": [0, 1, 2, 3], "last": "n3", "half": True}
    assert calls == {0: 1, 1: 1, 2: 2, 3: 1}


@pytest.mark.parametrize("durability", LAX)
def test_the_history_lists_every_step_and_has_the_state_the_run_ended_with(durability):
    store, calls = bf.MemoryStore(), Counter()
    flow = chain(*(Add(number, calls) for number in range(5)))
    flow.run(start(), store=store, run_id="run", durability=durability)
    steps = bf.Flow().history("run", store=store)
    assert [(step.number, step.node, step.status) for step in steps] == [
        (number + 1, f"n{number}", "finished") for number in range(5)
    ]
    assert all(step.started <= step.ended for step in steps)
    assert all(step.changed == () for step in steps)  # recorded with the state, not each step
    end = {"total": 10, "seen": [0, 1, 2, 3, 4], "last": "n4"}
    assert bf.Flow().state("run", store=store) == end
    assert bf.Flow().state("run", store=store, at=5) == end
    assert bf.Flow().state("run", store=store, at=0) == start()
    with pytest.raises(ResumeError, match="did not store the state after step 2") as caught:
        bf.Flow().state("run", store=store, at=2)
    assert "steps 0 and 5 have one" in str(caught.value)
    assert "durability='sync'" in str(caught.value)
    # As it says: the same run with durability="sync" has every step's state.
    flow.run(start(), store=store, run_id="strict", durability="sync")
    assert bf.Flow().state("strict", store=store, at=2) == {
        "total": 1,
        "seen": [0, 1],
        "last": "n1",
    }


@pytest.mark.parametrize("durability", LAX)
def test_a_fork_starts_from_a_step_whose_state_was_stored(durability):
    store, calls = bf.MemoryStore(), Counter()

    def flow():
        return chain(*(Add(number, calls) for number in range(3)))

    flow().run(start(), store=store, run_id="run", durability=durability)
    with pytest.raises(ResumeError, match="did not store the state after step 1"):
        flow().fork("run", store=store, at=1)
    shared = flow().fork("run", store=store, at=3, run_id="fork", update={"total": 100})
    assert shared == {"total": 100, "seen": [0, 1, 2], "last": "n2"}  # nothing left to run
    assert calls == {0: 1, 1: 1, 2: 1}
    # A fork of the fork, in the middle of what it took over: none stored there either.
    with pytest.raises(ResumeError, match="did not store the state after step 2"):
        flow().fork("fork", store=store, at=2)


class Inner(bf.Node):
    def __init__(self, name, calls, fail):
        super().__init__(name=name)
        self.calls, self.fail = calls, fail

    def post(self, shared, prep_res, exec_res):
        self.calls[self.name] += 1
        shared["path"] = [*shared["path"], self.name]
        if self.fail and self.calls[self.name] == 1:
            raise RuntimeError(f"{self.name} failed")


@pytest.mark.parametrize("durability", LAX)
def test_steps_of_nested_flows_resume_exactly(durability):
    store, calls = bf.MemoryStore(), Counter()

    def flow():
        def sub(name, fail=False):
            first, second = Inner(f"{name}.a", calls, False), Inner(f"{name}.b", calls, fail)
            first >> second
            return bf.Flow(start=first, name=name)

        return chain(Inner("top", calls, False), sub("s1"), sub("s2", fail=True), sub("s3"))

    with pytest.raises(RuntimeError, match=r"s2\.b failed"):
        flow().run({"path": []}, store=store, run_id="run", durability=durability)
    shared = flow().resume("run", store=store, durability=durability)
    assert shared["path"] == ["top", "s1.a", "s1.b", "s2.a", "s2.b", "s3.a", "s3.b"]
    assert calls == {"top": 1, "s1.a": 1, "s1.b": 1, "s2.a": 1, "s2.b": 2, "s3.a": 1, "s3.b": 1}
    names = [step.node for step in bf.Flow().history("run", store=store)]
    assert names == ["top", "s1.a", "s1.b", "s1", "s2.a", "s2.b", "s2", "s3.a", "s3.b", "s3"]


class Counted(TypedDict):
    total: int
    seen: list[int]
    last: str | None


@pytest.mark.parametrize("durability", LAX)
def test_a_typed_flow_s_steps_are_recorded_the_same_way(durability):
    store, calls = bf.MemoryStore(), Counter()

    def flow():
        nodes = (Add(0, calls), HalfDone(1, calls), Add(2, calls))
        for left, right in itertools.pairwise(nodes):
            left >> right
        return bf.Flow(start=nodes[0], name="job", state=Counted)

    with pytest.raises(RuntimeError, match="n1 failed"):
        flow().run(start(), store=store, run_id="run", durability=durability)
    assert bf.Flow().state("run", store=store) == {"total": 0, "seen": [0], "last": "n0"}
    assert flow().resume("run", store=store)["seen"] == [0, 1, 2]


def test_a_run_s_record_says_where_it_is_from_its_last_rows(tmp_path):
    """`runs()` takes where a run is from its last row when the run did not
    say (a killed run): the row of what its steps changed stands where the
    last of them does."""
    with SQLiteStore(tmp_path / "runs.db") as store:
        calls = Counter()
        chain(Add(0, calls), Add(1, calls)).run(
            start(), store=store, run_id="run", durability="async"
        )
        kinds = [row.kind for row in store.read("run")[3]]
        assert kinds[-1] == "state"
        assert store.get("run").node == "job/n1"


def test_show_lists_a_lax_run_s_steps_and_its_end(tmp_path):
    with SQLiteStore(tmp_path / "runs.db") as store:
        calls = Counter()
        chain(Add(0, calls), Add(1, calls)).run(
            start(), store=store, run_id="run", durability="exit"
        )
    shown = subprocess.run(
        [sys.executable, "-m", "braidflow", "show", "run", "--store", "runs.db", "--diff"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "1  n0 (finished)\n2  n1 (finished)\n" in shown.stdout


def test_the_dashboard_says_why_a_step_has_no_state_to_show(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from braidflow.ui import create_app

    path = tmp_path / "runs.db"
    with SQLiteStore(path) as store:
        calls = Counter()
        chain(Add(0, calls), Add(1, calls), Add(2, calls)).run(
            start(), store=store, run_id="run", durability="exit"
        )
    app = create_app(SQLiteStore(path, read_only=True), path)
    client = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    page = client.get("/runs/run?at=1").text
    assert "did not store the state after step 1" in page
    assert "the page shows the state after the last step" in page
    assert "did not store" not in client.get("/runs/run?at=3").text


class Unsavable(bf.Node):
    """Sets a key that can be stored and one that cannot, the first time."""

    def __init__(self, calls):
        super().__init__(name="unsavable")
        self.calls = calls

    def post(self, shared, prep_res, exec_res):
        self.calls["unsavable"] += 1
        shared["last"] = "unsavable"
        if self.calls["unsavable"] == 1:
            shared["client"] = object()  # JSON cannot hold it


@pytest.mark.parametrize("durability", LAX)
def test_a_step_that_leaves_a_value_the_store_cannot_hold_fails_and_keeps_nothing(durability):
    store, calls = bf.MemoryStore(), Counter()

    def flow():
        return chain(Add(0, calls), Unsavable(calls), Add(1, calls))

    with pytest.raises(bf.CheckpointError, match="shared\\['client'\\]"):
        flow().run(start(), store=store, run_id="run", durability=durability)
    # Not even the key it could store: the step failed as a whole.
    assert bf.Flow().state("run", store=store) == {"total": 0, "seen": [0], "last": "n0"}

    def without_client(shared):
        shared.pop("client", None)

    shared = flow().resume("run", store=store, migrate=without_client, durability=durability)
    assert shared == {"total": 1, "seen": [0, 1], "last": "n1"}


def test_steps_kept_in_columns_come_back_as_they_were_however_the_rows_are_cut():
    # Taken in the middle of a walk (an async batch), then on; another walk
    # between; two classes; an action given now and then.
    columns = StepColumns()
    kept = []
    for position in range(5):
        action = "again" if position == 3 else None
        kind = "Look" if position % 2 else "Add"
        columns.add("0:job", position, f"n{position}", kind, action, 10.0 + position, 10.5)
        if position == 1:
            kept += columns.take()
        if position == 2:
            columns.add("0:job/2:inner", 0, "deep", "Add", None, 20.0, 20.5)
    kept += columns.take()
    steps = [
        (row.frame, row.position, row.node, row.node_class, row.action, row.started)
        for row in expand(kept)
    ]
    assert steps == [
        ("0:job", 0, "n0", "Add", None, 10.0),
        ("0:job", 1, "n1", "Look", None, 11.0),
        ("0:job", 2, "n2", "Add", None, 12.0),
        ("0:job/2:inner", 0, "deep", "Add", None, 20.0),
        ("0:job", 3, "n3", "Look", '"again"', 13.0),
        ("0:job", 4, "n4", "Add", None, 14.0),
    ]
    # Each row stands where its last step stands.
    assert [(row.frame, row.position, row.node) for row in kept] == [
        ("0:job", 1, "n1"),
        ("0:job", 2, "n2"),
        ("0:job/2:inner", 0, "deep"),
        ("0:job", 4, "n4"),
    ]


def test_a_row_of_steps_in_the_first_format_is_still_read():
    # The first lax runs wrote the four lists as they were.
    times = array("d", [1.0, 2.0, 1.5, 2.5])
    if sys.byteorder != "little":
        times.byteswap()
    payload = b'[[0,1],["a","b"],["A","B"],[null,"\\"go\\""]]\n' + times.tobytes()
    row = Checkpoint("steps", "0:job", 1, "b", "B", None, payload, 1.0, 2.5)
    assert [(r.position, r.node, r.node_class, r.action, r.ended) for r in expand([row])] == [
        (0, "a", "A", None, 1.5),
        (1, "b", "B", '"go"', 2.5),
    ]


def test_a_row_of_steps_with_actions_by_index_is_still_read():
    # Rows written before actions were kept where they change held each
    # action given by its step's index.
    times = array("d", [1.0, 2.0, 3.0, 1.5, 2.5, 3.5])
    if sys.byteorder != "little":
        times.byteswap()
    text = b'{"first":4,"names":["a","b","c"],"classes":[[0,"A"]],"actions":{"1":"\\"go\\""}}'
    row = Checkpoint("steps", "0:job", 6, "c", "A", None, text + b"\n" + times.tobytes(), 1.0, 3.5)
    assert [(r.position, r.node, r.action, r.ended) for r in expand([row])] == [
        (4, "a", None, 1.5),
        (5, "b", '"go"', 2.5),
        (6, "c", None, 3.5),
    ]


def test_actions_kept_where_they_change_come_back_for_every_step():
    columns = StepColumns()
    given = [None, "again", "again", None, 3, "again", "again"]
    for position, action in enumerate(given):
        columns.add("0:job", position, f"n{position}", "Add", action, 1.0, 2.0)
    rows = columns.take()
    assert b'"acts"' in rows[0].payload
    assert rows[0].payload.count(b"again") == 2  # where it changes only
    assert [row.action for row in expand(rows)] == [
        None,
        '"again"',
        '"again"',
        None,
        "3",
        '"again"',
        '"again"',
    ]


@pytest.mark.parametrize("durability", ["sync", *LAX])
def test_a_step_may_look_for_keys_that_are_not_there_whatever_their_type(durability):
    class Peek(bf.Node):
        def prep(self, shared):
            return shared.get(42, "absent"), shared.pop(("a", 1), None)

        def post(self, shared, prep_res, exec_res):
            shared["seen"] = list(prep_res)

    store = bf.MemoryStore()
    shared = {"x": 1}
    bf.Flow(start=Peek(name="peek")).run(shared, store=store, run_id="r", durability=durability)
    assert shared == {"x": 1, "seen": ["absent", None]}
    assert bf.stored_state("r", store=store) == shared


# -- the state after a branch's step --------------------------------------------------------
# A branch works on a view of shared: after one of its steps (or after it),
# shared is as the run's last step before it left it. Under async or exit
# that state is there exactly when that step's is; never the one the run
# started with, which would lose what the steps before it did.


class Mark(bf.Node):
    """Sets shared[its name] (and its parameter set's number, if any) to True."""

    def post(self, shared, prep_res, exec_res):
        shared[f"{self.name}{self.params.get('i', '')}"] = True


class AsyncMark(bf.AsyncNode):
    """`Mark`, async."""

    async def post_async(self, shared, prep_res, exec_res):
        shared[f"{self.name}{self.params.get('i', '')}"] = True


class MarkSets(bf.AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"i": 0}, {"i": 1}]


def in_branches(**x):
    """first >> second >> Parallel(x, y) >> last: steps 3 to 6 are the branches'."""
    first, second = Mark(name="first"), Mark(name="second")
    branches = bf.Parallel(Mark(name="x", **x), Mark(name="y"), name="par")
    first >> second >> branches >> Mark(name="last")
    return bf.Flow(start=first, name="job")


def in_sets(**x):
    """first >> isolated sets of x >> last: steps 2 and 3 are the sets'."""
    first, sets = AsyncMark(name="first"), AsyncMark(name="x", **x)
    first >> MarkSets(start=sets, name="sets", isolate=True) >> AsyncMark(name="last")
    return bf.AsyncFlow(start=first, name="job")


def states_by_step(store, run_id):
    """Each step's (number, kind, state after it), the state None where none was stored."""
    found = []
    for step in bf.history(run_id, store=store):
        try:
            state = bf.stored_state(run_id, store=store, at=step.number)
        except ResumeError:  # (it did not store the state after it)
            state = None
        found.append((step.number, step.kind, state))
    return found


def same_as_sync_where_stored(flow, durability):
    """Run ``flow()`` under ``sync`` and ``durability``: each step of the
    second has the state the first has there, or none; a fork from each
    branch step gives what the sync run's fork gives, or is refused. The
    steps of the second that have a state, by number."""
    store = bf.MemoryStore()
    flow().run({"start": 1}, store=store, run_id="sync", durability="sync")
    flow().run({"start": 1}, store=store, run_id="lax", durability=durability)
    strict, lax = states_by_step(store, "sync"), states_by_step(store, "lax")
    assert [step[:2] for step in lax] == [step[:2] for step in strict]
    for (number, kind, expected), (_, _, state) in zip(strict, lax, strict=True):
        assert state is None or state == expected, (number, kind)
        if kind not in ("branch step", "branch"):
            continue
        forked = flow().fork(
            "sync", store=store, at=number, update={"late": 1}, run_id=f"s{number}"
        )
        assert "first" in forked
        if state is None:
            with pytest.raises(ResumeError, match=f"did not store the state after step {number}"):
                flow().fork("lax", store=store, at=number, run_id=f"l{number}")
        else:
            again = flow().fork(
                "lax", store=store, at=number, update={"late": 1}, run_id=f"l{number}"
            )
            assert again == forked
    return [number for number, _, state in lax if state is not None]


@pytest.mark.parametrize("durability", LAX)
@pytest.mark.parametrize("flow", [in_branches, in_sets], ids=["parallel", "sets"])
def test_a_branch_step_has_the_state_the_sync_run_has_there_or_none(flow, durability):
    same_as_sync_where_stored(flow, durability)


@pytest.mark.parametrize("flow", [in_branches, in_sets], ids=["parallel", "sets"])
def test_a_branch_step_after_a_step_without_a_stored_state_has_none(flow):
    store = bf.MemoryStore()
    flow().run({"start": 1}, store=store, run_id="run", durability="exit")
    steps = bf.history("run", store=store)
    last = len(steps)
    branches = [step for step in steps if step.kind in ("branch step", "branch")]
    assert len(branches) == (4 if flow is in_branches else 2)
    for step in branches:
        with pytest.raises(ResumeError, match=f"after step {step.number} ") as caught:
            bf.stored_state("run", store=store, at=step.number)
        assert f"steps 0 and {last} have one" in str(caught.value)
        with pytest.raises(ResumeError, match=f"after step {step.number} "):
            flow().fork("run", store=store, at=step.number)
    assert [run.run_id for run in store.runs()] == ["run"]  # no fork was made


BEFORE_BRANCHES = {  # shared after the run's last step before the branches; at its end
    "parallel": ({"start": 1, "first": True, "second": True}, ["x", "y", "last"]),
    "sets": ({"start": 1, "first": True}, ["x0", "x1", "last"]),
}


@pytest.mark.parametrize("durability", LAX)
@pytest.mark.parametrize("shape", ["parallel", "sets"])
def test_a_branch_step_after_a_stored_state_has_it_and_a_fork_from_it_keeps_it(shape, durability):
    # x asks for durability="sync": the batch its step ends holds shared as
    # the run's step before it left it, so every branch step has that state.
    def flow():
        return (in_branches if shape == "parallel" else in_sets)(durability="sync")

    stored = same_as_sync_where_stored(flow, durability)
    store = bf.MemoryStore()
    flow().run({"start": 1}, store=store, run_id="run", durability=durability)
    before, added = BEFORE_BRANCHES[shape]
    branches = [
        step.number
        for step in bf.history("run", store=store)
        if step.kind in ("branch step", "branch")
    ]
    assert set(branches) <= set(stored)
    for number in branches:
        assert bf.stored_state("run", store=store, at=number) == before
    shared = flow().fork("run", store=store, at=branches[0], update={"late": 1}, run_id="fork")
    assert shared == {**before, "late": 1, **dict.fromkeys(added, True)}
    assert bf.stored_state("fork", store=store, at=branches[0]) == before


def test_a_branch_s_rows_take_the_state_of_the_step_before_them():
    def row(kind, payload=b""):
        return Checkpoint(kind, "0:job", 0, "n", "N", None, payload, None, 1.0)

    changes = b'[["k",1,1]]'
    rows = [
        row("step"),  # 0: its state is in none: 4 holds shared after 1
        row("step"),  # 1
        row("view_step", changes),  # 2: after 1, written before its state
        row("branch", changes),  # 3
        row("state", changes),  # 4
        row("branch", changes),  # 5: after the state row: the fold holds it
        row("step"),  # 6: none
        row("view_step", changes),  # 7: after 6: none
        row("step"),  # 8
        row("state", changes),  # 9
        row("step"),  # 10: changed nothing (13 has its changes, not a state row)
        row("view_step", changes),  # 11: after 10: the fold holds it
        row("step"),  # 12
        row("step", changes),  # 13: a step with its changes: those before changed nothing
        row("view_step", changes),  # 14
    ]
    assert _state_rows(rows) == {0: None, 1: 4, 2: 4, 3: 4, 6: None, 7: None, 8: 9}


@pytest.mark.slow
def test_the_dashboard_shows_a_branch_step_s_state_or_why_it_has_none(tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from braidflow.ui import create_app

    path = tmp_path / "runs.db"
    with SQLiteStore(path) as store:
        in_branches().run({"start": 1}, store=store, run_id="none", durability="exit")
        in_branches(durability="sync").run(
            {"start": 1}, store=store, run_id="some", durability="exit"
        )
    app = create_app(SQLiteStore(path, read_only=True), path)
    client = TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)
    page = client.get("/runs/none?at=3").text
    assert "did not store the state after step 3 (par/x/x)" in page
    assert "steps 0 and 8 have one" in page
    page = client.get("/runs/some?at=3").text
    assert "did not store" not in page
    assert "a fork starts after a step of the run" in page  # the state after step 3 is shown


@pytest.mark.parametrize("how", ["del and iterate", "clear"])
@pytest.mark.parametrize("strict_make", [False, True], ids=["one batch", "saved before"])
@pytest.mark.parametrize("durability", ["sync", *LAX])
def test_a_key_made_then_deleted_by_a_step_that_goes_through_every_key_stays_deleted(
    durability, strict_make, how
):
    # The deleting step iterates shared (a log line's dict(shared)): its
    # touched set is "every key", which must include a key made since the
    # last row (one batch) and one saved in an earlier row (a strict node
    # writes the batch before it).
    fail = [True]

    class Make(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["tmp"] = "scratch"

    class Drop(bf.Node):
        def post(self, shared, prep_res, exec_res):
            if how == "clear":
                shared.clear()
            else:
                del shared["tmp"]
                dict(shared)

    class Last(bf.Node):
        def post(self, shared, prep_res, exec_res):
            if fail[0]:
                raise RuntimeError("last fails once")
            shared["present"] = "tmp" in shared

    def flow():
        make = Make(name="make", durability="sync" if strict_make else None)
        make >> Drop(name="drop") >> Last(name="last")
        return bf.Flow(start=make)

    store = bf.MemoryStore()
    with pytest.raises(RuntimeError, match="fails once"):
        flow().run({}, store=store, run_id="run", durability=durability)
    assert bf.Flow().state("run", store=store) == {}
    fail[0] = False
    assert flow().resume("run", store=store) == {"present": False}


@pytest.mark.parametrize("durability", ["sync", *LAX])
def test_what_the_flows_own_post_undoes_after_its_steps_is_stored(durability):
    # A step sets x to 2 and makes tmp; the flow's post sets x back to its
    # value at the start and deletes tmp: the stored state is shared as the
    # run left it, compared with what the steps' rows saved.
    class Set(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["x"] = 2
            shared["tmp"] = "made"

    class Outer(bf.Flow):
        def post(self, shared, prep_res, exec_res):
            shared["x"] = 1
            del shared["tmp"]

    store = bf.MemoryStore()
    shared = {"x": 1}
    Outer(start=Set(name="set")).run(shared, store=store, run_id="run", durability=durability)
    assert shared == {"x": 1}
    assert bf.Flow().state("run", store=store) == {"x": 1}


# -- the state after a step that touches nothing ----------------------------------------------
# Under async or exit such a step's state is in no "state" row of its own: the
# writer writes one only when a step changed something. The next "state" row
# may be what a sub-flow's own prep or the run's own flow wrote after the step:
# that is not shared as the step left it.


class Quiet(bf.Node):
    """Reads and writes no key of shared."""


class AsyncQuiet(bf.AsyncNode):
    """`Quiet`, async."""


def quiet_then(then, flow_kind):
    """quiet >> a sub-flow whose prep writes (``then="prep"``), or quiet
    alone in a flow whose post writes (``"post"``): step 1 is quiet's."""
    is_async = flow_kind == "async"
    base = bf.AsyncFlow if is_async else bf.Flow

    class Sub(base):
        def prep(self, shared):
            shared["log"].append("sub prep")

    class Top(base):
        def post(self, shared, prep_res, exec_res):
            shared["log"].append("top post")

    quiet = (AsyncQuiet if is_async else Quiet)(name="quiet")
    if then == "post":
        return Top(start=quiet, name="top")
    quiet >> Sub(start=(AsyncMark if is_async else Mark)(name="inner"), name="sub")
    return base(start=quiet, name="top")


@pytest.mark.parametrize("durability", ["sync", *LAX])
@pytest.mark.parametrize("flow_kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("then", "expected"),
    [("prep", {"log": ["sub prep"], "inner": True}), ("post", {"log": ["top post"]})],
)
def test_the_state_after_a_step_that_touches_nothing_is_shared_as_it_left_it(
    then, expected, flow_kind, durability
):
    store = bf.MemoryStore()
    shared = {"log": []}
    quiet_then(then, flow_kind).run(shared, store=store, run_id="run", durability=durability)
    assert shared == expected
    assert bf.stored_state("run", store=store) == expected
    assert bf.stored_state("run", store=store, at=1) == {"log": []}
    forked = quiet_then(then, flow_kind).fork("run", store=store, at=1, run_id="fork")
    assert forked == expected  # what came after the step is done once, by the fork


def test_a_prep_s_or_the_run_s_own_state_row_is_no_step_s_state():
    def row(kind, node="n", payload=b""):
        return Checkpoint(kind, "0:job", 0, node, "N", None, payload, None, 1.0)

    changes = b'[["k",1,1]]'
    rows = [
        row("step"),  # 0: changed nothing: exact where it is
        row("state", "prep", changes),  # 1: a sub-flow's prep wrote k
        row("step"),  # 2
        row("step"),  # 3
        row("state", "", changes),  # 4: what 2 and 3 changed
        row("step"),  # 5: changed nothing
        row("view_step", changes),  # 6: after 5: exact too
        row("state", "post", changes),  # 7: the run's own flow wrote k after its steps
    ]
    assert _state_rows(rows) == {2: None, 3: 4}
