"""Run budgets: a run stops before a call over its budget, or suspends to be resumed with more."""

from __future__ import annotations

import asyncio
import contextvars
import math

import pytest

from braidflow import (
    AsyncBatchNode,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Budget,
    BudgetExceeded,
    InvalidParameterError,
    Limiter,
    MemoryStore,
    Node,
    ParallelBatchNode,
    Suspended,
    interrupt,
)
from braidflow.testing import VirtualClock


class Spends(BatchNode):
    """Each item's exec reports ``tokens`` tokens (and cost 1 per 1,000)."""

    def __init__(self, tokens=30, **options):
        super().__init__(**options)
        self.tokens = tokens
        self.ran = []

    def prep(self, shared):
        return shared["items"]

    def exec(self, item):
        self.ran.append(item)
        self.report_usage(input_tokens=self.tokens, output_tokens=0, cost=self.tokens / 1000)
        return item

    def post(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"tokens": -1}, "tokens=-1 must be an int >= 0"),
        ({"tokens": 1.5}, "tokens=1.5 must be an int"),
        ({"cost": math.inf}, "cost=inf must be a finite number"),
        ({"cost": "1"}, "cost='1' must be a finite number"),
        ({}, "give tokens=, cost= or both"),
        ({"tokens": 5, "on_exceed": "pause"}, "on_exceed='pause' must be"),
    ],
)
def test_a_bad_budget_is_refused_when_made(options, said):
    with pytest.raises(InvalidParameterError, match=said):
        Budget(**options)


def test_a_run_checks_its_budget_before_it_starts():
    node = Spends()
    with pytest.raises(InvalidParameterError, match=r"budget=100 must be a braidflow\.Budget"):
        node.run({"items": [1]}, budget=100)
    with pytest.raises(InvalidParameterError, match="needs a durable run"):
        node.run({"items": [1]}, budget=Budget(tokens=5, on_exceed="suspend"))
    assert node.ran == []


def test_a_run_stops_before_the_call_over_its_budget():
    node = Spends(tokens=30)
    with pytest.raises(BudgetExceeded) as caught:
        node.run({"items": list(range(10))}, budget=Budget(tokens=100))
    error = caught.value
    # 0..3 ran (30, 60, 90 < 100, then 120): item 4 would have gone over.
    assert node.ran == [0, 1, 2, 3]
    assert error.item_index == 4
    assert error.node == "Spends"
    assert (error.spent.tokens, error.spent.calls) == (120, 4)
    assert error.spent.cost == pytest.approx(0.12)
    assert "item 4" in str(error)
    assert "120 tokens spent, budget 100" in str(error)


def test_a_cost_budget_stops_the_run_too():
    node = Spends(tokens=500)
    with pytest.raises(BudgetExceeded, match="cost 1 spent, budget 1"):
        node.run({"items": list(range(5))}, budget=Budget(cost=1.0))
    assert node.ran == [0, 1]


def test_a_budget_not_reached_changes_nothing():
    shared = {"items": [1, 2, 3]}
    Spends().run(shared, budget=Budget(tokens=1000))
    assert shared["out"] == [1, 2, 3]


async def test_calls_in_flight_finish_and_count_and_nothing_more_starts():
    gates = [asyncio.Event() for _ in range(6)]
    log = []

    class Parallel(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):
            log.append(("start", item))
            await gates[item].wait()
            self.report_usage(input_tokens=50)
            log.append(("end", item))
            return item

    async def started(count):
        while sum(1 for kind, _ in log if kind == "start") < count:
            await asyncio.sleep(0)

    node = Parallel(max_concurrency=3)
    run = asyncio.ensure_future(node.run_async({}, budget=Budget(tokens=100)))
    await started(3)
    gates[0].set()  # 50 spent: item 3 starts
    await started(4)
    gates[1].set()  # 100 spent: the budget is reached with items 2 and 3 in flight
    while ("end", 1) not in log:
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    assert ("start", 4) not in log
    gates[2].set()
    gates[3].set()
    with pytest.raises(BudgetExceeded) as caught:
        await run
    # Those in flight when it was reached finished (not cancelled) and count.
    assert {entry for entry in log if entry[0] == "end"} == {("end", i) for i in range(4)}
    assert caught.value.spent.tokens == 200  # 100 + the two calls in flight
    assert caught.value.item_index == 4  # the first refused
    assert ("start", 4) not in log
    assert ("start", 5) not in log


@pytest.mark.parametrize("on_exceed", ["raise", "suspend"])
async def test_the_stop_names_the_first_item_refused_though_a_later_one_finds_no_call_in_flight(
    on_exceed,
):
    # Item 2 finds the budget reached with item 1 in flight and waits for it;
    # item 3 is refused once item 1 has ended, with no call in flight: the
    # run still stops at item 2, and item 3's error (if it raises) says so.
    clock, one_started, release = VirtualClock(), asyncio.Event(), asyncio.Event()
    calls, events = [], []

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):
            calls.append(item)
            if item == 0:
                await one_started.wait()
            else:
                one_started.set()
                await release.wait()
            self.report_usage(input_tokens=100)
            return item

    async def until(condition):
        while not condition():
            await asyncio.sleep(0)

    options = {"store": MemoryStore(), "run_id": "r"} if on_exceed == "suspend" else {}
    run = asyncio.ensure_future(
        Calls(max_concurrency=2).run_async(
            {},
            budget=Budget(tokens=100, on_exceed=on_exceed),
            clock=clock,
            observers=[events.append],
            **options,
        )
    )
    await until(lambda: clock.sleepers == 1)  # item 2 waits for item 1's call
    release.set()
    await until(lambda: run.done() or clock.sleepers == 2)  # item 3 refused
    clock.advance(1)
    with pytest.raises(BudgetExceeded if on_exceed == "raise" else Suspended) as caught:
        await run
    assert calls == [0, 1]
    if on_exceed == "suspend":  # (no error event: the run waits)
        assert "node 'Calls' item 2:" in options["store"].get("r").prompt["budget"]
        error = caught.value.__cause__
    else:
        error = caught.value
        failed = [event for event in events if event.kind == "error" and event.item is not None]
        assert failed[0].item == 2
        assert all(event.error.item_index == 2 for event in failed)
    assert (error.node, error.item_index) == ("Calls", 2)
    assert "node 'Calls' item 2:" in str(error)


def test_a_durable_run_suspends_and_resumes_with_a_higher_budget():
    store = MemoryStore()
    node = Spends(tokens=30)
    with pytest.raises(Suspended) as caught:
        node.run(
            {"items": list(range(5))},
            store=store,
            run_id="r1",
            budget=Budget(tokens=60, on_exceed="suspend"),
        )
    assert node.ran == [0, 1]
    assert "budget=Budget(...)" in str(caught.value)
    record = store.get("r1")
    assert record.status == "waiting"
    assert "60 tokens spent, budget 60" in record.prompt["budget"]
    assert record.metadata["braidflow.usage"]["input_tokens"] == 60

    # Still too little: it stops again at once, having redone nothing.
    with pytest.raises(Suspended):
        node.resume("r1", store=store, budget=Budget(tokens=60, on_exceed="suspend"))
    assert node.ran == [0, 1]

    shared = node.resume("r1", store=store, budget=Budget(tokens=1000))
    assert node.ran == [0, 1, 2, 3, 4]  # the first two were not redone
    assert shared["out"] == [0, 1, 2, 3, 4]
    record = store.get("r1")
    assert record.status == "completed"
    assert record.metadata["braidflow.usage"]["input_tokens"] == 150
    assert record.metadata["braidflow.usage"]["calls"] == 5


def test_a_durable_run_that_raises_keeps_what_it_spent():
    store = MemoryStore()
    node = Spends(tokens=30)
    with pytest.raises(BudgetExceeded):
        node.run({"items": [1, 2, 3]}, store=store, run_id="r", budget=Budget(tokens=30))
    record = store.get("r")
    assert record.status == "failed"
    assert record.metadata["braidflow.usage"] == {
        "input_tokens": 30,
        "output_tokens": 0,
        "cost": pytest.approx(0.03),
        "model": None,
        "calls": 1,
    }


def test_a_budget_applies_to_plain_nodes_on_the_fast_path():
    calls = []

    class Call(Node):
        def exec(self, _):
            calls.append(1)
            self.report_usage(input_tokens=10)

    first = Call()
    second = Call()
    first >> second
    from braidflow import Flow

    with pytest.raises(BudgetExceeded) as caught:
        Flow(start=first).run({}, budget=Budget(tokens=10))
    assert len(calls) == 1
    assert caught.value.node.startswith("Call")


def test_retries_do_not_retry_a_spent_budget():
    class Flaky(Node):
        def exec(self, _):
            self.report_usage(input_tokens=10)
            raise ValueError("again")

    with pytest.raises(BudgetExceeded):
        Flaky(max_retries=5).run({}, budget=Budget(tokens=20))


def test_the_timeline_of_a_run_waiting_at_its_budget_says_it_waits():
    from braidflow.tracing._timeline import timeline_data

    events = []
    with pytest.raises(Suspended):
        Spends(tokens=30).run(
            {"items": [1, 2, 3]},
            store=MemoryStore(),
            observers=[events.append],
            budget=Budget(tokens=30, on_exceed="suspend"),
        )
    data = timeline_data(events)
    assert data["run"]["ended"] == "waiting"
    assert data["run"]["tokens"] == 30
    assert not any(text.startswith("error:") for text in data["info"])


def test_under_collect_the_items_stopped_are_failures_and_nothing_more_is_called():
    from braidflow import Failure, ParallelBatchNode

    calls = []

    class Calls(ParallelBatchNode):
        def prep(self, shared):
            return list(range(6))

        def exec(self, item):
            calls.append(item)
            self.report_usage(input_tokens=100)
            return item

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    Calls(max_concurrency=1, on_error="collect").run(shared, budget=Budget(tokens=250))
    assert calls == [0, 1, 2]
    assert shared["results"][:3] == [0, 1, 2]
    stopped = shared["results"][3:]
    assert all(isinstance(failure, Failure) for failure in stopped)
    assert all(isinstance(failure.error, BudgetExceeded) for failure in stopped)


async def test_an_attempt_stopped_by_the_budget_gives_back_its_limiter_slots_first():
    # A's call is in flight when it spends the budget, then asks for one more
    # slot; C ends and B takes its slot, finds the budget reached and waits
    # for A to finish: holding that slot, it would wait forever.
    api = Limiter(2, name="api")
    reported, c_running = asyncio.Event(), asyncio.Event()

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["A", "C", "B"]

        async def exec_async(self, item):
            if item == "A":
                await c_running.wait()
                self.report_usage(input_tokens=100)
                reported.set()
                async with api:  # a follow-up call of its own
                    return item
            if item == "C":
                c_running.set()
                await reported.wait()
            return item

    with pytest.raises(BudgetExceeded, match="node 'Calls' item 2"):
        await Calls(limits=[api]).run_async({}, budget=Budget(tokens=100))
    statistics = api.statistics()
    assert (statistics.in_flight, statistics.waiting) == (0, 0)


def test_a_run_inside_another_run_s_exec_waits_for_its_own_calls_in_flight():
    # The outer run's attempt encloses the inner run; the inner run's stop
    # must still wait for the inner call in flight (it counted the outer one).
    from braidflow import Usage
    from braidflow._budget import attempt_ended, attempt_started, stop_at_budget
    from braidflow._usage import Spend

    outer, inner = Spend(Budget(tokens=10**9)), Spend(Budget(tokens=1))
    enclosing = attempt_started(outer)  # the outer node's exec runs the inner run
    try:
        inner.add(Usage(input_tokens=5))
        item = contextvars.copy_context()  # another item's task (or thread)
        in_flight = item.run(attempt_started, inner)  # its call is still going on
        stopping = stop_at_budget(inner, Node(), 3, "sleep")
        assert next(stopping)[0] == "sleep"  # it waits for that call
        item.run(attempt_ended, inner, in_flight)
        with pytest.raises(BudgetExceeded, match="item 3"):
            next(stopping)
    finally:
        attempt_ended(outer, enclosing)


def test_usage_with_no_cost_under_a_cost_budget_is_refused_naming_the_node():
    class NoCost(BatchNode):
        def prep(self, shared):
            return [1, 2, 3]

        def exec(self, item):
            self.report_usage(input_tokens=500, output_tokens=15)  # no prices given

    with pytest.raises(InvalidParameterError, match="node 'NoCost' reported usage with no cost"):
        NoCost().run({}, budget=Budget(cost=0.0001))
    NoCost().run({}, budget=Budget(tokens=10**6))  # a token budget needs no cost


class CostlessCalls:
    """Each exec makes a paid call and reports it with no cost; the fallback
    would give a default (and is counted)."""

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = []
        self.fell_back = []

    def prep(self, shared):
        return [1, 2, 3]

    def exec(self, item):
        self.calls.append(item)
        self.report_usage(input_tokens=500, output_tokens=15)  # no prices given

    def exec_fallback(self, item, exc):
        self.fell_back.append(exc)
        return "default"


class AsyncCostlessCalls(CostlessCalls):
    async def prep_async(self, shared):
        return [1, 2, 3]

    async def exec_async(self, item):
        CostlessCalls.exec(self, item)

    async def exec_fallback_async(self, item, exc):
        return CostlessCalls.exec_fallback(self, item, exc)


@pytest.mark.parametrize(
    "kind",
    [Node, BatchNode, ParallelBatchNode, AsyncNode, AsyncBatchNode, AsyncParallelBatchNode],
)
@pytest.mark.parametrize("options", [{}, {"max_retries": 3}])
def test_usage_with_no_cost_under_a_cost_budget_is_not_handed_to_the_fallback(kind, options):
    # The fallback's default would hide the refusal: every item would make its
    # paid call, the budget counting none of them.
    base = AsyncCostlessCalls if kind._bf_async else CostlessCalls
    node = type(f"Costless{kind.__name__}", (base, kind), {})(name="summarize", **options)
    with pytest.raises(
        InvalidParameterError, match=r"node 'summarize' .* reported usage with no cost"
    ):
        node.run({}, budget=Budget(cost=0.0001))
    assert node.fell_back == []
    if not kind.__name__.endswith("ParallelBatchNode"):  # (parallel items start at once)
        assert len(node.calls) == 1


# -- a budget stop while questions wait elsewhere in the run ---------------------------


class Ask(AsyncNode):
    async def exec_async(self, prep_res):
        return interrupt("approve?")

    async def post_async(self, shared, prep_res, exec_res):
        shared["approved"] = exec_res


class Spend(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(10)

    async def exec_async(self, item):
        self.report_usage(input_tokens=100)
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["spent"] = len(exec_res)


def asking_and_spending():
    start = AsyncNode(name="start")
    start >> [Ask(name="ask"), Spend(name="spend", max_concurrency=1)]
    return AsyncFlow(start=start)


def test_a_budget_stop_keeps_the_questions_asked_in_other_branches():
    store = MemoryStore()
    with pytest.raises(Suspended) as waiting:
        asyncio.run(
            asking_and_spending().run_async(
                {}, store=store, run_id="m", budget=Budget(tokens=300, on_exceed="suspend")
            )
        )
    assert waiting.value.reason == "budget"
    assert [question.prompt for question in waiting.value.questions] == ["approve?"]
    assert store.get("m").questions == waiting.value.questions
    shared = asyncio.run(
        asking_and_spending().resume_async(
            "m", store=store, input="yes", budget=Budget(tokens=5_000)
        )
    )
    assert shared["approved"] == "yes"
    assert shared["spent"] == 10


def test_a_budget_stop_keeps_the_questions_other_items_asked():
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(6)

        async def exec_async(self, item):
            if item == 0:  # the first to start: it asks before the budget is reached
                return interrupt(f"approve {item}?")
            self.report_usage(input_tokens=100)
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    store = MemoryStore()
    flow = AsyncFlow(start=Items(name="items", max_concurrency=2))
    with pytest.raises(Suspended) as waiting:
        asyncio.run(
            flow.run_async(
                {}, store=store, run_id="b", budget=Budget(tokens=200, on_exceed="suspend")
            )
        )
    assert [question.item for question in waiting.value.questions] == [0]
    shared = asyncio.run(
        flow.resume_async("b", store=store, input="ok", budget=Budget(tokens=5_000))
    )
    assert shared["items"] == ["ok", 1, 2, 3, 4, 5]
