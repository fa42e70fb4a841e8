"""A Ctrl-C lands between two bytecodes: Python's own SIGINT handler raises
``KeyboardInterrupt`` wherever the main thread is. Landing as a limiter's slot
is taken or given back, as a worker thread starts, or as a drain's grace timer
starts, it leaves nothing behind: every slot comes back exactly once, a thread
that began its call is waited for, and the run raises the ``KeyboardInterrupt``.

Each test raises it at one such place, the first where the signal could be
handled: a lock's release (a call into C, after which Python looks for a
signal), a thread's start, an observer called there.
"""

import asyncio
import sqlite3
import threading

import pytest

import braidflow as bf
from braidflow import AsyncFlow, AsyncNode, Flow, Limiter, Node
from braidflow._threads import _Worker, thread_limiter
from braidflow.durable import _drain
from braidflow.durable._drain import Drain
from braidflow.stores._sqlite_failures import Transaction
from braidflow.stores.memory import MemoryStore


class WatchedLock:
    """Stands for one of a limiter's locks: ``after(before, now)``, if set, is
    called as it is let go, with what ``measure()`` was when it was taken and
    is now. A ``KeyboardInterrupt`` raised there lands where Python raises a
    Ctrl-C that came while the lock was held."""

    def __init__(self, lock, measure):
        self.lock, self.measure, self.after = lock, measure, None

    def __enter__(self):
        self.lock.acquire()
        self.before = self.measure()

    def __exit__(self, *exc):
        before, now = self.before, self.measure()
        self.lock.release()
        after = self.after
        if after is not None and exc[0] is None:
            after(before, now)

    def acquire(self, *args, **kwargs):
        return self.lock.acquire(*args, **kwargs)

    def release(self):
        self.lock.release()


def ctrl_c_once(watched, when):
    """Have ``watched`` raise ``KeyboardInterrupt`` the first time ``when(before, now)``."""

    def after(before, now):
        if when(before, now):
            watched.after = None
            raise KeyboardInterrupt

    watched.after = after


def taken(before, now):
    return now > before


def given_back(before, now):
    return now < before


def watch(limiter):
    """Watch the lock of ``limiter`` (counting its slots in flight)."""
    watched = limiter._lock = WatchedLock(limiter._lock, lambda: limiter._in_flight)
    return watched


def limits_of(kind, tmp_path):
    """The node's limits, the limiter whose lock a Ctrl-C is raised at, and
    every limiter that must hold nothing afterwards."""
    if kind == "plain":
        limiter = Limiter(1, name="api")
        return [limiter], watch(limiter), [limiter]
    if kind == "rate":
        limiter = Limiter(1, rate=1000, name="api")
        return [limiter], watch(limiter), [limiter]
    if kind == "weighted":
        limiter = Limiter(4, name="tokens")
        return [limiter.weighted(4)], watch(limiter), [limiter]
    if kind == "two":  # the second taken is interrupted: the first comes back too
        first, second = Limiter(1, name="first"), Limiter(1, name="second")
        return [first, second], watch(second), [first, second]
    store = bf.SQLiteStore(tmp_path / "runs.db")
    limiter = store.limiter("api", max_concurrent=1)
    if kind == "shared":  # its place in this process's line
        return [limiter], watch(limiter), [limiter]
    # "shared slot": the slot of the database, as it joins those held
    watched = limiter._held_lock = WatchedLock(limiter._held_lock, lambda: len(limiter._held))
    return [limiter], watched, [limiter]


def assert_nothing_held(limiters):
    for limiter in limiters:
        statistics = limiter.statistics()
        assert (statistics.in_flight, statistics.waiting) == (0, 0), limiter
    assert thread_limiter().statistics().in_flight == 0


class Call(Node):
    def exec(self, prep_result):
        return "called"


class AsyncCall(AsyncNode):
    async def exec_async(self, prep_result):
        return "called"


def run(mode, limits, observers=()):
    if mode == "sync":
        return Flow(start=Call(limits=limits)).run({}, observers=list(observers))
    flow = AsyncFlow(start=AsyncCall(limits=limits))
    return asyncio.run(flow.run_async({}, observers=list(observers)))


KINDS = ["plain", "rate", "weighted", "two", "shared", "shared slot"]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_ctrl_c_as_an_attempt_takes_its_slot_gives_it_back(kind, mode, tmp_path):
    limits, watched, limiters = limits_of(kind, tmp_path)
    ctrl_c_once(watched, taken)
    with pytest.raises(KeyboardInterrupt):
        run(mode, limits)
    assert_nothing_held(limiters)
    assert run(mode, limits) is None  # a later run is not kept waiting


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_ctrl_c_as_an_attempt_gives_back_one_limiter_still_gives_back_the_others(mode):
    first, second = Limiter(1, name="first"), Limiter(1, name="second")
    ctrl_c_once(watch(second), given_back)  # given back first: the reverse order
    with pytest.raises(KeyboardInterrupt):
        run(mode, [first, second])
    assert_nothing_held([first, second])


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["plain", "weighted", "shared"])
def test_a_ctrl_c_as_a_waiting_attempt_is_served_gives_the_slot_back(kind, mode, tmp_path):
    limits, watched, limiters = limits_of(kind, tmp_path)
    limiter = limiters[0]
    limiter.acquire_blocking()  # busy: the attempt waits in line
    queued = threading.Event()
    watched.after = lambda before, now: limiter._waiting and queued.set()
    outcome = []

    def go():
        try:
            run(mode, limits)
        except KeyboardInterrupt:
            outcome.append("KeyboardInterrupt")

    running = threading.Thread(target=go)
    running.start()
    queued.wait()
    ctrl_c_once(watched, taken)  # as its turn comes and it takes the slot
    limiter.release()
    running.join()
    assert outcome == ["KeyboardInterrupt"]
    assert_nothing_held(limiters)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["limiter_wait_start", "limiter_wait"])
def test_a_ctrl_c_in_the_engine_around_a_wait_gives_every_slot_back(kind, mode):
    # The first limiter is free, the second busy: the attempt holds one slot
    # as the wait starts, both once it ends; an observer stands for the
    # Ctrl-C landing there.
    free, busy = Limiter(1, name="free"), Limiter(1, name="busy")
    busy.acquire_blocking()
    outcome = []

    def observer(event):
        if event.kind == "limiter_wait_start" and kind == "limiter_wait":
            busy.release()  # its turn comes at once
        if event.kind == kind:
            raise KeyboardInterrupt

    try:
        run(mode, [free, busy], [observer])
    except KeyboardInterrupt:
        outcome.append("KeyboardInterrupt")
    if kind == "limiter_wait_start":
        busy.release()
    assert outcome == ["KeyboardInterrupt"]
    assert_nothing_held([free, busy])


# -- braidflow's worker threads -------------------------------------------------------


class Timed(Node):
    """A sync exec under a timeout: it runs in one of braidflow's threads."""

    def __init__(self, log):
        super().__init__(timeout=30)
        self.log = log

    def exec(self, prep_result):
        self.log.append("exec ran")
        return "called"


def ctrl_c_at_a_worker_start(monkeypatch, started):
    """Raise ``KeyboardInterrupt`` as a worker thread starts: after it began
    (``started``: the wait in `Thread.start` for it to run), or before."""
    start = threading.Thread.start

    def interrupted(thread):
        if not thread.name.startswith("braidflow-worker"):
            return start(thread)
        monkeypatch.setattr(threading.Thread, "start", start)  # once
        if started:
            start(thread)
        raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted)


def test_a_ctrl_c_as_a_worker_thread_starts_waits_for_it_and_gives_its_slot_back_once(
    monkeypatch,
):
    log = []
    ctrl_c_at_a_worker_start(monkeypatch, started=True)
    with pytest.raises(KeyboardInterrupt):
        Timed(log).run({})
    log.append("run ended")
    # Its call, begun, ran to its end before the run did (or never began):
    # either way its slot came back once (twice raised RunError in the thread).
    assert log in (["exec ran", "run ended"], ["run ended"])
    assert thread_limiter().statistics().in_flight == 0
    assert Timed(log).run({}) is None


def test_a_ctrl_c_before_a_worker_thread_starts_runs_nothing_and_gives_its_slot_back(
    monkeypatch,
):
    log = []
    ctrl_c_at_a_worker_start(monkeypatch, started=False)
    with pytest.raises(KeyboardInterrupt):
        Timed(log).run({})
    assert log == []
    assert thread_limiter().statistics().in_flight == 0


def test_a_ctrl_c_as_a_job_goes_to_an_idle_worker_leaves_neither_behind(monkeypatch):
    log = []
    give = _Worker.give
    armed = []

    def interrupted(worker, job):
        if armed and job is not None:
            armed.clear()
            raise KeyboardInterrupt
        give(worker, job)

    class Arms(Timed):
        def post(self, shared, prep_result, exec_result):
            armed.append(True)  # its worker is idle now: the next job goes there

    monkeypatch.setattr(_Worker, "give", interrupted)
    first = Arms(log)
    first >> Timed(log)
    with pytest.raises(KeyboardInterrupt):
        Flow(start=first).run({})
    assert log[0] == "exec ran"
    assert thread_limiter().statistics().in_flight == 0
    assert Timed(log).run({}) is None


# -- a drain's grace timer -------------------------------------------------------------


def test_a_drain_asked_once_its_run_ended_starts_no_timer():
    drain = Drain(MemoryStore(), "run")
    drain.close()
    drain.ask(3600)  # another thread's drain(), or the watcher, a moment late
    assert drain.timer is None  # (a thread of the drain outliving its run)


def test_a_run_that_ends_while_another_thread_asks_it_to_drain_stops_the_timer(monkeypatch):
    # The other thread is about to start the grace timer as the run ends.
    drain = Drain(MemoryStore(), "run")
    starting, closing = threading.Event(), threading.Event()
    lock = threading.RLock()

    class Contended:
        """The drain's lock, which says when the run's close must wait for it."""

        def __enter__(self):
            if not lock.acquire(blocking=False):
                closing.set()
                lock.acquire()

        def __exit__(self, *exc):
            lock.release()

    class PausedTimer(_drain._Grace):  # the grace period's timer
        def start(self):
            starting.set()
            closing.wait()  # the run's close waits for the lock, or is done
            super().start()

    monkeypatch.setattr(_drain, "_RUNNING_LOCK", Contended())
    monkeypatch.setattr(_drain, "_Grace", PausedTimer)
    errors = []

    def close():
        try:
            drain.close()
        except Exception as error:  # joined before it started
            errors.append(error)
        closing.set()

    asking = threading.Thread(target=drain.ask, args=(3600,))
    asking.start()
    starting.wait()
    closer = threading.Thread(target=close)
    closer.start()
    asking.join()
    closer.join()
    timer = drain.timer
    if timer is not None and timer.is_alive():
        timer.cancel()
    assert errors == []
    assert timer is None or not timer.is_alive()


# -- a SQLite store's transactions (a shared limiter's slots, a run's records) ----------


class Connection(sqlite3.Connection):
    ctrl_c_after_begin = False

    def execute(self, sql, *args):
        cursor = super().execute(sql, *args)
        if sql == "BEGIN IMMEDIATE" and self.ctrl_c_after_begin:
            self.ctrl_c_after_begin = False
            raise KeyboardInterrupt
        return cursor


def test_a_ctrl_c_as_a_sqlite_transaction_begins_leaves_no_write_lock(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.db", isolation_level=None, factory=Connection)
    db.ctrl_c_after_begin = True
    with pytest.raises(KeyboardInterrupt), Transaction(db):
        pass
    assert not db.in_transaction
    db.close()


def test_a_sqlite_transaction_a_ctrl_c_left_open_ends_at_the_next(tmp_path):
    db = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    db.execute("CREATE TABLE t (x)")
    db.execute("BEGIN IMMEDIATE")  # as if a Ctrl-C landed as its `__exit__` was called
    db.execute("INSERT INTO t VALUES (1)")
    with Transaction(db):
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT x FROM t").fetchall() == [(2,)]
    db.close()
