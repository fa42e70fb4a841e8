"""Stopping a durable run on purpose: a drain.

`drain` asks a durable run to stop at its next safe point: it starts no new
step, no new batch item and no new branch step, lets what is running finish
(up to a grace period, past which it is cancelled and will run again on
resume), writes everything that finished, and ends as ``drained``, raising
`Drained` to the run's caller. ``resume`` carries on from there.

A run going on in this process is asked directly. A run another process
runs is asked through the store: the request is kept with the run's
metadata, and the run looks for it at most once a second (`Drain.POLL`):
at its safe points, and, for when none comes (every worker inside a long
item), from a watch that the run has while it goes on: a timer on its event
loop, or, for a sync run on the main thread, the process's one watcher
thread (`_watcher`), which looks for every such run, and ends once none is
going on. Seen there, the request starts the grace period as one asked in
this process.
"""

from __future__ import annotations

import _thread
import asyncio
import signal
import threading
from time import monotonic, sleep, time
from typing import Any

from .._after_fork import call_in_children
from .._errors import InvalidParameterError, StoreError
from .._options import check_number
from .._own_loop import sigint_handler
from ..stores._base import Store
from ..stores.memory import MemoryStore

__all__ = ["DRAIN_KEY", "Drain", "DrainStop", "drain"]

DRAIN_KEY = "braidflow.drain"  # in a run's metadata: another process asked it to drain
DEFAULT_TIMEOUT = 30.0
# What a `DrainStop` says for what the end of the grace period stopped (`Drain.cut_short`).
CUT_SHORT = "stopped at the end of the drain's grace period; it runs again on resume"

_RUNNING: dict[str, Drain] = {}  # the durable runs going on in this process, by id
_RUNNING_LOCK = threading.RLock()  # re-entered by a signal handler that drains


class DrainStop(BaseException):
    """Raised at a safe point of a run that was asked to drain. A
    ``BaseException``, like cancellation, so that ``except Exception`` in user
    code, retries and fallbacks let it through; the run ends as ``drained``."""


class Drain:
    """Whether one durable run is asked to drain, and the grace period's end.

    The engine asks `stopping` at each safe point: before a new step, a
    worker's next item, a new item task. Cheap when no drain is asked: an
    attribute, and a clock read; the store is read at most every `POLL`
    seconds (a request from another process). An attempt that has not
    begun (a step's or item's first) and must wait for a limiter's slot
    waits with this drain as its ``stop`` (`waiting_at`): once asked, the
    drain ends such waits at once (`stop_waits`), so that nothing queued
    takes a slot or a unit of a rate. So that a request is seen
    when no safe point comes, the run's watch (from `bind` to `close`) asks
    `stopping` too when a look at the store is due: a timer on the run's
    event loop; for a sync run on the main thread, the process's watcher
    thread (a sync run on another thread cannot be stopped inside a step:
    its safe points are all a watch could act at, and they look already).
    """

    POLL = 1.0  # seconds between looks at the store for another process's request

    __slots__ = (
        "asked",
        "ending",
        "expired",
        "from_store",
        "limiters",
        "loop",
        "next_poll",
        "run_id",
        "sigint",
        "store",
        "task",
        "thread",
        "timeout",
        "timer",
        "watch",
        "watched",
    )

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.asked = False
        self.expired = False  # the grace period ended: what still runs was stopped
        self.ending = False  # the run is ending: the grace period's end stops nothing now
        self.timeout = DEFAULT_TIMEOUT
        self.from_store = False  # the request came through the store (cleared at the end)
        self.next_poll = monotonic() + self.POLL
        self.task: asyncio.Task[Any] | None = None  # what to cancel when the grace ends
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.get_ident()  # where a sync run runs
        self.timer: threading.Timer | None = None
        # The run's watch for a request in the store: a timer on its loop, or
        # (watched) the process's watcher thread; none once the run ended.
        self.watch: asyncio.TimerHandle | None = None
        self.watched = False
        self.sigint = False  # SIGINT has the drain's handler while the run goes on
        # The limiters where waits that the drain ends were queued (see `waiting_at`).
        self.limiters: set[Any] = set()

    def bind(self, task: asyncio.Task[Any] | None) -> None:
        """The run goes on in ``task`` (on an event loop) or, if ``None``, in
        this thread; until `close`, it watches for a request in the store."""
        self.task = task
        self.loop = task.get_loop() if task is not None else None
        self.thread = threading.get_ident()
        with _RUNNING_LOCK:
            _RUNNING[self.run_id] = self
        main = self.thread == threading.main_thread().ident
        if self.loop is None and main:
            self.sigint = _take_sigint()
        if isinstance(self.store, MemoryStore):
            return  # no watch: only this process reaches it, and drain() here asks the run
        if self.loop is not None:
            if asyncio._get_running_loop() is self.loop:
                self._arm()
        elif main:
            self.watched = True
            _watch(self)

    def _arm(self) -> None:
        """On the run's loop: look again when the next look at the store is due."""
        assert self.loop is not None
        self.watch = self.loop.call_later(max(0.0, self.next_poll - monotonic()), self._due)

    def _due(self) -> None:
        self.watch = None
        if _RUNNING.get(self.run_id) is self and not self.stopping():
            self._arm()  # (asked: the grace timer takes over)

    def end(self) -> None:
        """The run is ending (its last events, writing what finished): the
        grace period's end no longer stops it, so its end is never cut short
        (a SIGINT sent just before is the run's to take as the drain's)."""
        with _RUNNING_LOCK:
            self.ending = True

    def close(self) -> None:
        """The run ended: no timer, no watch, no registration, no request left
        in the store; no thread of the drain outlives the run."""
        with _RUNNING_LOCK:  # (an `ask` from another thread started its timer, or starts none)
            self.ending = True
            timer = self.timer
            if _RUNNING.get(self.run_id) is self:
                del _RUNNING[self.run_id]
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.cancel()
        if self.watched:
            self.watched = False
            with _RUNNING_LOCK:
                _WATCHED.discard(self)
        if self.sigint:
            self.sigint = False
            _give_back_sigint()
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
        if self.from_store:
            try:
                self.store.set_metadata(self.run_id, {DRAIN_KEY: None})
            except Exception:
                pass

    def stopping(self) -> bool:
        """Whether the run must stop at this safe point."""
        if self.asked:
            return True
        now = monotonic()
        if now >= self.next_poll:
            self.next_poll = now + self.POLL
            self._look_in_store()
        return self.asked

    def _look_in_store(self) -> None:
        try:
            request = self.store.get(self.run_id).metadata.get(DRAIN_KEY)
        except Exception:
            return
        if isinstance(request, dict):
            self.from_store = True
            timeout = request.get("timeout")
            self.ask(timeout if isinstance(timeout, int | float) else DEFAULT_TIMEOUT)

    def waiting_at(self, limiter: Any) -> BaseException | None:
        """A wait for a slot of ``limiter`` that this drain ends is queued
        (under the limiter's lock): note the limiter, for `stop_waits`; if
        the run drains already, return the `DrainStop` to end the wait with."""
        self.limiters.add(limiter)  # (one C call: atomic, as `stop_waits` copies the set)
        return DrainStop() if self.asked else None

    def stop_waits(self) -> None:
        """End the queued waits that this drain ends (`waiting_at`): each
        raises a `DrainStop` and takes nothing; its item or step runs on
        resume. Called by the grace period's thread as it starts (`_Grace`),
        not in `ask`, which a signal handler may call on a thread that holds
        a limiter's lock; a wait queued after sees `asked` (`waiting_at`)."""
        for limiter in list(self.limiters):
            limiter._stop_waits(self, DrainStop)

    def ask(self, timeout: float) -> None:
        """Stop at the next safe point; stop what still runs ``timeout`` seconds
        on. Waits for a limiter's slot that have not begun end at once."""
        with _RUNNING_LOCK:
            if self.asked:
                return
            self.asked = True
            self.timeout = timeout
            # Started under the lock, and not once the run is ending: `close`,
            # on the run's thread as this one may be another (a drain() there,
            # the watcher), finds either a started timer to stop or none.
            if self.ending:
                return
            timer = self.timer = _Grace(self)
            timer.start()

    def expire(self) -> None:
        """The grace period is over (or a second request came): stop what still
        runs now. On an event loop, its task is cancelled; a sync run on the
        main thread gets a ``KeyboardInterrupt``; either ends it as drained.
        Once the run is ending (`end`), nothing is stopped."""
        with _RUNNING_LOCK:  # (`end` waits for a SIGINT being sent here)
            if self.expired or self.ending:
                return
            self.expired = True
            self.asked = True
            task, loop = self.task, self.loop
            if task is not None and loop is not None:
                if not task.done():
                    try:
                        loop.call_soon_threadsafe(self._cancel_task)
                    except RuntimeError:  # the loop closed: the run ended meanwhile
                        pass
            elif self.thread == threading.main_thread().ident:
                _interrupt_main()

    def _cancel_task(self) -> None:
        """On the run's loop: cancel its task, unless the run is ending by now
        (the cancel would land on its caller, after the run)."""
        task = self.task
        if not self.ending and task is not None and not task.done():
            task.cancel("drained")

    def stopped_by(self, error: BaseException | None) -> bool:
        """Whether ``error`` is how this drain ended the run: at a safe point,
        or past the grace period (`cut_short`)."""
        return isinstance(error, DrainStop) or self.cut_short(error)

    def cut_short(self, error: BaseException | None) -> bool:
        """Whether ``error`` is what the end of the grace period stopped what
        still ran with: an async run's cancellation, a sync run's
        ``KeyboardInterrupt``. Where the run began it is made a `DrainStop`,
        and so is it in the end event of each step, item and branch it
        stopped; before, it is a real Ctrl-C or cancel."""
        return self.expired and isinstance(error, KeyboardInterrupt | asyncio.CancelledError)


class _Grace(threading.Timer):
    """A drain's grace period, on a thread of its own: it first ends the
    run's waits for a limiter's slot (`Drain.stop_waits`), then, unless
    cancelled first (the run ended), calls `Drain.expire` once it is over."""

    def __init__(self, drain: Drain) -> None:
        super().__init__(drain.timeout, drain.expire)
        self.daemon = True
        self.drain = drain

    def run(self) -> None:
        if not self.finished.is_set():
            self.drain.stop_waits()
        super().run()


def _interrupt_main() -> None:
    """A ``KeyboardInterrupt`` in the main thread, even one blocked in a call
    (a sleep, a read, a wait for threads): a real SIGINT, which ends such a
    call, where Python handles SIGINT; else Python's flag alone, which the
    main thread sees when it runs Python code again."""
    global _ours
    handler = sigint_handler()  # (during a sync parallel batch, braidflow's calls it)
    if callable(handler) and hasattr(signal, "pthread_kill"):
        _ours = handler is _on_sigint  # (where SIGINT was ignored: this one is not)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]
    else:
        _thread.interrupt_main()


# Where Python does not handle SIGINT (ignored, as for a job started with `&`
# by a script; or the system's default), a sync run on the main thread gets
# a handler while it goes on (nested runs share it): it raises the drain's
# `KeyboardInterrupt` (`_ours`) and treats any other SIGINT as before.
# Without it the drain could not stop a call that blocks past its grace period.
_kept_sigint: Any = None  # what the handler replaced
_sigint_runs = 0  # the runs going on that installed it or share it
_ours = False  # the SIGINT coming is the drain's


def _on_sigint(signum: int, frame: Any) -> None:
    global _ours
    if _ours:
        _ours = False
        raise KeyboardInterrupt
    if _kept_sigint == signal.SIG_DFL:  # as it would have: the process ends
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.raise_signal(signal.SIGINT)


def _take_sigint() -> bool:
    """On the main thread, as a sync run starts: give SIGINT the drain's
    handler if Python does not handle it; return whether the run shares it."""
    global _kept_sigint, _sigint_runs
    handler = signal.getsignal(signal.SIGINT)
    if handler is _on_sigint:
        _sigint_runs += 1
        return True
    if callable(handler) or handler is None:  # Python's own, or one set outside Python
        return False
    _kept_sigint = handler
    signal.signal(signal.SIGINT, _on_sigint)
    _sigint_runs = 1
    return True


def _give_back_sigint() -> None:
    """A run that shared the handler ended: the last one puts back what it replaced."""
    global _sigint_runs
    _sigint_runs -= 1
    if _sigint_runs == 0 and threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, _kept_sigint)


# The sync runs on the main thread that the watcher looks for requests for,
# and the watcher, if one runs (both under _RUNNING_LOCK).
_WATCHED: set[Drain] = set()
_watcher: threading.Thread | None = None


def _watch(drain: Drain) -> None:
    """Have the watcher look for a request for ``drain``'s run, starting it if
    none runs: one thread for every run of the process, started once for a
    run after run (a thread a run would cost a sync run five times over)."""
    global _watcher
    with _RUNNING_LOCK:
        _WATCHED.add(drain)
        if _watcher is None:
            _watcher = threading.Thread(target=_watching, name="braidflow drain watch", daemon=True)
            _watcher.start()


def _watching() -> None:
    """The watcher: a look at the store for each watched run when one is due
    (`Drain.stopping`); it ends at the first look that finds none."""
    global _watcher
    while True:
        with _RUNNING_LOCK:
            watched = [drain for drain in _WATCHED if not drain.asked]
            if not _WATCHED:
                _watcher = None
                return
        due = min((drain.next_poll for drain in watched), default=monotonic() + Drain.POLL)
        sleep(max(0.0, due - monotonic()) + 0.001)
        for drain in watched:
            if drain.watched:
                drain.stopping()  # a request seen starts the grace period


def _forked() -> None:
    """In a child made by ``os.fork``: the durable runs going on and the
    watcher were the parent's, and a thread that held the lock is not there;
    SIGINT gets back what the drain's handler replaced, as the last of the
    parent's runs that shared it would have (they go on in the parent only)."""
    global _RUNNING_LOCK, _watcher, _sigint_runs, _ours
    _RUNNING_LOCK = threading.RLock()
    _RUNNING.clear()
    _WATCHED.clear()
    _watcher = None
    _ours = False
    if _sigint_runs:
        _sigint_runs = 0
        if signal.getsignal(signal.SIGINT) is _on_sigint:
            signal.signal(signal.SIGINT, _kept_sigint)


call_in_children(_forked)


def drain(
    run_id: str | None = None,
    *,
    store: Store | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Ask a durable run to stop at its next safe point; return the ids asked.

    The run starts no new step, batch item or branch step; what is running
    finishes, up to ``timeout`` seconds (then it is stopped, and runs again
    on resume); everything that finished is written, and the run ends as
    ``drained``: its ``run`` raises `braidflow.Drained`, and ``resume``
    carries on. Asking again, or once more after the run began draining,
    stops what still runs at once.

    Args:
        run_id: The run to drain. ``None``: every durable run going on in this
            process (what a SIGTERM handler wants).
        store: For a run another process runs: the store it writes to. The
            request is kept with the run, which sees it within a second,
            even while every worker is inside a long item; the grace period
            runs from then (a sync run on a thread other than the main one
            sees it at its next safe point).
        timeout: The grace period, in seconds, for what is running.

    Raises:
        InvalidParameterError: For a timeout that is not a number >= 0.
        StoreError: For a run that is not going on (not here, and, with
            ``store``, not running there either).
    """
    grace = check_number(
        timeout,
        f"drain(): timeout={timeout!r}",
        "a number of seconds >= 0 (the grace period for what is running)",
        at_least=0,
    )
    with _RUNNING_LOCK:
        if run_id is None:
            if store is not None:
                raise InvalidParameterError(
                    "drain(): store= needs the run_id of the run to drain; without one, "
                    "drain() drains every durable run going on in this process"
                )
            here = list(_RUNNING.values())
        else:
            found = _RUNNING.get(run_id)
            here = [found] if found is not None and (store is None or found.store is store) else []
    for running in here:
        if running.asked:
            running.expire()
        else:
            running.ask(grace)
    if here or run_id is None:
        return [running.run_id for running in here]
    if store is None:
        raise StoreError(
            f"no durable run {run_id!r} is going on in this process; to drain a run another "
            "process runs, pass the store it writes to: drain(run_id, store=...)",
            run_id=run_id,
        )
    record = store.get(run_id)
    if record.status != "running":
        raise StoreError(
            f"run {run_id!r} is {record.status} in {store!r}, not running: there is nothing "
            "to drain",
            run_id=run_id,
        )
    store.set_metadata(run_id, {DRAIN_KEY: {"timeout": grace, "asked": time()}})
    return [run_id]
