"""The braidflow command, driven as a user drives it: in a subprocess."""

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _support import braidflow_command

FLOWS = """
import asyncio
import os
from pathlib import Path

import braidflow as bf


class Greet(bf.AsyncNode):
    async def prep_async(self, shared):
        return shared.get("name", "world")

    async def exec_async(self, name):
        await asyncio.sleep(0)
        return f"hello {name}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["greeting"] = exec_res


class Fragile(bf.Node):
    def exec(self, prep_res):
        if not Path("fixed").exists():
            raise ConnectionError("upstream down")
        return "fine"

    def post(self, shared, prep_res, exec_res):
        shared["fragile"] = exec_res


class Ask(bf.Node):
    def exec(self, prep_res):
        return bf.interrupt({"question": "ship it?"})

    def post(self, shared, prep_res, exec_res):
        shared["approved"] = exec_res


class Asks(bf.Node):
    def exec(self, prep_res):
        return bf.interrupt("ok?")


asks = bf.Flow(start=Asks())


class Big(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["lines"] = [f"line {n}" for n in range(100_000)]  # more than a pipe holds


big = bf.Flow(start=Big())


class Odd(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["tags"] = {"a", "b"}
        shared[(1, 2)] = "pair"
        shared["ratio"] = float("nan")
        shared["limits"] = [float("inf"), -float("inf")]
        shared["by_id"] = {1: "int key", "1": "str key", None: "none key", 2: "two"}


class Waits(bf.Node):
    def exec(self, prep_res):
        Path("started").write_text("yes")
        while not Path("go").exists():
            import time

            time.sleep(0.01)
        return "went"

    def post(self, shared, prep_res, exec_res):
        shared["waited"] = exec_res


class WaitsAsync(bf.AsyncNode):
    async def exec_async(self, prep_res):
        Path("started").write_text("yes")
        while not Path("go").exists():
            await asyncio.sleep(0.01)
        return "went"

    async def post_async(self, shared, prep_res, exec_res):
        shared["waited"] = exec_res


greet = bf.AsyncFlow(start=Greet(name="greet"), name="greet")

first = Greet(name="greet")
first >> Fragile(name="fragile")
fragile = bf.AsyncFlow(start=first, name="fragile")

hello = Greet(name="greet")
hello >> Ask(name="ask")
review = bf.AsyncFlow(start=hello, name="review")

class Mark(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["marks"] = shared.get("marks", 0) + 1


first_step = Mark()
first_step >> Mark()  # a node with a successor, run alone by `run flows.py:first_step`

odd = bf.Flow(start=Odd())
slow = bf.Flow(start=Waits(name="waits"), name="slow")
slow_async = bf.AsyncFlow(start=WaitsAsync(name="waits"), name="slow_async")


class AskFor(bf.Node):
    def exec(self, prep_res):
        return bf.interrupt(f"{self.name}?")

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = exec_res


two_asks = bf.Flow(start=bf.Parallel(AskFor(name="a"), AskFor(name="b"), name="both"), name="two")


def make_greet():
    return bf.AsyncFlow(start=Greet())


def needs_arguments(name):
    return greet


def broken_factory():
    raise RuntimeError("no config")


number = 3


def returns_a_number():
    return 3


class Pipeline(bf.AsyncFlow):
    pass
"""


BRAIDFLOW = [sys.executable, "-m", "braidflow"]


@pytest.fixture
def work(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


def cli(work, *args, check_stderr_one_line=False, env=None):
    done = braidflow_command(work, *args, env=env)
    if check_stderr_one_line:
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().startswith("braidflow: ")
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""
    return done


def status(work, run_id, store="runs.db"):
    from braidflow import SQLiteStore

    with SQLiteStore(work / store) as opened:
        return opened.get(run_id).status


# -- run ----------------------------------------------------------------------------------


def test_run_prints_the_final_shared_as_json_and_nothing_else(work):
    done = cli(work, "run", "flows.py:greet", "--shared", '{"name": "ada"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"name": "ada", "greeting": "hello ada"}
    assert done.stderr == ""


@pytest.mark.slow
def test_run_reads_shared_from_a_file_and_writes_it_to_a_file(work):
    (work / "in.json").write_text('{"name": "bo"}')
    done = cli(work, "run", "flows.py:greet", "--shared", "@in.json", "--out", "out.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert json.loads((work / "out.json").read_text())["greeting"] == "hello bo"


def test_values_json_cannot_hold_are_shown_by_repr(work):
    done = cli(work, "run", "flows.py:odd")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["(1, 2)"] == "pair"
    assert shown["tags"] in ("{'a', 'b'}", "{'b', 'a'}")


def strict_json(text):
    """JSON as a strict parser reads it: no NaN or Infinity, no key twice."""

    def no_constant(name):
        raise AssertionError(f"{name} is not JSON")

    def no_key_twice(pairs):
        keys = [key for key, _ in pairs]
        assert len(keys) == len(set(keys)), f"a key given twice: {keys}"
        return dict(pairs)

    return json.loads(text, parse_constant=no_constant, object_pairs_hook=no_key_twice)


def test_the_output_is_strict_json_that_keeps_every_entry(work):
    done = cli(work, "run", "flows.py:odd")
    assert done.returncode == 0, done.stderr
    written = cli(work, "run", "flows.py:odd", "--out", "o.json")
    assert written.returncode == 0, written.stderr
    for text in (done.stdout, (work / "o.json").read_text()):
        shown = strict_json(text)
        assert shown["ratio"] == "nan"
        assert shown["limits"] == ["inf", "-inf"]
        # A string key is kept as it is; an int key that would be written the
        # same is shown by its repr and type; the others as JSON writes them.
        assert shown["by_id"] == {
            "1 (int)": "int key",
            "1": "str key",
            "null": "none key",
            "2": "two",
        }


def test_a_module_target_and_a_function_returning_a_flow(work):
    done = cli(work, "run", "flows:make_greet")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "hello world"}


def test_progress_goes_to_stderr_and_stdout_stays_json(work):
    pytest.importorskip("rich")
    done = cli(work, "run", "flows.py:greet", "--progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "hello world"}


def test_a_run_can_write_a_trace_and_a_timeline(work):
    done = cli(work, "run", "flows.py:greet", "--trace", "t.jsonl", "--timeline", "t.html")
    assert done.returncode == 0, done.stderr
    kinds = [json.loads(line)["kind"] for line in (work / "t.jsonl").read_text().splitlines()]
    assert kinds[0] == "run_start"
    assert kinds[-1] == "run_end"
    assert (work / "t.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "missing.py:flow"], "no file 'missing.py'"),
        (["run", "flows.py:nothing"], "flows.py has no 'nothing'; its flows: "),
        (["run", "flows.py:number"], "'number' in flows.py is an int, not a flow"),
        (["run", "flows.py:returns_a_number"], "returns_a_number() in flows.py returned an int"),
        (["run", "flows.py:needs_arguments"], "is a function that needs arguments"),
        (["run", "flows.py:broken_factory"], "broken_factory() in flows.py failed: RuntimeError"),
        (["run", "no_such_module:flow"], "no module 'no_such_module'"),
        (["run", "flows.py"], "should be path/to/file.py:name or package.module:name"),
        (["run", "flows.py:greet", "--shared", "{bad"], "--shared is not valid JSON"),
        (["run", "flows.py:greet", "--shared", "[1]"], "--shared must be a JSON object, got"),
        (["run", "flows.py:greet", "--shared", "@list.json"], "object (in 'list.json'), got list"),
        (["run", "flows.py:greet", "--shared", "@gone.json"], "cannot read 'gone.json'"),
        (["runs", "--store", "none.db"], "no store at 'none.db'"),
        (["resume", "x", "--store", "none.db"], "no store at 'none.db'"),
        (["timeline", "x", "--store", "none.db", "-o", "t.html"], "no store at 'none.db'"),
        (["runs", "--store", "flows.py"], "not a braidflow store"),
        (["runs", "--store", "."], "--store '.' is a directory: give the path of a store's"),
        (["run", "flows.py:greet", "--store", "."], "such as 'braidflow.db' (a new one is"),
        (["run", "flows.py:greet", "--timeline", "no/such/dir/t.html"], "t.html"),
        (["run", "flows.py:greet", "--out", "no/such/dir/o.json"], "--out: cannot write"),
        (["run", "flows.py:greet", "--run-id", ""], "--run-id is empty"),
        (["run", "flows.py:Greet"], "'Greet' in flows.py is a node class; point TARGET at a node"),
        (["run", "flows.py:Pipeline"], "is a flow class; point TARGET at a flow made from it"),
        (["run", "flows.py:asks"], "asks for input (braidflow.interrupt)"),
        (["run", "flows.py:greet", "--shared", "{'a': 1}"], "take double quotes"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(work, args, said):
    (work / "list.json").write_text("[1, 2]")
    done = cli(work, *args, check_stderr_one_line=True)  # argparse's own errors too
    assert done.returncode == 2
    assert said in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["show", "x"],
        ["resume", "x"],
        ["fork", "x", "flows.py:greet"],
        ["timeline", "x", "-o", "t.html"],
        ["graph", "flows.py:greet", "--run", "x"],
        ["ui", "--port", "0"],
    ],
    ids=lambda args: args[0],
)
def test_a_command_that_never_creates_a_store_refuses_an_empty_file_and_leaves_it(work, args):
    if args[0] == "ui":
        pytest.importorskip("uvicorn")
    (work / "empty.db").write_bytes(b"")
    done = cli(work, *args, "--store", "empty.db", check_stderr_one_line=True)
    assert "no store at 'empty.db': the file is empty (give --store PATH" in done.stderr
    assert (work / "empty.db").stat().st_size == 0


def test_run_makes_its_store_in_an_empty_file_as_where_there_is_none(work):
    (work / "empty.db").write_bytes(b"")
    made = cli(work, "run", "flows.py:greet", "--store", "empty.db", "--run-id", "x")
    assert made.returncode == 0, made.stderr
    assert status(work, "x", store="empty.db") == "completed"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"name": "caf\xe9"}', "cannot read 'in.json': it is not UTF-8 text (byte 13"),
        (b"\xff\xfe{\x00}\x00", "cannot read 'in.json': it is not UTF-8 text (byte 0"),
        (None, "cannot read 'in.json' (Is a directory)"),
    ],
)
def test_an_input_file_that_cannot_be_read_is_bad_input_naming_it(work, content, said):
    if content is None:
        (work / "in.json").mkdir()
    else:
        (work / "in.json").write_bytes(content)
    done = cli(work, "run", "flows.py:greet", "--shared", "@in.json", check_stderr_one_line=True)
    assert f"--shared: {said}" in done.stderr
    waiting = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "w")
    assert waiting.returncode == 3
    answer = cli(work, "resume", "w", "--store", "runs.db", "--input", "@in.json")
    assert answer.returncode == 2
    assert f"--input: {said}" in answer.stderr
    assert len(answer.stderr.strip().splitlines()) == 1
    assert status(work, "w") == "waiting"


def test_an_input_file_with_a_byte_order_mark_is_read(work):
    (work / "in.json").write_text('{"name": "bo"}', encoding="utf-8-sig")
    done = cli(work, "run", "flows.py:greet", "--shared", "@in.json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["greeting"] == "hello bo"


@pytest.mark.parametrize(
    ("shared", "said"),
    [
        ('{"x": NaN}', "NaN is not JSON"),
        ('{"x": Infinity}', "Infinity is not JSON"),
        ('{"x": [-Infinity]}', "-Infinity is not JSON"),
        ('{"x": 1e400}', "1e400 is out of range"),
        ('{"x": {"y": -2.5e999}}', "-2.5e999 is out of range"),
        ('{"x": ' + "9" * 5000 + "}", "an integer of 5000 digits is longer than Python reads"),
        ('{"x": ' + "[" * 5000 + "]" * 5000 + "}", "--shared is nested too deeply to read"),
        ("@", "--shared @ names no file"),
    ],
    ids=["nan", "inf", "-inf", "1e400", "-2.5e999", "digits", "nested", "no-file"],
)
def test_json_a_durable_run_cannot_keep_is_refused_before_the_run(work, shared, said):
    done = cli(
        work,
        "run",
        "flows.py:greet",
        "--shared",
        shared,
        "--store",
        "runs.db",
        "--run-id",
        "r1",
        check_stderr_one_line=True,
    )
    assert said in done.stderr
    assert "resume" not in done.stderr
    assert not (work / "runs.db").exists()  # refused before the store was opened


def test_json_as_deep_as_python_reads_goes_in_and_out(work):
    nested = "[" * 900 + "]" * 900
    done = cli(work, "run", "flows.py:greet", "--shared", f'{{"x": {nested}}}')
    assert done.returncode == 0, done.stderr[-500:]
    assert json.loads(done.stdout)["greeting"] == "hello world"


@pytest.mark.slow
def test_an_import_error_in_the_target_is_bad_input_and_debug_shows_the_traceback(work):
    (work / "broken.py").write_text("import not_installed_anywhere\n")
    done = cli(work, "run", "broken.py:flow", check_stderr_one_line=True)
    assert "importing broken.py failed: ModuleNotFoundError" in done.stderr
    debug = cli(work, "run", "broken.py:flow", "--debug")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr


def test_output_cut_short_by_the_reader_is_no_error(work):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        f"{sys.executable} -m braidflow run flows.py:big | head -c 5; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{\n  "'
    assert "Traceback" not in done.stderr


def test_graph_prints_mermaid(work):
    done = cli(work, "graph", "flows.py:review")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("flowchart")
    assert "ask" in done.stdout


# -- durable runs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failed_durable_run_says_how_to_resume_and_resumes(work):
    done = cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "r1")
    assert done.returncode == 1
    assert "the run failed: ConnectionError: upstream down" in done.stderr
    assert "braidflow resume r1 --store runs.db" in done.stderr
    assert "flow.resume(" not in done.stderr  # the command's own way to resume, only
    answered = cli(work, "resume", "r1", "--store", "runs.db", "--input", '"x"')
    assert answered.returncode == 2
    assert "is failed, not waiting for input; resume it without --input" in answered.stderr
    assert done.stdout == ""
    assert status(work, "r1") == "failed"
    (work / "fixed").write_text("")
    resumed = cli(work, "resume", "r1", "--store", "runs.db")  # TARGET remembered
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"greeting": "hello world", "fragile": "fine"}
    assert status(work, "r1") == "completed"
    again = cli(work, "resume", "r1", "--store", "runs.db", check_stderr_one_line=True)
    assert "has completed" in again.stderr
    taken = cli(work, "run", "flows.py:greet", "--run-id", "r1", "--store", "runs.db")
    assert taken.returncode == 2
    assert "already used" in taken.stderr


@pytest.mark.slow
def test_a_run_resumes_with_a_node_renamed_as_the_refusal_says(work):
    done = cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "r1")
    assert done.returncode == 1
    source = (work / "flows.py").read_text()
    renamed = source.replace('first = Greet(name="greet")', 'first = Greet(name="hi")')
    assert renamed != source
    (work / "flows.py").write_text(renamed)
    (work / "fixed").write_text("")
    refused = cli(work, "resume", "r1", "--store", "runs.db", check_stderr_one_line=True)
    assert refused.returncode == 2, refused.stderr
    # The command's form first, not Python's.
    assert "resume with --rename 'old name=new name' (rename= in Python)" in refused.stderr
    assert "rename={" not in refused.stderr
    bad = cli(work, "resume", "r1", "--store", "runs.db", "--rename", "greet")
    assert bad.returncode == 2
    assert "--rename 'greet': give OLD=NEW" in bad.stderr
    resumed = cli(work, "resume", "r1", "--store", "runs.db", "--rename", "greet=hi")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"greeting": "hello world", "fragile": "fine"}
    # Given a flow that has no node of the run's, it says so.
    (work / "fixed").unlink()
    failed = cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "r2")
    assert failed.returncode == 1
    other = cli(work, "resume", "r2", "flows.py:greet", "--store", "runs.db")
    assert other.returncode == 2
    assert (
        "it is another flow: the run has nodes 'fragile/hi', 'fragile/fragile', the flow "
        "given has node 'greet/greet'"
    ) in other.stderr
    # Not the TARGET the run remembers: no rename, but leave TARGET out, as a line that works.
    assert "rename" not in other.stderr
    said = f"flows.py:greet is another flow than the run's ({work_path(work)}/flows.py:fragile)"
    assert said in other.stderr
    line = other.stderr.rpartition("the run remembers its flow: ")[2].strip()
    assert line == "braidflow resume r2 --store runs.db"
    (work / "fixed").write_text("")
    resumed = cli(work, *shlex.split(line)[1:])
    assert resumed.returncode == 0, resumed.stderr


def wal_left(work, store="x.db"):
    """The store's files besides the database itself (``-wal``, ``-shm``)."""
    return sorted(path.name for path in work.glob(f"{store}-*"))


def copied_status(work, run_id, store="x.db"):
    """The run's status in a copy of the store's file alone, as a user copies it."""
    shutil.copyfile(work / store, work / "copy.db")
    try:
        return status(work, run_id, "copy.db")
    finally:
        for path in work.glob("copy.db*"):
            path.unlink()


@pytest.mark.slow
def test_each_command_closes_its_store_so_the_file_alone_holds_the_runs(work):
    waiting = cli(work, "run", "flows.py:asks", "--store", "x.db", "--run-id", "w")
    assert waiting.returncode == 3  # the exit code and the resume line, said before closing
    assert "answer with: braidflow resume w --store x.db --input JSON" in waiting.stderr
    assert wal_left(work) == []
    assert copied_status(work, "w") == "waiting"
    resumed = cli(work, "resume", "w", "--store", "x.db", "--input", '"yes"')
    assert resumed.returncode == 0, resumed.stderr
    assert wal_left(work) == []
    assert copied_status(work, "w") == "completed"
    forked = cli(work, "fork", "w", "--store", "x.db", "--run-id", "f")
    assert forked.returncode == 0, forked.stderr
    assert wal_left(work) == []
    assert copied_status(work, "f") == "completed"
    done = cli(work, "run", "flows.py:first_step", "--store", "x.db", "--run-id", "r")
    assert done.returncode == 0, done.stderr
    assert wal_left(work) == []
    assert copied_status(work, "r") == "completed"
    failed = cli(work, "run", "flows.py:odd", "--store", "x.db", "--run-id", "o")
    assert failed.returncode == 1
    assert "fix the cause, then: braidflow resume o --store x.db" in failed.stderr
    assert wal_left(work) == []
    assert cli(work, "runs", "--store", "x.db").returncode == 0
    assert wal_left(work) == []


@pytest.mark.slow
def test_a_fork_answers_only_where_the_run_waits_and_forks_nothing_otherwise(work):
    assert (
        cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "w").returncode == 3
    )
    for wrong, said in [
        (["--at", "1", "--input", '"yes"'], "leave --at out to fork where the run waits"),
        (["--answer", "nope=1", "--run-id", "x"], "has no open question 'nope'"),
    ]:
        refused = cli(work, "fork", "w", *wrong, "--store", "runs.db", check_stderr_one_line=True)
        assert refused.returncode == 2
        assert said in refused.stderr
        listed = cli(work, "runs", "--store", "runs.db").stdout.splitlines()[1:]
        assert [row.split()[0] for row in listed] == ["w"]  # nothing forked
    answered = cli(work, "fork", "w", "--input", '"yes"', "--store", "runs.db")  # as it says
    assert answered.returncode == 0, answered.stderr
    assert "after its last step" in answered.stderr


@pytest.mark.slow
def test_a_waiting_run_prints_its_prompt_exits_3_and_resumes_with_input(work):
    done = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "r2")
    assert done.returncode == 3
    assert "waiting for input at review/ask:\n  question: ship it?\n" in done.stderr
    assert "braidflow resume r2 --store runs.db --input JSON" in done.stderr
    listed = cli(work, "runs", "--store", "runs.db", "--status", "waiting")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["RUN", "ID", "STATUS"]
    assert row.split()[:3] == ["r2", "waiting", "review"]
    assert "ship it?" in row
    bad = cli(work, "resume", "r2", "--store", "runs.db", "--input", "yes")
    assert bad.returncode == 2
    assert """a text is quoted: --input '"yes"'""" in bad.stderr
    other = cli(work, "resume", "r2", "flows.py:greet", "--store", "runs.db", "--input", "1")
    assert other.returncode == 2
    assert "another graph" in other.stderr
    assert status(work, "r2") == "waiting"
    resumed = cli(work, "resume", "r2", "--store", "runs.db", "--input", '"yes"')
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["approved"] == "yes"
    assert cli(work, "runs", "--store", "runs.db", "--status", "waiting").stdout == ""


@pytest.mark.slow
def test_a_run_waiting_on_two_questions_lists_them_and_resume_answers_them_by_id(work):
    done = cli(work, "run", "flows.py:two_asks", "--store", "runs.db", "--run-id", "r")
    assert done.returncode == 3
    assert "run 'r' is waiting on 2 questions:" in done.stderr
    from braidflow import SQLiteStore

    with SQLiteStore(work / "runs.db") as store:
        a, b = sorted(store.get("r").questions, key=lambda question: question.where)
    assert f"  {a.id} at two/both/a/a:\n    a?\n" in done.stderr
    answer_all = suggested(done.stderr, "answer some or all with: ")
    assert answer_all[-4:] == ["--answer", f"{a.id}=JSON", "--answer", f"{b.id}=JSON"]
    (row,) = cli(work, "runs", "--store", "runs.db").stdout.splitlines()[1:]
    assert '2 questions: "a?"; "b?"' in row
    shown = cli(work, "show", "r", "--store", "runs.db").stdout
    assert "waiting on 2 questions" in shown
    assert f'{b.id} at two/both/b/b: "b?"' in shown
    bare = cli(work, "resume", "r", "--store", "runs.db", "--input", '"yes"')
    assert bare.returncode == 2
    assert "waits on 2 questions, so input= cannot say" in bare.stderr
    for wrong, said in [
        (["--answer", "nope"], "give ID=JSON"),
        (["--answer", "nope=1"], "has no open question 'nope'"),
        (["--answer", f"{a.id}=1", "--answer", f"{a.id}=2"], "given twice"),
        (["--answer", f"{a.id}=1", "--input", "1"], "not both"),
        (["--answer", f"{a.id}=yes"], f"--answer {a.id}"),
    ]:
        refused = cli(work, "resume", "r", "--store", "runs.db", *wrong, check_stderr_one_line=True)
        assert said in refused.stderr
    assert status(work, "r") == "waiting"
    one = cli(work, "resume", "r", "--store", "runs.db", "--answer", f'{a.id}="A"')
    assert one.returncode == 3
    assert "waiting for input at two/both/b/b:\n  b?\n" in one.stderr
    last = cli(work, *suggested(one.stderr, "answer with: ", JSON='"B"'))
    assert last.returncode == 0, last.stderr
    assert json.loads(last.stdout) == {"a": "A", "b": "B"}
    again = cli(work, "resume", "r", "--store", "runs.db", "--answer", f"{b.id}=1")
    assert again.returncode == 2
    assert "has completed" in again.stderr


@pytest.mark.slow
def test_the_hint_for_a_text_that_is_not_json_in_a_pair_works_as_printed(work):
    """--answer ID=text and --set KEY=text: the hint gives the pair quoted
    whole, one argument, as the command takes it."""
    assert (
        cli(work, "run", "flows.py:two_asks", "--store", "runs.db", "--run-id", "r").returncode == 3
    )
    from braidflow import SQLiteStore

    with SQLiteStore(work / "runs.db") as store:
        a, b = sorted(store.get("r").questions, key=lambda question: question.where)
    bad = cli(
        work, "resume", "r", "--store", "runs.db", "--answer", f"{a.id}=it's fine",
        check_stderr_one_line=True,
    )  # fmt: skip
    hint = shlex.split(bad.stderr.split("a text is quoted: ", 1)[1])
    answered = cli(work, "resume", "r", "--store", "runs.db", *hint)
    assert answered.returncode == 3, answered.stderr  # the other question waits
    assert hint == ["--answer", f'{a.id}="it\'s fine"']
    assert "waiting for input at two/both/b/b:" in answered.stderr
    with SQLiteStore(work / "runs.db") as store:
        assert [question.id for question in store.get("r").questions] == [b.id]
    assert cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", "g").returncode == 0
    bad_set = cli(
        work, "fork", "g", "--at", "0", "--set", "name=ada lovelace", "--store", "runs.db",
        check_stderr_one_line=True,
    )  # fmt: skip
    hint = shlex.split(bad_set.stderr.split("a text is quoted: ", 1)[1])
    forked = cli(work, "fork", "g", "--at", "0", *hint, "--store", "runs.db")
    assert forked.returncode == 0, forked.stderr
    assert hint == ["--set", 'name="ada lovelace"']
    assert json.loads(forked.stdout)["greeting"] == "hello ada lovelace"


def test_the_default_store_comes_from_the_environment(work):
    env_store = work / "elsewhere.db"
    os.environ["BRAIDFLOW_STORE"] = str(env_store)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "braidflow", "run", "flows.py:greet", "--run-id", "e1"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        del os.environ["BRAIDFLOW_STORE"]
    assert done.returncode == 0, done.stderr
    assert status(work, "e1", store="elsewhere.db") == "completed"


@pytest.mark.slow
def test_resume_needs_a_target_for_a_run_the_command_did_not_start(work):
    sys.path.insert(0, str(work))
    try:
        import flows  # the same file, run from Python

        from braidflow import SQLiteStore

        with SQLiteStore(work / "runs.db") as store:
            with pytest.raises(ConnectionError):
                flows.fragile.run({}, store=store, run_id="api")
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("flows", None)
    done = cli(work, "resume", "api", "--store", "runs.db", check_stderr_one_line=True)
    assert "has no TARGET remembered (it was started from Python" in done.stderr
    assert "give its TARGET: braidflow resume api path/to/file.py:name --store runs.db" in (
        done.stderr
    )
    no_events = cli(work, "timeline", "api", "--store", "runs.db", "-o", "t.html")
    assert no_events.returncode == 2
    assert "no recorded events" in no_events.stderr
    (work / "fixed").write_text("")
    resumed = cli(work, "resume", "api", "flows.py:fragile", "--store", "runs.db")
    assert resumed.returncode == 0, resumed.stderr
    wrong = cli(work, "resume", "api", "flows.py:greet", "--store", "runs.db")
    assert wrong.returncode == 2  # completed now; and the graph would not match either


@pytest.mark.slow
def test_timeline_draws_every_part_of_a_resumed_run(work):
    cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "r3")
    (work / "fixed").write_text("")
    assert cli(work, "resume", "r3", "--store", "runs.db").returncode == 0
    done = cli(work, "timeline", "r3", "--store", "runs.db", "-o", "r3.html")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "braidflow: wrote r3.html\n"  # every part recorded: no note
    page = (work / "r3.html").read_text()
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    assert [(part["ended"], part["error"]) for part in data["parts"]] == [
        ("failed", "ConnectionError: upstream down"),  # the first part's failure is drawn too
        ("completed", ""),
    ]
    assert data["run"]["error"] == ""  # the run completed
    unknown = cli(work, "timeline", "zz", "--store", "runs.db", "-o", "t.html")
    assert unknown.returncode == 2
    assert "no run 'zz'" in unknown.stderr


@pytest.mark.parametrize(
    ("first", "then", "said"),
    [
        (  # resumed from Python with record_events=False: the last part is not drawn
            True,
            False,
            "is completed now, but its recorded events end with a part that failed: it went "
            "on without recording its events (resumed with record_events=False), and the page "
            "draws only what was recorded",
        ),
        (  # started from Python without events, resumed with them: the first is not
            False,
            True,
            "ran in 2 parts, and its recorded events hold 1: it was started (or resumed) "
            "without record_events=True before the parts recorded, and the page draws only "
            "what was recorded",
        ),
    ],
)
def test_timeline_says_when_a_part_of_a_run_was_not_recorded(work, monkeypatch, first, then, said):
    monkeypatch.chdir(work)  # where Fragile looks for "fixed"
    sys.path.insert(0, str(work))
    try:
        import flows

        from braidflow import SQLiteStore

        with SQLiteStore(work / "runs.db") as store:
            with pytest.raises(ConnectionError):
                flows.fragile.run({}, store=store, run_id="r4", record_events=first)
            Path("fixed").write_text("")
            flows.fragile.resume("r4", store=store, record_events=then)
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("flows", None)
    done = cli(work, "timeline", "r4", "--store", "runs.db", "-o", "r4.html")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[1] == f"braidflow: note: run 'r4' {said}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "stored_as"),
    [
        ("flows.py:slow", "stopped (Ctrl-C)"),  # a sync flow: KeyboardInterrupt
        ("flows.py:slow_async", "cancelled (Ctrl-C, or its task was cancelled)"),
    ],
)
def test_ctrl_c_stops_a_durable_run_cleanly_and_it_can_be_resumed(work, target, stored_as):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    job = subprocess.Popen(
        [*BRAIDFLOW, "run", target, "--store", "runs.db", "--run-id", "c1"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (work / "started").exists():  # the node is running: interrupt it there
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy = cli(work, "resume", "c1", "--store", "runs.db", check_stderr_one_line=True)
        assert "is running in a live process" in busy.stderr
        assert "wait for it to end (or stop it) before resuming" in busy.stderr
        job.send_signal(signal.SIGINT)  # stop it, as the message says
        out, err = job.communicate(timeout=30)
    finally:
        job.kill()
    assert job.returncode == 130, err
    assert "stopped; resume with: braidflow resume c1 --store runs.db" in err
    assert "Traceback" not in err
    assert out == ""
    assert status(work, "c1") == "interrupted"
    listed = cli(work, "runs", "--store", "runs.db")
    assert listed.stdout.splitlines()[1].endswith(stored_as)
    (work / "go").write_text("")
    resumed = cli(work, *suggested(err, "stopped; resume with: "))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"waited": "went"}


# -- every suggestion the command prints works when followed --------------------------------


def suggested(stderr, after, until=None, **fill):
    """The command line suggested on stderr right after ``after`` (up to
    ``until``), as the words to give the command; placeholders replaced by
    ``fill`` (``JSON=...``, ``TARGET=...`` for path/to/file.py:name)."""
    for line in stderr.splitlines():
        if after in line:
            text = line.split(after, 1)[1]
            if until is not None:
                text = text.split(until, 1)[0]
            words = shlex.split(text)
            assert words[0] == "braidflow", line
            placeholders = {"JSON": fill.get("JSON"), "path/to/file.py:name": fill.get("TARGET")}
            return [placeholders.get(word) or word for word in words[1:]]
    raise AssertionError(f"{after!r} is not in {stderr!r}")


@pytest.mark.slow
def test_every_resume_the_command_suggests_works(work):
    failed = cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "r1")
    assert failed.returncode == 1
    resume = suggested(failed.stderr, "fix the cause, then: ")
    assert resume == ["resume", "r1", "--store", "runs.db"]
    again = cli(work, *resume)  # accepted; resumed, and fails again: nothing is fixed yet
    assert again.returncode == 1, again.stderr
    assert suggested(again.stderr, "fix the cause, then: ") == resume
    taken = cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", "r1")
    assert taken.returncode == 2
    assert suggested(taken.stderr, "or resume that run: ") == resume
    with_input = cli(work, "resume", "r1", "--store", "runs.db", "--input", '"x"')
    assert with_input.returncode == 2
    (work / "fixed").write_text("")
    done = cli(work, *suggested(with_input.stderr, "resume it without --input: "))
    assert done.returncode == 0, done.stderr
    assert status(work, "r1") == "completed"

    completed = cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", "r1")
    assert completed.returncode == 2
    assert "that is completed; choose another, or leave --run-id out" in completed.stderr
    fresh = cli(work, "run", "flows.py:greet", "--store", "runs.db")  # --run-id left out
    assert fresh.returncode == 0, fresh.stderr
    nothing = cli(work, "resume", "r1", "--store", "runs.db", "--input", '"x"')
    assert nothing.returncode == 2
    assert "has completed; there is nothing to resume" in nothing.stderr  # no advice to fail

    waiting = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "r2")
    assert waiting.returncode == 3
    answer = suggested(waiting.stderr, "answer with: ")
    assert answer == ["resume", "r2", "--store", "runs.db", "--input", "JSON"]
    taken = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "r2")
    assert suggested(taken.stderr, "or resume that run: ") == answer
    answered = cli(work, *suggested(taken.stderr, "or resume that run: ", JSON='"yes"'))
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["approved"] == "yes"


def test_a_run_id_or_store_that_starts_with_a_dash_is_suggested_so_that_it_works(work):
    waiting = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id=-r1")
    assert waiting.returncode == 3, waiting.stderr
    answer = suggested(waiting.stderr, "answer with: ", JSON='"yes"')
    assert answer == ["resume", "--store", "runs.db", "--input", '"yes"', "--", "-r1"]
    answered = cli(work, *answer)
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["approved"] == "yes"

    failed = cli(work, "run", "flows.py:fragile", "--store=-s.db", "--run-id=-f1")
    assert failed.returncode == 1, failed.stderr
    resume = suggested(failed.stderr, "fix the cause, then: ")
    assert resume == ["resume", "--store=-s.db", "--", "-f1"]
    again = cli(work, *resume)  # accepted; resumed, and fails again: nothing is fixed yet
    assert again.returncode == 1, again.stderr
    with_input = cli(work, "resume", "--store=-s.db", "--input=-1", "--", "-f1")
    assert with_input.returncode == 2
    (work / "fixed").write_text("")
    done = cli(work, *suggested(with_input.stderr, "resume it without --input: "))
    assert done.returncode == 0, done.stderr

    unknown = cli(work, "show", "--store=-s.db", "--", "-nothing")
    listing = cli(work, *suggested(unknown.stderr, "(", until=" lists them)"))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[1].startswith("-f1 ")


@pytest.mark.slow
def test_a_run_started_from_python_resumes_as_suggested_and_remembers_its_target(work):
    sys.path.insert(0, str(work))
    try:
        import flows

        from braidflow import SQLiteStore

        with SQLiteStore(work / "runs.db") as store:
            with pytest.raises(ConnectionError):
                flows.fragile.run({}, store=store, run_id="api")
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("flows", None)
    no_target = cli(work, "resume", "api", "--store", "runs.db", check_stderr_one_line=True)
    resume = suggested(no_target.stderr, "give its TARGET: ", TARGET="flows.py:fragile")
    assert resume == ["resume", "api", "flows.py:fragile", "--store", "runs.db"]
    no_events = cli(work, "timeline", "api", "--store", "runs.db", "-o", "t.html")
    assert "runs started or resumed by this command keep them" in no_events.stderr
    again = cli(work, *resume)  # accepted; resumed, and fails again
    assert again.returncode == 1, again.stderr
    assert suggested(again.stderr, "fix the cause, then: ") == [
        "resume",
        "api",
        "--store",
        "runs.db",
    ]  # TARGET remembered now, through the run's metadata
    assert stored(work, "api").metadata["braidflow.target"] == f"{work_path(work)}/flows.py:fragile"
    after = cli(work, "resume", "api", "--store", "runs.db", "flows.py:fragile")  # either order
    assert after.returncode == 1, after.stderr
    drawn = cli(work, "timeline", "api", "--store", "runs.db", "-o", "t.html")
    assert drawn.returncode == 0, drawn.stderr  # the resumed parts were recorded
    (work / "fixed").write_text("")
    done = cli(work, *suggested(again.stderr, "fix the cause, then: "))
    assert done.returncode == 0, done.stderr
    extra = cli(work, "resume", "api", "flows.py:fragile", "--store", "runs.db", "more")
    assert extra.returncode == 2
    assert "unrecognized arguments: more" in extra.stderr


@pytest.mark.slow
def test_the_other_suggestions_work_when_followed(work):
    assert (
        cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", "g1").returncode == 0
    )
    unknown = cli(work, "timeline", "zz", "--store", "runs.db", "-o", "t.html")
    listing = cli(work, *suggested(unknown.stderr, "(", until=" lists them)"))
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].startswith("g1 ")

    no_store = cli(work, "runs", check_stderr_one_line=True)
    assert "no store at 'braidflow.db' (give --store PATH, or set BRAIDFLOW_STORE)" in (
        no_store.stderr
    )
    for followed in (
        cli(work, "runs", "--store", "runs.db"),
        cli(work, "runs", env={"BRAIDFLOW_STORE": "runs.db"}),
    ):
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout.splitlines()[1].startswith("g1 ")

    for bad, after in (
        ("hello", "--shared takes a JSON object: "),
        ("{'name': 'ada'}", "JSON strings and keys take double quotes: "),
    ):
        refused = cli(work, "run", "flows.py:greet", "--shared", bad, check_stderr_one_line=True)
        fixed = shlex.split(refused.stderr.split(after, 1)[1])[-1]
        followed = cli(work, "run", "flows.py:greet", "--shared", fixed)
        assert followed.returncode == 0, followed.stderr

    waiting = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "w")
    assert waiting.returncode == 3
    bad = cli(work, "resume", "w", "--store", "runs.db", "--input", "it's fine")
    assert bad.returncode == 2
    option, value = shlex.split(bad.stderr.split("a text is quoted: ", 1)[1])
    answered = cli(work, "resume", "w", "--store", "runs.db", option, value)
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["approved"] == "it's fine"

    asks = cli(work, "run", "flows.py:asks", check_stderr_one_line=True)
    assert "run it with --store PATH" in asks.stderr
    assert cli(work, "run", "flows.py:asks", "--store", "runs.db").returncode == 3  # it waits

    nothing = cli(work, "run", "flows.py:nothing", check_stderr_one_line=True)
    names = nothing.stderr.split("its flows: ", 1)[1].strip().split(", ")
    assert "greet" in names
    for name in names:
        drawn = cli(work, "graph", f"flows.py:{name}")
        assert drawn.returncode == 0, drawn.stderr

    no_name = cli(work, "run", "flows.py", check_stderr_one_line=True)
    targets = no_name.stderr.split("its flows: ", 1)[1].strip().split(", ")
    assert "flows.py:greet" in targets
    for target in targets:
        drawn = cli(work, "graph", target)
        assert drawn.returncode == 0, drawn.stderr

    empty = cli(work, "run", "flows.py:greet", "--run-id", "", check_stderr_one_line=True)
    assert "give an id, or leave it out for a new one" in empty.stderr
    assert cli(work, "run", "flows.py:greet").returncode == 0


@pytest.mark.slow
def test_the_remaining_suggestions_work_when_followed(work):
    def refused(*args):
        done = cli(work, *args, check_stderr_one_line=True)
        return done.stderr.strip()

    def runs(*args):
        done = cli(work, *args)
        assert done.returncode == 0, done.stderr
        return done

    said = refused("run", "flows.py:greet", "--shared", "@")
    assert said.endswith("give --shared @FILE.json, or the JSON itself")
    (work / "in.json").write_text('{"name": "ada"}')
    assert json.loads(runs("run", "flows.py:greet", "--shared", "@in.json").stdout) == {
        "name": "ada",
        "greeting": "hello ada",
    }
    runs("run", "flows.py:greet", "--shared", '{"name": "ada"}')

    assert refused("run", "flows.py:greet", "--shared", '{"n": NaN}').endswith(
        "give a finite number, or null"
    )
    runs("run", "flows.py:greet", "--shared", '{"n": null}')
    digits = "1" * 5000
    assert refused("run", "flows.py:greet", "--shared", f'{{"n": {digits}}}').endswith(
        "give it as a string"
    )
    runs("run", "flows.py:greet", "--shared", f'{{"n": "{digits}"}}')

    (work / "in.json").write_bytes('{"name": "café"}'.encode("latin-1"))
    assert refused("run", "flows.py:greet", "--shared", "@in.json").endswith("save it as UTF-8")
    (work / "in.json").write_text('{"name": "café"}', encoding="utf-8")
    runs("run", "flows.py:greet", "--shared", "@in.json")
    (work / "in.json").write_text("ada")
    said = refused("run", "flows.py:greet", "--shared", "@in.json")
    example = said.split("--shared takes a JSON object, such as ", 1)[1]
    (work / "in.json").write_text(example)
    runs("run", "flows.py:greet", "--shared", "@in.json")

    waiting = cli(work, "run", "flows.py:review", "--store", "runs.db", "--run-id", "w")
    assert waiting.returncode == 3
    (work / "answer.json").write_text("yes")
    said = refused("resume", "w", "--store", "runs.db", "--input", "@answer.json")
    (work / "answer.json").write_text(said.split("written in double quotes: ", 1)[1])
    runs("resume", "w", "--store", "runs.db", "--input", "@answer.json")

    said = refused("run", "flows.py:Greet")
    assert "point TARGET at a node made from it (an instance, such as node = Greet(...))" in said
    with (work / "flows.py").open("a") as source:
        source.write("\ngreeter = Greet()\n\ndef made():\n    return bf.AsyncFlow(start=Greet())\n")
    runs("run", "flows.py:greeter")
    said = refused("run", "flows.py:needs_arguments")
    assert said.endswith(
        "point TARGET at a flow, or at a function of no arguments that returns one"
    )
    runs("run", "flows.py:made")
    said = refused("run", "flows.py:number")
    assert "point TARGET at a Flow or AsyncFlow (or a function of no arguments" in said
    runs("run", "flows.py:greet")

    assert cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", "t").returncode == 0
    (work / "t.html").mkdir()  # where the page would go by default
    said = refused("timeline", "t", "--store", "runs.db")
    assert said.endswith("; -o FILE.html writes it elsewhere")
    runs("timeline", "t", "--store", "runs.db", "-o", "FILE.html")
    assert (work / "FILE.html").is_file()

    sys.path.insert(0, str(work))
    try:
        import flows

        from braidflow import SQLiteStore

        with SQLiteStore(work / "runs.db") as store:
            flows.greet.run({}, store=store, run_id="quiet")
            said = refused("timeline", "quiet", "--store", "runs.db", "-o", "q.html")
            assert said.endswith("as do runs given record_events=True")
            flows.greet.run({}, store=store, run_id="recorded", record_events=True)
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("flows", None)
    runs("timeline", "recorded", "--store", "runs.db", "-o", "r.html")


# -- runs stored with pickle -------------------------------------------------------------

PICKLED = """
import braidflow as bf


class Gather(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["seen"] = {1, 2}  # JSON cannot keep it; pickle can


class Approve(bf.Node):
    def exec(self, prep_res):
        return bf.interrupt("ok?")

    def post(self, shared, prep_res, exec_res):
        shared["answer"] = exec_res


gather = Gather(name="gather")
gather >> Approve(name="approve")
flow = bf.Flow(start=gather, name="job")
"""


def pickle_run(work, run_id="pk", marked=True):
    """Run pickled.py's flow from Python through a pickle store object, as
    run ``run_id`` in p.db, waiting after the step that put a set in shared;
    ``marked=False``: as a braidflow from before runs kept their serializer left it."""
    import runpy

    from braidflow import SQLiteStore, Suspended

    (work / "pickled.py").write_text(PICKLED)
    flow = runpy.run_path(str(work / "pickled.py"))["flow"]
    with SQLiteStore(work / "p.db", serializer="pickle") as pickled:
        with pytest.raises(Suspended):
            flow.run({}, store=pickled, run_id=run_id, record_events=True)
        if not marked:
            pickled.set_metadata(run_id, {"braidflow.serializer": None})


def test_a_pickle_run_is_shown_resumed_and_forked_by_the_command(work):
    pickle_run(work)
    # Unpickling runs code: only with --serializer pickle (the user trusts the store).
    refused = cli(work, "show", "pk", "--store", "p.db", check_stderr_one_line=True)
    assert refused.returncode == 2
    assert "--serializer pickle" in refused.stderr
    pickled = ("--store", "p.db", "--serializer", "pickle")
    shown = cli(work, "show", "pk", *pickled)
    assert shown.returncode == 0, shown.stderr
    assert "waiting at approve for input" in shown.stdout
    assert cli(work, "show", "pk", *pickled, "--diff").stdout.count('+ seen: "{1, 2}"') == 1
    as_json = cli(work, "show", "pk", *pickled, "--json", "--diff")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["steps"][0]["changes"] == {"seen": "{1, 2}"}
    at = cli(work, "show", "pk", *pickled, "--at", "1")
    assert json.loads(at.stdout) == {"seen": "{1, 2}"}, at.stderr
    timeline = cli(work, "timeline", "pk", *pickled, "-o", "t.html")
    assert timeline.returncode == 0, timeline.stderr

    forked = cli(
        work, "fork", "pk", "pickled.py:flow", *pickled, "--at", "1", "--run-id", "f1",
        "--set", 'note="forked"',
    )  # fmt: skip
    assert forked.returncode == 3, forked.stderr  # it asks again
    answered = cli(work, *suggested(forked.stderr, "answer with: ", JSON='"no"'))  # as printed
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {"seen": "{1, 2}", "note": "forked", "answer": "no"}
    resumed = cli(work, "resume", "pk", "pickled.py:flow", *pickled, "--input", '"yes"')
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"seen": "{1, 2}", "answer": "yes"}

    from braidflow import SQLiteStore, stored_state

    with SQLiteStore(work / "p.db", serializer="pickle") as store:
        for run_id in ("pk", "f1"):  # written on as pickle: the set is a set
            assert store.get(run_id).status == "completed"
            assert stored_state(run_id, store=store)["seen"] == {1, 2}


@pytest.mark.parametrize(
    "args",
    [
        ["show", "pk"],
        ["show", "pk", "--json"],
        ["show", "pk", "--at", "1"],
        ["show", "pk", "--diff"],
        ["resume", "pk", "pickled.py:flow", "--input", '"yes"'],
        ["fork", "pk", "pickled.py:flow", "--at", "1"],
        ["graph", "pickled.py:flow", "--run", "pk"],
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
def test_a_pickle_run_read_without_serializer_pickle_is_one_line_and_exit_code_2(
    work, args, marked
):
    pickle_run(work, marked=marked)
    refused = cli(work, *args, "--store", "p.db", check_stderr_one_line=True)
    assert refused.returncode == 2
    assert "braidflow: run 'pk' was stored with serializer='pickle'" in refused.stderr
    assert stored(work, "pk", "p.db").status == "waiting"  # left as it was
    assert [record.run_id for record in runs_in(work, "p.db")] == ["pk"]  # no fork made
    # As it says: --serializer pickle, for a store one trusts.
    followed = cli(work, *args, "--store", "p.db", "--serializer", "pickle")
    assert followed.returncode in (0, 3), followed.stderr  # (a fork waits, as the run did)


def runs_in(work, store):
    from braidflow import SQLiteStore

    with SQLiteStore(work / store) as opened:
        return opened.runs()


def test_a_value_json_cannot_keep_suggests_serializer_pickle_and_that_works(work):
    (work / "pickled.py").write_text(PICKLED)
    failed = cli(work, "run", "pickled.py:flow", "--store", "runs.db", "--shared", '{"n": 1}')
    assert failed.returncode == 1
    assert "CheckpointError" in failed.stderr
    line = suggested(failed.stderr, "or, to keep such values, start it anew storing pickles: ")
    assert line == [
        "run", "pickled.py:flow", "--store", "runs.db", "--shared", '{"n": 1}',
        "--serializer", "pickle",
    ]  # fmt: skip
    waiting = cli(work, *line)
    assert waiting.returncode == 3, waiting.stderr  # it got past the set, to the question
    answered = cli(work, *suggested(waiting.stderr, "answer with: ", JSON='"yes"'))
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {"n": 1, "seen": "{1, 2}", "answer": "yes"}
    assert [run.metadata.get("braidflow.serializer") for run in runs_in(work, "runs.db")] == [
        None,  # the JSON run that failed, as it was
        "pickle",
    ]

    (work / "pre.py").write_text(PRE_START)
    refused = cli(
        work, "run", "pre.py:unstorable", "--store", "runs.db", "--run-id", "p1",
        check_stderr_one_line=True,
    )  # fmt: skip
    line = suggested(refused.stderr, "or store pickles instead: ")
    assert line[-4:] == ["--run-id", "p1", "--serializer", "pickle"]
    done = cli(work, *line)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tags": "{1, 2}", "ran": True}
    assert stored(work, "p1").metadata["braidflow.serializer"] == "pickle"


def test_serializer_makes_a_run_durable_and_takes_only_json_or_pickle(work):
    (work / "pickled.py").write_text(PICKLED)
    waiting = cli(work, "run", "pickled.py:flow", "--serializer", "pickle", "--run-id", "d")
    assert waiting.returncode == 3, waiting.stderr  # stored in the default store: it can wait
    assert stored(work, "d", "braidflow.db").metadata["braidflow.serializer"] == "pickle"
    plain = cli(work, "run", "flows.py:greet", "--serializer", "json", "--run-id", "j")
    assert plain.returncode == 0, plain.stderr
    assert "braidflow.serializer" not in stored(work, "j", "braidflow.db").metadata
    refused = cli(work, "run", "flows.py:greet", "--serializer", "yaml", check_stderr_one_line=True)
    assert "invalid choice: 'yaml'" in refused.stderr


# -- what the command keeps, and how it tells errors apart ---------------------------------


def stored(work, run_id, store="runs.db"):
    from braidflow import SQLiteStore

    with SQLiteStore(work / store) as opened:
        return opened.get(run_id)


def work_path(work):
    return os.path.realpath(work)


def test_a_run_keeps_its_target_in_its_metadata_and_the_command_writes_no_sql(work):
    import sqlite3

    import braidflow.cli

    done = cli(work, "run", "flows.py:fragile", "--store", "runs.db", "--run-id", "m1")
    assert done.returncode == 1
    assert stored(work, "m1").metadata == {
        "braidflow.target": f"{work_path(work)}/flows.py:fragile",
        "braidflow.directory": work_path(work),
        "braidflow.record_events": True,  # the command keeps a run's events, and its resumes'
    }
    with contextlib.closing(sqlite3.connect(work / "runs.db")) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert not any(name.startswith("braidflow_cli") for name in tables)
    package = Path(braidflow.cli.__file__).parent  # the command's code: no SQL of its own
    assert not any("sqlite3" in part.read_text() for part in package.glob("*.py"))


def test_a_module_target_is_found_where_the_run_started_and_nothing_else_moves(work):
    done = cli(work, "run", "flows:fragile", "--store", "runs.db", "--run-id", "m2")
    assert done.returncode == 1
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "fixed").write_text("")  # the flow looks for it in the current directory
    resumed = cli(elsewhere, "resume", "m2", "--store", "../runs.db", "--out", "out.json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((elsewhere / "out.json").read_text())["fragile"] == "fine"


PRE_START = """
import braidflow as bf


class Step(bf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["ran"] = True


class Unstorable(bf.Flow):
    def run(self, shared, **options):  # puts a set in shared before the run starts
        shared["tags"] = {1, 2}
        return super().run(shared, **options)


class BadClock(bf.Flow):
    def run(self, shared, **options):
        return super().run(shared, clock="not a clock", **options)


class Asks(bf.Node):
    def exec(self, prep_res):
        return bf.interrupt("ok?")


class RunsAnother(bf.Node):
    def exec(self, prep_res):
        return bf.Flow(start=Asks()).run({})  # a run of its own, with no store


unstorable = Unstorable(start=Step())
bad_clock = BadClock(start=Step())
nested = bf.Flow(start=RunsAnother())
"""


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("pre.py:unstorable", "the run cannot start: shared['tags'] is not plain JSON data"),
        ("pre.py:bad_clock", "flow 'BadClock': clock='not a clock' is not a clock"),
    ],
)
def test_a_run_refused_before_it_exists_is_bad_input_with_no_resume(work, target, said):
    (work / "pre.py").write_text(PRE_START)
    done = cli(
        work, "run", target, "--store", "runs.db", "--run-id", "p1", check_stderr_one_line=True
    )
    assert said in done.stderr
    assert "resume" not in done.stderr
    from braidflow import SQLiteStore

    with SQLiteStore(work / "runs.db") as opened:
        assert opened.runs() == []


def test_a_run_with_no_store_refused_before_it_starts_is_bad_input(work):
    (work / "pre.py").write_text(PRE_START)
    done = cli(work, "run", "pre.py:bad_clock", check_stderr_one_line=True)
    assert "is not a clock" in done.stderr


def test_interrupt_with_no_store_raises_not_durable_error_recognised_by_class(work):
    import braidflow as bf

    class Asks(bf.Node):
        def exec(self, prep_res):
            return bf.interrupt("ok?")

    with pytest.raises(bf.NotDurableError) as raised:
        bf.Flow(start=Asks()).run({})
    assert isinstance(raised.value, bf.RunError)
    (work / "pre.py").write_text(PRE_START)
    # A durable run whose node starts a run of its own with no store, which
    # asks: the durable run failed (giving it --store again would not help).
    done = cli(work, "run", "pre.py:nested", "--store", "runs.db", "--run-id", "n1")
    assert done.returncode == 1, done.stderr
    assert "the run failed: NotDurableError" in done.stderr
    assert "run it with --store" not in done.stderr


# -- the command's own surface -------------------------------------------------------------


def test_version_prints_braidflows_version(work, capsys):
    import braidflow
    from braidflow.cli import main

    done = cli(work, "--version")
    assert done.returncode == 0
    assert done.stdout == f"braidflow {braidflow.__version__}\n"
    assert main(["--version"]) == 0  # in process: a code, not SystemExit
    assert capsys.readouterr().out == f"braidflow {braidflow.__version__}\n"


def test_an_option_a_command_does_not_know_points_to_that_command_s_help(capsys):
    from braidflow.cli import main

    for argv, help_of in [
        (["runs", "--json"], "braidflow runs --help"),
        (["run", "flows.py:greet", "--shard", "{}"], "braidflow run --help"),
        (["--bogus"], "braidflow --help"),
    ]:
        assert main(argv) == 2
        (said,) = capsys.readouterr().err.splitlines()
        assert said.endswith(f"see '{help_of}'")
        assert said.startswith("braidflow: unrecognized arguments: ")


def test_bare_braidflow_lists_the_commands_and_says_what_to_do(work):
    done = cli(work)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("usage: braidflow")
    listed = {line.split()[0] for line in done.stderr.splitlines() if line.startswith("    ")}
    assert listed == {"run", "graph", "runs", "show", "resume", "fork", "timeline", "ui"}
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("braidflow: give a command, e.g. braidflow run path/to/file.py:name")
    assert cli(work, "run", "--help").returncode == 0  # what it says to do
    assert cli(work, "run", "flows.py:greet").returncode == 0


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("graph", "as a mermaid flowchart"),
        ("runs", "List the runs in a store, oldest first"),
        ("timeline", "default: RUN_ID.html in the current directory"),
        ("resume", "before or after the options"),
    ],
)
def test_each_command_describes_itself(work, command, said):
    done = cli(work, command, "--help")
    assert done.returncode == 0
    assert said in " ".join(done.stdout.split())


def test_timeline_writes_the_run_id_dot_html_by_default_and_says_where(work):
    for run_id, page in (("r3", "r3.html"), ("a/b c", "a_b_c.html")):
        done = cli(work, "run", "flows.py:greet", "--store", "runs.db", "--run-id", run_id)
        assert done.returncode == 0, done.stderr
        drawn = cli(work, "timeline", run_id, "--store", "runs.db")
        assert drawn.returncode == 0, drawn.stderr
        assert drawn.stderr == f"braidflow: wrote {page}\n"
        assert (work / page).read_text().startswith("<!DOCTYPE html>")


def test_a_node_named_as_target_runs_alone_without_pocketflows_warning(work, monkeypatch, capsys):
    done = cli(work, "run", "flows.py:first_step")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"marks": 1}  # the node alone: its successor did not run
    assert done.stderr == ""
    from braidflow.cli import main

    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))  # main puts the file's directory on it
    try:
        assert main(["run", "flows.py:first_step"]) == 0  # filterwarnings=error: none escaped
    finally:
        sys.modules.pop("braidflow_target_flows", None)
    assert json.loads(capsys.readouterr().out) == {"marks": 1}
    import braidflow as bf

    start = bf.Node()
    start >> bf.Node()
    with pytest.warns(UserWarning, match="successors"):  # Python callers still get it
        start.run({})


def test_the_command_is_installed_and_import_braidflow_does_not_load_it(work):
    script = Path(sys.executable).parent / "braidflow"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "resume" in done.stdout
    check = textwrap.dedent(
        """
        import sys
        import braidflow
        print("braidflow.cli" in sys.modules, "argparse" in sys.modules)
        """
    )
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert loaded.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_durability_makes_a_run_durable_and_is_kept_to_the_end(work, durability):
    done = cli(
        work,
        "run",
        "flows.py:greet",
        "--run-id",
        "d",
        "--store",
        "runs.db",
        "--durability",
        durability,
    )
    assert done.returncode == 0, done.stderr
    assert status(work, "d") == "completed"
    from braidflow import AsyncFlow, SQLiteStore

    with SQLiteStore(work / "runs.db") as opened:
        assert [step.node for step in AsyncFlow().history("d", store=opened)] == ["greet"]


def test_durability_takes_only_the_three_modes(work):
    done = cli(work, "run", "flows.py:greet", "--durability", "fast")
    assert done.returncode == 2
    assert "invalid choice: 'fast' (choose from 'sync', 'async', 'exit')" in done.stderr


LOUD = """
from pathlib import Path

import braidflow as bf

Path("imported").write_text("")  # what importing this file does
flow = bf.Flow(start=bf.Node(name="only"), name="loud")
"""


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["run", "loud.py:flow", "--shared", "[1]"], "--shared must be a JSON object"),
        (["run", "loud.py:flow", "--shared", "{"], "--shared"),
        (["run", "loud.py:flow", "--budget-tokens", "-1"], "--budget-tokens"),
        (["resume", "r1", "loud.py:flow", "--store", "runs.db", "--budget-cost", "x"], "cost"),
        (["fork", "r1", "loud.py:flow", "--store", "runs.db", "--budget-tokens", "-5"], "tokens"),
    ],
)
def test_options_are_checked_before_the_target_s_file_is_imported(work, args, said):
    (work / "loud.py").write_text(LOUD)
    from braidflow import SQLiteStore

    with SQLiteStore(work / "runs.db") as store:  # a run to resume or fork
        store.create_run("r1", "loud", "", b"[]", "nobody@nowhere:1")
        store.finish("r1", "failed")
    done = cli(work, *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert not (work / "imported").exists()


def test_the_command_takes_off_sys_path_what_it_put_there(work, monkeypatch, capsys):
    """A program may call braidflow.cli.main again and again: TARGET's
    directory goes on sys.path for its imports, and off again at the end."""
    from braidflow.cli import main

    monkeypatch.chdir(work)
    before = list(sys.path)
    assert main(["graph", "flows.py:greet"]) == 0
    assert main(["graph", "flows.py:greet"]) == 0
    assert sys.path == before
    capsys.readouterr()


def test_the_runs_table_shows_a_message_of_several_lines_on_one(work, capsys):
    from braidflow import SQLiteStore
    from braidflow.cli import main

    with SQLiteStore(work / "runs.db") as store:
        store.create_run("r1", "job", "", b"[]", "nobody@nowhere:1")
        store.finish("r1", "failed", error="ValueError: first line\nsecond line")
    assert main(["runs", "--store", str(work / "runs.db")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the header and the run
    assert lines[1].endswith("ValueError: first line second line")


def test_runs_and_show_read_usage_written_by_hand_and_leave_out_what_they_cannot(work, capsys):
    # `run(metadata=)` may hold braidflow.usage in the dashboard's other forms
    # (total_tokens), or hold it wrong: the commands show what they can read
    # of it, as the dashboard does, and never fail on it.
    from braidflow import Flow, Node, SQLiteStore
    from braidflow.cli._main import main

    path = str(work / "runs.db")
    with SQLiteStore(path) as store:
        for run_id, usage in (
            ("hand", {"total_tokens": 12345, "cost": 0.5}),
            ("bad", {"input_tokens": "n/a", "cost": "free"}),
        ):
            Flow(start=Node(name="n")).run(
                {}, store=store, run_id=run_id, metadata={"braidflow.usage": usage}
            )
    assert main(["runs", "--store", path]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    column = lines["RUN"].index("TOKENS")  # the table's columns: its header's
    assert lines["hand"][column:].split() == ["12,345", "0.5"]
    assert lines["bad"][column:].strip() == ""  # no tokens, no cost
    assert main(["show", "hand", "--store", path]) == 0
    assert "used 12,345 tokens, cost 0.5" in capsys.readouterr().out
    assert main(["show", "bad", "--store", path]) == 0
    assert "used" not in capsys.readouterr().out
