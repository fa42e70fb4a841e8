"""PocketFlow's internals that its programs override, called as PocketFlow
calls them: ``Flow._orch(shared)`` for a flow's run (``BatchFlow`` calls
``_orch(shared, params)`` per parameter set), ``_orch_async`` alike."""

import asyncio

import pytest

from braidflow import AsyncBatchFlow, AsyncFlow, AsyncNode, BatchFlow, Flow, Node


class Seen(Node):
    def post(self, shared, prep_res, exec_res):
        shared.setdefault("seen", []).append(dict(self.params))


class AsyncSeen(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared.setdefault("seen", []).append(dict(self.params))


def test_a_flow_s_orch_override_is_called_with_shared_alone():
    calls = []

    class Plain(Flow):
        def _orch(self, shared):  # PocketFlow's Flow._run calls self._orch(shared)
            calls.append("plain")
            return super()._orch(shared)

    class WithParams(Flow):
        def _orch(self, shared, params=None):
            calls.append(params)
            return super()._orch(shared, params)

    shared = {}
    Plain(start=Seen()).run(shared)
    flow = WithParams(start=Seen())
    flow.set_params({"a": 1})
    flow.run(shared)
    assert calls == ["plain", None]  # PocketFlow passes no params for a flow's own
    assert shared["seen"] == [{}, {"a": 1}]


def test_a_batch_flow_s_orch_override_gets_each_parameter_set():
    calls = []

    class Sets(BatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2}]

        def _orch(self, shared, params=None):
            calls.append(params)
            return super()._orch(shared, params)

    shared = {}
    Sets(start=Seen()).run(shared)
    assert calls == [{"n": 1}, {"n": 2}]
    assert shared["seen"] == [{"n": 1}, {"n": 2}]


def test_an_async_flow_s_orch_async_override_is_called_as_pocketflow_calls_it():
    calls = []

    class Plain(AsyncFlow):
        async def _orch_async(self, shared):
            calls.append("plain")
            return await super()._orch_async(shared)

    class Sets(AsyncBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 1}]

        async def _orch_async(self, shared, params=None):
            calls.append(params)
            return await super()._orch_async(shared, params)

    shared = {}
    asyncio.run(Plain(start=AsyncSeen()).run_async(shared))
    asyncio.run(Sets(start=AsyncSeen()).run_async(shared))
    assert calls == ["plain", {"n": 1}]
    assert shared["seen"] == [{}, {"n": 1}]


def test_a_fallback_set_after_the_class_was_made_is_the_one_called():
    from unittest import mock

    from braidflow import AsyncParallelBatchNode

    class Fails(Node):
        def exec(self, prep_res):
            raise ValueError("down")

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    node = Fails()
    node.exec_fallback = lambda prep_res, error: "on the instance"
    shared = {}
    Flow(start=node).run(shared)
    assert shared["out"] == "on the instance"

    def patched(self, prep_res, error):
        return "patched"

    with mock.patch.object(Fails, "exec_fallback", patched):
        Flow(start=Fails()).run(shared)
    assert shared["out"] == "patched"

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2]

        async def exec_async(self, item):
            raise ValueError("down")

        async def post_async(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    async def fallback(item, error):
        return -item

    items = Items()
    items.exec_fallback_async = fallback
    asyncio.run(AsyncFlow(start=items).run_async(shared))
    assert shared["items"] == [-1, -2]


def test_a_batch_class_of_one_s_own_runs_its_items_through_the_single_item_exec():
    # PocketFlow's own idiom: its AsyncParallelBatchNode is (AsyncNode, BatchNode)
    # calling super()._exec per item; users run items in a thread pool so.
    from concurrent.futures import ThreadPoolExecutor

    from braidflow import AsyncParallelBatchNode, BatchNode

    class ThreadBatch(BatchNode):
        def prep(self, shared):
            return [1, 2, 3]

        def exec(self, item):
            return item * 10

        def _exec(self, items):
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(lambda item: super(BatchNode, self)._exec(item), items))

        def post(self, shared, prep_res, exec_res):
            return exec_res

    class Bounded(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2, 3]

        async def exec_async(self, item):
            return item * 100

        async def _exec(self, items):
            bound = asyncio.Semaphore(2)

            async def one(item):
                async with bound:
                    return await AsyncNode._exec(self, item)

            return await asyncio.gather(*(one(item) for item in items))

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    class Gathered(AsyncNode, BatchNode):  # how PocketFlow defines its parallel batch
        async def prep_async(self, shared):
            return [1, 2]

        async def exec_async(self, item):
            return -item

        async def _exec(self, items):
            return await asyncio.gather(*(super(Gathered, self)._exec(item) for item in items))

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert ThreadBatch().run({}) == [10, 20, 30]
    assert asyncio.run(Bounded().run_async({})) == [100, 200, 300]
    assert asyncio.run(Gathered().run_async({})) == [-1, -2]


def test_a_stop_iteration_out_of_a_node_reaches_the_caller_as_itself():
    import pytest

    class Exhausted(Node):
        def prep(self, shared):
            return next(iter([]))  # nothing left: StopIteration

    with pytest.raises(StopIteration):
        Exhausted().run({})
    with pytest.raises(StopIteration):
        Flow(start=Exhausted()).run({})
    # (Out of a coroutine, Python makes it a RuntimeError, in PocketFlow as here.)


def test_an_async_phase_whose_coroutine_a_plain_function_returns_is_awaited():
    # PocketFlow awaits whatever an ..._async method returns: an `async def`
    # under a decorator without functools.wraps, or a plain `def` handing
    # back a coroutine, work there, and here.
    from braidflow import AsyncBatchNode, AsyncParallelBatchNode

    def logged(function):
        def wrapper(*args):
            return function(*args)

        return wrapper

    async def ask(question):
        await asyncio.sleep(0)
        return f"answer to {question}"

    class Fetch(AsyncNode):
        @logged
        async def prep_async(self, shared):
            return shared["q"]

        def exec_async(self, question):
            return ask(question)

        @logged
        async def post_async(self, shared, prep_res, exec_res):
            shared["a"] = exec_res
            return "done"

    class Fails(AsyncNode):
        async def exec_async(self, prep_res):
            raise ValueError("down")

        def exec_fallback_async(self, prep_res, error):
            return ask("the fallback")

        async def post_async(self, shared, prep_res, exec_res):
            shared["fallback"] = exec_res

    class Each(AsyncBatchNode):
        async def prep_async(self, shared):
            return ["x", "y"]

        def exec_async(self, item):
            return ask(item)

        async def post_async(self, shared, prep_res, exec_res):
            shared["each"] = exec_res

    class All(AsyncParallelBatchNode, Each):
        pass

    shared = {"q": "why"}
    fetch = Fetch()
    fetch - "done" >> Fails() >> Each() >> All()
    assert asyncio.run(AsyncFlow(start=fetch).run_async(shared)) is None
    assert shared["a"] == "answer to why"
    assert shared["fallback"] == "answer to the fallback"
    assert shared["each"] == ["answer to x", "answer to y"]
    assert asyncio.run(Fetch().run_async({"q": "how"})) == "done"


def test_a_fallback_replaced_by_a_mock_is_the_one_called():
    # A Mock answers any attribute (braidflow's mark of its own default
    # fallback included) with a true Mock: it is still the user's fallback.
    from unittest import mock

    class Fails(Node):
        def exec(self, prep_res):
            raise ConnectionError("LLM down")

        def post(self, shared, prep_res, exec_res):
            shared["summary"] = exec_res

    class FailsAsync(AsyncNode):
        async def exec_async(self, prep_res):
            raise ConnectionError("LLM down")

        async def post_async(self, shared, prep_res, exec_res):
            shared["summary"] = exec_res

    shared = {}
    with mock.patch.object(Fails, "exec_fallback", return_value="(no summary)") as fallback:
        Flow(start=Fails()).run(shared)
    assert fallback.call_count == 1
    assert shared["summary"] == "(no summary)"
    shared = {}
    with mock.patch.object(
        FailsAsync, "exec_fallback_async", mock.AsyncMock(return_value="(none)")
    ) as fallback:
        asyncio.run(AsyncFlow(start=FailsAsync()).run_async(shared))
    assert fallback.await_count == 1
    assert shared["summary"] == "(none)"


def test_a_fallback_runs_while_exec_s_error_is_being_handled():
    # As in PocketFlow, which calls it in the except block of exec's error: a
    # bare raise re-raises that error, sys.exception() is it (what
    # logging.exception logs), and an error the fallback raises has it as its
    # __context__.
    import sys

    from braidflow import AsyncParallelBatchNode

    seen = []

    class Reraises(Node):
        def exec(self, prep_res):
            raise ConnectionError("down")

        def exec_fallback(self, prep_res, exc):
            seen.append(sys.exception())
            raise

    class Replaces(Node):
        def exec(self, prep_res):
            raise KeyError("original")

        def exec_fallback(self, prep_res, exc):
            raise RuntimeError("fallback failed too")

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2]

        async def exec_async(self, item):
            raise ConnectionError(f"down {item}")

        async def exec_fallback_async(self, item, exc):
            seen.append(sys.exception())
            raise

    with pytest.raises(ConnectionError, match="down"):
        Reraises(max_retries=2).run({})
    assert isinstance(seen.pop(), ConnectionError)
    with pytest.raises(RuntimeError) as replaced:
        Replaces().run({})
    assert isinstance(replaced.value.__context__, KeyError)
    with pytest.raises(ConnectionError, match="down"):
        asyncio.run(AsyncFlow(start=Items()).run_async({}))
    assert all(isinstance(error, ConnectionError) for error in seen)
