"""A node's lifecycle: hooks, ``prep``, the exec stage, ``post``; and a batch node's exec stage.

`lifecycle` is the generator every node, flow and branch fork runs
through when it is not on a driver's fast path; its exec stage is the
class's ``_stage`` (a node's: `node_stage`; a flow's: its walk; a fork's:
its branches). Each phase of user code is an effect, so the same lines
serve sync code, the event loop and offloaded threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from .._context import HANDED_DOWN, HandedDown
from .._options import on_error_of
from .._plan import is_default
from ._attempts import attempts, ended_step
from ._effects import MAYBE_AWAIT, PARALLEL, STAGE, THREAD, call_effect
from ._items import batch_items, sequential
from ._observe import emit_error

__all__ = ["lifecycle", "node_stage"]

Steps = Generator[tuple[Any, ...], Any, Any]


def lifecycle(node: Any, shared: Any, offload: bool) -> Steps:
    """Run a node's phases and return its action. ``offload``: sync phases
    (and sync hooks) run in braidflow's threads."""
    plan = node._bf_plan
    hooks = plan.hook_coro
    try:
        if "before_prep" in hooks:
            yield _hook(node, "before_prep", offload, (shared,))
        prep_result = yield call_effect(
            node, None, getattr(node, plan.prep), (shared,), plan.prep_coro, offload
        )
        if node._bf_is_flow and node._bf_batch != "single" and not prep_result:
            prep_result = []  # no parameter sets: what its post gets too, as PocketFlow's
        if plan.custom_exec:
            exec_result = yield from _own_exec(node, shared, prep_result, offload)
        else:
            stage = node._stage(shared, prep_result, offload)
            exec_result = yield (STAGE, node, None, stage)
        if "after_exec" in hooks:
            yield _hook(node, "after_exec", offload, (shared, prep_result, exec_result))
        post = call_effect(
            node,
            None,
            getattr(node, plan.post),
            (shared, prep_result, exec_result),
            plan.post_coro,
            offload,
        )
        try:
            return (yield post)
        except asyncio.CancelledError as cancel:
            if post[0] is THREAD:  # post ran on in its thread, and may have returned
                ended_step(cancel)
            raise
    except Exception as error:
        if "on_error" in hooks:
            answer = yield _hook(node, "on_error", offload, (shared, error))
            if answer is True:  # swallowed: the node ends with action None
                emit_error(node, error)
                return None
        raise


def _hook(node: Any, hook: str, offload: bool, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Call a lifecycle hook: awaited if ``async def``, in a thread if offloaded."""
    function = getattr(node, hook)
    if not callable(function):  # the node's own attribute of that name: the policy
        function = getattr(type(node), hook).__get__(node)  # (self.on_error = "collect")
    return call_effect(node, None, function, args, node._bf_plan.hook_coro[hook], offload)


def _own_exec(node: Any, shared: Any, prep_result: Any, offload: bool) -> Steps:
    """Call a class's own ``_exec`` override (PocketFlow's exec stage), which
    may call back into the default one: it finds ``shared`` in `HANDED_DOWN`."""
    handed = HANDED_DOWN.get()
    token = HANDED_DOWN.set(HandedDown(handed.executor if handed is not None else None, shared))
    try:
        return (yield (MAYBE_AWAIT, node, None, node._exec, (prep_result,), offload))
    finally:
        HANDED_DOWN.reset(token)


def node_stage(node: Any, shared: Any, prep_result: Any, offload: bool) -> Steps:
    """A node's exec stage: one item's attempts, or a batch's items one after
    another or at once (through the node's executor, if it has one)."""
    batch = node._bf_batch
    if batch == "single":
        return (yield from attempts(node, prep_result, None, shared, offload, None))
    items = batch_items(node, prep_result)
    dispatch = _dispatch(node)
    # A sync parallel node exists to run its items' exec in threads; so does
    # any parallel batch run from sync code (its items run on a private loop).
    threads = offload or (batch == "parallel" and not node._bf_async)

    def one_item(item: Any, index: int, from_sync: bool) -> Steps:
        return attempts(node, item, index, shared, threads or from_sync, dispatch)

    if batch == "sequential":
        return (yield from sequential(node, items, one_item, True))
    plan = node._bf_plan
    fast_exec = None
    if (
        dispatch is None
        and node._is_simple()
        and plan.exec_coro
        and not plan.exec_wants_shared
        and is_default(getattr(node, plan.fallback))  # (set on the node since, it runs)
        and on_error_of(node) == "raise"
    ):
        fast_exec = getattr(node, plan.exec)
    return (yield (PARALLEL, node, None, items, one_item, True, fast_exec, True))


def _dispatch(node: Any) -> Any:
    """How this batch's items reach their executor (its own, else its flow's),
    prepared once; ``None``: they run here."""
    executor = node._bf_executor
    if executor is None:
        handed = HANDED_DOWN.get()
        executor = handed.executor if handed is not None else None
        if executor is None:
            return None
    return executor.prepare(node, node._bf_plan.exec)
