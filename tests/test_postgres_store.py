"""What PostgresStore does beyond the store contract (tests/test_store_contract.py
runs that on it too): runs shared by processes on many machines, owned by leases;
its tables made on first use and versioned; a lost connection, and coming back.
All against a real PostgreSQL server the tests start (conftest.py)."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import braidflow as bf
from _support import checkpoint_row as row
from braidflow import StoreError
from braidflow.stores._owners import this_owner

pytestmark = pytest.mark.postgres

psycopg = pytest.importorskip("psycopg")
from braidflow.stores import PostgresStore  # noqa: E402
from braidflow.stores._postgres_schema import SCHEMA_VERSION, connect  # noqa: E402

JOB = Path(__file__).parent / "jobs" / "durable_job.py"
LEASE = 30.0


def job(dsn, log, mode, **env):
    """The crash tests' job (300 units, 20 in flight) on ``dsn``, as a process
    of another machine (``machine-a``) unless ``BRAIDFLOW_TEST_HOST`` is given."""
    given = {"BRAIDFLOW_TEST_HOST": "machine-a", "BRAIDFLOW_TEST_LEASE": str(LEASE)}
    given.update(env)
    return subprocess.Popen(
        [sys.executable, str(JOB), "batch", dsn, str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **given},
    )


def lines(log):
    return log.read_text().splitlines() if log.exists() else []


def until_mid_run(process, log, ended=100):
    deadline = time.monotonic() + 60
    while sum(line.startswith("end ") for line in lines(log)) < ended:
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)


def kill(process):
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def test_a_run_of_another_machine_is_its_own_until_its_lease_expires(tmp_path, postgres_dsn):
    log = tmp_path / "job.log"
    first = job(postgres_dsn, log, "run")
    try:
        until_mid_run(first, log)
        with PostgresStore(postgres_dsn) as store:
            assert store.get("job").owner.startswith("machine-a@")
            with pytest.raises(StoreError, match=r"running in a live process \(machine-a@"):
                store.claim("job", this_owner())
    finally:
        kill(first)
    # Killed: from here nothing can tell, but its lease has not expired yet.
    with PostgresStore(postgres_dsn) as store:
        assert store.get("job").status == "running"
        with pytest.raises(StoreError, match="once its lease expires"):
            store.claim("job", this_owner())
    # A lease later, another process (of another machine) resumes it: only
    # what had not finished runs, and the run ends as an uninterrupted one would.
    finished = {line.split()[1] for line in lines(log) if line.startswith("end ")}
    before = len(lines(log))
    resumed = job(
        postgres_dsn,
        log,
        "resume",
        BRAIDFLOW_TEST_HOST="machine-b",
        BRAIDFLOW_TEST_AHEAD=str(LEASE + 1),
    )
    _, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err.decode()
    again = {line.split()[1] for line in lines(log)[before:] if line.startswith("start ")}
    # Finished items are not redone: only those in flight at the kill (at most
    # 20, which may have ended without their checkpoint committed) run again.
    assert len(again & finished) <= 20, again & finished
    assert again | finished == {str(unit) for unit in range(300)}
    assert lines(log)[-1] == "result " + repr(
        sorted({"done": True, "squares": [n * n for n in range(300)]}.items())
    )
    with PostgresStore(postgres_dsn) as store:
        assert store.get("job").status == "completed"


def test_of_processes_racing_to_resume_one_wins(tmp_path, postgres_dsn):
    log = tmp_path / "job.log"
    first = job(postgres_dsn, log, "run")
    until_mid_run(first, log)
    kill(first)
    racers = [
        job(
            postgres_dsn,
            log,
            "resume",
            BRAIDFLOW_TEST_HOST=f"machine-{n}",
            BRAIDFLOW_TEST_AHEAD=str(LEASE + 1),
        )
        for n in ("b", "c", "d")
    ]
    ended = [(racer.communicate(timeout=60)[1].decode(), racer.returncode) for racer in racers]
    winners = [err for err, code in ended if code == 0]
    losers = [err for err, code in ended if code != 0]
    assert len(winners) == 1, ended
    for err in losers:  # refused: the winner runs it, or has completed it already
        assert "running in a live process (machine-" in err or "has completed" in err, err
    assert sum(line.startswith("result ") for line in lines(log)) == 1


# -- its tables ------------------------------------------------------------------------


def test_tables_are_made_on_first_use_by_processes_at_once(postgres_dsn):
    code = (
        "import sys; from braidflow.stores import PostgresStore; PostgresStore(sys.argv[1]).close()"
    )
    makers = [
        subprocess.Popen([sys.executable, "-c", code, postgres_dsn], stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    for maker in makers:
        assert maker.wait(timeout=60) == 0, maker.stderr.read().decode()
        maker.stderr.close()
    with psycopg.connect(postgres_dsn) as conn:
        version = conn.execute("SELECT value FROM braidflow_meta WHERE key='schema'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_tables_of_an_older_version_are_brought_up_to_this_one(postgres_dsn):
    connect(postgres_dsn, "test", connect_timeout=10, upto=1).close()  # runs, no limiter slots
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT to_regclass('braidflow_limiter_slots')").fetchone() == (None,)
    with PostgresStore(postgres_dsn) as store:
        store.create_run("a", "flow", "g", b"", this_owner())
        with store.limiter("api", max_concurrent=1) as _:
            pass
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT value FROM braidflow_meta").fetchone() == (str(SCHEMA_VERSION),)


def test_tables_of_a_newer_braidflow_are_refused(postgres_dsn):
    PostgresStore(postgres_dsn).close()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("UPDATE braidflow_meta SET value='99' WHERE key='schema'")
    with pytest.raises(StoreError, match=r"newer braidflow \(store schema 99"):
        PostgresStore(postgres_dsn)


# -- read only --------------------------------------------------------------------------


def test_a_read_only_store_reads_and_the_server_refuses_its_writes(postgres_dsn):
    with PostgresStore(postgres_dsn) as writer:
        writer.create_run("a", "flow", "g", b"{}", this_owner())
        writer.append("a", [row(0)])
    with psycopg.connect(postgres_dsn) as conn:
        before = conn.execute("SELECT count(*) FROM braidflow_checkpoints").fetchone()
    with PostgresStore(postgres_dsn, read_only=True) as reader:
        assert [record.run_id for record in reader.runs()] == ["a"]
        assert len(reader.read("a")[3]) == 1
        refused = r"opened to read only \(.*\); open it without read_only=True"
        with pytest.raises(StoreError, match=refused):
            reader.set_metadata("a", {"k": 1})
        with pytest.raises(StoreError, match="opened to read only"):
            reader.create_run("b", "flow", "g", b"{}", this_owner())
        with pytest.raises(StoreError, match="open it without read_only=True to share limits"):
            reader.limiter("api", max_concurrent=2)  # its slots would be rows
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM braidflow_checkpoints").fetchone() == before
        assert conn.execute("SELECT count(*) FROM braidflow_limiter_slots").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM braidflow_runs").fetchone() == (1,)


def test_a_read_only_store_refuses_a_database_it_cannot_read_and_changes_nothing(postgres_dsn):
    with pytest.raises(StoreError, match="has no braidflow store to read"):
        PostgresStore(postgres_dsn, read_only=True)
    with psycopg.connect(postgres_dsn) as conn:  # no table was made
        assert conn.execute("SELECT to_regclass('braidflow_meta')").fetchone() == (None,)
    connect(postgres_dsn, "test", connect_timeout=10, upto=1).close()
    with pytest.raises(StoreError, match=r"older braidflow \(store schema 1\); open it once"):
        PostgresStore(postgres_dsn, read_only=True)
    PostgresStore(postgres_dsn).close()  # brought up to date
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("UPDATE braidflow_meta SET value='99' WHERE key='schema'")
    with pytest.raises(StoreError, match=r"newer braidflow \(store schema 99"):
        PostgresStore(postgres_dsn, read_only=True)


# -- what it is given, and a server that is not there -----------------------------------


def test_the_password_is_never_shown(postgres_dsn):
    with PostgresStore(postgres_dsn + " password=secret") as store:
        assert "secret" not in repr(store)
        assert "dbname=" in repr(store)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:s3cretPW@[db.internal/runs",  # libpq quotes it whole
        "postgresql://app:s3cretPW%zz@db.internal/runs",  # libpq quotes the password
        "host=db password='s3cret PW' port",
    ],
)
def test_an_address_libpq_cannot_read_is_said_without_its_password(dsn):
    with pytest.raises(StoreError, match="cannot read the address of the database") as caught:
        PostgresStore(dsn)
    said = str(caught.value)
    assert "s3cret" not in said
    assert "postgresql://USER:PASSWORD@HOST:PORT/DBNAME" in said


def test_bad_options_are_refused_with_what_to_give(postgres_dsn):
    with pytest.raises(StoreError, match="lease=0 must be a number of seconds above 0"):
        PostgresStore(postgres_dsn, lease=0)
    with pytest.raises(StoreError, match="must be a string"):
        PostgresStore(b"dbname=x")
    with pytest.raises(StoreError, match="serializer"):
        PostgresStore(postgres_dsn, serializer="yaml")
    with pytest.raises(StoreError, match="clock"):
        PostgresStore(postgres_dsn, clock=3)


def test_a_server_that_is_not_there_is_named_in_the_error():
    from _postgres import free_port

    dsn = f"host=127.0.0.1 port={free_port()} dbname=nothing user=nobody password=hidden"
    with pytest.raises(
        StoreError,
        match=r"PostgresStore\('.*port=\d+.*'\): cannot connect: "
        r"the database server cannot be reached",
    ) as caught:
        PostgresStore(dsn, connect_timeout=2)
    assert "hidden" not in str(caught.value)


def test_a_database_or_user_the_server_does_not_have_is_said_as_such(postgres_dsn):
    missing_db = re.sub(r"dbname=\S+", "dbname=nosuchdb", postgres_dsn)
    assert "dbname=nosuchdb" in missing_db
    with pytest.raises(StoreError, match="the database does not exist on the server") as caught:
        PostgresStore(missing_db)
    assert "create it (createdb NAME) or name one that exists" in str(caught.value)
    missing_user = postgres_dsn.replace("user=braidflow", "user=nobody")
    assert missing_user != postgres_dsn
    with pytest.raises(StoreError, match="the database user does not exist"):
        PostgresStore(missing_user)


def test_a_closed_store_says_so(postgres_dsn):
    store = PostgresStore(postgres_dsn)
    store.create_run("a", "flow", "g", b"", this_owner())
    store.close()
    store.close()
    for call in (lambda: store.get("a"), lambda: store.append("a", [row(0)]), store.runs):
        with pytest.raises(StoreError, match="the store is closed"):
            call()
    with pytest.raises(StoreError, match="closed"):
        store.limiter("api", max_concurrent=1)


def test_a_run_taken_over_after_its_lease_expired_stops_writing_here(postgres_dsn):
    now = [1000.0]
    mine = PostgresStore(postgres_dsn, lease=5, clock=lambda: now[0])
    other = PostgresStore(postgres_dsn, lease=5, clock=lambda: now[0] + 6)
    try:
        mine.create_run("a", "flow", "g", b"", "machine-a:1:1")
        mine.append("a", [row(0)])
        other.claim("a", "machine-b:1:1")  # machine-a renewed nothing for longer than its lease
        with pytest.raises(StoreError, match="was taken over by machine-b:1:1"):
            mine.append("a", [row(1)])
        with pytest.raises(StoreError, match="was taken over"):
            mine.finish("a", "failed")
        with pytest.raises(StoreError, match="was taken over"):  # its events are b's too
            mine.add_events("a", ['{"kind": "run_end"}'])
        assert other.events("a") == []
        assert other.get("a").owner == "machine-b:1:1"
        assert other.read("a")[3] == [row(0)]
    finally:
        mine.close()
        other.close()


# -- a lost connection ------------------------------------------------------------------


def test_a_lost_connection_stops_the_run_naming_the_store_and_it_resumes_once_back():
    from _postgres import postgres_server

    ran = []
    stopped = []

    class Items(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(10))

        async def exec_async(self, item):
            ran.append(item)
            if item == 5 and not stopped:
                stopped.append(True)
                await asyncio.to_thread(server.stop)  # the server goes away mid-run
            return item * 2

        async def post_async(self, shared, prep_result, exec_result):
            shared["doubled"] = exec_result

    # A server of its own, which it stops as a crash would: syncing its commits
    # to disk, as a production server does (the tests' shared one does not).
    with postgres_server(durable=True) as server:
        # durable: every checkpoint synced by the server, which a crash of it loses not.
        store = PostgresStore(server.dsn, connect_timeout=2, durable=True)
        try:
            flow = bf.AsyncFlow(start=Items(max_concurrency=1, name="items"), name="job")
            with pytest.raises(StoreError) as caught:
                flow.run({}, store=store, run_id="r")
            message = str(caught.value)
            # What failed (its checkpoints, then recording its end), in the store named.
            assert message.startswith(f"{store!r}: cannot ")
            assert "run 'r'" in message
            assert "the database server cannot be reached" in message
            assert "once the database is back" in message
            with pytest.raises(StoreError, match="cannot be reached"):
                store.get("r")
            server.start()  # back: the store connects again
            assert store.get("r").status in ("failed", "interrupted")
            assert flow.resume("r", store=store)["doubled"] == [n * 2 for n in range(10)]
            assert ran == [*range(6), *range(5, 10)]  # only item 5, in flight, ran twice
        finally:
            store.close()


def test_a_user_who_may_not_make_tables_is_told_to_get_the_right(postgres, postgres_dsn):
    """PostgreSQL 15 lets only a database's owner create tables in it by default."""
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname='limited'").fetchone():
            admin.execute("CREATE ROLE limited LOGIN")
    limited = postgres_dsn.replace("user=braidflow", "user=limited")
    with pytest.raises(StoreError, match="grant the user rights to create and write tables"):
        PostgresStore(limited)
    with psycopg.connect(postgres_dsn, autocommit=True) as owner:  # as told
        owner.execute("GRANT CREATE ON SCHEMA public TO limited")
    with PostgresStore(limited) as store:
        store.create_run("a", "flow", "g", b"", this_owner())
        assert store.get("a").status == "running"


def test_a_read_only_store_whose_user_may_not_read_the_tables_says_so(postgres, postgres_dsn):
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname='looker'").fetchone():
            admin.execute("CREATE ROLE looker LOGIN")
    PostgresStore(postgres_dsn).close()  # its tables, the owner's: looker may not read them
    looker = postgres_dsn.replace("user=braidflow", "user=looker")
    with pytest.raises(StoreError, match="cannot read its tables: the database user may not"):
        PostgresStore(looker, read_only=True)
