"""The async driver: runs the engine's steps on the event loop.

`drive` carries out each effect the engine's generators yield: coroutines
are awaited, sync user code runs on the loop's thread or in braidflow's
threads, limiters and sleeps are waited for on the loop, a parallel stage's
items run in a task group. It applies the rules of cancellation once, for
every node and policy: while the run is being cancelled, what user code
raises becomes the run's cancellation (its error chained and noted), so no
retry, fallback, hook or ``post`` runs after a cancel; a ``CancelledError``
user code raises by itself, while the run is not cancelled, is that code's
failure (`NodeCancelledError`). `run_node` is a node's step, with this
driver's fast path.
"""

from __future__ import annotations

import asyncio
import inspect
from functools import partial
from typing import Any

from .. import _budget as budgets
from .._clock import Deadline, TimedOut
from .._context import RUN, run_clock
from .._holding import acquire_all, release_all
from .._threads import Abandoned, run_in_thread
from ..executors._base import runs_on, timed_dispatch, timed_dispatch_done
from . import _effects as ops
from ._around_items import commit
from ._attempts import attempts, cancellation_instead, cancelled_error, ended_step, fallback
from ._items import run_parallel
from ._lifecycle import Steps, lifecycle

__all__ = ["call_on_loop", "drive", "failure_of", "node_step", "run_cancelled", "run_node"]


def run_cancelled() -> bool:
    """True if the run is being cancelled: the task running this code (its
    run's, or an item's whose stage is stopping) is being cancelled, or the
    run's own task is."""
    task = asyncio.current_task()
    run = RUN.get()
    if task is not None and task.cancelling():
        # A run started in a task whose earlier cancellation was swallowed (and
        # never uncancelled) is not being cancelled by that one.
        if run is None or run.task is not task or task.cancelling() > run.cancelling_at_start:
            return True
    top = run.task if run is not None else None
    return top is not None and top is not task and top.cancelling() > run.cancelling_at_start  # type: ignore[union-attr]


def failure_of(error: BaseException, node: Any, index: int | None) -> BaseException:
    """What user code's ``error`` is for the engine: the run's cancellation
    stays one; a ``CancelledError`` of the code's own is its failure; an error
    the code raised when the run's cancellation reached it (raised while
    handling that ``CancelledError``, or with a cancel asked while it ran and
    not delivered yet: Ctrl-C in code that never awaited) becomes the
    cancellation, the error chained and noted, never lost."""
    if isinstance(error, asyncio.CancelledError):
        if node is None or run_cancelled():
            return error
        return cancelled_error(node, error, index)
    if (
        isinstance(error, Exception)
        and (_handling_cancel(error) or _cancel_pending())
        and run_cancelled()
    ):
        return cancellation_instead(error, node)
    return error


def _cancel_pending() -> bool:
    """Whether a cancel was asked of the running task while it ran, and not
    delivered yet (asyncio delivers it at the task's next await that waits)."""
    task = asyncio.current_task()
    return task is not None and getattr(task, "_must_cancel", False) is True


def _handling_cancel(error: BaseException) -> bool:
    """Whether ``error`` was raised while a ``CancelledError`` was handled (or
    from one): how code that turns its cancellation into its own error looks.
    (Python 3.11's ``asyncio.TaskGroup`` leaves a task's count of cancellations
    raised after its children fail, so the count alone would mislead.)"""
    seen = 0
    cause: BaseException | None = error
    while cause is not None and seen < 20:
        cause = cause.__cause__ or cause.__context__
        if isinstance(cause, asyncio.CancelledError):
            return True
        seen += 1
    return False


def _cancellations() -> int:
    """How many cancellations the task running this code, and its run's own
    task, have been asked for so far."""
    task = asyncio.current_task()
    count = task.cancelling() if task is not None else 0
    run = RUN.get()
    if run is not None and run.task is not None and run.task is not task:
        count += run.task.cancelling()
    return count


def _cancel_watch() -> tuple[Any, Any, int]:
    """What tells that a cancel was asked while this code ran: the task running
    it (its ``_must_cancel``: asked while it ran, not yet delivered), and how
    to count the cancellations of its run's own task, if another (asked of
    that one while this one ran), with their count now."""
    task = asyncio.current_task()
    assert task is not None  # (drive runs in a task)
    run = RUN.get()
    other = run.task if run is not None and run.task is not task else None
    if other is None:
        return task, None, 0
    return task, other.cancelling, other.cancelling()


def call_on_loop(function: Any, args: tuple[Any, ...], node: Any) -> Any:
    """Call sync user code on the loop's thread. If the run is cancelled while
    it runs (Ctrl-C's handler cancels the task mid-call), stop once it
    returns: nothing after it runs, and an error it raised is chained."""
    before = _cancellations()
    try:
        value = function(*args)
    except Exception as error:
        if _cancellations() > before:
            raise cancellation_instead(error, node) from error
        raise
    if _cancellations() > before:
        raise asyncio.CancelledError
    return value


async def drive(steps: Steps) -> Any:
    """Run ``steps`` to their end on the loop; return what they return."""
    value: Any = None
    failure: BaseException | None = None
    # Whether a cancel was asked while this walk ran (see _cancel_watch), read
    # from the first node on: before each later node starts, one stops it.
    # asyncio delivers a cancel at the next await that waits: phases that
    # never wait would otherwise run on into the next nodes after a Ctrl-C
    # landed in one of them.
    task: Any = None
    run_cancelling: Any = None
    run_counted = 0
    while True:
        try:
            effect = steps.send(value) if failure is None else steps.throw(failure)
        except StopIteration as stop:
            return stop.value
        finally:
            # Not kept here: the error's traceback holds this frame, and
            # a cycle between them would wait for the garbage collector.
            failure = None
        value = None
        op = effect[0]
        try:
            if op is ops.NODE:
                if task is None:
                    task, run_cancelling, run_counted = _cancel_watch()
                elif task._must_cancel or (
                    run_cancelling is not None and run_cancelling() > run_counted
                ):
                    raise asyncio.CancelledError
                node = effect[1]
                plan = effect[5]
                if not (plan.fast and (plan.is_async or not _offloaded(node, effect[4]))):
                    value = await run_node(node, effect[3], effect[4])
                    continue
                # The fast path: a plain node (no hooks, no batch), its phases
                # called here, not through the lifecycle's effects: 1.6
                # against 2.7 us a node in the async chain benchmark (a policy
                # sends its exec through the attempt loop: 5.7 against 8.4
                # us a node with a limiter and retries). Sync phases run on the
                # loop's thread, and none after the run was cancelled meanwhile.
                # Each phase is called by its plain name (prep_async or prep...):
                # an attribute call, where getattr would cost a third of a step.
                shared = effect[3]
                if plan.prep_coro:
                    if plan.prep == "prep_async":
                        prep_result = await node.prep_async(shared)
                    else:
                        prep_result = await node.prep(shared)
                else:
                    prep_result = call_on_loop(getattr(node, plan.prep), (shared,), node)
                if node._bf_policy or node.max_retries != 1 or budgets.active:
                    exec_result = await drive(
                        attempts(node, prep_result, None, shared, False, None)
                    )
                else:
                    try:
                        if plan.exec_coro and not plan.exec_wants_shared:
                            if plan.exec == "exec_async":
                                exec_result = await node.exec_async(prep_result)
                            else:
                                exec_result = await node.exec(prep_result)
                        else:
                            call = getattr(node, plan.exec)
                            args: tuple[Any, ...] = (prep_result,)
                            if plan.exec_wants_shared:
                                args = (shared, prep_result)
                            if plan.exec_coro:
                                exec_result = await call(*args)
                            else:
                                exec_result = call_on_loop(call, args, node)
                    except BaseException as error:
                        exec_result = await _fallback(node, prep_result, error, shared)
                if plan.post_coro:
                    if plan.post == "post_async":
                        value = await node.post_async(shared, prep_result, exec_result)
                    else:
                        value = await node.post(shared, prep_result, exec_result)
                else:
                    post = getattr(node, plan.post)
                    value = call_on_loop(post, (shared, prep_result, exec_result), node)
            elif op is ops.AWAIT:
                value = await effect[3](*effect[4])
            elif op is ops.STAGE:
                value = await drive(effect[3])
            elif op is ops.CALL:
                value = call_on_loop(effect[3], effect[4], effect[1])
            elif op is ops.THREAD:
                value = await run_in_thread(effect[3], *effect[4])
            elif op is ops.COMMIT:
                await commit(effect[3])
            elif op is ops.WAIT:  # what stops there is only the run's cancellation, or a drain
                try:
                    await acquire_all(effect[3], effect[4], effect[1], effect[2], effect[5])
                except BaseException as error:
                    failure = error
            else:
                value = await _perform(effect)
        except BaseException as error:
            failure = failure_of(error, effect[1], effect[2])


async def _perform(effect: tuple[Any, ...]) -> Any:
    op = effect[0]
    if op is ops.REMOTE:
        # An executor may call sync code on the loop's thread, where the run's
        # cancellation can only be asked for: stop once it returns, as for CALL.
        before = _cancellations()
        try:
            value = await effect[3].run_async(*effect[4])
        except Exception as error:
            if _cancellations() > before:
                raise cancellation_instead(error, effect[1]) from error
            raise
        if _cancellations() > before:
            raise asyncio.CancelledError
        return value
    if op is ops.TIMED:
        return await _timed(*effect[3:])
    if op is ops.SLEEP:
        await run_clock().sleep(effect[3])
        return None
    if op is ops.PARALLEL:
        _, node, _, items, make_item, keep, fast_exec, own_events = effect
        return await run_parallel(
            node,
            items,
            make_item,
            keep,
            drive,
            fast_exec=fast_exec,
            observe=own_events,
            checkpoint=own_events,
        )
    if op is ops.MAYBE_AWAIT:
        if effect[5]:  # offload
            value = await run_in_thread(effect[3], *effect[4])
        else:
            value = call_on_loop(effect[3], effect[4], effect[1])
        if inspect.isawaitable(value):
            value = await value
        return value
    raise AssertionError(f"unknown effect {effect!r}")  # pragma: no cover


async def _timed(
    how: int, function: Any, args: tuple[Any, ...], seconds: float, held: tuple[Any, ...]
) -> Any:
    """A call under a deadline. A coroutine or an executor's call is cancelled
    when late; sync code, timed in a thread, is abandoned, and keeps its
    limiters until the thread ends."""
    if how is ops.AWAIT:
        async with Deadline(run_clock(), seconds):
            return await function(*args)
    if how is ops.REMOTE:  # cancelled when late; one that runs on keeps its slots
        noted, token = timed_dispatch()
        try:
            async with Deadline(run_clock(), seconds):
                return await function.run_async(*args)
        except TimedOut as late:
            abandoned = runs_on(noted, partial(release_all, held))
            raise TimedOut(abandoned, late.raised) from late.raised
        finally:
            timed_dispatch_done(token)
    try:
        return await run_in_thread(
            function,
            *args,
            abandon_after=seconds,
            on_abandoned_end=partial(release_all, held),
            clock=run_clock(),
        )
    except Abandoned:
        raise TimedOut(abandoned=True) from None


async def run_node(node: Any, shared: Any, offload_default: bool) -> Any:
    """Run a node's step on the loop: its class's own ``_run_async`` (or, for a
    sync node, ``_run``) if it has one, else `node_step`; return its action.

    ``offload_default``: whether a sync node that does not say runs in a thread.
    """
    plan = node._bf_plan
    if node._bf_async:
        if plan.custom_run_async:
            return await node._run_async(shared)
    elif plan.custom_run:
        if _offloaded(node, offload_default):
            try:
                return await run_in_thread(node._run, shared)
            except asyncio.CancelledError as cancel:  # it may have finished meanwhile
                ended_step(cancel)
                raise
        return call_on_loop(node._run, (shared,), node)
    return await node_step(node, shared, offload_default)


def _offloaded(node: Any, offload_default: bool) -> bool:
    """Whether a sync node's code runs in braidflow's threads: as it says, else
    as its flow says; limited sync code (an API call, typically) does."""
    offload = node._bf_offload
    if offload is None:
        return offload_default or bool(node._bf_limits)
    return bool(offload)


async def node_step(node: Any, shared: Any, offload_default: bool) -> Any:
    """Run a node's phases on the loop and return its action (its lifecycle:
    the fast path is `drive`'s, for the steps of a walk)."""
    if not node._bf_async and _offloaded(node, offload_default):
        if node._bf_plan.single_exec and node._is_simple():
            # Nothing to wait for on the loop between the phases: one trip to
            # a thread, which stops between phases if the run is cancelled.
            # If it finished all of them meanwhile, its walk records the step.
            try:
                return await run_in_thread(node._run, shared)
            except asyncio.CancelledError as cancel:
                ended_step(cancel)
                raise
        return await drive(lifecycle(node, shared, True))
    return await drive(lifecycle(node, shared, False))


async def _fallback(node: Any, item: Any, error: BaseException, shared: Any) -> Any:
    """A fast path's failed exec: the fallback's result, or what it raises;
    nothing if the run is being cancelled."""
    failure = failure_of(error, node, None)
    if not isinstance(failure, Exception):
        raise failure
    return await drive(fallback(node, item, failure, None, 0, shared, False))
