"""KayGraph's lifecycle hooks in every node kind, sync and async."""

import asyncio

import pytest

from braidflow import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Failure,
    Flow,
    Node,
    NodeDefinitionError,
    ParallelBatchNode,
)

SYNC_KINDS = [Node, BatchNode, ParallelBatchNode]
ASYNC_KINDS = [AsyncNode, AsyncBatchNode, AsyncParallelBatchNode]


def hooked(kind, log, *, fail=None, swallow=False, async_hooks=False):
    """A node of `kind` that logs its phases and hooks; `fail` names a phase that raises."""
    batch = issubclass(kind, BatchNode)

    def check(phase):
        log.append(phase)
        if fail == phase:
            raise ValueError(f"{phase} failed")

    def prep(self, shared):
        check("prep")
        return [1, 2] if batch else 1

    def exec_(self, item):
        check("exec")
        return item

    def post(self, shared, prep_res, exec_res):
        check("post")
        return "posted"

    def before_prep(self, shared):
        check("before_prep")

    def after_exec(self, shared, prep_res, exec_res):
        check("after_exec")
        shared["after_exec_saw"] = exec_res

    def on_error(self, shared, error):
        log.append(f"on_error:{error}")
        return swallow

    body = {"prep": prep, "exec": exec_, "post": post}
    hooks = {"before_prep": before_prep, "after_exec": after_exec, "on_error": on_error}
    if async_hooks:
        hooks = {name: _as_async(function) for name, function in hooks.items()}
    return type(f"Hooked{kind.__name__}", (kind,), {**body, **hooks})


def _as_async(function):
    async def hook(*args):
        await asyncio.sleep(0)
        return function(*args)

    return hook


async def run(node, shared):
    if isinstance(node, AsyncNode):
        return await AsyncFlow(start=node).run_async(shared)
    return Flow(start=node).run(shared)


@pytest.mark.parametrize("kind", SYNC_KINDS + ASYNC_KINDS)
async def test_hooks_run_around_the_phases_in_every_kind(kind):
    log = []
    shared = {}
    assert await run(hooked(kind, log)(), shared) == "posted"
    execs = 2 if issubclass(kind, BatchNode) else 1
    assert log == ["before_prep", "prep", *["exec"] * execs, "after_exec", "post"]
    assert shared["after_exec_saw"] == ([1, 2] if execs == 2 else 1)


@pytest.mark.parametrize("kind", ASYNC_KINDS)
async def test_hooks_may_be_coroutines_in_async_kinds(kind):
    log = []
    node = hooked(kind, log, fail="exec", swallow=True, async_hooks=True)()
    assert await run(node, {}) is None
    assert log[:3] == ["before_prep", "prep", "exec"]
    assert log[-1] == "on_error:exec failed"


def test_async_hooks_on_a_sync_node_are_refused_when_the_class_is_defined():
    with pytest.raises(NodeDefinitionError, match="before_prep"):

        class Wrong(Node):
            async def before_prep(self, shared):
                pass


@pytest.mark.parametrize("kind", SYNC_KINDS + ASYNC_KINDS)
@pytest.mark.parametrize("phase", ["before_prep", "prep", "exec", "after_exec", "post"])
async def test_on_error_sees_a_failure_of_any_phase_and_may_swallow_it(kind, phase):
    log = []
    node = hooked(kind, log, fail=phase, swallow=True)()
    shared = {}
    assert await run(node, shared) is None  # swallowed: the node ends with action None
    assert log[-1] == f"on_error:{phase} failed"


@pytest.mark.parametrize("kind", [Node, AsyncNode, ParallelBatchNode])
async def test_on_error_that_returns_false_lets_the_error_through(kind):
    log = []
    with pytest.raises(ValueError, match="exec failed"):
        await run(hooked(kind, log, fail="exec")(), {})
    assert log[-1] == "on_error:exec failed"


async def test_on_error_comes_after_retries_and_the_fallback():
    log = []

    class Flaky(AsyncNode):
        async def exec_async(self, prep_res):
            log.append(f"attempt {self.cur_retry}")
            raise ConnectionError("down")

        async def exec_fallback_async(self, prep_res, exc):
            log.append("fallback")
            raise exc

        async def on_error(self, shared, error):
            log.append("on_error")
            return True

    assert await Flaky(max_retries=2).run_async({}) is None
    assert log == ["attempt 0", "attempt 1", "fallback", "on_error"]


async def test_a_swallowed_error_routes_the_flow_by_the_default_action():
    log = []

    class Fails(Node):
        def exec(self, prep_res):
            raise ValueError("nope")

        def on_error(self, shared, error):
            return True

    class Next(Node):
        def post(self, shared, prep_res, exec_res):
            log.append("next ran")

    first = Fails()
    first >> Next()
    Flow(start=first).run({})
    assert log == ["next ran"]


async def test_hooks_on_offloaded_sync_nodes_run_in_threads_too():
    import threading

    where = []

    class Offloaded(Node):
        def before_prep(self, shared):
            where.append(threading.current_thread().name)

        def after_exec(self, shared, prep_res, exec_res):
            where.append(threading.current_thread().name)

    await AsyncFlow(start=Offloaded(offload=True)).run_async({})
    assert len(where) == 2
    assert all(name.startswith("braidflow-worker") for name in where)


async def test_the_on_error_policy_keyword_works_next_to_an_on_error_hook():
    seen = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 0]

        async def exec_async(self, item):
            return 1 // item

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res
            raise RuntimeError("post failed")

        async def on_error(self, shared, error):
            seen.append(str(error))
            return True

    shared = {}
    assert await Items(on_error="collect").run_async(shared) is None
    assert isinstance(shared["results"][1], Failure)
    assert seen == ["post failed"]

    class SetInInit(Items):  # the attribute form: it shadows the method on the node
        def __init__(self):
            super().__init__()
            self.on_error = "collect"

    shared = {}
    assert await SetInInit().run_async(shared) is None
    assert isinstance(shared["results"][1], Failure)
    assert seen == ["post failed", "post failed"]


def test_flows_call_their_own_hooks():
    log = []

    class Watched(Flow):
        def before_prep(self, shared):
            log.append("flow before_prep")

        def after_exec(self, shared, prep_res, exec_res):
            log.append(f"flow after_exec {exec_res}")

    class Inner(Node):
        def post(self, shared, prep_res, exec_res):
            log.append("inner")
            return "inner-action"

    Watched(start=Inner()).run({})
    assert log == ["flow before_prep", "inner", "flow after_exec inner-action"]


def test_hooks_can_call_super_as_kaygraph_code_does():
    log = []

    class Base(Node):
        def before_prep(self, shared):
            super().before_prep(shared)
            log.append("before")

        def on_error(self, shared, error):
            return super().on_error(shared, error)

        def exec(self, prep_res):
            raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        Base().run({})
    assert log == ["before"]
