"""Async nodes and flows: mixed phase forms, mixed graphs, entry points, misuse."""

import asyncio
import warnings

import pytest

from braidflow import (
    AsyncBatchFlow,
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    AsyncUsageError,
    BatchAsyncFlow,
    BatchNode,
    Flow,
    Node,
    NodeDefinitionError,
    NodeDefinitionWarning,
)


class Weather(AsyncNode):
    async def prep_async(self, shared):
        return shared["city"]

    async def exec_async(self, city):
        await asyncio.sleep(0)
        return f"Sunny in {city}"

    async def post_async(self, shared, prep_res, exec_res):
        shared["report"] = exec_res
        return "done"


async def test_async_flow_runs_async_nodes():
    shared = {"city": "London"}
    assert await AsyncFlow(start=Weather()).run_async(shared) == "done"
    assert shared["report"] == "Sunny in London"


class MixedPlain(AsyncNode):
    """Phases written as plain names, some async def and some def."""

    async def prep(self, shared):
        await asyncio.sleep(0)
        return shared["x"]

    async def exec(self, prep_res):
        return prep_res * 2

    def post(self, shared, prep_res, exec_res):
        shared["y"] = exec_res
        return "next"


class SyncInAsyncNode(AsyncNode):
    """An async node whose phases are all plain functions."""

    def prep(self, shared):
        return shared["y"]

    def exec(self, prep_res):
        return prep_res + 1

    def post(self, shared, prep_res, exec_res):
        shared["z"] = exec_res


async def test_async_node_phases_may_be_plain_names_sync_or_async():
    first = MixedPlain()
    first - "next" >> SyncInAsyncNode()
    shared = {"x": 5}
    await AsyncFlow(start=first).run_async(shared)
    assert shared == {"x": 5, "y": 10, "z": 11}


async def test_async_suffixed_phase_wins_over_plain_name():
    class Both(AsyncNode):
        def exec(self, prep_res):
            return "plain"

        async def exec_async(self, prep_res):
            return "async"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Both().run_async({}) == "async"


async def test_old_exec_signature_with_shared_first_is_supported():
    class Old(AsyncNode):
        async def prep(self, shared):
            return shared["text"]

        async def exec(self, shared, prep_res):
            return f"{prep_res} ({len(shared)} keys)"

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    shared = {"text": "hi"}
    await AsyncFlow(start=Old()).run_async(shared)
    assert shared["out"] == "hi (1 keys)"


async def test_async_flow_hosts_sync_nodes_and_nested_sync_and_async_flows():
    log = []

    class Step(Node):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def post(self, shared, prep_res, exec_res):
            log.append(self.label)

    class AsyncStep(AsyncNode):
        def __init__(self, label):
            super().__init__()
            self.label = label

        async def post_async(self, shared, prep_res, exec_res):
            await asyncio.sleep(0)
            log.append(self.label)

    sync_inner = Flow(start=Step("sync-inner"))
    async_inner = AsyncFlow(start=AsyncStep("async-inner"))
    head = Step("head")
    head >> AsyncStep("async") >> sync_inner >> async_inner >> Step("tail")
    await AsyncFlow(start=head).run_async({})
    assert log == ["head", "async", "sync-inner", "async-inner", "tail"]


def test_run_on_an_async_flow_from_sync_code_runs_it_to_completion():
    shared = {"city": "Paris"}
    assert AsyncFlow(start=Weather()).run(shared) == "done"
    assert shared["report"] == "Sunny in Paris"


def test_run_on_an_async_node_from_sync_code_runs_it_to_completion():
    shared = {"city": "Oslo"}
    assert Weather().run(shared) == "done"
    assert shared["report"] == "Sunny in Oslo"


async def test_await_run_inside_a_running_loop_runs_the_flow():
    # The Mini LLM Flow docs write `await my_flow.run(shared)` in async code.
    shared = {"city": "Rome"}
    assert await AsyncFlow(start=Weather()).run(shared) == "done"
    assert shared["report"] == "Sunny in Rome"
    shared = {"city": "Kyiv"}
    assert await Weather().run(shared) == "done"
    assert shared["report"] == "Sunny in Kyiv"


async def test_run_inside_a_running_loop_can_be_a_task_or_gathered():
    first, second = {"city": "A"}, {"city": "B"}
    flow = AsyncFlow(start=Weather())
    task = asyncio.create_task(flow.run(first))
    assert await asyncio.gather(task, flow.run(second)) == ["done", "done"]
    assert (first["report"], second["report"]) == ("Sunny in A", "Sunny in B")


async def test_run_that_is_never_awaited_warns_naming_the_flow_and_does_not_run():
    shared = {"city": "Nowhere"}
    pending = AsyncFlow(start=Weather(), name="forecast").run(shared)
    assert "await it" in repr(pending)
    with pytest.warns(RuntimeWarning, match=r"'forecast'.*never awaited.*await flow\.run"):
        del pending  # the last reference: collected at once
    assert "report" not in shared


async def test_sync_flows_keep_returning_their_action_inside_a_running_loop():
    class Plain(Node):
        def post(self, shared, prep_res, exec_res):
            return "plain"

    assert Flow(start=Plain()).run({}) == "plain"  # the last action
    assert Plain().run({}) == "plain"


async def test_sync_flow_reaching_an_async_node_is_a_clear_error():
    with pytest.raises(AsyncUsageError, match="make it an AsyncFlow") as caught:
        Flow(start=Weather(name="weather")).run({})
    assert "weather" in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_private_sync_run_of_an_async_node_raises_runtime_error():
    with pytest.raises(RuntimeError, match="run_async"):
        Weather()._run({})


def test_async_def_on_a_sync_node_is_rejected_when_the_class_is_defined():
    with pytest.raises(NodeDefinitionError, match="AsyncNode"):

        class Wrong(Node):
            async def exec(self, prep_res):
                return prep_res


def test_an_async_phase_of_a_sync_node_is_warned_of_and_its_sync_one_runs():
    with pytest.warns(NodeDefinitionWarning, match="Unused.exec_async is never called") as seen:

        class Unused(Node):
            async def exec_async(self, prep_res):
                return "async"

            def exec(self, prep_res):
                return "sync"

            def post(self, shared, prep_res, exec_res):
                shared["ran"] = exec_res

    assert "derive it from AsyncNode in place of Node" in str(seen[0].message)
    assert seen[0].filename == __file__  # at the class statement
    shared = {}
    Unused().run(shared)
    assert shared == {"ran": "sync"}
    with pytest.warns(NodeDefinitionWarning, match="AsyncBatchNode in place of BatchNode"):

        class Items(BatchNode):
            async def prep_async(self, shared):
                return []


def test_a_phase_with_a_letter_wrong_is_warned_of_and_renamed_as_it_says():
    with pytest.warns(
        NodeDefinitionWarning, match="Double.exec_asnyc looks like exec_async"
    ) as seen:

        class Double(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return [1, 2]

            async def exec_asnyc(self, item):
                return item * 2

            async def post_async(self, shared, prep_res, exec_res):
                shared["out"] = exec_res

    assert "rename it exec_async" in str(seen[0].message)
    assert seen[0].filename == __file__  # at the class statement
    shared = {}
    AsyncFlow(start=Double()).run(shared)
    assert shared == {"out": [None, None]}  # what it warned of: the inherited exec_async ran
    Double.exec_async = Double.exec_asnyc  # renamed, as it says
    shared = {}
    AsyncFlow(start=Double()).run(shared)
    assert shared == {"out": [2, 4]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Fine(Node):  # names of its own, not near a phase's
            def posts(self):
                return []

            def exec_async_batch(self):
                return []

            def exec_fallback(self, prep_res, exc):  # a phase, spelled right
                return None


async def test_sync_node_run_async_runs_it():
    class Plain(Node):
        def post(self, shared, prep_res, exec_res):
            return "plain"

    assert await Plain().run_async({}) == "plain"


async def test_async_batch_node_runs_items_in_order_and_reads_async_iterators():
    async def letters():
        for letter in "abc":
            await asyncio.sleep(0)
            yield letter

    class Upper(AsyncBatchNode):
        async def prep_async(self, shared):
            return letters()

        async def exec_async(self, item):
            return item.upper()

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Upper().run_async({}) == ["A", "B", "C"]


@pytest.mark.parametrize("prep_value", [None, []])
async def test_async_batch_node_with_no_items_gives_an_empty_list(prep_value):
    class Empty(AsyncBatchNode):
        async def prep_async(self, shared):
            return prep_value

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Empty()._run_async({}) == []


async def test_async_batch_flow_runs_the_sub_flow_per_param_set_in_order():
    seen = []

    class Read(AsyncNode):
        async def prep_async(self, shared):
            seen.append(self.params["file"])

    class Files(AsyncBatchFlow):
        async def prep(self, shared):  # the seeds' plain-name form
            return [{"file": name} for name in ("a", "b", "c")]

        async def post_async(self, shared, prep_res, exec_res):
            return ("done", exec_res)

    assert await Files(start=Read()).run_async({}) == ("done", None)
    assert seen == ["a", "b", "c"]
    assert BatchAsyncFlow is AsyncBatchFlow


async def test_async_flow_post_returns_last_action_by_default():
    class Emit(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            return "last"

    assert await AsyncFlow(start=Emit()).run_async({}) == "last"


async def test_decorated_coroutine_functions_are_awaited():
    import functools

    def logged(function):
        @functools.wraps(function)
        def wrapper(*args):
            return function(*args)

        return wrapper

    class Decorated(AsyncNode):
        @logged
        async def exec_async(self, prep_res):
            return "awaited"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Decorated().run_async({}) == "awaited"


async def test_exec_with_an_optional_second_parameter_is_not_the_old_form():
    class Optional(AsyncNode):
        async def prep_async(self, shared):
            return "item"

        async def exec_async(self, prep_res, suffix="!"):
            return prep_res + suffix

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Optional().run_async({"k": 1}) == "item!"
