"""One item's exec attempts: limits, timeout, retry and fallback, written once.

`attempts` is a generator a driver runs: each attempt holds the node's
limiters while ``exec`` runs (under its deadline, if it has a timeout); a
failure is retried as the policy says, and the last one goes to the
fallback. It catches only ``Exception``: the run's cancellation passes
through, so a cancelled run retries nothing and falls back to nothing. A
node with a result cache goes through it first (``_cached``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from functools import partial
from typing import Any

from .. import _budget as budgets
from .._budget import attempt_ended, attempt_started, budgeted, reached, stop_at_budget
from .._clock import TimedOut
from .._context import ATTEMPT, CLAIMS, GATES, PATH, RUN, AttemptState, observed
from .._deadlock import hold, holds, unhold
from .._errors import NodeCancelledError, NodeTimeoutError, SetupError, add_note
from .._holding import release_all, try_all
from .._options import check_retry_options
from .._plan import is_default
from .._policy import next_delay
from .._taskgroup import note_lost
from .._threads import abandoned_meanwhile, returned_meanwhile
from .._weights import claims_for
from ..durable._drain import DrainStop
from ._cached import cached
from ._effects import AWAIT, CALL, REMOTE, SLEEP, THREAD, TIMED, WAIT
from ._observe import emit_wait

__all__ = [
    "attempts",
    "cancellation_instead",
    "cancelled_error",
    "ended_step",
    "ended_walk",
    "fallback",
    "finished_action",
    "finished_item",
    "label_failure",
]

Steps = Generator[tuple[Any, ...], Any, Any]


def cancelled_error(node: Any, cancel: BaseException, index: int | None) -> NodeCancelledError:
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


def cancellation_instead(error: BaseException, node: Any) -> asyncio.CancelledError:
    """The cancellation that ends a run whose code raised ``error`` once the
    run was being cancelled: the error is its cause, and a note says so."""
    cancel = asyncio.CancelledError()
    cancel.__cause__ = error
    who = node._describe() if node is not None else "the run's code"
    add_note(cancel, f"{who} raised {error!r} while its run was being cancelled")
    note_lost(error)
    return cancel


def ended_step(cancel: BaseException) -> None:
    """``cancel`` stopped a step whose last code (its ``post``, or the whole
    step) ran in a thread: if that code returned meanwhile, the step finished,
    and what it returned is its action, kept on ``cancel`` for its walk to
    record the step (`finished_action`): a resume must not redo it."""
    returned = returned_meanwhile(cancel)
    if returned is not None:
        vars(cancel)["_bf_action"] = returned


def finished_action(cancel: BaseException) -> tuple[Any] | None:
    """The action (a 1-tuple) of the step ``cancel`` stopped once it had
    finished (see `ended_step`), or ``None``; taken off ``cancel``, so the
    walks around that step's do not take it for their own step's."""
    action: tuple[Any] | None = vars(cancel).pop("_bf_action", None)
    return action


def ended_walk(stop: BaseException, flow: Any, action: Any) -> None:
    """``stop`` reached a walk of ``flow`` as its last step finished in a
    thread (see `ended_step`): the walk ended, with ``action``, kept on
    ``stop`` for the parameter set it was to record (`finished_item`)."""
    vars(stop)["_bf_walked"] = (flow, action)


def finished_item(stop: BaseException, node: Any) -> tuple[Any] | None:
    """The result (a 1-tuple) of a batch item of ``node`` that had finished in
    a thread when ``stop`` (a cancellation) reached it, or ``None``: a node's
    item, what its exec (or fallback) returned there; a batch flow's
    parameter set, the last action of its walk, if that ended (`ended_walk`:
    a walk of another flow inside it is not the set's)."""
    if not node._bf_is_flow:
        return returned_meanwhile(stop)
    walked = vars(stop).get("_bf_walked")
    if walked is None or walked[0] is not node:
        return None
    return (walked[1],)


def unfinished_item(stop: BaseException) -> None:
    """The parameter set that ``stop`` reached once its walk had ended could
    not keep what it changed: it is not recorded (see `finished_item`)."""
    vars(stop).pop("_bf_walked", None)


def timeout_error(node: Any, timeout: float, attempt: int, index: Any) -> NodeTimeoutError:
    """The failure of an attempt that outlived the node's ``timeout``."""
    where = f" item {index}" if index is not None else ""
    return NodeTimeoutError(
        f"{node._describe()}{where}: exec attempt {attempt + 1} timed out after {timeout:g} s",
        node=node._display_name(),
        timeout=timeout,
        attempt=attempt,
        item_index=index,
    )


def label_failure(
    node: Any, raised: BaseException, error: BaseException, index: Any, attempt: int
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


# PocketFlow calls the fallback in the ``except`` block of exec's error: a
# bare ``raise`` there re-raises it, ``logging.exception`` logs it, and an
# error the fallback raises has it as its ``__context__``. The engine calls
# the fallback later (an effect), so it raises the error again to handle it
# around the call, with the traceback it had.


def _called_handling(error: BaseException, function: Any, *args: Any) -> Any:
    """``function(*args)`` called while ``error`` is being handled."""
    traceback = error.__traceback__
    try:
        raise error
    except BaseException:
        error.__traceback__ = traceback
        return function(*args)


async def _awaited_handling(error: BaseException, function: Any, *args: Any) -> Any:
    """``await function(*args)`` while ``error`` is being handled."""
    traceback = error.__traceback__
    try:
        raise error
    except BaseException:
        error.__traceback__ = traceback
        return await function(*args)


def fallback(
    node: Any, item: Any, error: Exception, index: Any, attempt: int, shared: Any, offload: bool
) -> Steps:
    """Hand an item's final failure to the node's fallback; label what escapes it.

    braidflow's own `SetupError` (a usage with no price, or with no cost
    under a cost budget) is not handed to it: a fallback's default would
    hide the mistake while every item makes its paid call, uncounted.
    """
    plan = node._bf_plan
    try:
        if isinstance(error, SetupError):  # final, as for retries (`next_delay`)
            raise error
        # Looked up now, as PocketFlow does: a fallback set on the node or its
        # class since (mock.patch.object, say) is the one called.
        function = getattr(node, plan.fallback)
        if is_default(function):  # PocketFlow's: re-raise
            raise error
        args = (shared, item, error) if plan.fallback_wants_shared else (item, error)
        if plan.fallback_coro:
            return (yield (AWAIT, node, index, partial(_awaited_handling, error, function), args))
        called = partial(_called_handling, error, function)
        return (yield (THREAD if offload else CALL, node, index, called, args))
    except Exception as raised:
        label_failure(node, raised, error, index, attempt)
        raise


def attempts(
    node: Any,
    item: Any,
    index: int | None,
    shared: Any,
    offload: bool,
    dispatch: Any,
    failed: Any = None,
) -> Steps:
    """Run one item's exec attempts; return its result (or its fallback's).

    ``offload``: run sync ``exec`` in one of braidflow's threads.
    ``dispatch``: an executor's `Dispatch` that runs each call elsewhere.
    ``failed``: what takes the final failure in place of `fallback`; the
    result cache gives its own (a fallback's result is not kept), and the
    cache is not looked at again.
    """
    if failed is None:
        if node._bf_cache is not None:  # a result kept before, else these attempts
            return (
                yield from cached(node, item, index, shared, offload, dispatch, attempts, fallback)
            )
        failed = fallback
    plan = node._bf_plan
    args = (shared, item) if plan.exec_wants_shared else (item,)
    if dispatch is not None:
        function: Any = dispatch
        how = REMOTE
    else:
        # exec_async's attribute, where it is the one: cheaper than getattr.
        function = node.exec_async if plan.exec == "exec_async" else getattr(node, plan.exec)
        how = AWAIT if plan.exec_coro else THREAD if offload else CALL
    retry, max_retries = node._bf_retry, node.max_retries
    timeout, held = node._bf_timeout, node._bf_limits
    retrying = retry is not None or max_retries != 1
    spend = budgeted() if budgets.active else None
    if not retrying and timeout is None and not held and spend is None:  # no policy
        try:
            return (yield (how, node, index, function, args))
        except Exception as error:
            return (yield from failed(node, item, error, index, 0, shared, offload))
    if retrying:
        check_retry_options(node)
    gates: tuple[Any, ...] = ()
    if timeout is not None and how is not AWAIT:
        # A sync attempt under a timeout may be abandoned to its thread (an
        # executor's call, to its task): it then holds the enclosing parallel
        # bounds too (those no enclosing attempt holds already), until it ends.
        gates = tuple(gate for gate in GATES.get() if not holds(gate))
        held = gates + held
    # Weighted limiters: the item's units now, a fresh claim of them per attempt.
    claims = claims_for(node, item, index) if node._bf_weighted else None
    own: tuple[Any, ...] = ()
    state: AttemptState | None = None
    token = None
    if timeout is not None or retrying:
        state = AttemptState(node, index)
        token = ATTEMPT.set(state)
        node.__dict__["_bf_cur_retry"] = 0
    attempt = 0
    try:
        while True:
            holding = claims_token = budget_token = None
            if claims is not None:
                taken_now, own = claims()
                held = gates + taken_now
            # How many of `held` this attempt holds: what its `finally` gives
            # back. Each take is counted with no call in between, so a Ctrl-C
            # (a KeyboardInterrupt, raised between two bytecodes) cannot land
            # after a take and before the count: the slot would never come back.
            count = 0
            abandoned = False
            failure: Exception
            try:
                if held:
                    if len(held) > 1:
                        count = try_all(held)
                    elif held[0].try_acquire():
                        count = 1
                    if count < len(held):
                        first = count
                        started = time.monotonic()
                        watched = observed()
                        if watched is not None:
                            emit_wait(watched, node, held[first:], index, attempt, None)
                        taken = [count]  # the driver counts there the slots it takes
                        # A step or batch item that only waits so far has not
                        # begun: a drain ends its wait (and then stops it).
                        drain = _drain() if attempt == 0 else None
                        try:
                            yield (WAIT, node, index, held, taken, drain)
                        finally:
                            count = taken[0]
                        if watched is not None:
                            waited = time.monotonic() - started
                            emit_wait(watched, node, held[first:], index, attempt, waited)
                        if drain is not None and drain.stopping():
                            # It got its slots as the run began to drain (or a
                            # request seen only now): it does not begin.
                            raise DrainStop
                    holding = hold(held, node, index)  # what nested code sees this attempt hold
                    if claims is not None:
                        claims_token = CLAIMS.set(own)
                if spend is not None:  # a budgeted run: stop before a call over the budget
                    if reached(spend):  # holding nothing: a call in flight may need a slot to end
                        # (Cleared before it is let go: the `finally` must not again.)
                        letting_go = (held[:count], holding, claims_token)
                        count, holding, claims_token = 0, None, None
                        _let_go(*letting_go)
                        yield from stop_at_budget(spend, node, index, SLEEP)
                    budget_token = attempt_started(spend)
                try:
                    if timeout is None:
                        return (yield (how, node, index, function, args))
                    try:
                        return (yield (TIMED, node, index, how, function, args, timeout, held))
                    except TimedOut as late:
                        abandoned = late.abandoned
                        raise timeout_error(node, timeout, attempt, index) from late.raised
                    except BaseException as stop:  # stopped, and left running past its deadline
                        abandoned = abandoned_meanwhile(stop)
                        raise
                except Exception as error:
                    failure = error
            finally:
                try:
                    if budget_token is not None:
                        attempt_ended(spend, budget_token)  # type: ignore[arg-type]
                    if claims_token is not None:
                        CLAIMS.reset(claims_token)
                    if holding is not None:
                        unhold(holding)
                finally:  # (nested: given back even if a Ctrl-C lands in the above)
                    if count and not abandoned:
                        if count == 1:
                            held[0].release()
                        else:
                            release_all(held[:count])
            try:
                delay = next_delay(node._bf_retry, node.max_retries, node.wait, attempt, failure)
            except Exception as broken:  # the policy's own retry_on raised
                where = "" if index is None else f" item {index}"
                add_note(
                    broken,
                    f"{node._describe()}{where}: raised by its Retry's retry_on, asked "
                    f"whether to retry {failure!r} (attempt {attempt + 1})",
                )
                raise broken from failure
            if delay is None:
                return (yield from failed(node, item, failure, index, attempt, shared, offload))
            _emit_retry(node, index, attempt, failure, delay)
            attempt += 1
            if state is not None:
                state = state.next()
                ATTEMPT.set(state)  # (reset to what was there by the first token)
                node.__dict__["_bf_cur_retry"] = attempt
            if delay > 0:
                yield (SLEEP, node, index, delay)
    finally:
        if token is not None:
            ATTEMPT.reset(token)


def _drain() -> Any:
    """The run's `Drain`, if it is durable, else ``None``."""
    run = RUN.get()
    return run.durable.drain if run is not None and run.durable is not None else None


def _let_go(held: tuple[Any, ...], holding: Any, claims_token: Any) -> None:
    """Give back what an attempt took, when it stops before its call."""
    if claims_token is not None:
        CLAIMS.reset(claims_token)
    if holding is not None:
        unhold(holding)
    release_all(held)


def _emit_retry(node: Any, index: int | None, attempt: int, error: Exception, delay: float) -> None:
    run = observed()
    if run is not None:
        run.emit(
            "retry",
            node=node._display_name(),
            path=PATH.get(),
            item=index,
            attempt=attempt,
            error=error,
            data={"delay": delay},
        )
