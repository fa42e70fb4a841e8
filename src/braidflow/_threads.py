"""braidflow's own bounded threads for sync work, kept off the loop's default executor.

One `Limiter` bounds every thread braidflow runs user code in; a wait
for a thread happens on the event loop (or in the calling thread when there
is no loop). Python cannot interrupt a thread: a cancelled caller waits for
its thread to return (a timed one, until its deadline at most), and a
timed-out caller abandons it, while the thread keeps every slot it holds
until it really ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from contextlib import contextmanager
from typing import Any, TypeVar

from ._after_fork import call_in_children
from ._clock import SYSTEM_CLOCK, Clock
from ._errors import add_note
from ._limits import Limiter
from ._own_loop import run_on_new_loop
from ._taskgroup import note_lost

__all__ = [
    "Abandoned",
    "abandoned_meanwhile",
    "call_in_thread",
    "enter_run",
    "in_worker",
    "leave_run",
    "lending_slot",
    "returned_meanwhile",
    "run_in_thread",
    "run_to_completion",
    "runs_going",
    "stop_requested",
    "thread_limiter",
]

T = TypeVar("T")

DEFAULT_MAX_THREADS = 40
_THREADS = Limiter(DEFAULT_MAX_THREADS, name="braidflow threads")
_local = threading.local()  # .holds_slot: this thread is one of ours, running a job
_names = iter(range(1, 1 << 62))

# Worker threads are reused while any run is going, and retired (joined) when
# the last one ends, so a finished run leaves no thread of braidflow's behind.
_pool_lock = threading.Lock()
_idle: list[_Worker] = []
_runs = 0

_RUNNING, _DONE, _ABANDONED = 0, 1, 2


def _forked() -> None:
    """In a child made by ``os.fork``: no worker is there (their threads were
    the parent's), no run goes on, and a thread that held the lock is not
    there. The thread that forked may have been one of our workers, holding a
    slot of the parent's; in the child it is nobody's, and holds none (the
    limiter is the child's own: `braidflow.Limiter._after_fork`)."""
    global _pool_lock, _idle, _runs, _local
    _pool_lock = threading.Lock()
    _idle = []
    _runs = 0
    _local = threading.local()


call_in_children(_forked)


class Abandoned(Exception):
    """The call outlived its timeout and was left to finish in its thread.

    Private to the engine, which turns it into a ``NodeTimeoutError``; a
    distinct type, so a ``TimeoutError`` raised by the user's own code is
    never mistaken for the engine's.
    """


def thread_limiter() -> Limiter:
    """The `Limiter` that bounds braidflow's worker threads.

    Sync user code that braidflow runs off the event loop (offloaded nodes,
    ``ParallelBatchNode`` items, sync ``exec`` under a ``timeout``) runs in
    braidflow's own threads, at most ``max_concurrent`` (default 40) at once;
    the loop's default executor stays free for the libraries you call.
    Read ``thread_limiter().statistics()``, or raise the bound with
    ``thread_limiter().max_concurrent = 100``.
    """
    return _THREADS


class _Job:
    """One call of sync code in a worker thread, and who learns its outcome."""

    __slots__ = (
        "args",
        "began",
        "context",
        "dropped",
        "event",
        "function",
        "future",
        "lock",
        "loop",
        "ok",
        "on_abandoned_end",
        "state",
        "stop_requested",
        "value",
    )

    def __init__(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.function = function
        self.args = args
        self.context = contextvars.copy_context()
        self.lock = threading.Lock()
        self.state = _RUNNING
        self.ok = False
        self.value: Any = None
        self.on_abandoned_end: Callable[[], None] | None = None
        self.stop_requested = False  # the caller was cancelled: stop between steps
        self.loop = loop
        self.future: asyncio.Future[Any] | None = loop.create_future() if loop else None
        self.event: threading.Event | None = None if loop else threading.Event()
        # Whose the thread's slot is: the worker's once it `began` the job
        # (it gives the slot back when the call ends), else the caller's,
        # which `drop`s a job it stops starting (a Ctrl-C): then no worker
        # begins it, and the caller gives the slot back. Exactly one of them.
        self.began = False
        self.dropped = False

    def drop(self) -> bool:
        """The caller stops (a Ctrl-C as it starts the job, or waits for it):
        if no worker began the job, none will, and the caller gives the thread's
        slot back; return whether so. Else the job runs on: its worker gives
        the slot back, and a caller waits for it."""
        with self.lock:
            if not self.began:
                self.dropped = True
            return self.dropped

    def call(self) -> None:
        """Run in the worker thread: call the function, give the thread's slot back."""
        with self.lock:
            if self.dropped:  # its caller stopped before: it is not run, nor reported
                return
            self.began = True
        _local.holds_slot = True
        _local.job = self
        try:
            self.value, self.ok = self.context.run(self.function, *self.args), True
        except BaseException as error:  # handed to whoever waits for this job
            self.value = error
        finally:
            _local.holds_slot = False
            _local.job = None
            _THREADS.release()

    def report(self) -> None:
        """Hand the outcome to the waiting caller (dropped if it was abandoned)."""
        if self.dropped:
            return
        with self.lock:
            abandoned = self.state == _ABANDONED
            if not abandoned:
                self.state = _DONE
        if abandoned:
            self.value = None  # nobody will read it
            if self.on_abandoned_end is not None:
                self.on_abandoned_end()
            return
        if self.event is not None:
            self.event.set()
            return
        try:
            self.loop.call_soon_threadsafe(self._settle)  # type: ignore[union-attr]
        except RuntimeError:  # the loop has closed; nobody is waiting any more
            pass

    def _settle(self) -> None:
        future = self.future
        if future is None or future.done():
            return
        if self.ok:
            future.set_result(self.value)
        else:
            future.set_exception(self.value)

    def abandon(self, on_end: Callable[[], None] | None) -> bool:
        """Give up on the job (timed out): ``on_end`` runs when its thread ends.

        Returns False if the job has already finished, so its outcome stands.
        """
        with self.lock:
            if self.state == _DONE:
                return False
            self.state = _ABANDONED
            self.on_abandoned_end = on_end
            return True

    def outcome(self) -> Any:
        if self.ok:
            return self.value
        raise self.value

    def start(self) -> None:
        """Hand the job to an idle worker, or to a new one. If this fails (a
        Ctrl-C as the thread starts, which may have begun the job already),
        the caller `drop`s the job: the slot is not given back here."""
        worker = None
        try:
            with _pool_lock:
                if _idle:  # (not pop(): a Ctrl-C can land as a call returns)
                    worker = _idle[-1]
                    del _idle[-1]
            if worker is None:
                _Worker(self)
            else:
                worker.give(self)
        except BaseException:
            if worker is not None:
                with _pool_lock:
                    if worker not in _idle:  # still ours: it must not wait for a job forever
                        worker.give(self)
            raise


class _Worker:
    """A thread that runs jobs, and waits for the next one while runs go on."""

    __slots__ = ("job", "thread", "wake")

    def __init__(self, job: _Job) -> None:
        self.job: _Job | None = job
        self.wake = threading.Event()
        self.thread = threading.Thread(
            target=self._loop, name=f"braidflow-worker-{next(_names)}", daemon=True
        )
        self.thread.start()

    def give(self, job: _Job | None) -> None:
        self.job = job
        self.wake.set()

    def _loop(self) -> None:
        job = self.job
        while job is not None:
            job.call()
            # Idle before reporting, so the caller's next job can come straight here.
            with _pool_lock:
                stay = bool(_runs)
                if stay:
                    self.job = None
                    self.wake.clear()
                    _idle.append(self)
            job.report()
            if not stay:
                return
            self.wake.wait()
            job = self.job


def enter_run() -> None:
    """A top-level run starts: keep idle worker threads for reuse."""
    global _runs
    with _pool_lock:
        _runs += 1


def runs_going() -> bool:
    """Whether a run is going on in this process (read without the lock: a hint)."""
    return _runs > 0


def leave_run() -> None:
    """A top-level run ends: once no run is left, retire the idle workers."""
    global _runs
    with _pool_lock:
        _runs -= 1
        if _runs or not _idle:
            return
        retiring = _idle[:]
        _idle.clear()
    for worker in retiring:
        worker.give(None)
    for worker in retiring:
        worker.thread.join()


@contextmanager
def lending_slot() -> Any:
    """Inside one of our threads that is about to block on more thread work,
    give its slot back meanwhile, so nested waits cannot starve the bound."""
    if not getattr(_local, "holds_slot", False):
        yield
        return
    _local.holds_slot = False
    _THREADS.release()
    try:
        yield
    finally:
        _THREADS.acquire_blocking()
        _local.holds_slot = True


async def _wait_done(future: asyncio.Future[Any]) -> None:
    """Wait until a job's future is done, through any number of cancellations;
    its outcome is dropped (the caller is re-raising a cancellation)."""
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue
        except BaseException:  # the job's own outcome; the cancellation wins
            break
    if not future.cancelled():
        future.exception()  # mark it retrieved so asyncio does not log it


def in_worker() -> bool:
    """True inside one of braidflow's threads, running a job for a caller."""
    return getattr(_local, "job", None) is not None


def stop_requested() -> bool:
    """True inside a job whose caller has been cancelled meanwhile: sync code
    that runs several steps in one job checks it between steps."""
    job = getattr(_local, "job", None)
    return job is not None and job.stop_requested


async def _outcome(job: _Job) -> Any:
    """Await a job's outcome; if cancelled meanwhile, wait for the job first."""
    future = job.future
    assert future is not None
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError as cancel:
        await _stopped(job, cancel)
        raise


async def _stopped(
    job: _Job,
    cancel: asyncio.CancelledError,
    deadline: asyncio.Future[bool] | None = None,
    on_abandoned_end: Callable[[], None] | None = None,
) -> None:
    """The caller of ``job`` is cancelled: ask the job to stop between steps
    and wait for its thread to return. Its result is dropped; an error it
    raised meanwhile is chained to the cancellation and noted on it, so the
    run ends cancelled and the failure is not lost.

    A timed job (``deadline``: True once it returns, False at its deadline)
    is waited for until its deadline at most: past it, it is abandoned as any
    late call (`abandoned_meanwhile`), and what it returns is dropped."""
    job.stop_requested = True
    if deadline is not None:
        await _wait_done(deadline)
        if not deadline.result() and job.abandon(on_abandoned_end):
            vars(cancel)["_bf_abandoned"] = True
            return
    future = job.future
    assert future is not None
    await _wait_done(future)
    error = None if future.cancelled() else future.exception()
    if not future.cancelled() and error is None:  # it returned: see returned_meanwhile
        vars(cancel)["_bf_returned"] = (future.result(),)
    if isinstance(error, asyncio.CancelledError):  # it stopped, and says what it raised
        error = error.__cause__
    if isinstance(error, Exception):
        cancel.__cause__ = error
        add_note(cancel, f"the code in one of braidflow's threads raised {error!r} meanwhile")
        note_lost(error)


def returned_meanwhile(cancel: BaseException) -> tuple[Any] | None:
    """What the call in a thread returned, as a 1-tuple, if it returned while
    its caller, cancelled, waited for it (``cancel``: the cancellation that
    caller raised); ``None`` if it did not return."""
    returned: tuple[Any] | None = vars(cancel).get("_bf_returned")
    return returned


def abandoned_meanwhile(cancel: BaseException) -> bool:
    """Whether the call in a thread was abandoned at its deadline while its
    caller, cancelled, waited for it (``cancel``: the cancellation that caller
    raised): the thread keeps what it holds until it ends. Taken off
    ``cancel``, so only the innermost caller takes it for its own."""
    return bool(vars(cancel).pop("_bf_abandoned", False))


def _wake(waiter: asyncio.Future[bool], finished: bool) -> None:
    if not waiter.done():
        waiter.set_result(finished)


async def run_in_thread(
    function: Callable[..., T],
    *args: Any,
    abandon_after: float | None = None,
    on_abandoned_end: Callable[[], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> T:
    """Run ``function(*args)`` in one of braidflow's threads and await its result.

    The wait for a free thread happens on the loop. The call sees a copy of
    the caller's context variables.

    If the awaiting task is cancelled, keep waiting until the thread has
    returned (or, with ``abandon_after``, until then at most: past it, the
    thread is abandoned), then re-raise the cancellation: nothing the call
    does lands after the caller has stopped. What it returned meanwhile is
    dropped, but for `returned_meanwhile` (a step that finished there is
    recorded).

    Raises:
        Abandoned: If ``abandon_after`` seconds (on ``clock``) pass first. The
            thread is then abandoned: it keeps running, its outcome is
            dropped, and ``on_abandoned_end`` is called from it when it ends.
    """
    job = _Job(function, args, asyncio.get_running_loop())
    taken = False
    try:
        if not _THREADS.try_acquire():
            await _THREADS.acquire()
        taken = True
        job.start()
    except BaseException:  # a Ctrl-C (the loop's thread under Python's own handler)
        if taken and job.drop():
            _THREADS.release()
        raise
    future = job.future
    assert future is not None
    if abandon_after is None:
        return await _outcome(job)  # type: ignore[no-any-return]
    loop = job.loop
    assert loop is not None
    waiter: asyncio.Future[bool] = loop.create_future()
    future.add_done_callback(lambda _: _wake(waiter, True))
    timer = clock.call_later(abandon_after, lambda: _wake(waiter, False))
    try:
        finished = await asyncio.shield(waiter)  # (kept, for a stop to wait on)
    except asyncio.CancelledError as cancel:
        await _stopped(job, cancel, waiter, on_abandoned_end)
        timer.cancel()
        raise
    timer.cancel()
    if not finished and job.abandon(on_abandoned_end):
        raise Abandoned
    return await _outcome(job)  # type: ignore[no-any-return]  # finished, or finishing as the timer fired


def call_in_thread(
    function: Callable[..., T],
    args: tuple[Any, ...],
    abandon_after: float | None,
    on_abandoned_end: Callable[[], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> T:
    """Blocking form of `run_in_thread`, for code with no event loop.

    The calling thread waits for a free thread and for the call. If it is
    interrupted (Ctrl-C), it waits for the call to return before re-raising.

    Raises:
        Abandoned: As for `run_in_thread`.
    """
    job = _Job(function, args, None)
    event = job.event
    assert event is not None
    with lending_slot():
        taken = False
        try:
            _THREADS.acquire_blocking()
            taken = True
            # The deadline, as of now (before the job can move a test's clock).
            due = clock.now() + (abandon_after or 0.0)
            job.start()
            finished = event.wait() if abandon_after is None else _wait_until(clock, event, due)
        except BaseException as stop:
            if taken:
                job.stop_requested = True
                if job.drop():  # (a Ctrl-C before its thread began it: it never runs)
                    _THREADS.release()
                else:
                    timed = abandon_after is not None
                    _stopped_blocking(job, stop, due if timed else None, clock, on_abandoned_end)
            raise
        if not finished and job.abandon(on_abandoned_end):
            raise Abandoned
        event.wait()
    return job.outcome()  # type: ignore[no-any-return]


def _stopped_blocking(
    job: _Job,
    stop: BaseException,
    due: float | None,
    clock: Clock,
    on_abandoned_end: Callable[[], None] | None,
) -> None:
    """`_stopped` for a caller with no event loop, interrupted (Ctrl-C, a
    drain's grace period ending): wait for the job's thread to return, a
    timed job's (``due``: its deadline on ``clock``) until its deadline at
    most, past which it is abandoned (`abandoned_meanwhile`); what it
    returned meanwhile is kept on ``stop`` (`returned_meanwhile`)."""
    event = job.event
    assert event is not None
    if due is not None:
        finished = _wait_until(clock, event, due)
        if not finished and job.abandon(on_abandoned_end):
            vars(stop)["_bf_abandoned"] = True
            return
    event.wait()
    if job.ok:
        vars(stop)["_bf_returned"] = (job.value,)


def _wait_until(clock: Clock, event: threading.Event, due: float) -> bool:
    """Block until ``event`` is set (True) or ``clock`` reaches ``due`` (False).
    A clock that moves by itself (autojump) waits for it, not jumps to it."""
    until = getattr(clock, "wait_until_blocking", None)
    if until is not None:
        return until(event, due)  # type: ignore[no-any-return]
    return clock.wait_blocking(event, max(0.0, due - clock.now()))


def run_to_completion(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``make()`` on a private event loop and return its result.

    For sync entry points that need concurrency (a ``ParallelBatchNode`` run
    from sync code). The loop runs in this thread, or, if this thread already
    runs an event loop (a notebook, say), in a helper thread while this one
    waits. The coroutine sees a copy of this thread's context variables.
    """
    if asyncio._get_running_loop() is None:
        with lending_slot():
            return run_on_new_loop(make, asyncio.new_event_loop)
    outcome: list[Any] = []
    context = contextvars.copy_context()

    def run_here() -> T:
        # The Runner is made inside the context: it runs the coroutine in a
        # copy of the context it was made in (made outside, the helper
        # thread's own, empty one: the run's RUN, STEP... would be lost).
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(make())

    def target() -> None:
        try:
            outcome.append((True, context.run(run_here)))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((False, error))

    helper = threading.Thread(target=target, name="braidflow-loop", daemon=True)
    helper.start()
    with lending_slot():
        helper.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
