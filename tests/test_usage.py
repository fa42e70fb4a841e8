"""Usage reported once from exec, seen everywhere: events, Progress, OpenTelemetry,
the Timeline, the stored record and `braidflow runs`; read from the openai SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io

import openai
import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    BatchNode,
    Budget,
    BudgetExceeded,
    Flow,
    InvalidParameterError,
    MemoryStore,
    Node,
    Retry,
    SQLiteStore,
    Usage,
)
from braidflow.cli import main as cli_main
from braidflow.llm import Prices, usage_from_openai
from braidflow.tracing import OpenTelemetry, Progress
from braidflow.tracing._timeline import timeline_data
from fake_openai import ChatAPI


class Calls(BatchNode):
    def prep(self, shared):
        return [10, 20, 30]

    def exec(self, tokens):
        self.report_usage(
            input_tokens=tokens, output_tokens=tokens // 10, cost=tokens / 100, model="m1"
        )
        return tokens


def test_usages_add_up():
    total = Usage(10, 1, 0.5, "m") + Usage(20, 2, None, "m") + Usage(5, 0, 0.25, "n")
    assert (total.input_tokens, total.output_tokens, total.calls) == (35, 3, 3)
    assert total.cost == 0.75
    assert total.model is None
    assert total.tokens == 38
    assert Usage.from_dict(total.as_dict()) == total


def test_each_report_is_a_usage_event():
    events = []
    Calls().run({}, observers=[events.append])
    used = [event for event in events if event.kind == "usage"]
    assert [(e.item, e.data["input_tokens"], e.data["model"]) for e in used] == [
        (0, 10, "m1"),
        (1, 20, "m1"),
        (2, 30, "m1"),
    ]


def test_progress_counts_tokens_and_cost():
    from rich.console import Console

    progress = Progress(Console(file=io.StringIO(), width=120))
    Calls().run({}, observers=[progress])
    assert progress.usage.tokens == 66
    assert progress.usage.cost == pytest.approx(0.6)
    [row] = progress._rows()
    assert "66 tokens" in row.numbers_text()
    assert "cost 0.6" in row.numbers_text()


def test_opentelemetry_spans_carry_gen_ai_usage():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Calls().run({}, observers=[OpenTelemetry(provider)])
    provider.shutdown()
    by_name = {span.name: span.attributes for span in exporter.get_finished_spans()}
    assert by_name["Calls[1]"]["gen_ai.usage.input_tokens"] == 20
    assert by_name["Calls[1]"]["gen_ai.usage.output_tokens"] == 2
    assert by_name["Calls[1]"]["gen_ai.response.model"] == "m1"
    run = by_name["braidflow run Calls"]
    assert run["gen_ai.usage.input_tokens"] == 60
    assert run["braidflow.cost"] == pytest.approx(0.6)
    assert run["gen_ai.response.model"] == "m1"  # every call used m1

    class Review(Node):
        def exec(self, prep_res):
            self.report_usage(input_tokens=5, model="m2")

    calls = Calls()
    calls >> Review()
    exporter = InMemorySpanExporter()  # (the first one shut down with its provider)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    Flow(start=calls, name="two").run({}, observers=[OpenTelemetry(provider)])
    provider.shutdown()
    by_name = {span.name: span.attributes for span in exporter.get_finished_spans()}
    run = by_name["braidflow run two"]
    assert run["gen_ai.usage.input_tokens"] == 65
    assert "gen_ai.response.model" not in run  # two models: none is the run's


def test_the_timeline_marks_each_call_and_sums_the_run():
    events = []
    Calls().run({}, observers=[events.append])
    data = timeline_data(events)
    assert data["run"]["tokens"] == 66
    assert data["run"]["cost"] == pytest.approx(0.6)
    assert sum("usage: 22 tokens (20 in, 2 out)" in text for text in data["info"]) == 1


def test_the_stored_record_keeps_the_usage_and_braidflow_runs_shows_it(tmp_path, capsys):
    path = tmp_path / "runs.db"
    Calls().run({}, store=SQLiteStore(path), run_id="spent")
    record = SQLiteStore(path).runs()[0]
    assert (record.usage.tokens, record.usage.model, record.usage.calls) == (66, "m1", 3)
    assert record.usage.cost == pytest.approx(0.6)
    assert MemoryStore().runs() == []
    assert cli_main(["runs", "--store", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TOKENS" in out
    assert "COST" in out
    assert "66" in out.splitlines()[1]
    assert "0.6" in out.splitlines()[1]


def test_a_run_s_usage_is_in_the_store_while_it_goes_on_not_only_at_its_end():
    """What a run killed now would leave: its first report is written at once
    (then at most once a second), so a crash does not lose what it spent."""
    store, seen = MemoryStore(), []

    class Spends(Node):
        def exec(self, prep_res):
            self.report_usage(input_tokens=100, output_tokens=5, model="m1")

    class Looks(Node):
        def exec(self, prep_res):
            seen.append(store.get("going").usage)

    first = Spends()
    first >> Looks()
    Flow(start=first).run({}, store=store, run_id="going")
    assert (seen[0].tokens, seen[0].calls) == (105, 1)


def test_a_report_made_soon_after_another_is_in_the_store_within_a_period(monkeypatch):
    """A long call after two reports: the second is written when the period
    ends, not only with the next report (which may never come before a kill)."""
    import threading
    import time

    from braidflow.durable import _usage_writes

    monkeypatch.setattr(_usage_writes, "USAGE_PERIOD", 0.05)
    store, released = MemoryStore(), threading.Event()

    class Spends(Node):
        def exec(self, prep_res):
            self.report_usage(input_tokens=100)
            self.report_usage(input_tokens=100)  # within the period: written at its end
            deadline = time.monotonic() + 30  # (only a broken run waits that long)
            while store.get("long").usage.calls < 2 and time.monotonic() < deadline:
                released.wait(0.01)  # a long call: no report comes meanwhile
            return store.get("long").usage.calls

        def post(self, shared, prep_res, exec_res):
            shared["seen"] = exec_res

    before = set(threading.enumerate())
    shared = {}
    Flow(start=Spends()).run(shared, store=store, run_id="long")
    assert shared["seen"] == 2
    assert set(threading.enumerate()) - before == set()  # no timer outlives the run


def test_a_run_that_reports_nothing_has_no_usage():
    store = MemoryStore()
    BatchNode().run({}, store=store, run_id="quiet")
    assert store.get("quiet").usage is None


def test_prices_are_checked_and_a_dated_name_finds_its_model_s_price():
    prices = Prices({"gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10)})
    assert prices.of("gpt-4o-mini-2024-07-18") == (0.15, 0.6)
    assert prices.cost("gpt-4o-2024-08-06", 1_000_000, 0) == 2.5
    assert prices.of("gpt-4o-0513") == (2.5, 10)  # a snapshot number
    with pytest.raises(InvalidParameterError, match="no price for model 'o3'"):
        prices.of("o3")
    # Another model whose name begins with a priced one's is not priced as it.
    for other in ("gpt-4o-mini-tts", "gpt-4o-audio-preview", "gpt-4o-2"):
        with pytest.raises(InvalidParameterError, match=f"no price for model {other!r}"):
            prices.of(other)
    assert Prices({"gpt-4": (30, 60)}).of("gpt-4-0613") == (30, 60)
    with pytest.raises(InvalidParameterError, match=r"no price for model 'gpt-4\.1'"):
        Prices({"gpt-4": (30, 60)}).of("gpt-4.1")
    bedrock = Prices({"anthropic.claude-3-sonnet": (3, 15)})
    assert bedrock.of("anthropic.claude-3-sonnet-20240229-v1:0") == (3, 15)
    with pytest.raises(InvalidParameterError, match="two finite numbers"):
        Prices({"m": (1, -1)})
    with pytest.raises(InvalidParameterError, match="give a dict"):
        Prices([("m", (1, 1))])  # type: ignore[arg-type]


async def test_usage_from_openai_reads_plain_and_streamed_responses():
    prices = Prices({"local": (1.0, 2.0)})
    with ChatAPI() as api:
        client = openai.AsyncOpenAI(base_url=api.url, api_key="local")
        messages = [{"role": "user", "content": "one two three"}]
        plain = await client.chat.completions.create(model="local", messages=messages)
        usage = usage_from_openai(plain, prices=prices)
        assert usage.input_tokens == plain.usage.prompt_tokens == 3
        assert usage.output_tokens == plain.usage.completion_tokens
        assert usage.model == "local"
        assert usage.cost == pytest.approx((3 * 1.0 + usage.output_tokens * 2.0) / 1e6)
        stream = await client.chat.completions.create(
            model="local",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert usage_from_openai(chunks) == Usage(3, usage.output_tokens, None, "local")
        assert usage_from_openai(chunks[-1]).tokens == usage.tokens
        bare = await client.chat.completions.create(model="local", messages=messages, stream=True)
        without = [chunk async for chunk in bare]
        with pytest.raises(InvalidParameterError, match="include_usage"):
            usage_from_openai(without)
        await client.close()


def test_usage_from_a_responses_api_dict():
    response = {"model": "x", "usage": {"input_tokens": 7, "output_tokens": 3}}
    assert usage_from_openai(response) == Usage(7, 3, None, "x")
    with pytest.raises(InvalidParameterError, match="no model to price"):
        usage_from_openai({"usage": {"input_tokens": 1, "output_tokens": 1}}, prices=Prices({}))


@pytest.mark.parametrize("policy", [{"max_retries": 3}, {"retry": Retry(attempts=3)}])
def test_a_model_with_no_price_is_not_retried(policy):
    # Each attempt would make its paid call again, and fail pricing it again.
    prices = Prices({"gpt-4o": (2.5, 10.0)})
    response = {"model": "o3", "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
    calls = []

    class Ask(Node):
        def exec(self, prep_res):
            calls.append(self.cur_retry)
            self.report_usage(usage_from_openai(response, prices=prices))

    class AskAsync(AsyncNode):
        async def exec_async(self, prep_res):
            calls.append(self.cur_retry)
            self.report_usage(usage_from_openai(response, prices=prices))

    with pytest.raises(InvalidParameterError, match="o3"):
        Ask(**policy).run({})
    assert calls == [0]
    calls.clear()
    with pytest.raises(InvalidParameterError, match="o3"):
        asyncio.run(AsyncFlow(start=AskAsync(**policy)).run_async({}))
    assert calls == [0]


def test_an_error_of_the_users_own_is_still_retried():
    calls = []

    class Flaky(Node):
        def exec(self, prep_res):
            calls.append(self.cur_retry)
            if self.cur_retry < 2:
                raise ValueError("not yet")
            return "ok"

        def post(self, shared, prep_res, exec_res):
            shared["got"] = exec_res

    shared = {}
    Flaky(max_retries=3).run(shared)
    assert calls == [0, 1, 2]
    assert shared["got"] == "ok"


class Inner(Node):
    def exec(self, prep_res):
        self.report_usage(input_tokens=100, output_tokens=10, cost=0.5, model="m1")


class Agent(BatchNode):
    """Each item runs a flow of its own inside exec: a run started in this run's node."""

    def prep(self, shared):
        return range(4)

    def exec(self, item):
        Flow(start=Inner()).run({})
        return item

    def post(self, shared, prep_res, exec_res):
        shared["done"] = exec_res


def test_a_run_started_inside_a_node_counts_in_the_run_around_it():
    store = MemoryStore()
    events = []
    Flow(start=Agent()).run({}, store=store, run_id="outer", observers=[events.append])
    usage = store.get("outer").usage
    assert (usage.calls, usage.input_tokens, usage.output_tokens) == (4, 400, 40)
    assert usage.cost == pytest.approx(2.0)
    used = [event for event in events if event.kind == "usage"]
    assert [event.node for event in used] == ["Agent"] * 4  # the node that ran it
    assert sorted(event.item for event in used) == [0, 1, 2, 3]


def test_the_budget_of_the_run_around_stops_it_after_a_run_inside():
    with pytest.raises(BudgetExceeded) as stopped:
        Flow(start=Agent()).run({}, budget=Budget(tokens=200))
    assert stopped.value.item_index == 2  # two inner runs of 110 tokens: 220, over 200
    assert stopped.value.spent.tokens == 220


def test_usage_with_no_cost_inside_a_run_with_a_cost_budget_is_refused():
    class Costless(Node):
        def exec(self, prep_res):
            self.report_usage(input_tokens=100)

    class Around(Node):
        def exec(self, prep_res):
            Flow(start=Costless()).run({})

    with pytest.raises(InvalidParameterError, match="the run its run was started in has a cost"):
        Around().run({}, budget=Budget(cost=1.0))


def test_a_sync_parallel_batch_run_inside_a_running_loop_keeps_its_run():
    # Its items run on a private loop in a helper thread: they must see the
    # run (its usage, events and budget), not an empty context.
    from braidflow import ParallelBatchNode

    class Calls(ParallelBatchNode):
        def prep(self, shared):
            return [0, 1]

        def exec(self, item):
            self.report_usage(input_tokens=10)
            return item

    events = []

    async def in_a_loop():
        return Flow(start=Calls(name="calls")).run({}, observers=[events.append])

    asyncio.run(in_a_loop())
    assert [event.data["input_tokens"] for event in events if event.kind == "usage"] == [10, 10]
    assert sorted(event.item for event in events if event.kind == "item_end") == [0, 1]

    class Outer(Node):  # the same, run from a sync node of an AsyncFlow, counted there too
        def exec(self, prep_res):
            Flow(start=Calls(name="calls")).run({})

    outer_events = []
    asyncio.run(AsyncFlow(start=Outer(name="outer")).run_async({}, observers=[outer_events.append]))
    assert [event.node for event in outer_events if event.kind == "usage"] == ["outer", "outer"]


def test_usage_from_an_embeddings_response_is_all_input_tokens():
    response = openai.types.CreateEmbeddingResponse.model_validate(
        {
            "data": [{"embedding": [0.1], "index": 0, "object": "embedding"}],
            "model": "text-embedding-3-small",
            "object": "list",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},  # no completion_tokens
        }
    )
    prices = Prices({"text-embedding-3-small": (0.02, 0.0)})
    assert usage_from_openai(response, prices=prices) == Usage(
        8, 0, 8 * 0.02 / 1e6, "text-embedding-3-small"
    )
    assert usage_from_openai(response.model_dump()).tokens == 8


class Fan(BatchNode):
    """Each item makes its two calls on a thread pool, each reporting 50 tokens
    there: in the run's context if ``copy``, else in the pool's own."""

    def __init__(self, copy, **options):
        super().__init__(**options)
        self.copy = copy

    def prep(self, shared):
        return range(3)

    def exec(self, item):
        def call(prompt):
            self.report_usage(input_tokens=40, output_tokens=10)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            if self.copy:  # the advice: a copy of the run's context per call
                submitted = [pool.submit(contextvars.copy_context().run, call, p) for p in "ab"]
            else:
                submitted = [pool.submit(call, p) for p in "ab"]
            for future in submitted:
                future.result()


def test_a_report_from_a_thread_that_does_not_see_the_run_warns_and_its_context_counts():
    with pytest.warns(RuntimeWarning, match=r"node 'Fan'.*counts nowhere") as warned:
        Fan(copy=False).run({}, budget=Budget(tokens=100))  # no stop: nothing counted
    assert "contextvars.copy_context().run" in str(warned[0].message)
    assert warned[0].filename == __file__  # where report_usage was called
    store = MemoryStore()
    with pytest.raises(BudgetExceeded) as stopped:  # (and no warning: warnings are errors)
        Fan(copy=True).run({}, store=store, run_id="r", budget=Budget(tokens=100))
    assert (stopped.value.item_index, stopped.value.spent.tokens) == (1, 100)
    assert store.get("r").usage.calls == 2


async def test_a_report_from_asyncio_to_thread_counts_and_from_run_in_executor_warns():
    class Offloads(AsyncNode):
        async def exec_async(self, prep_res):
            def call():
                self.report_usage(input_tokens=40, output_tokens=10)

            await asyncio.to_thread(call)  # copies the context: counts
            with pytest.warns(RuntimeWarning, match="counts nowhere"):
                await asyncio.get_running_loop().run_in_executor(None, call)  # does not

    events = []
    await Offloads().run_async({}, observers=[events.append])
    assert [event.data["input_tokens"] for event in events if event.kind == "usage"] == [40]


def test_a_report_outside_any_run_says_nothing():
    Calls().exec(10)  # (warnings are errors here)
