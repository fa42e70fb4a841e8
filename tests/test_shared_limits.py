"""Shared limiters: ``store.limiter(name, ...)`` holds one limit across every
process using the store (SQLite: one machine; PostgreSQL: many), used exactly
like a Limiter. Counted by the server the processes call; slots of a process
that died come back once their lease expires."""

import asyncio
import gc
import multiprocessing
import multiprocessing.sharedctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import braidflow as bf
from braidflow import InvalidParameterError, RunError, SharedLimiter, StoreError
from braidflow.testing import VirtualClock
from conftest import POSTGRES

JOB = Path(__file__).parent / "jobs" / "limited_job.py"


@pytest.fixture(params=["sqlite", POSTGRES])
def where(request, tmp_path):
    """Where the slots are kept: a SQLite file's path, or a PostgreSQL DSN."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return request.getfixturevalue("postgres_dsn")


def open_store(where, **options):
    if "dbname=" in where:
        from braidflow.stores import PostgresStore

        return PostgresStore(where, **options)
    return bf.SQLiteStore(where, **options)


def job(where, port, items, mode, lease=30):
    return subprocess.Popen(
        [sys.executable, str(JOB), where, str(port), str(items), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "BRAIDFLOW_TEST_LEASE": str(lease)},
    )


@pytest.mark.slow
def test_three_processes_never_hold_more_than_the_limit_at_once(where, counting):
    open_store(where).close()  # the tables, made before the processes race to
    jobs = [job(where, counting.server_address[1], 50, "run") for _ in range(3)]
    for process in jobs:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert counting.calls == 150
    assert counting.peak <= 4


@pytest.mark.slow
def test_the_slots_of_a_killed_process_come_back_within_the_lease(where, counting):
    holder = job(where, counting.server_address[1], 0, "hold", lease=30)
    assert holder.stdout.readline() == b"held\n"
    os.kill(holder.pid, signal.SIGKILL)
    killed = time.time()
    holder.communicate(timeout=30)
    now = [time.time()]
    store = open_store(where, clock=lambda: now[0])
    try:
        api = store.limiter("api", max_concurrent=4, lease=30)
        assert api.held_everywhere() == 4  # the dead process's, until their lease ends
        assert not api.try_acquire()
        now[0] = killed + 30.001  # a lease after the kill, at the latest
        assert api.held_everywhere() == 0
        for _ in range(4):
            assert api.try_acquire()
        assert not api.try_acquire()
        for _ in range(4):
            api.release()
    finally:
        store.close()


def test_it_is_used_exactly_like_a_limiter(where):
    store = open_store(where)
    other = open_store(where)  # another process's store, as far as the slots go
    try:
        api = store.limiter("api", max_concurrent=2)
        theirs = other.limiter("api", max_concurrent=2)
        assert isinstance(api, SharedLimiter)
        assert isinstance(api, bf.Limiter)
        in_flight = []

        class Call(bf.AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return list(range(10))

            async def exec_async(self, item):
                in_flight.append(theirs.held_everywhere())
                await asyncio.sleep(0)
                return item

            async def post_async(self, shared, prep_result, exec_result):
                shared["out"] = exec_result

        shared = {}
        bf.AsyncFlow(start=Call(limits=[api], max_concurrency=10)).run(shared)
        assert shared["out"] == list(range(10))
        assert max(in_flight) == 2
        assert api.statistics().acquired == 10
        assert api.statistics().peak_in_flight == 2
        with api:  # from a thread
            with theirs:
                assert not api.try_acquire()
                assert not theirs.try_acquire()
            assert theirs.try_acquire()
            theirs.release()

        async def directly():
            async with api:
                assert api.held_everywhere() == 1

        asyncio.run(directly())
        assert api.held_everywhere() == 0
    finally:
        store.close()
        other.close()


def test_a_waiter_gets_the_slot_another_process_gives_back(where):
    store, other = open_store(where), open_store(where)
    try:
        api, theirs = store.limiter("api", max_concurrent=1), other.limiter("api", max_concurrent=1)
        theirs.acquire_blocking()
        got = threading.Event()

        def wait():
            with api:
                got.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        while api.statistics().waiting == 0:  # queued: asking the database
            time.sleep(0.001)
        assert not got.is_set()
        theirs.release()
        waiter.join(timeout=30)
        assert got.is_set()
    finally:
        store.close()
        other.close()


def test_a_rate_holds_across_processes(where):
    now = [1000.0]
    store, other = open_store(where, clock=lambda: now[0]), open_store(where, clock=lambda: now[0])
    try:
        api = store.limiter("api", rate=3, per=60)
        theirs = other.limiter("api", rate=3, per=60)
        assert api.try_acquire()
        assert theirs.try_acquire()
        assert api.try_acquire()
        assert not theirs.try_acquire()  # 3 started in this minute, by both
        assert not api.try_acquire()
        now[0] += 60
        assert theirs.try_acquire()
        for limiter in (api, api, theirs, theirs):
            limiter.release()
    finally:
        store.close()
        other.close()


def test_a_fractional_rate_allows_the_same_starts_as_a_limiter_in_this_process(where):
    now = [1000.0]
    clock = VirtualClock()
    store = open_store(where, clock=lambda: now[0])
    try:
        shared = store.limiter("api", rate=2.5, per=1.0)
        local = bf.Limiter(rate=2.5, per=1.0, clock=clock)
        for step in (0.0, 0.5, 0.5, 0.25):
            now[0] += step
            clock.advance(step)
            starts = [0, 0]
            for index, limiter in enumerate((shared, local)):
                while limiter.try_acquire():
                    starts[index] += 1
                    limiter.release()
            assert starts[0] == starts[1] <= 2  # 2 of 2.5 in any second, not 3
    finally:
        store.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_limiter_used_in_a_forked_child_holds_and_renews_the_child_s_slots_as_its_own(where):
    """A child made by os.fork inherits the limiter, the slots its parent holds,
    the waiter queued in its parent's line and its heartbeat thread's object,
    but none of those threads: in the child the limiter holds nothing and no
    one waits, the slot it takes there is renewed there, and the limit holds
    across the parent, the child and a third process."""
    fork = multiprocessing.get_context("fork")
    now = multiprocessing.sharedctypes.RawValue("d", 1_000_000.0)  # one clock for both
    store = open_store(where, clock=lambda: now.value)
    third = open_store(where, clock=lambda: now.value)  # a third process, as far as slots go
    api = store.limiter("api", max_concurrent=2, lease=0.03)
    theirs = third.limiter("api", max_concurrent=2, lease=0.03)
    reports, report = fork.Pipe(duplex=False)
    go = fork.Event()

    def child():
        before = api.statistics()
        api.acquire_blocking()
        report.send((before.in_flight, before.waiting, api.statistics().in_flight))
        go.wait(30)
        api.release()

    api.acquire_blocking()
    api.acquire_blocking()  # the parent holds both slots as it forks (its heartbeat going)
    queued = threading.Thread(target=api.acquire_blocking)  # and one waits in its line
    queued.start()
    while api.statistics().waiting == 0:
        time.sleep(0.001)
    forked = fork.Process(target=child)
    forked.start()
    try:
        api.release()
        api.release()  # one slot for the parent's waiter, one for the child
        assert reports.poll(10), "the child never got a slot"
        before_in_flight, before_waiting, after_in_flight = reports.recv()
        assert (before_in_flight, before_waiting) == (0, 0)  # none of the parent's
        assert after_in_flight == 1
        queued.join(30)
        now.value += 10  # many leases later: a slot counts only if renewed since
        for _ in range(1000):
            if theirs.held_everywhere() == 2:
                break
            forked.join(0.01)  # a moment
            assert forked.is_alive()
        assert theirs.held_everywhere() == 2  # the child's slot and the parent's, renewed
        assert not theirs.try_acquire()  # the limit holds across the three processes
    finally:
        go.set()
        forked.join(30)
        queued.join(30)
        if forked.is_alive():
            forked.kill()
    assert forked.exitcode == 0
    api.release()  # the waiter's slot
    assert theirs.held_everywhere() == 0
    store.close()
    third.close()


@pytest.mark.filterwarnings("ignore:.*was deleted while still open:ResourceWarning")
def test_the_heartbeat_ends_at_its_first_beat_without_a_slot_and_with_the_limiter(where):
    store = open_store(where)
    api = store.limiter("api", max_concurrent=2, lease=0.15)  # a beat every 0.05 s
    api.acquire_blocking()
    api.acquire_blocking()
    beat = api._beat
    api.release()
    beat.join(timeout=0.3)  # six beats or more
    assert beat.is_alive()  # one slot still has a lease to renew
    api.release()
    beat.join(timeout=30)  # at its next beat: not one thread per slot taken
    assert not beat.is_alive()
    assert api._beat is None
    api.acquire_blocking()  # the next slot taken starts a heartbeat again
    beat = api._beat
    assert beat.is_alive()
    del api  # dropped, its slot held: the heartbeat does not keep it
    gc.collect()
    beat.join(timeout=30)
    assert not beat.is_alive()
    store.close()


def test_bad_options_and_misuse_say_what_to_do(where):
    store = open_store(where)
    try:
        for name in ("", None, 7, "a\ud800"):
            with pytest.raises(InvalidParameterError, match="needs a name"):
                store.limiter(name, max_concurrent=1)
        named = store.limiter("api", max_concurrent=1)  # as told: a non-empty string
        assert named.name == "api"
        with pytest.raises(InvalidParameterError, match="max_concurrent=0"):
            store.limiter("api", max_concurrent=0)
        with pytest.raises(InvalidParameterError, match="lease=-1"):
            store.limiter("api", max_concurrent=1, lease=-1)
        api = store.limiter("api", max_concurrent=1)
        with pytest.raises(RunError, match="release"):
            api.release()
        with pytest.raises(InvalidParameterError, match="counts calls in every process, not"):
            api.weighted(100)
        tokens = bf.Limiter(rate=1000, per=60, name="tokens")  # as told: beside the shared one

        class Call(bf.AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return ["a", "bb"]

            async def exec_async(self, item):
                return item

        bf.AsyncFlow(start=Call(limits=[api, tokens.weighted(len)])).run({})
        assert tokens.statistics().in_window == 3
    finally:
        store.close()
    with pytest.raises(StoreError, match="make it again from an open store"):
        api.try_acquire()
    with pytest.raises(StoreError, match="the store is closed"):
        store.limiter("api", max_concurrent=1)
    reopened = open_store(where)  # as told: an open store, and the limiter made again
    try:
        api = reopened.limiter("api", max_concurrent=1)
        assert api.try_acquire()
        api.release()
    finally:
        reopened.close()


def test_a_sqlite_store_from_before_shared_limiters_gets_their_tables(tmp_path):
    import sqlite3

    from braidflow.stores.sqlite import SCHEMA_VERSION

    path = tmp_path / "old.db"
    bf.SQLiteStore(path).close()
    with sqlite3.connect(path) as db:  # schema 5, as braidflow wrote it before shared limiters
        db.execute("DROP TABLE braidflow_limiter_slots")
        db.execute("DROP TABLE braidflow_limiter_starts")
        db.execute("UPDATE braidflow_meta SET value='5' WHERE key='schema'")
    db.close()
    store = bf.SQLiteStore(path)
    try:
        api = store.limiter("api", max_concurrent=1)
        assert api.try_acquire()
        assert api.held_everywhere() == 1
        api.release()
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM braidflow_meta").fetchone() == (str(SCHEMA_VERSION),)
    db.close()


def test_a_read_only_store_makes_no_shared_limiter(tmp_path):
    bf.SQLiteStore(tmp_path / "runs.db").close()
    with bf.SQLiteStore(tmp_path / "runs.db", read_only=True) as reader:
        with pytest.raises(StoreError, match="read only; open it without read_only=True"):
            reader.limiter("api", max_concurrent=2)
    with bf.SQLiteStore(tmp_path / "runs.db") as writer:  # as it says
        api = writer.limiter("api", max_concurrent=2)
        with api:
            assert api.held_everywhere() == 1


def test_a_sqlite_slot_is_timed_once_the_file_is_locked_for_it(tmp_path):
    # A start timed before the wait for the file's lock would be recorded as
    # earlier than it was, and leave the rate window early.
    import sqlite3

    path = tmp_path / "runs.db"
    locked_when_read = []

    def clock():
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            locked_when_read.append(False)
        except sqlite3.OperationalError:  # "database is locked": by the take
            locked_when_read.append(True)
        finally:
            probe.close()
        return time.time()

    with bf.SQLiteStore(path, clock=clock) as store:
        api = store.limiter("api", max_concurrent=2, rate=5, per=1.0)
        locked_when_read.clear()
        assert api.try_acquire()
        api.release()
    assert locked_when_read
    assert all(locked_when_read)
