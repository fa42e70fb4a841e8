"""When a store fails, and who runs a run.

Every failure of a store (closed, full, read-only, a directory in place of a
file, too large a value, odd input) is a StoreError that says what happened
and what to do, never sqlite3's or the OS's own error; a run that ended with
its store failing can be resumed in the same process once the store works.
Runs are owned through leases their process renews: a run whose owner was on
another host is resumed once its lease expires, never while it is current.
No test waits for a lease: the clock is moved, or a lease written expired.
"""

import asyncio
import errno
import gc
import io
import multiprocessing
import multiprocessing.sharedctypes
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from _support import checkpoint_row as row
from _support import dead_owner
from braidflow import (
    AsyncFlow,
    AsyncParallelBatchNode,
    Flow,
    MemoryStore,
    Node,
    ResumeError,
    SQLiteStore,
    StoreError,
)
from braidflow.stores import _owners
from braidflow.stores._owners import process_start, this_host, this_owner
from braidflow.testing import VirtualClock
from conftest import POSTGRES

ELSEWHERE = "another-host:4242:99"  # a process on another host: only its lease tells


def raw_errors(error):
    """The exception and what it came from, none of which may be sqlite3's or the OS's
    as the error raised."""
    return type(error).__module__ == "sqlite3" or isinstance(error, (OSError, UnicodeError))


def says(error, *words):
    text = str(error)
    assert isinstance(error, StoreError), repr(error)
    assert not raw_errors(error)
    assert "cannot rollback" not in text
    for word in words:
        assert word in text, (word, text)


def held_by(store):
    """The runs this process holds in the store's location."""
    location = store._location
    return {run_id for run_id in _owners._HELD.get(location, {}) if _owners.holds(location, run_id)}


class Step(Node):
    """Writes its name into shared; the test can make it do something first."""

    before = None

    def post(self, shared, prep_result, exec_result):
        if Step.before is not None:
            action, Step.before = Step.before, None
            action()
        shared[self.name] = True


def three_steps():
    first = Step(name="a")
    first >> Step(name="b") >> Step(name="c")
    return Flow(start=first, name="steps")


@pytest.fixture(autouse=True)
def _nothing_before():
    Step.before = None
    yield
    Step.before = None


# -- a closed store ------------------------------------------------------------------------------


def test_every_method_of_a_closed_store_says_it_is_closed(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.close()
    store.close()  # again: nothing
    calls = [
        lambda: store.create_run("s", "flow", "g", b"{}", this_owner()),
        lambda: store.claim("r", this_owner()),
        lambda: store.append("r", [row(0)]),
        lambda: store.finish("r", "failed"),
        lambda: store.get("r"),
        lambda: store.runs(),
        lambda: store.set_metadata("r", {"a": 1}),
        lambda: store.add_events("r", ["{}"]),
        lambda: store.events("r"),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            call()
        says(caught.value, "the store is closed", "SQLiteStore(path)")
    assert held_by(store) == set()  # finish let the run go, even closed


def test_a_store_closed_mid_run_fails_the_run_and_it_resumes_in_this_process(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    Step.before = store.close
    flow = three_steps()
    with pytest.raises(StoreError) as caught:
        flow.run({}, store=store, run_id="r")
    says(caught.value, "closed", "can be resumed")
    assert held_by(store) == set()
    again = SQLiteStore(tmp_path / "runs.db")
    assert again.get("r").status == "interrupted"  # not "running in this process"
    assert flow.resume("r", store=again) == {"a": True, "b": True, "c": True}
    assert again.get("r").status == "completed"
    again.close()


def test_an_async_batch_whose_store_closes_mid_run_resumes_in_this_process(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    ran = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(20))

        async def exec_async(self, item):
            ran.append(item)
            if item == 10 and not store._closed:
                store.close()
            await asyncio.sleep(0)
            return item

        async def post_async(self, shared, prep_result, exec_result):
            shared["items"] = exec_result

    flow = AsyncFlow(start=Items(max_concurrency=2, name="items"))
    with pytest.raises(StoreError, match="closed"):
        flow.run({}, store=store, run_id="r")
    again = SQLiteStore(tmp_path / "runs.db")
    assert again.get("r").status == "interrupted"
    assert flow.resume("r", store=again)["items"] == list(range(20))
    again.close()


# -- a full database -----------------------------------------------------------------------------


def fill(store):
    """Make the store's database full: no page can be added (a full disk, as SQLite sees it)."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")


def unfill(store):
    store._db.execute("PRAGMA max_page_count=1073741823")


@pytest.mark.parametrize("durable", [False, True])
def test_a_full_database_is_a_store_error_that_says_so(tmp_path, durable):
    store = SQLiteStore(tmp_path / "runs.db", durable=durable)
    store.create_run("r", "flow", "g", b"{}", this_owner())
    fill(store)
    with pytest.raises(StoreError) as caught:
        store.create_run("big", "flow", "g", b"x" * 100_000, this_owner())
    says(caught.value, "full", "free some space")
    big = [row(n)._replace(payload=b"y" * 50_000) for n in range(3)]
    if durable:  # every row is committed: the append itself fails
        with pytest.raises(StoreError) as caught:
            store.append("r", big)
        says(caught.value, "cannot write checkpoints of run 'r'", "full", "resume")
        store.release("r")  # as the engine does when the run ends
    else:  # the rows are in the run's log; recording the end needs the database
        store.append("r", big)
        with pytest.raises(StoreError) as caught:
            store.finish("r", "completed")
        says(caught.value, "cannot record that run 'r' is completed", "full", "can be resumed")
    with pytest.raises(StoreError) as caught:
        store.set_metadata("r", {"note": "n" * 100_000})
    says(caught.value, "full")
    unfill(store)
    assert store.get("r").status == "interrupted"  # its end was not recorded, nobody runs it
    rows = store.claim("r", this_owner())[3]
    assert rows == ([] if durable else big)  # nothing of a failed append; all of a logged one
    store.finish("r", "completed")
    assert store.get("r").status == "completed"
    store.close()


class Big(Node):
    """Writes 50 kB into shared; the test can make it do something first."""

    before = None

    def post(self, shared, prep_result, exec_result):
        if Big.before is not None:
            action, Big.before = Big.before, None
            action()
        shared[self.name] = self.name * 50_000


@pytest.mark.parametrize("durable", [False, True])
@pytest.mark.parametrize("reopen", [False, True])
def test_a_run_whose_database_filled_up_resumes_in_this_process(tmp_path, durable, reopen):
    store = SQLiteStore(tmp_path / "runs.db", durable=durable)
    first = Big(name="a")
    first >> Big(name="b") >> Big(name="c")
    flow = Flow(start=first, name="big")
    Big.before = lambda: fill(store)
    with pytest.raises(StoreError) as caught:
        flow.run({}, store=store, run_id="r")
    says(caught.value, "full")
    assert held_by(store) == set()
    if reopen:  # a new store object on the file: no size limit
        store.close()
        store = SQLiteStore(tmp_path / "runs.db", durable=durable)
    else:  # the disk was cleared
        unfill(store)
    assert store.get("r").status in ("interrupted", "failed")
    shared = flow.resume("r", store=store)
    assert shared == {name: name * 50_000 for name in "abc"}
    assert store.get("r").status == "completed"
    store.close()


def test_a_full_disk_under_the_log_and_the_database_says_where_the_rows_are(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    big = row(0)._replace(payload=b"w" * 50_000)
    store.append("r", [big])
    fill(store)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError) as caught:
        store.append("r", [row(1)._replace(payload=b"z" * 50_000)])
    says(caught.value, "nor the database", "full", "kept in", "resume")
    monkeypatch.undo()
    unfill(store)
    store.release("r")  # as the engine does when the run ends
    assert store.claim("r", this_owner())[3] == [big]
    store.close()


# -- odd input and other failures ----------------------------------------------------------------


def test_an_initial_shared_larger_than_sqlite_holds_is_refused_before_anything_is_kept(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 5_000)
    store._largest = 5_000
    shared = {"text": "t" * 10_000}
    with pytest.raises(StoreError) as caught:
        three_steps().run(shared, store=store, run_id="r")
    says(caught.value, "initial shared", "more than SQLite holds", "keep large data out")
    assert shared == {"text": "t" * 10_000}
    assert store.runs() == []
    store._largest = 1 << 30  # as if SQLite's own limit were met first
    with pytest.raises(StoreError) as caught:
        store.create_run("r", "flow", "g", b"b" * 10_000, this_owner())
    says(caught.value, "larger than SQLite holds")
    with pytest.raises(StoreError) as caught:
        store.create_run("r", "flow", "g" * 10_000, b"{}", this_owner())
    says(caught.value, "larger than SQLite holds")
    assert store.runs() == []
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_run_id_utf8_cannot_hold_is_refused_by_every_store_alike(tmp_path, kind):
    store = SQLiteStore(tmp_path / "runs.db") if kind == "sqlite" else MemoryStore()
    with pytest.raises(StoreError, match="run id") as caught:
        three_steps().run({}, store=store, run_id="\ud800")
    says(caught.value, "lone surrogate")
    with pytest.raises(StoreError, match="run id"):
        three_steps().resume("\ud800", store=store)
    assert store.runs() == []


def test_a_run_log_that_cannot_be_read_is_named_on_every_resume_until_moved(tmp_path):
    writer = SQLiteStore(tmp_path / "runs.db")
    writer.create_run("r", "flow", "g", b"{}", dead_owner())  # its process is gone
    writer.append("r", [row(0)])
    log = writer._logs["r"].path
    os.close(writer._logs.pop("r").fd)  # the process died: the log stays as it is
    log.unlink()
    log.mkdir()  # something put a directory in its place
    store = SQLiteStore(tmp_path / "runs.db")
    for _ in range(2):
        with pytest.raises(StoreError) as caught:
            store.claim("r", this_owner())
        says(caught.value, "cannot read the log of run 'r'", str(log), "move it away")
        assert store.get("r").status == "interrupted"  # left as it was
    log.rmdir()  # moved away: the run resumes without what it held
    assert store.claim("r", this_owner())[0].status == "interrupted"
    store.close()


def test_a_database_that_cannot_be_written_says_so(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store._db.execute("PRAGMA query_only=ON")  # as a read-only file or disk
    with pytest.raises(StoreError) as caught:
        three_steps().run({}, store=store, run_id="s")
    says(caught.value, "cannot be written", "make it writable")
    with pytest.raises(StoreError) as caught:
        store.finish("r", "failed")
    says(caught.value, "cannot be written", "can be resumed")
    assert store.get("r").status == "interrupted"
    store._db.execute("PRAGMA query_only=OFF")
    assert store.claim("r", this_owner())[0].status == "interrupted"
    store.close()


def test_a_directory_or_a_damaged_file_in_place_of_the_database_is_a_store_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        SQLiteStore(tmp_path / "dir.db")
    damaged = tmp_path / "damaged.db"
    SQLiteStore(damaged).close()
    damaged.write_bytes(damaged.read_bytes()[:100] + b"\xff" * 4000)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(damaged).runs()
    assert not raw_errors(caught.value)


def test_the_lease_and_clock_options_are_checked(tmp_path):
    for lease in (0, -1, float("nan"), float("inf"), "30", True, None):
        with pytest.raises(StoreError, match="lease="):
            SQLiteStore(tmp_path / "runs.db", lease=lease)
    with pytest.raises(StoreError, match="clock="):
        SQLiteStore(tmp_path / "runs.db", clock=12.0)
    assert SQLiteStore(tmp_path / "runs.db", lease=2.5).lease == 2.5


# -- the engine lets a run go however it ends --------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_a_run_is_held_while_it_runs_and_let_go_however_it_ends(tmp_path, kind):
    store = SQLiteStore(tmp_path / "runs.db") if kind == "sqlite" else MemoryStore()
    seen = []
    Step.before = lambda: seen.append(store.get("r").status)
    flow = three_steps()
    flow.run({}, store=store, run_id="r")
    assert seen == ["running"]
    assert held_by(store) == set()

    class Fails(Node):
        def exec(self, prep_result):
            raise ValueError("no")

    failing = Flow(start=Fails(name="fails"))
    with pytest.raises(ValueError, match="no"):
        failing.run({}, store=store, run_id="f")
    assert held_by(store) == set()
    with pytest.raises(ResumeError):  # the wrong flow: the claim is given back
        flow.resume("f", store=store)
    assert held_by(store) == set()
    assert store.get("f").status == "failed"
    with pytest.raises(ValueError, match="no"):
        failing.resume("f", store=store)  # not "running in this process"
    assert held_by(store) == set()


# -- owners and leases ---------------------------------------------------------------------------


def lease_of(path, run_id):
    with sqlite3.connect(path) as db:
        (lease,) = db.execute("SELECT lease FROM runs WHERE run_id=?", (run_id,)).fetchone()
    db.close()
    return lease


def set_lease(path, run_id, lease, owner=None):
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET lease=? WHERE run_id=?", (lease, run_id))
        if owner is not None:
            db.execute("UPDATE runs SET owner=? WHERE run_id=?", (owner, run_id))
    db.close()


def test_a_run_on_another_host_is_running_until_its_lease_expires(tmp_path):
    clock = VirtualClock(1_000_000.0)
    store = SQLiteStore(tmp_path / "runs.db", clock=clock.now, lease=30)
    store.create_run("r", "flow", "g", b"{}", ELSEWHERE)
    store.append("r", [row(0)])
    assert lease_of(tmp_path / "runs.db", "r") == 1_000_030.0
    assert store.get("r").status == "running"
    with pytest.raises(StoreError) as caught:
        store.claim("r", this_owner())
    says(caught.value, f"running in a live process ({ELSEWHERE})", "lease expires", "30 s")
    clock.advance(29.5)
    with pytest.raises(StoreError, match="running in a live process"):
        store.claim("r", this_owner())
    clock.advance(1)
    assert store.get("r").status == "interrupted"
    assert [record.run_id for record in store.runs(status="interrupted")] == ["r"]
    record, _graph, _initial, rows = store.claim("r", this_owner())
    assert (record.status, record.owner, rows) == ("interrupted", ELSEWHERE, [row(0)])
    assert store.get("r").owner == this_owner()
    assert lease_of(tmp_path / "runs.db", "r") == 1_000_060.5  # the new owner's lease
    store.close()


def test_on_this_host_a_dead_pid_is_taken_at_once_and_a_live_one_only_once_its_lease_ends(
    tmp_path,
):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("dead", "flow", "g", b"{}", dead_owner())  # its lease is current
    assert store.get("dead").status == "interrupted"
    assert store.claim("dead", this_owner())[0].status == "interrupted"
    init = f"{this_host()}:1:{process_start(1)}"  # alive, and renews nothing
    store.create_run("stalled", "flow", "g", b"{}", init)
    assert store.get("stalled").status == "running"
    set_lease(tmp_path / "runs.db", "stalled", 0.0)
    assert store.get("stalled").status == "interrupted"
    assert store.claim("stalled", this_owner())[0].status == "interrupted"
    store.close()


def another_place(owner):
    """``owner``, a process of this host, as named from another PID namespace
    or boot of a machine with this host name."""
    host, _, pid_and_start = owner.partition(":")
    name, _, place = host.partition("@")
    return f"{name}@{'0' * 16 if place != '0' * 16 else '1' * 16}:{pid_and_start}"


@pytest.mark.parametrize(
    ("owner_is", "resumed_at_once"),
    [
        ("of this place", True),
        ("of another place", False),
        ("named before owners had a place", False),
        ("of a place this process cannot tell", False),
    ],
)
def test_a_dead_pid_of_this_host_name_is_resumed_at_once_only_from_its_own_pid_namespace(
    open_store, monkeypatch, owner_is, resumed_at_once
):
    """Containers that share their node's host name, or two machines of one
    name, each count their own pids: a pid gone here may be a live owner
    there, renewing its lease. Only where the pid means it is it checked."""
    owner = dead_owner()
    if owner_is == "of another place":
        owner = another_place(owner)
    elif owner_is == "named before owners had a place":
        owner = f"{socket.gethostname()}:{owner.partition(':')[2]}"
    elif owner_is == "of a place this process cannot tell":
        monkeypatch.setattr(_owners, "_PLACE", None)
        owner = f"{this_host()}:{owner.partition(':')[2]}"
    writer = open_store(clock=lambda: 1_000_000.0)
    writer.create_run("r", "flow", "g", b"{}", owner)  # its lease (30 s) is current
    writer.close()
    now = open_store(clock=lambda: 1_000_029.0)
    if resumed_at_once:
        assert now.claim("r", this_owner())[0].status == "interrupted"
        now.close()
        return
    assert now.get("r").status == "running"
    with pytest.raises(StoreError, match=r"running in a live process .*lease expires"):
        now.claim("r", this_owner())
    now.close()
    later = open_store(clock=lambda: 1_000_031.0)
    assert later.claim("r", this_owner())[0].status == "interrupted"
    later.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PID namespaces are Linux's")
def test_an_owner_names_the_boot_and_pid_namespace_of_its_process(monkeypatch):
    here = _owners._this_place()
    assert here
    assert (
        this_owner() == f"{socket.gethostname()}@{here}:{os.getpid()}:{process_start(os.getpid())}"
    )
    real_stat, real_open = os.stat, open

    def stat_in_another_namespace(path, *args, **kwargs):
        made = real_stat(path, *args, **kwargs)
        if path != "/proc/self/ns/pid":
            return made
        return os.stat_result((made.st_mode, made.st_ino + 1, *tuple(made)[2:]))

    monkeypatch.setattr(_owners.os, "stat", stat_in_another_namespace)
    assert _owners._this_place() not in (here, None)
    monkeypatch.undo()

    def open_after_a_reboot(path, *args, **kwargs):
        if path == "/proc/sys/kernel/random/boot_id":
            return io.StringIO("00000000-0000-4000-8000-000000000000\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_owners, "open", open_after_a_reboot, raising=False)
    assert _owners._this_place() not in (here, None)


def test_a_lease_written_expired_by_another_host_lets_the_run_be_taken(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")  # the real clock: no waiting either
    store.create_run("r", "flow", "g", b"{}", ELSEWHERE)
    assert store.get("r").status == "running"
    set_lease(tmp_path / "runs.db", "r", None)  # no lease at all counts as expired
    assert store.get("r").status == "interrupted"
    store.close()


def test_the_heartbeat_renews_this_process_s_leases_until_the_run_ends(tmp_path):
    clock = VirtualClock(1_000_000.0)
    store = SQLiteStore(tmp_path / "runs.db", clock=clock.now, lease=30)
    store.create_run("mine", "flow", "g", b"{}", this_owner())
    store.create_run("theirs", "flow", "g", b"{}", ELSEWHERE)
    clock.advance(20)
    assert store._renew_leases()
    assert lease_of(tmp_path / "runs.db", "mine") == 1_000_050.0
    assert lease_of(tmp_path / "runs.db", "theirs") == 1_000_030.0  # renewed by its owner only
    store.finish("mine", "completed")
    assert lease_of(tmp_path / "runs.db", "mine") is None
    assert not store._renew_leases()  # nothing left to renew
    store.close()


def test_the_heartbeat_thread_beats_every_third_of_a_lease(tmp_path, monkeypatch):
    beats = threading.Semaphore(0)
    renew = SQLiteStore._renew_leases

    def counted(self, db=None):
        going = renew(self, db)
        beats.release()
        return going

    monkeypatch.setattr(SQLiteStore, "_renew_leases", counted)
    clock = VirtualClock(1_000_000.0)
    store = SQLiteStore(tmp_path / "runs.db", clock=clock.now, lease=0.03)
    store.create_run("r", "flow", "g", b"{}", this_owner())
    for _ in range(3):
        clock.advance(10)
        assert beats.acquire(timeout=30)
    while lease_of(tmp_path / "runs.db", "r") != 1_000_030.0 + 0.03:  # renewed from the clock
        assert beats.acquire(timeout=30)
    beat = store._beat
    store.finish("r", "completed")
    beat.join(timeout=30)  # it stops once nothing is left to renew
    assert not beat.is_alive()
    assert store._beat is None
    store.close()


def test_a_process_whose_run_was_taken_over_stops_writing_it(tmp_path):
    path = tmp_path / "runs.db"
    clock = VirtualClock(1_000_000.0)
    store = SQLiteStore(path, clock=clock.now)
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    store.get("r")  # folded into the database
    store.append("r", [row(1)])  # in the log only
    set_lease(path, "r", 0.0, owner=ELSEWHERE)  # as if another host took it over
    assert store._renew_leases() is True
    with pytest.raises(StoreError) as caught:
        store.append("r", [row(2)])
    says(caught.value, f"taken over by {ELSEWHERE}", "lease")
    with pytest.raises(StoreError, match="taken over"):
        store.finish("r", "failed")
    with pytest.raises(StoreError, match="taken over"):  # its events are the new owner's too
        store.add_events("r", ['{"kind": "run_end"}'])
    assert store.events("r") == []
    record = store.get("r")
    assert (record.owner, record.status, record.error) == (ELSEWHERE, "interrupted", None)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM checkpoints").fetchone() == (1,)
    db.close()
    assert held_by(store) == set()
    store.close()


@pytest.mark.parametrize("durable", [False, True])
def test_rows_are_never_folded_into_a_run_another_owner_took(tmp_path, durable):
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, durable=durable)
    store.create_run("r", "flow", "g", b"{}", ELSEWHERE)
    store.append("r", [row(0)])
    set_lease(path, "r", 0.0)
    other = SQLiteStore(path)
    assert other.claim("r", this_owner())[3] == [row(0)]
    if not durable:
        store.append("r", [row(1)])  # to its own log, which nobody reads now
        store.get("r")  # a fold: refused, and the run is dropped here
    with pytest.raises(StoreError, match="taken over"):
        store.append("r", [row(2)])
    with pytest.raises(StoreError, match="taken over"):
        store.finish("r", "failed")
    other.append("r", [row(3)])
    other.finish("r", "failed")
    store.close()
    other.close()
    reader = SQLiteStore(path)
    record, _graph, _initial, rows = reader.claim("r", this_owner())
    assert (record.status, rows) == ("failed", [row(0), row(3)])
    reader.close()


@pytest.fixture(params=["sqlite", POSTGRES])
def open_store(request, tmp_path):
    """Opens a store object on one database, each call a new one: a SQLite
    file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return lambda **options: SQLiteStore(tmp_path / "runs.db", **options)
    from braidflow.stores import PostgresStore

    dsn = request.getfixturevalue("postgres_dsn")
    return lambda **options: PostgresStore(dsn, **options)


def test_the_heartbeat_ends_at_its_first_beat_without_a_run_and_starts_with_the_next(open_store):
    # A beat every 0.05 s. The heartbeat outlives the last run until its next
    # beat (ending it as the run ends would start a thread per run), and no
    # longer; closing the store ends it at once.
    store = open_store(lease=0.15)
    store.create_run("a", "flow", "g", b"{}", this_owner())
    store.create_run("b", "flow", "g", b"{}", this_owner())
    beat = store._beat
    store.finish("a", "completed")
    beat.join(timeout=0.3)  # six beats or more
    assert beat.is_alive()  # run b still has a lease to renew
    store.finish("b", "completed")
    beat.join(timeout=30)
    assert not beat.is_alive()
    assert store._beat is None
    store.create_run("c", "flow", "g", b"{}", this_owner())
    assert store._beat is not None
    assert store._beat.is_alive()
    beat = store._beat
    store.release("c")  # as the engine does when a run stops without recording its end
    beat.join(timeout=30)
    assert not beat.is_alive()
    store.create_run("d", "flow", "g", b"{}", this_owner())
    beat = store._beat
    store.close()  # its run held still
    beat.join(timeout=30)
    assert not beat.is_alive()


@pytest.mark.filterwarnings("ignore:.*was deleted while still open:ResourceWarning")
def test_the_heartbeat_of_a_store_dropped_unclosed_ends_with_it(open_store):
    store = open_store(lease=3600)
    store.create_run("r", "flow", "g", b"{}", this_owner())
    beat = store._beat
    assert beat.is_alive()
    del store  # its run held still: the heartbeat does not keep it
    gc.collect()
    beat.join(timeout=30)
    assert not beat.is_alive()


@pytest.mark.slow  # the drain watcher holds a run's store up to a second after it
def test_a_store_made_per_run_and_never_closed_leaves_no_thread(tmp_path):
    seen = []

    class Looks(Node):
        def exec(self, prep_res):
            seen.extend(
                thread
                for thread in threading.enumerate()
                if thread.name.startswith("braidflow lease of")
            )

    flow = Flow(start=Looks())
    for run in range(3):
        flow.run({}, store=SQLiteStore(tmp_path / "runs.db", lease=3600), run_id=f"r{run}")
    assert seen  # the runs had a heartbeat (one a store of a run before may still run)
    gc.collect()  # (a store in a reference cycle is gone at the next collection)
    for beat in set(seen):
        beat.join(timeout=30)  # ended with its store, not a third of an hour later
        assert not beat.is_alive()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_store_used_in_a_forked_child_renews_the_child_s_runs_as_its_own(tmp_path, open_store):
    """A child made by os.fork inherits the store object, its heartbeat thread's
    object and the runs it holds, but none of its threads: the run it starts is
    its own (its pid), its lease renewed past its end, and never resumed elsewhere."""
    now = multiprocessing.sharedctypes.RawValue("d", 1_000_000.0)  # one clock for both processes
    store = open_store(lease=0.3, clock=lambda: now.value)
    ran = tmp_path / "ran"
    started_read, started_write = os.pipe()
    go_read, go_write = os.pipe()
    entered, leave = threading.Event(), threading.Event()

    class Wait(Node):
        def exec(self, prep_result):
            entered.set()
            leave.wait(30)

    class Hold(Node):
        def exec(self, prep_result):
            with ran.open("a") as noted:
                noted.write(f"{os.getpid()}\n")
            os.write(started_write, b"s")
            os.read(go_read, 1)

    def held():
        return Flow(start=Hold(name="hold"), name="held")

    # The parent runs a run through the store as it forks: its heartbeat goes.
    parent_run = threading.Thread(
        target=lambda: Flow(start=Wait(name="wait")).run({}, store=store, run_id="parent-run")
    )
    parent_run.start()
    assert entered.wait(30)
    assert store._beat is not None
    child = multiprocessing.get_context("fork").Process(
        target=lambda: held().run({}, store=store, run_id="child-run")
    )
    child.start()
    fresh = open_store(lease=0.3, clock=lambda: now.value)
    try:
        assert os.read(started_read, 1) == b"s"  # the child runs its step
        assert fresh.get("child-run").owner.split(":")[1] == str(child.pid)
        now.value += 10  # many leases later: the child's lease holds only if it renewed it
        for _ in range(1000):
            if fresh.get("child-run").status == "running":
                break
            child.join(0.01)  # a moment
            assert child.is_alive()
        assert fresh.get("child-run").status == "running"
        with pytest.raises(StoreError, match="running in a live process"):
            held().resume("child-run", store=fresh)
    finally:
        os.write(go_write, b"g")
        child.join(30)
        leave.set()
        parent_run.join(30)
    assert child.exitcode == 0  # its run ended there, not taken over
    assert fresh.get("child-run").status == "completed"
    assert ran.read_text().split() == [str(child.pid)]  # its step ran once, in the child
    assert fresh.get("parent-run").status == "completed"
    fresh.close()
    store.close()


CHILD = """
import sys, time
from pathlib import Path
from braidflow import SQLiteStore
from braidflow.stores._owners import this_owner
from braidflow.stores import Checkpoint

store = SQLiteStore(sys.argv[1], lease=float(sys.argv[2]))
store.create_run("r", "flow", "g", b"{}", this_owner())
store.append("r", [Checkpoint("step", "0:flow", 0, "node0", "Node", '"next"', b"payload 0",
                              1_800_000_000.25, 1_800_000_000.5)])  # row(0) of _support
Path(sys.argv[3]).write_text("ready")
while True:
    time.sleep(1)
"""


@pytest.mark.slow
def test_a_run_of_a_killed_process_on_another_host_resumes_once_its_lease_expired(
    tmp_path, monkeypatch
):
    """The owner renews its lease while it runs; killed, it renews it no more,
    and another host takes the run (with what its log held) once it expired."""
    path, ready = tmp_path / "runs.db", tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(path), "3", str(ready)],
        stderr=subprocess.PIPE,
    )
    try:
        while not ready.exists():
            assert child.poll() is None, child.communicate()
            child_wait(child)
        first = lease_of(path, "r")
        while lease_of(path, "r") == first:  # the heartbeat renews it
            assert child.poll() is None, child.communicate()
            child_wait(child)
        renewed = lease_of(path, "r")
        monkeypatch.setattr(_owners.socket, "gethostname", lambda: "this-other-host")
        seen = SQLiteStore(path, clock=lambda: renewed - 1)
        assert seen.get("r").status == "running"
        with pytest.raises(StoreError, match="running in a live process"):
            seen.claim("r", "this-other-host:1:?")
        seen.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    later = SQLiteStore(path, clock=lambda: renewed + 1)  # the lease has expired
    record, _graph, _initial, rows = later.claim("r", "this-other-host:1:?")
    assert record.status == "interrupted"
    assert rows == [row(0)]
    later.close()


def child_wait(child):
    """Give the child a moment (a wait on it that ends early if it exits)."""
    try:
        child.wait(timeout=0.01)
    except subprocess.TimeoutExpired:
        pass


def test_a_store_from_before_leases_gives_its_running_runs_one_lease(tmp_path):
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:  # schema 3 as it was before leases
        db.execute("ALTER TABLE runs DROP COLUMN lease")
        db.execute("DROP TABLE run_starts")  # and before run_starts
        db.execute("ALTER TABLE runs ADD COLUMN graph TEXT NOT NULL DEFAULT ''")
        db.execute("ALTER TABLE runs ADD COLUMN initial BLOB NOT NULL DEFAULT x''")
        db.execute("UPDATE braidflow_meta SET value='3' WHERE key='schema'")
        db.execute(
            "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial) "
            "VALUES ('r', 'flow', 'g', 'running', 1.0, ?, x'7b7d')",
            (ELSEWHERE,),
        )
    db.close()
    clock = VirtualClock(5_000.0)
    store = SQLiteStore(path, clock=clock.now)
    assert lease_of(path, "r") == 5_030.0
    assert store.get("r").status == "running"
    clock.advance(31)
    record, graph, initial, _rows = store.claim("r", this_owner())
    assert (record.status, graph, initial) == ("interrupted", "g", b"{}")
    store.close()


def test_paths_of_one_file_share_one_record_of_this_process_s_runs(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    first = SQLiteStore(tmp_path / "data" / "runs.db")
    second = SQLiteStore(tmp_path / "link" / "runs.db")
    first.create_run("r", "flow", "g", b"{}", this_owner())
    assert second.get("r").status == "running"
    with pytest.raises(StoreError, match="running in this process"):
        second.claim("r", this_owner())
    first.release("r")
    assert second.claim("r", this_owner())[0].status == "interrupted"
    second.release("r")
    first.close()
    second.close()


def test_no_heartbeat_is_left_running_after_a_store_closes(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    beat = store._beat
    assert beat is not None
    assert beat.is_alive()
    store.close()
    beat.join(timeout=30)
    assert not beat.is_alive()
    store.release("r")


def test_the_path_of_the_database_is_what_the_record_of_runs_is_kept_by(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    assert store._location == str(Path(os.path.realpath(tmp_path / "runs.db")))
    store.close()


def test_a_durable_run_that_cannot_start_is_recorded_as_ended_and_can_be_resumed(tmp_path):
    """Something failing once the run is in the store but before its first
    node (here an observer refusing run_start, a warning the tests make an
    error) ends the run as failed: never left running in this process."""
    from braidflow import Flow, Node

    class Step(Node):
        def post(self, shared, prep_res, exec_res):
            shared["done"] = True

    def refuses(event):
        raise ValueError("no")

    store = SQLiteStore(tmp_path / "runs.db")
    flow = Flow(start=Step())
    with pytest.raises(RuntimeWarning, match="observer"):
        flow.run({}, store=store, run_id="r", observers=[refuses])
    assert store.get("r").status == "failed"
    assert flow.resume("r", store=store) == {"done": True}
    store.close()


def test_a_read_only_store_reads_and_refuses_every_write(tmp_path):
    path = tmp_path / "runs.db"
    writer = SQLiteStore(path)
    writer.create_run("r", "flow", "{}", b"{}", "someone")
    writer.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.get("r").flow == "flow"  # it reads
    with pytest.raises(StoreError, match=r"readonly"):
        reader.set_metadata("r", {"x": 1})
    with pytest.raises(StoreError, match=r"readonly"):
        reader.create_run("s", "flow", "{}", b"{}", "someone")
    reader.close()


def test_a_read_only_store_is_not_made_when_missing(tmp_path):
    with pytest.raises(StoreError, match="no store at"):
        SQLiteStore(tmp_path / "none.db", read_only=True)


def test_a_read_only_store_refuses_a_file_it_would_have_to_change(tmp_path):
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE braidflow_meta SET value='3' WHERE key='schema'")
    with pytest.raises(StoreError, match=r"older braidflow .* open it once to write"):
        SQLiteStore(path, read_only=True)
    SQLiteStore(path).close()  # as it says: opened to write, it is brought up to date
    SQLiteStore(path, read_only=True).close()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreError, match="not a braidflow store"):
        SQLiteStore(other, read_only=True)


def test_a_reader_in_the_middle_of_a_read_does_not_hold_up_a_run(tmp_path):
    path = tmp_path / "runs.db"
    SQLiteStore(path).close()
    reader = SQLiteStore(path, read_only=True)
    reader._db.execute("BEGIN")  # a read in progress: it holds its snapshot
    assert reader._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    writer = SQLiteStore(path)
    # Without WAL this run's commits would wait for the reader (then fail).
    Flow(start=Step()).run({}, store=writer, run_id="r")
    assert writer.get("r").status == "completed"
    writer.close()
    assert reader._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0  # still its snapshot
    reader._db.execute("COMMIT")
    assert reader.get("r").status == "completed"
    reader.close()
