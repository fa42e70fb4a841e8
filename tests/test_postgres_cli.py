"""The braidflow command and the dashboard on a PostgreSQL store given as a
``postgresql://`` URL (--store or $BRAIDFLOW_STORE): run, list, show, resume,
serve and act as on a SQLite file; a URL's password never shown; a database
that cannot be used refused in one line. Against the tests' real server."""

import contextlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from _postgres import free_port
from _support import braidflow_command, start_drain_job
from braidflow.cli import main
from braidflow.cli._address import StoreAddress, masked
from conftest import new_database

SECRET = "s3cret-pw"  # the server trusts the tests' user: the password is only carried
FLOWS = textwrap.dedent(
    """
    from pathlib import Path

    import braidflow as bf


    class Greet(bf.Node):
        def post(self, shared, prep_res, exec_res):
            shared["greeting"] = "hello"


    class Fragile(bf.Node):
        def exec(self, prep_res):
            if not Path("fixed").exists():
                raise ConnectionError("upstream down")
            return "fine"

        def post(self, shared, prep_res, exec_res):
            shared["fragile"] = exec_res


    class Ask(bf.Node):
        def exec(self, prep_res):
            return bf.interrupt("ship it?")

        def post(self, shared, prep_res, exec_res):
            shared["approved"] = exec_res


    first = Greet(name="greet")
    first >> Fragile(name="fragile")
    fragile = bf.Flow(start=first, name="fragile")
    review = bf.Flow(start=Ask(name="ask"), name="review")
    """
)


@pytest.fixture
def url(postgres):
    """The URL of a new, empty database on the tests' server, with a password."""
    dbname = re.search(r"dbname=(\S+)", new_database(postgres)).group(1)
    return f"postgresql://braidflow:{SECRET}@127.0.0.1:{postgres.port}/{dbname}"


@pytest.fixture
def work(tmp_path):
    (tmp_path / "flows.py").write_text(FLOWS)
    return tmp_path


def cli(work, *args, env=None):
    done = braidflow_command(work, *args, env=env)
    assert SECRET not in done.stdout + done.stderr
    return done


def refused(done):
    """The one line of a command refused as bad input."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def suggested(stderr, after):
    """The command line suggested on stderr after ``after``, as words, its
    password placeholder not yet filled in."""
    line = next(line for line in stderr.splitlines() if after in line)
    words = shlex.split(line.split(after, 1)[1])
    assert words[0] == "braidflow", line
    return words[1:]


def status(url, run_id):
    from braidflow.stores import PostgresStore

    with PostgresStore(url, read_only=True) as store:
        return store.get(run_id).status


# -- the password, never shown ----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://app:hidden@db:5432/runs", "postgresql://app:PASSWORD@db:5432/runs"),
        ("postgres://app:hid:den@x@db/runs?ssl=1", "postgres://app:PASSWORD@db/runs?ssl=1"),
        (
            "postgresql://db/r?user=a&password=hidden&x=1",
            "postgresql://db/r?user=a&password=PASSWORD&x=1",
        ),
        ("postgresql://db/r?password=hidden#f", "postgresql://db/r?password=PASSWORD#f"),
        ("postgresql://app@h1:5432,h2:5433/runs", "postgresql://app@h1:5432,h2:5433/runs"),
        ("postgresql:///runs", "postgresql:///runs"),
    ],
)
def test_a_urls_password_is_shown_as_a_placeholder(given, shown):
    assert masked(given) == shown
    assert str(StoreAddress(given)) == shown
    assert "hid" not in repr(StoreAddress(given))


def test_a_path_is_shown_as_given_and_names_no_database(tmp_path):
    address = StoreAddress(tmp_path / "runs.db")
    assert not address.is_database
    assert str(address) == str(tmp_path / "runs.db")


# -- the command ------------------------------------------------------------------------


@pytest.mark.postgres
def test_run_runs_show_graph_timeline_resume_and_fork_against_a_url(work, url):
    failed = cli(work, "run", "flows.py:fragile", "--store", url, "--run-id", "r1")
    assert failed.returncode == 1, failed.stderr
    assert "the run failed: ConnectionError: upstream down" in failed.stderr
    resume = suggested(failed.stderr, "fix the cause, then: ")
    shown = url.replace(SECRET, "PASSWORD")
    assert resume == ["resume", "r1", "--store", shown]
    assert status(url, "r1") == "failed"

    listed = cli(work, "runs", "--store", url)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["r1", "failed", "fragile"]
    from_environment = cli(work, "runs", "--status", "failed", env={"BRAIDFLOW_STORE": url})
    assert from_environment.stdout == listed.stdout
    show = cli(work, "show", "r1", "--store", url)
    assert show.returncode == 0, show.stderr
    assert "run r1 of fragile: failed" in show.stdout
    drawn = cli(work, "timeline", "r1", "--store", url, "-o", "r1.html")
    assert drawn.returncode == 0, drawn.stderr
    assert (work / "r1.html").read_text().startswith("<!DOCTYPE html>")
    graph = cli(work, "graph", "flows.py:fragile", "--run", "r1", "--store", url)
    assert graph.returncode == 0, graph.stderr
    assert "greeting" in graph.stdout  # the key its finished step wrote
    missing = refused(cli(work, "show", "nothing", "--store", url))
    assert f"no run 'nothing' in '{shown}'" in missing

    (work / "fixed").write_text("")
    filled = [word.replace("PASSWORD", SECRET) for word in resume]  # as a person fills it in
    resumed = cli(work, *filled)
    assert resumed.returncode == 0, resumed.stderr
    assert '"fragile": "fine"' in resumed.stdout
    assert status(url, "r1") == "completed"
    forked = cli(work, "fork", "r1", "--at", "1", "--run-id", "r1b", "--store", url)
    assert forked.returncode == 0, forked.stderr
    assert status(url, "r1b") == "completed"


@pytest.mark.postgres
def test_a_waiting_run_is_answered_with_the_store_in_the_environment(work, url):
    waiting = cli(work, "run", "flows.py:review", "--store", url, "--run-id", "r2")
    assert waiting.returncode == 3, waiting.stderr
    answer = suggested(waiting.stderr, "answer with: ")
    assert answer == ["resume", "r2", "--store", url.replace(SECRET, "PASSWORD"), "--input", "JSON"]
    resumed = cli(work, "resume", "r2", "--input", '"yes"', env={"BRAIDFLOW_STORE": url})
    assert resumed.returncode == 0, resumed.stderr
    assert status(url, "r2") == "completed"


@pytest.mark.slow  # a connection refused, then the command's start: 0.4 to 0.8 s each
@pytest.mark.parametrize("command", [["runs"], ["show", "r1"], ["run", "flows.py:review"], ["ui"]])
def test_a_database_that_cannot_be_reached_is_one_line_naming_it(work, command):
    pytest.importorskip("psycopg")
    if command == ["ui"]:
        pytest.importorskip("uvicorn")
    url = f"postgresql://braidflow:{SECRET}@127.0.0.1:{free_port()}/runs"
    said = refused(cli(work, *command, "--store", url))
    shown = url.replace(SECRET, "PASSWORD")
    assert f"braidflow: store {shown}: cannot connect: the database server cannot be" in said
    assert "check that the PostgreSQL server is up and reachable" in said


def test_a_malformed_url_is_one_line_naming_it(work):
    pytest.importorskip("psycopg")
    said = refused(cli(work, "runs", "--store", f"postgresql://app:{SECRET}@db:port/runs"))
    assert "store postgresql://app:PASSWORD@db:port/runs: cannot connect" in said


def test_without_psycopg_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    for module in ("braidflow.stores.postgres", "braidflow.stores._postgres_schema"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["runs", "--store", f"postgresql://app:{SECRET}@db/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--store postgresql://app:PASSWORD@db/runs: a PostgreSQL store needs psycopg" in err
    assert "pip install 'braidflow[postgres]'" in err


def test_a_key_value_dsn_is_refused_rather_than_made_a_file(work):
    said = refused(cli(work, "run", "flows.py:review", "--store", "host=db dbname=runs"))
    assert "give --store postgresql://USER@HOST:PORT/DBNAME" in said
    assert sorted(path.name for path in work.iterdir()) == ["flows.py"]


# -- the dashboard ----------------------------------------------------------------------


@pytest.mark.postgres
def test_the_ui_command_serves_a_databases_runs_and_names_it_without_its_password(work, url):
    pytest.importorskip("uvicorn")
    assert cli(work, "run", "flows.py:fragile", "--store", url, "--run-id", "r1").returncode == 1
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(
        [sys.executable, "-m", "braidflow", "ui", "--store", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        line = server.stdout.readline()
        found = re.search(r"the runs of (\S+) at (http://127\.0\.0\.1:\d+/) ", line)
        assert found, line + server.stderr.read()
        assert found.group(1) == url.replace(SECRET, "PASSWORD")
        base = found.group(2)
        with urllib.request.urlopen(base, timeout=30) as page:
            table = page.read().decode()
        assert 'data-run="r1"' in table
        with urllib.request.urlopen(f"{base}runs/r1", timeout=30) as page:
            run = page.read().decode()
        assert "ConnectionError: upstream down" in run
        assert SECRET not in table + run
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert SECRET not in err


@pytest.mark.postgres
def test_the_ui_refuses_a_database_without_runs_and_makes_no_table(work, url):
    pytest.importorskip("uvicorn")
    said = refused(cli(work, "ui", "--store", url, "--port", "0"))
    assert "the database has no braidflow store to read" in said
    import psycopg

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('braidflow_meta')").fetchone() == (None,)


@contextlib.contextmanager
def _client(url):
    """A test client of the dashboard of ``url``; its stores closed at the end."""
    from starlette.testclient import TestClient

    from braidflow.stores import PostgresStore
    from braidflow.ui import create_app

    with PostgresStore(url, read_only=True) as store:
        app = create_app(store, url)
        # As a context, the client runs the app's lifespan: its end closes the
        # store the actions opened.
        with TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False) as client:
            yield client


def _csrf(page):
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _finish(client):
    for thread in list(client.app.state.actions._going.values()):
        thread.join(30)


@pytest.mark.postgres
def test_the_ui_reads_and_acts_on_a_databases_runs_as_on_a_files(work, url, monkeypatch):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")  # the test client
    assert cli(work, "run", "flows.py:fragile", "--store", url, "--run-id", "bad").returncode == 1
    assert cli(work, "run", "flows.py:review", "--store", url, "--run-id", "ask").returncode == 3
    monkeypatch.chdir(work)  # where the flow looks for "fixed", when the actions run it
    with _client(url) as client:
        table = client.get("/").text
        assert 'data-run="bad"' in table
        assert 'data-run="ask"' in table
        assert url.replace(SECRET, "PASSWORD") in table  # the store it shows
        assert SECRET not in table
        page = client.get("/runs/bad").text
        assert "ConnectionError: upstream down" in page
        assert client.get("/runs/bad/timeline").text.startswith("<!DOCTYPE html>")

        asked = client.get("/runs/ask").text
        assert "ship it?" in asked
        done = client.post("/runs/ask/resume", data={"csrf": _csrf(asked), "answer": '"yes"'})
        assert done.status_code == 303
        (work / "fixed").write_text("")
        done = client.post("/runs/bad/resume", data={"csrf": _csrf(page)})
        assert done.status_code == 303
        _finish(client)
        forked = client.post(
            "/runs/bad/fork", data={"csrf": _csrf(page), "at": "0", "shared": '{"x": 1}'}
        )
        assert forked.status_code == 303
        new = forked.headers["location"].rsplit("/", 1)[1]
        _finish(client)
        assert "completed" in client.get("/runs/ask").text
    assert status(url, "ask") == "completed"
    assert status(url, "bad") == "completed"
    assert status(url, new) == "completed"


@pytest.mark.postgres
def test_a_running_run_in_a_database_is_drained_from_its_page(tmp_path, url):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    log = tmp_path / "items.log"
    job = start_drain_job(url, log)
    try:
        with _client(url) as client:
            page = client.get("/runs/job").text
            assert 'action="/runs/job/drain"' in page
            drained = client.post("/runs/job/drain", data={"csrf": _csrf(page)})
            assert drained.status_code == 303
            _out, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 75, err
    assert SECRET not in err
    assert "--store " + url.replace(SECRET, "PASSWORD") in err  # how to resume it
    assert status(url, "job") == "drained"
