"""The policy matrix: a policy never changes what a node does.

Every cell runs one node, built for the cell, in a flow and compares what
happened with the decided outcome, which is exactly what the same node does
under no policy (retries only change how many times a failing exec runs
before the run ends the same way).

The axes:

- policy: none; ``limits=[Limiter(5)]``; ``timeout=100``; ``max_retries=2``;
  ``retry=Retry(attempts=2)``; an in-process executor (batch kinds only);
  ``offload=True`` (sync kinds only: async nodes refuse it, so those cells
  do not exist);
- kind and unit: ``Node``, ``BatchNode`` and ``ParallelBatchNode`` (sync),
  ``AsyncNode``, ``AsyncBatchNode`` and ``AsyncParallelBatchNode`` (async); the
  unit is the node itself (``node``) or one item of a sequential batch
  (``batch_item``) or of a parallel batch (``pbatch_item``). A batch's prep
  gives the items ``"a"`` (always fine) and ``"b"``; a plain node's prep gives
  ``"b"``. Whatever the outcome does, it does on ``"b"``;
- driver: every kind inside an ``AsyncFlow`` (``await flow.run_async(shared)``),
  and the sync kinds inside a sync ``Flow`` (``flow.run(shared)``, no loop)
  for the outcomes that need no loop;
- outcome (see ``OUTCOMES``): a failure, with and without ``on_error``; a
  fallback; the lifecycle hooks; ``on_error`` swallowing a failure; the
  node's own ``CancelledError``, with and without a fallback; the run's
  cancellation while exec runs, and exec turning that cancellation into its
  own ``RuntimeError("converted")``, each bare, with a fallback, and with a
  fallback and hooks.

Driving the run's cancellation while exec runs:

- async exec awaits an event that is never set (at most 10 s); the test
  cancels the run's task once exec has started. "Converted": exec catches the
  ``CancelledError`` and raises ``RuntimeError("converted")``.
- sync exec in one of braidflow's threads (offloaded, limited, timed, or a
  ``ParallelBatchNode`` item) waits on a ``threading.Event`` (at most 10 s);
  the test cancels the run's task once exec has started, lets the loop turn,
  then releases exec. Sync code never sees a ``CancelledError``, so
  "converted" is exec raising ``RuntimeError("converted")`` once released,
  after the run's cancellation arrived.
- sync exec on the loop's thread (not offloaded) blocks the loop, so nothing
  outside exec can cancel the run while exec runs: exec itself calls
  ``cancel()`` on the run's task (held by the test, not found through
  ``asyncio.current_task()``), then returns, or raises
  ``RuntimeError("converted")``.

What a cell compares: how the run ended (returned and its action, raised and
the error's type and message, or cancelled); the ordered log of the node's
phases and hooks with their arguments (exec logged per attempt on item "b"
only); for a failure seen by ``on_error``, that it saw the very error the run
raised; after the run, the limiter's and braidflow's threads' slots in
flight and, in a loop, the tasks left; for a cancelled run, whether it ended
while its exec was still blocked in a thread, and for "converted" whether the
user's RuntimeError is in the CancelledError's cause/context chain or notes.

Nothing here is marked xfail: a failing cell is a place where a policy (or
the plain node) does not do what was decided.
"""

import asyncio
import inspect
import threading
import time
from dataclasses import dataclass

import pytest

from braidflow import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    Limiter,
    Node,
    NodeCancelledError,
    ParallelBatchNode,
    Retry,
    thread_limiter,
)
from braidflow.testing import other_tasks

WAIT = 10  # seconds: the bound of every wait, so that no cell can hang


# -- the axes ---------------------------------------------------------------------------


class InlineDispatch:
    """Runs one item's exec in this process, where it is called."""

    def __init__(self, call):
        self.call = call

    async def run_async(self, *args):
        if inspect.iscoroutinefunction(self.call):
            return await self.call(*args)
        return self.call(*args)

    def run(self, *args, timeout=None):
        return self.call(*args)


class InlineExecutor:
    """The smallest executor: each item's exec, in process (see executors/_base.py)."""

    def prepare(self, node, method):
        return InlineDispatch(getattr(node, method))


POLICIES = {
    "none": lambda probe: {},
    "limits": lambda probe: {"limits": [probe.limiter]},
    "timeout": lambda probe: {"timeout": 100},
    "max_retries": lambda probe: {"max_retries": 2},
    "retry": lambda probe: {"retry": Retry(attempts=2)},
    "executor": lambda probe: {"executor": InlineExecutor()},
    "offload": lambda probe: {"offload": True},
}
ATTEMPTS = {"max_retries": 2, "retry": 2}  # exec attempts of a failing item; else 1

SYNC_KINDS = [(Node, "node"), (BatchNode, "batch_item"), (ParallelBatchNode, "pbatch_item")]
ASYNC_KINDS = [
    (AsyncNode, "node"),
    (AsyncBatchNode, "batch_item"),
    (AsyncParallelBatchNode, "pbatch_item"),
]


def policies_for(kind):
    """The policies that apply to ``kind``: executors to batches, offload to sync nodes."""
    found = []
    for policy in POLICIES:
        if policy == "executor" and not issubclass(kind, BatchNode):
            continue
        if policy == "offload" and issubclass(kind, AsyncNode):
            continue
        found.append(policy)
    return found


@dataclass(frozen=True)
class Outcome:
    """What exec does on item "b", and what else the node defines."""

    exec_does: str  # "ok", "raise", "own_cancel" or "block" (the run is cancelled)
    fallback: bool = False  # exec_fallback (async: exec_fallback_async) returns "fb:<item>"
    hooks: bool = False  # before_prep, after_exec and on_error, all logged
    swallow: bool = False  # on_error returns True
    convert: bool = False  # "block": exec turns the cancellation into RuntimeError


OUTCOMES = {
    # 1. exec raises ValueError("boom"), no fallback: the run raises it, no post.
    "failure": Outcome("raise"),
    "failure_on_error": Outcome("raise", hooks=True),
    # 2. the fallback's value reaches post (for batches: in the results).
    "fallback": Outcome("raise", fallback=True),
    # 3. the hooks, in order, once each, with their arguments; on_error swallows.
    "hooks": Outcome("ok", hooks=True),
    "on_error_swallow": Outcome("raise", hooks=True, swallow=True),
    # 5. exec raises CancelledError by itself: NodeCancelledError, retried, to the fallback.
    "own_cancel": Outcome("own_cancel"),
    "own_cancel_fallback": Outcome("own_cancel", fallback=True),
    # 4. the run's task is cancelled while exec runs: the run ends cancelled.
    "cancel_bare": Outcome("block"),
    "cancel": Outcome("block", fallback=True),
    "cancel_hooks": Outcome("block", fallback=True, hooks=True),
    "converted_bare": Outcome("block", convert=True),
    "converted": Outcome("block", fallback=True, convert=True),
    "converted_hooks": Outcome("block", fallback=True, hooks=True, convert=True),
}
LOOPLESS = [name for name, outcome in OUTCOMES.items() if outcome.exec_does != "block"]


# -- the node of a cell -----------------------------------------------------------------


class Probe:
    """What one cell's node did, and the controls the test holds over it."""

    def __init__(self):
        self.busy_threads = quiet_threads()
        self.shared = {}
        self.limiter = Limiter(5, name="matrix")
        self.log = []
        self.on_error_errors = []
        self._lock = threading.Lock()
        # Cancellation cells.
        self.task = None  # the run's task
        self.loop_thread = None
        self.started = threading.Event()  # exec on item "b" began
        self.release = threading.Event()  # lets a sync exec in a thread go on
        self.blocked = threading.Event()  # a sync exec is waiting in a thread now
        self.self_cancelled = False  # exec (on the loop's thread) cancelled the run

    def note(self, entry):
        with self._lock:
            self.log.append(entry)

    def block_sync(self):
        """The run's cancellation arrives while this sync exec runs."""
        if threading.get_ident() == self.loop_thread:
            # On the loop's thread: nothing else can run, so exec cancels the run.
            self.self_cancelled = True
            self.task.cancel()
            self.started.set()
            return
        self.blocked.set()
        self.started.set()
        try:
            self.release.wait(WAIT)
        finally:
            self.blocked.clear()


def describe(error):
    """An error as the records compare it: type and message (braidflow's notes aside)."""
    if isinstance(error, NodeCancelledError):
        return (
            f"NodeCancelledError(cause={type(error.__cause__).__name__}, "
            f"item_index={error.item_index})"
        )
    return repr(error)


def build(kind, outcome, probe, options):
    """A node of ``kind`` that does ``outcome`` on item "b", logging to ``probe``."""
    batch = issubclass(kind, BatchNode)
    is_async = issubclass(kind, AsyncNode)

    def prep(self, shared):
        probe.note("prep")
        return ["a", "b"] if batch else "b"

    def exec_sync(self, item):
        if item != "b":
            return item.upper()
        probe.note(f"exec:{item}:{self.cur_retry}")
        if outcome.exec_does == "raise":
            raise ValueError("boom")
        if outcome.exec_does == "own_cancel":
            raise asyncio.CancelledError()
        if outcome.exec_does == "block":
            probe.block_sync()
            if outcome.convert:
                raise RuntimeError("converted")
        return item.upper()

    async def exec_async(self, item):
        if item != "b":
            return item.upper()
        probe.note(f"exec:{item}:{self.cur_retry}")
        await asyncio.sleep(0)
        if outcome.exec_does == "raise":
            raise ValueError("boom")
        if outcome.exec_does == "own_cancel":
            raise asyncio.CancelledError()
        if outcome.exec_does == "block":
            probe.started.set()
            try:
                async with asyncio.timeout(WAIT):
                    await asyncio.Event().wait()
            except asyncio.CancelledError as cancel:
                if outcome.convert:
                    raise RuntimeError("converted") from cancel
                raise
        return item.upper()

    def fallback(self, item, error):
        probe.note(f"fallback:{item}:{describe(error)}")
        return f"fb:{item}"

    def post(self, shared, prep_res, exec_res):
        probe.note(f"post:{prep_res!r}:{exec_res!r}")
        return "posted"

    def before_prep(self, shared):
        probe.note("before_prep" if shared is probe.shared else "before_prep:another shared")

    def after_exec(self, shared, prep_res, exec_res):
        where = "" if shared is probe.shared else ":another shared"
        probe.note(f"after_exec:{prep_res!r}:{exec_res!r}{where}")

    def on_error(self, shared, error):
        probe.on_error_errors.append(error)
        probe.note(f"on_error:{describe(error)}")
        return outcome.swallow

    if is_async:
        body = {
            "prep_async": as_coroutine(prep),
            "exec_async": exec_async,
            "post_async": as_coroutine(post),
        }
        if outcome.fallback:
            body["exec_fallback_async"] = as_coroutine(fallback)
    else:
        body = {"prep": prep, "exec": exec_sync, "post": post}
        if outcome.fallback:
            body["exec_fallback"] = fallback
    if outcome.hooks:
        hooks = {"before_prep": before_prep, "after_exec": after_exec, "on_error": on_error}
        if is_async:
            hooks = {name: as_coroutine(function) for name, function in hooks.items()}
        body.update(hooks)
    cls = type(f"Matrix{kind.__name__}", (kind,), body)
    return cls(**options)


def as_coroutine(function):
    async def method(*args):
        await asyncio.sleep(0)
        return function(*args)

    return method


# -- what a run ended with, and what was decided ------------------------------------------


def quiet_threads():
    """Let threads that earlier tests abandoned to a timeout end (at most WAIT s),
    and return how many of braidflow's threads are busy now: a cell's count of
    threads left in flight is what it adds to that."""
    deadline = time.monotonic() + WAIT
    while thread_limiter().statistics().in_flight and time.monotonic() < deadline:
        time.sleep(0.001)
    return thread_limiter().statistics().in_flight


def leftovers(probe, in_loop):
    found = {
        "limiter in flight": probe.limiter.statistics().in_flight,
        "threads in flight": thread_limiter().statistics().in_flight - probe.busy_threads,
    }
    if in_loop:
        found["tasks left"] = len(other_tasks())
    return found


def ended_record(probe, ended, raised):
    record = {"ended": ended, "log": list(probe.log)}
    if raised is not None and probe.on_error_errors:
        record["on_error got the raised error"] = probe.on_error_errors == [raised]
    return record


def expected_loopless(outcome, kind, policy, in_loop):
    """The decided record of a cell that needs no loop: the plain node's outcome."""
    batch = issubclass(kind, BatchNode)
    prep_res = ["a", "b"] if batch else "b"
    fails = outcome.exec_does in ("raise", "own_cancel")
    attempts = ATTEMPTS.get(policy, 1) if fails else 1
    log = ["before_prep"] if outcome.hooks else []
    log.append("prep")
    log += [f"exec:b:{attempt}" for attempt in range(attempts)]
    if outcome.exec_does == "own_cancel":
        error = f"NodeCancelledError(cause=CancelledError, item_index={1 if batch else None})"
    else:
        error = "ValueError('boom')"
    record = {}
    if fails and not outcome.fallback:
        if outcome.hooks:
            log.append(f"on_error:{error}")
        if outcome.swallow:
            ended = ("returned", None)
        else:
            ended = ("raised", error)
            if outcome.hooks:
                record["on_error got the raised error"] = True
    else:
        if fails:
            log.append(f"fallback:b:{error}")
        value = "fb:b" if fails else "B"
        exec_res = ["A", value] if batch else value
        if outcome.hooks:
            log.append(f"after_exec:{prep_res!r}:{exec_res!r}")
        log.append(f"post:{prep_res!r}:{exec_res!r}")
        ended = ("returned", "posted")
    return {
        "ended": ended,
        "log": log,
        **record,
        "limiter in flight": 0,
        "threads in flight": 0,
        **({"tasks left": 0} if in_loop else {}),
    }


def expected_cancelled(outcome):
    """The decided record of a run cancelled while exec runs: it ends cancelled,
    and nothing after exec runs (no fallback, after_exec, post or on_error)."""
    record = {
        "ended": "cancelled",
        "log": [*(["before_prep"] if outcome.hooks else []), "prep", "exec:b:0"],
        "run ended while its exec thread was still running": False,
        "limiter in flight": 0,
        "threads in flight": 0,
        "tasks left": 0,
    }
    if outcome.convert:
        record["the user's RuntimeError is kept"] = True
    return record


def keeps_user_error(cancel):
    """The RuntimeError("converted") is the cancellation's cause or context (at
    any depth of the chain a traceback shows), or named in its notes."""
    seen = set()
    chain = [cancel]
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, RuntimeError) and str(error) == "converted":
            return True
        chain += [error.__cause__, error.__context__]
    return any("converted" in note for note in getattr(cancel, "__notes__", ()))


# -- the drivers ---------------------------------------------------------------------------


def make(kind, policy, name):
    probe = Probe()
    node = build(kind, OUTCOMES[name], probe, POLICIES[policy](probe))
    return probe, node


async def run_in_async_flow(kind, policy, name):
    probe, node = make(kind, policy, name)
    raised = None
    try:
        ended = ("returned", await AsyncFlow(start=node).run_async(probe.shared))
    except (Exception, asyncio.CancelledError) as error:
        raised = error
        ended = ("raised", describe(error))
    return {**ended_record(probe, ended, raised), **leftovers(probe, True)}


def run_in_sync_flow(kind, policy, name):
    probe, node = make(kind, policy, name)
    raised = None
    try:
        ended = ("returned", Flow(start=node).run(probe.shared))
    except (Exception, asyncio.CancelledError) as error:
        raised = error
        ended = ("raised", describe(error))
    return {**ended_record(probe, ended, raised), **leftovers(probe, False)}


async def until(condition):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.001)


async def cancel_while_exec_runs(kind, policy, name):
    """Start the run, cancel its task while exec on item "b" runs, and record
    how the run ended and what it left behind."""
    outcome = OUTCOMES[name]
    probe, node = make(kind, policy, name)
    probe.loop_thread = threading.get_ident()
    task = probe.task = asyncio.create_task(AsyncFlow(start=node).run_async(probe.shared))
    found = None
    early = False
    try:
        await until(lambda: probe.started.is_set() or task.done())
        if not task.done() and not probe.self_cancelled:
            task.cancel()
        for _ in range(50):  # let the cancellation reach everything it can
            if task.done():
                break
            await asyncio.sleep(0)
        if task.done():
            early = probe.blocked.is_set()
            found = leftovers(probe, True)
    finally:
        probe.release.set()
    kept = False  # unless the run ends cancelled with it in the chain
    try:
        ended = ("returned", await task)
    except asyncio.CancelledError as cancel:
        ended = "cancelled"
        kept = keeps_user_error(cancel)
    except Exception as error:
        ended = ("raised", describe(error))
    if found is None:
        found = leftovers(probe, True)
    record = {
        **ended_record(probe, ended, None),
        "run ended while its exec thread was still running": early,
        **found,
    }
    if outcome.convert:
        record["the user's RuntimeError is kept"] = kept
    return record


async def outcome_in_async_flow(kind, policy, name):
    if OUTCOMES[name].exec_does == "block":
        return await cancel_while_exec_runs(kind, policy, name)
    return await run_in_async_flow(kind, policy, name)


def decided(kind, policy, name, in_loop):
    outcome = OUTCOMES[name]
    if outcome.exec_does == "block":
        return expected_cancelled(outcome)
    return expected_loopless(outcome, kind, policy, in_loop)


# -- the cells -------------------------------------------------------------------------------


def cells(kinds, outcomes):
    return [
        pytest.param(kind, policy, name, id=f"{policy}-{kind.__name__}-{unit}-{name}")
        for kind, unit in kinds
        for policy in policies_for(kind)
        for name in outcomes
    ]


@pytest.mark.parametrize(("kind", "policy", "name"), cells(SYNC_KINDS + ASYNC_KINDS, OUTCOMES))
async def test_in_async_flow(kind, policy, name):
    found = await outcome_in_async_flow(kind, policy, name)
    if found == decided(kind, policy, name, True) or policy == "none":
        plain = "(this is the plain node)"
    else:
        plain = f"the plain node gives {await outcome_in_async_flow(kind, 'none', name)}"
    assert found == decided(kind, policy, name, True), plain


@pytest.mark.parametrize(("kind", "policy", "name"), cells(SYNC_KINDS, LOOPLESS))
def test_in_sync_flow(kind, policy, name):
    found = run_in_sync_flow(kind, policy, name)
    if found == decided(kind, policy, name, False) or policy == "none":
        plain = "(this is the plain node)"
    else:
        plain = f"the plain node gives {run_in_sync_flow(kind, 'none', name)}"
    assert found == decided(kind, policy, name, False), plain
