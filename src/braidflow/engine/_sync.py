"""The sync driver: runs the engine's steps in the calling thread, with no event loop.

`drive` carries out each effect the engine's generators yield: user code
is called here, waits block this thread, a parallel stage runs on a private
event loop (the async driver's), and a ``CancelledError`` that user code
raises is always that code's own failure (nothing cancels a sync run).
`run_node` is a node's step, with the one fast path of this driver.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from .. import _budget as budgets
from .._clock import TimedOut
from .._context import run_clock
from .._errors import AsyncUsageError
from .._holding import acquire_all_blocking, release_all
from .._threads import (
    Abandoned,
    call_in_thread,
    in_worker,
    lending_slot,
    run_to_completion,
    stop_requested,
)
from ..executors._base import DispatchTimeout, runs_on, timed_dispatch, timed_dispatch_done
from . import _async
from . import _effects as ops
from ._attempts import attempts, cancellation_instead, cancelled_error, fallback
from ._items import run_parallel
from ._lifecycle import Steps, lifecycle

__all__ = ["drive", "node_step", "run_node"]


def drive(steps: Steps) -> Any:
    """Run ``steps`` to their end here; return what they return. In one of
    braidflow's threads, working for a caller on the loop: if that caller is
    cancelled, stop before the next effect (nothing after it starts)."""
    stoppable = in_worker()
    send, throw = steps.send, steps.throw
    value: Any = None
    failure: BaseException | None = None
    while True:
        try:
            effect = send(value) if failure is None else throw(failure)
        except StopIteration as stop:
            return stop.value
        finally:
            failure = None  # not kept: its traceback would hold this frame, a cycle
        value = None
        try:
            if stoppable and stop_requested():
                raise asyncio.CancelledError
            if effect[0] is not ops.NODE:
                value = _perform(effect)
                continue
            node = effect[1]
            plan = effect[5]
            if not plan.fast or plan.is_async:
                value = run_node(node, effect[3])
                continue
            # The fast path: a plain sync node (no hooks, no batch), its phases
            # called here, not through the lifecycle's effects: 1.1 against
            # 1.6 us a node in the sync chain benchmark. A policy sends its
            # exec through the attempt loop.
            shared = effect[3]
            prep_result = node.prep(shared)
            if node._bf_policy or node.max_retries != 1 or budgets.active:
                exec_result = drive(attempts(node, prep_result, None, shared, False, None))
                value = node.post(shared, prep_result, exec_result)
                continue
            try:
                if plan.exec_wants_shared:
                    exec_result = node.exec(shared, prep_result)
                else:
                    exec_result = node.exec(prep_result)
            except Exception as error:
                exec_result = drive(fallback(node, prep_result, error, None, 0, shared, False))
            except asyncio.CancelledError as cancel:  # sync code: never the run's own
                own = cancelled_error(node, cancel, None)
                exec_result = drive(fallback(node, prep_result, own, None, 0, shared, False))
            value = node.post(shared, prep_result, exec_result)
        except asyncio.CancelledError as cancel:
            # Sync code has no run to cancel: this is the code's own failure
            # (in a thread whose caller was cancelled: the caller's cancellation).
            if (stoppable and stop_requested()) or effect[1] is None:
                failure = cancel
            else:
                failure = cancelled_error(effect[1], cancel, effect[2])
        except BaseException as error:
            if stoppable and isinstance(error, Exception) and stop_requested():
                failure = cancellation_instead(error, effect[1])  # no fallback now
            else:
                failure = error


def _perform(effect: tuple[Any, ...]) -> Any:
    op = effect[0]
    if op is ops.CALL or op is ops.THREAD or op is ops.MAYBE_AWAIT:  # no loop to keep free: here
        return effect[3](*effect[4])
    if op is ops.STAGE:
        return drive(effect[3])
    if op is ops.NODE:
        return run_node(effect[1], effect[3])
    if op is ops.REMOTE:
        return effect[3].run(*effect[4])
    if op is ops.TIMED:
        return _timed(*effect[3:])
    if op is ops.WAIT:
        _, node, index, limiters, taken, drain = effect
        acquire_all_blocking(limiters, node, taken, lending_slot, index, drain)
        return None
    if op is ops.SLEEP:
        run_clock().sleep_blocking(effect[3])
        return None
    if op is ops.COMMIT:  # what is queued (by a sync run on a loop's thread) is written now
        effect[3].hand_over()
        return None
    if op is ops.PARALLEL:
        _, node, _, items, make_item, keep, fast_exec, own_events = effect
        return run_to_completion(
            lambda: run_parallel(
                node,
                items,
                make_item,
                keep,
                _async.drive,
                from_sync=True,
                fast_exec=fast_exec,
                observe=own_events,
                checkpoint=own_events,
            )
        )
    if op is ops.AWAIT:
        node = effect[1]
        raise AsyncUsageError(
            f"{node._describe()} has async code to await, and runs synchronously here; "
            "put it in an AsyncFlow",
            node=node._display_name(),
        )
    raise AssertionError(f"unknown effect {effect!r}")  # pragma: no cover


def _timed(
    how: int, function: Any, args: tuple[Any, ...], seconds: float, held: tuple[Any, ...]
) -> Any:
    """A call under a deadline: sync code in a thread (abandoned if late, its
    limiters kept until it ends); an executor's call with its own timeout."""
    if how is ops.REMOTE:  # stopped when late; one that runs on keeps its slots
        noted, token = timed_dispatch()
        try:
            return function.run(*args, timeout=seconds)
        except DispatchTimeout:
            raise TimedOut(abandoned=runs_on(noted, partial(release_all, held))) from None
        finally:
            timed_dispatch_done(token)
    try:
        return call_in_thread(function, args, seconds, partial(release_all, held), run_clock())
    except Abandoned:
        raise TimedOut(abandoned=True) from None


def run_node(node: Any, shared: Any) -> Any:
    """Run a node's step: its own ``_run`` if its class has one, else `node_step`."""
    if node._bf_plan.custom_run:
        return node._run(shared)
    return node_step(node, shared)


def node_step(node: Any, shared: Any) -> Any:
    """Run a node's phases here and return its action (its lifecycle: the
    fast path is `drive`'s, for the steps of a walk)."""
    if node._bf_async:  # PocketFlow's `node._run(shared)` on an async node
        if asyncio._get_running_loop() is None:
            how = (
                "from plain code, `node.run(shared)` runs it to completion (inside async "
                "code: `await node.run_async(shared)`)"
            )
        else:
            how = "this is inside async code: `await node.run_async(shared)`"
        raise AsyncUsageError(
            f"{node._describe()} is async and cannot run synchronously here; {how}, or put "
            "it in an AsyncFlow",
            node=node._display_name(),
        )
    return drive(lifecycle(node, shared, False))
