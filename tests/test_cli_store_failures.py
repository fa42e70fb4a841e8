"""The command when a durable run's store fails under it (a SQLite file that can no
longer be written or read, a PostgreSQL server gone): one line naming the store's
error, the command line that resumes the run once the store works, exit code 74;
and that line, followed once the store is back, finishes the run. Driven as a
user drives the command: in a subprocess, the store broken by a node of the flow."""

import json
import re
import shlex
import sqlite3
import textwrap

import pytest

from _support import braidflow_command
from braidflow.cli import main
from conftest import new_database

# The node "breaks" breaks the store the first time it runs (the file "broken" then
# says so), as $BREAK says: "unreadable" takes the runs table away (no write or read
# of the store works), "full" lets no file grow (a full disk: writes fail, reads
# work), "server" stops the PostgreSQL server ($PG_CTL: the command that does).
# While the file "fail" is there it fails instead, as a flow's own error would.
FLOWS = textwrap.dedent(
    """
    import json
    import os
    import resource
    import signal
    import sqlite3
    import subprocess
    from pathlib import Path

    import braidflow as bf


    def break_store():
        how = os.environ["BREAK"]
        if how == "unreadable":
            with sqlite3.connect("runs.db") as db:
                db.execute("ALTER TABLE runs RENAME TO runs_away")
        elif how == "full":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write that fails, not a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
        elif how == "server":
            subprocess.run(json.loads(os.environ["PG_CTL"]), check=True, capture_output=True)


    class Mark(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared[self.name] = True


    class Breaks(bf.Node):
        def exec(self, prep_res):
            if Path("fail").exists():
                raise ConnectionError("upstream down")
            if not Path("broken").exists():
                Path("broken").write_text("")
                break_store()
            return "went on"

        def post(self, shared, prep_res, exec_res):
            shared["breaks"] = exec_res


    first = Mark(name="first")
    first >> Breaks(name="breaks") >> Mark(name="last")
    flow = bf.Flow(start=first, name="flow")
    """
)
FINISHED = {"first": True, "breaks": "went on", "last": True}


@pytest.fixture
def work(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


def stopped_by_the_store(done, run_id):
    """The command line said to resume the run with, as words, once the command
    said, on one line, that the run's store failed, and exited with 74."""
    assert done.returncode == 74, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    said = [line for line in done.stderr.splitlines() if "stopped on a store error" in line]
    assert len(said) == 1, done.stderr
    assert said[0].startswith(f"braidflow: run {run_id!r} stopped on a store error: StoreError: ")
    found = re.search(
        r"^braidflow: once the store works again, resume it with: (.*)$", done.stderr, re.M
    )
    assert found, done.stderr
    words = shlex.split(found.group(1))
    assert words[:2] == ["braidflow", "resume"], words
    return words[1:]


def started(work, *args, store="runs.db", env=None):
    """Start ``flows.py:flow`` with ``args``, so that it fails at "breaks"
    (the store left working), as run "r1" in ``store``."""
    (work / "fail").write_text("")
    failed = braidflow_command(
        work, "run", "flows.py:flow", "--store", store, "--run-id", "r1", *args, env=env
    )
    assert failed.returncode == 1, failed.stderr
    (work / "fail").unlink()


@pytest.mark.slow  # three or four commands, each a new Python process
@pytest.mark.parametrize(
    ("command", "how", "serializer"),
    [
        ("run", "unreadable", "json"),
        ("run", "full", "pickle"),
        ("resume", "unreadable", "pickle"),
        ("resume", "full", "json"),
        ("fork", "unreadable", "json"),
    ],
)
def test_a_run_whose_sqlite_store_fails_says_how_to_resume_it_and_resumes(
    work, command, how, serializer
):
    env = {"BREAK": how}
    options = ["--store", "runs.db"]
    pickled = ["--serializer", "pickle"] if serializer == "pickle" else []
    if command == "run":
        done = braidflow_command(
            work, "run", "flows.py:flow", *options, "--run-id", "r1", *pickled, env=env
        )
        run_id = "r1"
    else:
        started(work, *pickled)
        if command == "resume":
            done = braidflow_command(work, "resume", "r1", *options, *pickled, env=env)
            run_id = "r1"
        else:
            done = braidflow_command(
                work, "fork", "r1", "--at", "1", "--run-id", "f1", *options, *pickled, env=env
            )
            run_id = "f1"
    resume = stopped_by_the_store(done, run_id)
    assert resume == ["resume", run_id, *options, *pickled]
    if how == "unreadable":  # the store is back
        with sqlite3.connect(work / "runs.db") as db:
            db.execute("ALTER TABLE runs_away RENAME TO runs")
    resumed = braidflow_command(work, *resume)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == FINISHED


def test_in_process_a_run_whose_store_cannot_be_read_says_how_to_resume_it(
    work, monkeypatch, capsys
):
    """The same, in this process (the quick tier): the store taken away mid-run."""
    monkeypatch.chdir(work)
    monkeypatch.setenv("BREAK", "unreadable")
    with pytest.warns(RuntimeWarning, match="events of run 'r1'"):  # (not kept: said once)
        code = main(["run", "flows.py:flow", "--store", "runs.db", "--run-id", "r1"])
    err = capsys.readouterr().err
    assert code == 74, err
    assert "braidflow: run 'r1' stopped on a store error: StoreError: " in err
    assert "no such table: runs" in err
    said = "braidflow: once the store works again, resume it with: "
    assert f"{said}braidflow resume r1 --store runs.db\n" in err
    with sqlite3.connect("runs.db") as db:
        db.execute("ALTER TABLE runs_away RENAME TO runs")
    assert main(["resume", "r1", "--store", "runs.db"]) == 0
    assert json.loads(capsys.readouterr().out) == FINISHED


@pytest.mark.postgres
@pytest.mark.slow  # the server stopped and started again, and three or four commands
@pytest.mark.parametrize("command", ["run", "resume"])
def test_a_run_whose_postgres_server_goes_down_says_how_to_resume_it_and_resumes(
    work, postgres, command
):
    secret = "s3cret-pw"  # the server trusts the tests' user: the password is only carried
    dbname = re.search(r"dbname=(\S+)", new_database(postgres)).group(1)
    url = f"postgresql://braidflow:{secret}@127.0.0.1:{postgres.port}/{dbname}"
    # Stopped as a server shut down: its connections dropped, what it committed kept.
    env = {"BREAK": "server", "PG_CTL": json.dumps(postgres.stop_command("fast"))}
    try:
        if command == "run":
            done = braidflow_command(
                work, "run", "flows.py:flow", "--store", url, "--run-id", "r1", env=env
            )
        else:
            started(work, store=url)
            done = braidflow_command(work, "resume", "r1", "--store", url, env=env)
        assert secret not in done.stderr
        resume = stopped_by_the_store(done, "r1")
        assert "the database server cannot be reached" in done.stderr
    finally:
        if not postgres.running():
            postgres.start()  # the store is back
    shown = url.replace(secret, "PASSWORD")
    assert resume == ["resume", "r1", "--store", shown]
    filled = [word.replace("PASSWORD", secret) for word in resume]  # as a person fills it in
    resumed = braidflow_command(work, *filled)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == FINISHED
