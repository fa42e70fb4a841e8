"""`braidflow show`, `fork`, and what `runs` and `resume` say about how far a run got:
driven as a user drives them, in a subprocess."""

import json
import sys

import pytest

from _support import braidflow_command

FLOWS = """
import os
import braidflow as bf


class Load(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["items"] = list(range(shared.get("n", 10)))


class Double(bf.BatchNode):
    def prep(self, shared):
        return shared["items"]

    def exec(self, item):
        if str(item) == os.environ.get("FAIL_AT"):
            raise RuntimeError(f"item {item} failed")
        return item * 2

    def post(self, shared, prep_res, exec_res):
        shared["doubled"] = exec_res


class Total(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["total"] = sum(shared["doubled"])


load, double, total = Load(name="load"), Double(name="double"), Total(name="total")
load >> double >> total
flow = bf.Flow(start=load, name="job")
"""


@pytest.fixture
def work(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


def cli(work, *args, env=None):
    return braidflow_command(work, *args, env=env, unset=("BRAIDFLOW_STORE", "FAIL_AT"))


def failed_run(work, fail_at="7"):
    done = cli(
        work, "run", "flows.py:flow", "--store", "runs.db", "--run-id", "r1",
        env={"FAIL_AT": fail_at},
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    return done


@pytest.mark.slow
def test_show_lists_the_steps_and_says_where_the_run_stopped(work):
    failed_run(work)
    done = cli(work, "show", "r1", "--store", "runs.db")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("run r1 of job: failed, started ")
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == [
        "#",
        "STEP",
        "STATUS",
        "ACTION",
        "STARTED",
        "TOOK",
        "ITEMS",
        "CHANGED",
    ]
    assert table[1].split()[:3] == ["1", "load", "finished"]
    assert table[1].split()[-1] == "items"
    assert table[2].split()[:3] == ["2", "double", "failed"]
    assert "7 of 10 items" in table[2]
    assert lines[-1] == "failed at double: 7 of 10 items done: RuntimeError: item 7 failed"


@pytest.mark.slow
def test_show_at_a_step_prints_shared_then_and_diff_what_each_step_changed(work):
    failed_run(work)
    at = cli(work, "show", "r1", "--store", "runs.db", "--at", "1")
    assert json.loads(at.stdout) == {"items": list(range(10))}
    assert json.loads(cli(work, "show", "r1", "--store", "runs.db", "--at", "0").stdout) == {}
    diff = cli(work, "show", "r1", "--store", "runs.db", "--diff").stdout
    assert "1  load (finished)\n    + items: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" in diff


@pytest.mark.slow
def test_show_json_is_the_record_and_the_steps(work):
    failed_run(work)
    shown = json.loads(cli(work, "show", "r1", "--store", "runs.db", "--json").stdout)
    assert shown["run"]["run_id"] == "r1"
    assert shown["run"]["status"] == "failed"
    assert [(step["path"], step["status"]) for step in shown["steps"]] == [
        ("load", "finished"),
        ("double", "failed"),
    ]
    assert shown["steps"][1]["items_done"] == 7
    diffed = json.loads(cli(work, "show", "r1", "--store", "runs.db", "--json", "--diff").stdout)
    assert diffed["steps"][0]["changes"] == {"items": list(range(10))}


@pytest.mark.slow
def test_runs_says_how_far_a_batch_got_and_resume_what_it_reuses(work):
    failed_run(work)
    listed = cli(work, "runs", "--store", "runs.db").stdout.splitlines()
    assert "double (7 of 10 items)" in listed[1]
    done = cli(work, "resume", "r1", "--store", "runs.db")
    assert done.returncode == 0, done.stderr
    assert "reusing 1 finished step and 7 of 10 items of double" in done.stderr
    assert json.loads(done.stdout)["total"] == 90
    shown = cli(work, "show", "r1", "--store", "runs.db").stdout.splitlines()
    assert shown[1].startswith("resumed 1 time: ")
    assert shown[-1].startswith("completed in ")


@pytest.mark.slow
def test_fork_sets_keys_and_runs_on_from_the_step(work):
    failed_run(work)
    done = cli(
        work, "fork", "r1", "--at", "1", "--set", "items=[1, 2, 3]", "--store", "runs.db",
        "--run-id", "small",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "forked run 'r1' after step 1 as run 'small'" in done.stderr
    assert json.loads(done.stdout) == {"items": [1, 2, 3], "doubled": [2, 4, 6], "total": 12}
    shown = cli(work, "show", "small", "--store", "runs.db").stdout
    assert "forked from run r1 after its step 1" in shown
    assert "load [run r1]" in shown
    assert "load (update)" in shown
    runs = cli(work, "runs", "--store", "runs.db", "--status", "failed").stdout
    assert "r1" in runs  # the source is as it was


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["show", "nope"], "no run 'nope'"),
        (["show", "r1", "--at", "9"], "has no step 9: its steps are numbered 1 to 2"),
        (["show", "r1", "--at", "2"], "did not finish"),
        (["show", "r1", "--at", "x"], "'x' is not a step number"),
        (["fork", "r1", "--at", "9"], "has no step 9"),
        (["fork", "r1", "--set", "items"], "give KEY=JSON"),
        (["fork", "r1", "--set", "items=[1,"], "--set items is not valid JSON"),
        (["fork", "r1", "--set", "items=NaN"], "NaN is not JSON"),
        (["fork", "r1", "--input", '"x"'], "the run is failed; fork it without --input"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(work, args, said):
    failed_run(work)
    done = cli(work, *args, "--store", "runs.db")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert said in done.stderr
    runs = cli(work, "runs", "--store", "runs.db").stdout
    assert "r1-fork" not in runs  # nothing was forked
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    said_lines = [line for line in done.stderr.splitlines() if line.startswith("braidflow:")]
    assert len(said_lines) == 1, done.stderr


ONE_NODE = """
from braidflow import Node


class A(Node):
    def post(self, shared, prep_res, exec_res):
        shared["a"] = 1


a = A(name="a")
"""


def test_show_lists_the_one_step_of_a_node_run_alone(tmp_path, monkeypatch, capsys):
    from braidflow.cli import main

    (tmp_path / "one_node.py").write_text(ONE_NODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the file's directory on it
    try:
        assert main(["run", "one_node.py:a", "--store", "nd.db", "--run-id", "n"]) == 0
    finally:
        sys.modules.pop("braidflow_target_one_node", None)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert main(["show", "n", "--store", "nd.db"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("run n of a: completed, started ")
    table = lines[lines.index("") + 1 :]
    assert table[1].split()[:3] == ["1", "a", "finished"]
    assert table[1].split()[-1] == "a"  # what it changed
    assert lines[-1].startswith("completed in ")
    assert main(["show", "n", "--store", "nd.db", "--at", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"a": 1}


BRANCH_BATCH = """
import braidflow as bf


class Batch(bf.BatchNode):
    def prep(self, shared):
        return range(50)

    def exec(self, item):
        return bf.interrupt(f"item {item}?") if item == 49 else item


class Plain(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["plain"] = 1


flow = bf.Flow(start=bf.Parallel(Batch(name="batch"), Plain(name="plain"), name="fan"), name="job")
"""


def test_runs_show_and_resume_tell_how_far_a_batch_in_a_branch_got(tmp_path, monkeypatch, capsys):
    from braidflow.cli import main

    (tmp_path / "branch_batch.py").write_text(BRANCH_BATCH)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the file's directory on it
    try:
        main(["run", "branch_batch.py:flow", "--store", "b.db", "--run-id", "b"])
        capsys.readouterr()
        assert main(["runs", "--store", "b.db"]) == 0
        assert "fan/batch/batch (49 of 50 items)" in capsys.readouterr().out.splitlines()[1]
        assert main(["show", "b", "--store", "b.db"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[-3].split()[:5] == ["4", "fan/batch/batch", "(branch", "step)", "waiting"]
        assert lines[-3].endswith("49 of 50 items")
        assert lines[-1].startswith("waiting at fan/batch/batch for input")
        main(["resume", "b", "--store", "b.db"])
        said = capsys.readouterr().err
        assert "reusing 1 finished step and 49 of 50 items of fan/batch/batch" in said
    finally:
        sys.modules.pop("braidflow_target_branch_batch", None)
