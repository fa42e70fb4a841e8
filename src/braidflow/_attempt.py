"""One item's exec attempts: limits, timeout, retry and fallback, sync and async.

Each attempt holds the node's limiters while ``exec`` runs; a failed attempt
is retried as the policy says, and the last failure goes to the fallback.
Async drivers wait for limiters on the loop and run sync code in braidflow's
threads; an attempt abandoned to a timeout keeps its slots until its thread ends.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from ._context import ATTEMPT, GATES, AttemptState
from ._deadlock import hold, unhold
from ._errors import InvalidParameterError, NodeCancelledError, NodeTimeoutError, add_note
from ._limits import Limiter, acquire_all, acquire_all_blocking, release_all
from ._policy import next_delay
from ._run import PATH, Run, observed
from ._threads import Abandoned, call_in_thread, lending_slot, run_in_thread
from .executors._base import DispatchTimeout

if TYPE_CHECKING:
    from ._lifecycle import Lifecycle

__all__ = [
    "attempt_async",
    "attempt_sync",
    "cancelled_error",
    "fallback_async",
    "fallback_sync",
    "own_cancellation",
    "run_is_cancelled",
]


def run_is_cancelled() -> bool:
    """True if the running task has been asked to stop (its run is being cancelled)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def cancelled_error(
    node: Lifecycle, cancel: BaseException, index: int | None
) -> NodeCancelledError:
    """The failure that stands for a ``CancelledError`` a node raised by itself."""
    where = f" on item {index}" if index is not None else ""
    error = NodeCancelledError(
        f"{node._describe()} raised CancelledError{where} although its run was not "
        "cancelled; it is treated as a failure of the node (see __cause__)",
        node=node._display_name(),
        item_index=index,
    )
    error.__cause__ = cancel
    return error


def own_cancellation(
    node: Lifecycle, cancel: BaseException, index: int | None
) -> NodeCancelledError:
    """Classify a ``CancelledError`` caught around a node's code: if the run is
    being cancelled, re-raise it; else it is the node's own, and its failure
    is returned. Call it from the ``except`` clause that caught ``cancel``."""
    if run_is_cancelled():
        raise cancel
    return cancelled_error(node, cancel, index)


def _timeout_error(node: Lifecycle, timeout: float, attempt: int, index: Any) -> NodeTimeoutError:
    where = f" item {index}" if index is not None else ""
    return NodeTimeoutError(
        f"{node._describe()}{where}: exec attempt {attempt + 1} timed out after {timeout:g} s",
        node=node._display_name(),
        timeout=timeout,
        attempt=attempt,
        item_index=index,
    )


def _check_retry_options(node: Lifecycle) -> None:
    """Check ``max_retries`` and ``wait`` where they are read: a subclass may set
    them after the constructor checked its arguments."""
    if node._bf_retry is not None:
        return
    max_retries, wait = node.max_retries, node.wait
    if (
        type(max_retries) is int
        and max_retries >= 1
        and (type(wait) is float or type(wait) is int)
        and 0 <= wait < math.inf
    ):
        return  # the usual case, checked cheaply
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
        raise InvalidParameterError(
            f"{node._describe()}: max_retries={max_retries!r} must be an int >= 1 "
            "(it counts attempts: 1 means run exec once, no retry)",
            node=node._display_name(),
        )
    if (
        isinstance(wait, bool)
        or not isinstance(wait, int | float)
        or not 0 <= wait < math.inf  # also refuses nan
    ):
        raise InvalidParameterError(
            f"{node._describe()}: wait={wait!r} must be a finite number of seconds >= 0",
            node=node._display_name(),
        )


class _Attempts:
    """Bookkeeping of one item's attempt loop, shared by the sync and async drivers:
    the attempt number in the run context (and on the node, as PocketFlow kept
    it), and the retry decision after each failure."""

    __slots__ = ("node", "state", "token")

    def __init__(self, node: Lifecycle, index: int | None) -> None:
        _check_retry_options(node)
        self.node = node
        self.state = AttemptState(node, index)

    def __enter__(self) -> _Attempts:
        self.token = ATTEMPT.set(self.state)
        self.node.__dict__["_bf_cur_retry"] = 0
        return self

    def __exit__(self, *exc_info: object) -> None:
        ATTEMPT.reset(self.token)

    @property
    def number(self) -> int:
        """The 0-based attempt running now."""
        return self.state.attempt

    def after_failure(self, error: BaseException) -> float | None:
        """Return the wait before the next attempt (and count it), or None to give up."""
        node = self.node
        state = self.state
        delay = next_delay(node._bf_retry, node.max_retries, node.wait, state.attempt, error)
        if delay is not None:
            run = observed()
            if run is not None:
                run.emit(
                    "retry",
                    node._display_name(),
                    PATH.get(),
                    item=state.item_index,
                    attempt=state.attempt,
                    error=error,
                    data={"delay": delay},
                )
            state.attempt += 1
            node.__dict__["_bf_cur_retry"] = state.attempt
        return delay


def _label_failure(
    node: Lifecycle, raised: BaseException, error: BaseException, index: Any, attempt: int
) -> None:
    """Say where a final failure happened: on which item, after which attempt."""
    parts = []
    if index is not None:
        parts.append(f"item {index}")
    total = node._bf_retry.attempts if node._bf_retry is not None else node.max_retries
    if total > 1:
        parts.append(f"attempt {attempt + 1} of {total}")
    if raised is error:
        if parts:
            add_note(error, f"{node._describe()} failed on {', '.join(parts)}")
        return
    where = f" on {', '.join(parts)}" if parts else ""
    add_note(
        raised,
        f"the fallback of {node._describe()} raised this{where}, after exec failed with {error!r}",
    )


# -- sync driver: code with no event loop ---------------------------------------


def attempt_sync(
    node: Lifecycle, item: Any, index: int | None, shared: Any, remote: Any = None
) -> Any:
    """Run one item's exec attempts in the calling thread; return its result.
    ``remote``: a function that runs one attempt's exec elsewhere (an executor's)."""
    plan = node._bf_plan
    call = getattr(node, plan.exec) if remote is None else remote
    args = (shared, item) if plan.exec_wants_shared else (item,)
    failure: Exception
    if node._is_simple():
        try:
            return call(*args)
        except Exception as error:
            failure = error
        except asyncio.CancelledError as cancel:  # sync code: never the run's own
            failure = cancelled_error(node, cancel, index)
        return fallback_sync(node, item, failure, index, 0, shared)
    timeout = node._bf_timeout
    limits = node._bf_limits
    with _Attempts(node, index) as attempts:
        while True:
            run = observed()
            started = time.monotonic() if run is not None else 0.0
            if acquire_all_blocking(limits, node, lending_slot, index) and run is not None:
                _waited(run, node, limits, index, attempts.number, time.monotonic() - started)
            held = hold(limits, node, index)
            abandoned = False
            try:
                if timeout is None:
                    return call(*args)
                if remote is not None:  # the executor waits, and stops the call when late
                    try:
                        return remote(*args, timeout=timeout)
                    except DispatchTimeout:
                        raise _timeout_error(node, timeout, attempts.number, index) from None
                try:
                    return call_in_thread(call, args, timeout, partial(release_all, limits))
                except Abandoned:
                    abandoned = True
                    raise _timeout_error(node, timeout, attempts.number, index) from None
            except Exception as error:
                failure = error
            except asyncio.CancelledError as cancel:
                failure = cancelled_error(node, cancel, index)
            finally:
                unhold(held)
                if not abandoned:
                    release_all(limits)
            delay = attempts.after_failure(failure)
            if delay is None:
                return fallback_sync(node, item, failure, index, attempts.number, shared)
            if delay > 0:
                time.sleep(min(delay, threading.TIMEOUT_MAX))


def fallback_sync(
    node: Lifecycle, item: Any, error: Exception, index: Any, attempt: int, shared: Any
) -> Any:
    """Hand the final failure to the node's fallback; label what escapes it."""
    plan = node._bf_plan
    fallback = getattr(node, plan.fallback)
    try:
        if plan.fallback_wants_shared:
            return fallback(shared, item, error)
        return fallback(item, error)
    except Exception as raised:
        _label_failure(node, raised, error, index, attempt)
        raise


# -- async driver: on the event loop ----------------------------------------------


def _try_all(limiters: Sequence[Limiter]) -> int:
    """Take every limiter that is free right now, in order; return how many."""
    taken = 0
    for limiter in limiters:
        if not limiter.try_acquire():
            break
        taken += 1
    return taken


async def _hold_rest(
    limiters: Sequence[Limiter], taken: int, node: Lifecycle, index: int | None, attempt: int
) -> None:
    """Wait on the loop for the limiters after the first ``taken`` (already held);
    if the wait is cancelled, give those back too."""
    run = observed()
    started = time.monotonic() if run is not None else 0.0
    try:
        await acquire_all(limiters, taken, node, index)
    except BaseException:
        release_all(limiters[:taken])
        raise
    if run is not None:
        _waited(run, node, limiters[taken:], index, attempt, time.monotonic() - started)


def _waited(
    run: Run,
    node: Lifecycle,
    limiters: Sequence[Limiter],
    index: int | None,
    attempt: int,
    duration: float,
) -> None:
    run.emit(
        "limiter_wait",
        node._display_name(),
        PATH.get(),
        item=index,
        attempt=attempt,
        duration=duration,
        data={"limiters": [limiter.name or repr(limiter) for limiter in limiters]},
    )


async def attempt_async(
    node: Lifecycle,
    item: Any,
    index: int | None,
    shared: Any,
    offload: bool = False,
    remote: Any = None,
) -> Any:
    """Run one item's exec attempts on the loop; sync ``exec`` runs in a thread
    if ``offload`` (or to be timed). ``remote``: a coroutine function that runs
    one attempt's exec elsewhere (an executor's). Return the item's result."""
    plan = node._bf_plan
    args = (shared, item) if plan.exec_wants_shared else (item,)
    if remote is None:
        call = getattr(node, plan.exec)
        coro = plan.exec_coro
    else:
        call, coro = remote, True
    failure: Exception
    if node._is_simple():
        try:
            if coro:
                return await call(*args)
            if offload:
                return await run_in_thread(call, *args)
            return call(*args)
        except Exception as error:
            failure = error
        except asyncio.CancelledError as cancel:
            failure = own_cancellation(node, cancel, index)
        if run_is_cancelled():
            raise failure  # the run is stopping: no fallback
        return await fallback_async(node, item, failure, index, 0, shared, offload)
    timeout = node._bf_timeout
    if timeout is None and node._bf_retry is None and node.max_retries == 1:
        return await _limited_async(node, call, coro, args, item, index, shared, offload)
    # A sync attempt under a timeout may be abandoned to its thread: it then
    # holds the enclosing parallel bounds too, until the thread ends.
    abandonable = timeout is not None and not coro
    held = GATES.get() + node._bf_limits if abandonable else node._bf_limits
    with _Attempts(node, index) as attempts:
        while True:
            taken = _try_all(held)
            if taken < len(held):
                await _hold_rest(held, taken, node, index, attempts.number)
            holding = hold(held, node, index)
            abandoned = False
            try:
                if timeout is None:
                    if coro:
                        return await call(*args)
                    if offload:
                        return await run_in_thread(call, *args)
                    return call(*args)
                if coro:
                    deadline = asyncio.timeout(timeout)
                    try:
                        async with deadline:
                            return await call(*args)
                    except TimeoutError:
                        if deadline.expired():
                            raise _timeout_error(node, timeout, attempts.number, index) from None
                        raise
                try:
                    return await run_in_thread(
                        call,
                        *args,
                        abandon_after=timeout,
                        on_abandoned_end=partial(release_all, held),
                    )
                except Abandoned:
                    abandoned = True
                    raise _timeout_error(node, timeout, attempts.number, index) from None
            except Exception as error:
                failure = error
            except asyncio.CancelledError as cancel:
                failure = own_cancellation(node, cancel, index)
            finally:
                unhold(holding)
                if not abandoned:
                    release_all(held)
            if run_is_cancelled():
                raise failure  # the run is stopping: no retry, no fallback
            delay = attempts.after_failure(failure)
            if delay is None:
                return await fallback_async(
                    node, item, failure, index, attempts.number, shared, offload
                )
            if delay > 0:
                await asyncio.sleep(delay)


async def _limited_async(
    node: Lifecycle,
    call: Any,
    coro: bool,
    args: tuple[Any, ...],
    item: Any,
    index: int | None,
    shared: Any,
    offload: bool,
) -> Any:
    """One attempt holding the node's limiters, no retry and no timeout: the
    common policy, kept lean."""
    limits = node._bf_limits
    failure: Exception
    taken = _try_all(limits)
    if taken < len(limits):
        await _hold_rest(limits, taken, node, index, 0)
    holding = hold(limits, node, index)
    try:
        if coro:
            return await call(*args)
        if offload:
            return await run_in_thread(call, *args)
        return call(*args)
    except Exception as error:
        failure = error
    except asyncio.CancelledError as cancel:
        failure = own_cancellation(node, cancel, index)
    finally:
        unhold(holding)
        release_all(limits)
    if run_is_cancelled():
        raise failure  # the run is stopping: no fallback
    return await fallback_async(node, item, failure, index, 0, shared, offload)


async def fallback_async(
    node: Lifecycle,
    item: Any,
    error: Exception,
    index: Any,
    attempt: int,
    shared: Any,
    offload: bool = False,
) -> Any:
    """Async form of `fallback_sync`; a sync fallback runs in a thread if ``offload``."""
    plan = node._bf_plan
    fallback = getattr(node, plan.fallback)
    args = (shared, item, error) if plan.fallback_wants_shared else (item, error)
    try:
        if plan.fallback_coro:
            return await fallback(*args)
        if offload and not plan.fallback_default:
            return await run_in_thread(fallback, *args)
        return fallback(*args)
    except Exception as raised:
        _label_failure(node, raised, error, index, attempt)
        raise
    except asyncio.CancelledError as cancel:
        stray = own_cancellation(node, cancel, index)
        _label_failure(node, stray, error, index, attempt)
        raise stray from cancel
