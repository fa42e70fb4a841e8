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
        action = '"again"' if position == 3 else None
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
