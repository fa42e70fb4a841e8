"""Observers and events: what a run reports, in order, from every node kind."""

import asyncio
import threading
from contextlib import aclosing

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    Event,
    Flow,
    InvalidParameterError,
    Limiter,
    MemoryStore,
    Node,
    ParallelBatchNode,
    Suspended,
    interrupt,
)
from braidflow.testing import other_tasks


class Recorder:
    """An observer with an on_event method that keeps every event."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def on_event(self, event):
        with self.lock:
            self.events.append(event)

    def kinds(self, *wanted):
        return [e.kind for e in self.events if not wanted or e.kind in wanted]

    def of(self, kind):
        return [e for e in self.events if e.kind == kind]


class Step(Node):
    def post(self, shared, prep_res, exec_res):
        shared.setdefault("steps", []).append(self.name)


class AsyncStep(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared.setdefault("steps", []).append(self.name)


def test_a_sync_flow_reports_run_and_node_events_in_order():
    recorder = Recorder()
    first = Step(name="first")
    first >> Step(name="second")
    Flow(start=first, name="main").run({}, observers=[recorder])
    assert [(e.kind, e.node, e.path) for e in recorder.events] == [
        ("run_start", "main", ("main",)),
        ("node_start", "main", ("main",)),
        ("node_start", "first", ("main", "first")),
        ("node_end", "first", ("main", "first")),
        ("node_start", "second", ("main", "second")),
        ("node_end", "second", ("main", "second")),
        ("node_end", "main", ("main",)),
        ("run_end", "main", ("main",)),
    ]
    run_ids = {e.run_id for e in recorder.events}
    assert len(run_ids) == 1
    assert len(run_ids.pop()) == 32
    times = [e.time for e in recorder.events]
    assert times == sorted(times)
    ends = [e for e in recorder.events if e.kind.endswith("_end")]
    assert all(e.duration is not None and e.duration >= 0 and e.error is None for e in ends)


async def test_nested_flows_and_batch_items_report_paths_and_indexes():
    recorder = Recorder()

    class Square(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1, 2, 3]

        async def exec_async(self, item):
            return item * item

        async def post_async(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res

    inner = AsyncFlow(start=Square(name="square", max_concurrency=2), name="inner")
    await AsyncFlow(start=inner, name="outer").run_async({}, observers=[recorder])
    items = recorder.of("item_start")
    assert sorted(e.item for e in items) == [0, 1, 2]
    assert {e.path for e in items} == {("outer", "inner", "square")}
    assert {e.data["total"] for e in items} == {3}
    assert sorted(e.item for e in recorder.of("item_end")) == [0, 1, 2]
    node_paths = [e.path for e in recorder.of("node_start")]
    assert node_paths == [("outer",), ("outer", "inner"), ("outer", "inner", "square")]


async def test_sub_flows_of_a_parallel_batch_flow_have_distinct_paths():
    recorder = Recorder()

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": n} for n in range(3)]

    await Sets(start=AsyncStep(name="work"), name="sets").run_async({}, observers=recorder)
    paths = sorted(e.path for e in recorder.of("node_start") if e.node == "work")
    assert paths == [("sets[0]", "work"), ("sets[1]", "work"), ("sets[2]", "work")]
    assert sorted(e.item for e in recorder.of("item_start")) == [0, 1, 2]


def test_two_nodes_with_one_name_get_stable_suffixes():
    recorder = Recorder()
    first, second, third = Step(), Step(), Step(name="other")
    first >> second >> third
    Flow(start=first, name="main").run({}, observers=[recorder])
    assert [e.node for e in recorder.of("node_start")] == ["main", "Step", "Step#2", "other"]


async def test_retries_limiter_waits_errors_and_failed_items_are_reported():
    recorder = Recorder()
    limiter = Limiter(1, name="api")
    gate = asyncio.Event()

    class Flaky(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["ok", "flaky", "bad"]

        async def exec_async(self, item):
            if item == "ok":
                await gate.wait()
            if item == "flaky" and self.cur_retry == 0:
                raise ConnectionError("once")
            if item == "bad":
                raise ValueError("always")
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    async def open_gate():
        while limiter.statistics().waiting < 2:
            await asyncio.sleep(0)
        gate.set()

    opener = asyncio.create_task(open_gate())
    node = Flaky(name="flaky", max_retries=2, limits=[limiter], on_error="collect")
    await node.run_async({}, observers=[recorder])
    await opener
    retries = recorder.of("retry")
    assert [(e.item, e.attempt, type(e.error)) for e in retries if e.item == 1] == [
        (1, 0, ConnectionError)
    ]
    assert all(e.data["delay"] == 0 for e in retries)
    waits = recorder.of("limiter_wait")
    assert waits
    assert all(e.data == {"limiters": ["api"]} and e.duration >= 0 for e in waits)
    errors = [e for e in recorder.of("error") if e.item is not None]
    assert [(e.item, type(e.error)) for e in errors] == [(2, ValueError)]
    failed_end = [e for e in recorder.of("item_end") if e.item == 2]
    assert isinstance(failed_end[0].error, ValueError)


async def test_a_limiter_wait_is_reported_when_it_starts_and_when_it_ends():
    recorder = Recorder()
    limiter = Limiter(1, name="api")
    gate = asyncio.Event()

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            if item == 0:
                await gate.wait()
            return item

    async def open_gate():
        while limiter.statistics().waiting < 2:
            await asyncio.sleep(0)
        gate.set()

    opener = asyncio.create_task(open_gate())
    await Calls(name="calls", limits=[limiter]).run_async({}, observers=[recorder])
    await opener
    waits = recorder.kinds("limiter_wait_start", "limiter_wait")
    assert waits.count("limiter_wait_start") == waits.count("limiter_wait") == 2
    for item in (1, 2):
        start, end = [
            e for e in recorder.events if e.kind.startswith("limiter_wait") and e.item == item
        ]
        assert (start.kind, end.kind) == ("limiter_wait_start", "limiter_wait")
        assert start.data == end.data == {"limiters": ["api"]}
        assert start.attempt == end.attempt == 0
        assert start.duration is None
        assert end.duration >= 0
        assert start.path == end.path == ("calls",)
    # Items started, less those waiting, never outnumber the limiter's slots
    # (an item that finds the limiter full says so right after item_start).
    running, seen = 0, []
    for event in recorder.events:
        running += {"item_start": 1, "item_end": -1, "limiter_wait_start": -1}.get(event.kind, 0)
        running += event.kind == "limiter_wait"
        if event.kind != "item_start":
            seen.append(running)
    assert max(seen) == 1


async def test_a_limiter_wait_cut_short_ends_with_its_item():
    recorder = Recorder()
    limiter = Limiter(1, name="api")
    holding = asyncio.Event()

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            holding.set()
            await asyncio.Event().wait()

    run = asyncio.create_task(Calls(limits=[limiter]).run_async({}, observers=[recorder]))
    await holding.wait()
    while limiter.statistics().waiting < 1:
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert [e.item for e in recorder.of("limiter_wait_start")] == [1]
    assert recorder.of("limiter_wait") == []
    ended = next(e for e in recorder.of("item_end") if e.item == 1)
    assert isinstance(ended.error, asyncio.CancelledError)


def test_a_failing_run_reports_the_error_on_node_end_and_run_end():
    recorder = Recorder()

    class Broken(Node):
        def exec(self, prep_res):
            raise KeyError("missing")

    with pytest.raises(KeyError):
        Flow(start=Broken(name="broken"), name="main").run({}, observers=[recorder])
    assert recorder.kinds() == [
        "run_start",
        "node_start",
        "node_start",
        "error",
        "node_end",
        "error",
        "node_end",
        "run_end",
    ]
    run_end = recorder.of("run_end")[0]
    assert isinstance(run_end.error, KeyError)


async def test_a_cancelled_run_reports_the_cancellation_on_run_end():
    recorder = Recorder()
    started = asyncio.Event()

    class Waits(AsyncNode):
        async def exec_async(self, prep_res):
            started.set()
            await asyncio.Event().wait()

    run = asyncio.create_task(Waits().run_async({}, observers=[recorder]))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert isinstance(recorder.of("run_end")[0].error, asyncio.CancelledError)
    assert recorder.of("error") == []  # a cancellation is not a failure


def test_a_sync_run_stopped_by_ctrl_c_reports_no_failure_as_the_async_one():
    # Ctrl-C reaches a sync run as a KeyboardInterrupt, raised here at once.
    recorder = Recorder()

    class Stopped(Node):
        def prep(self, shared):
            return [1, 2]

        def exec(self, prep_res):
            raise KeyboardInterrupt

    class Items(BatchNode):
        def prep(self, shared):
            return [1, 2]

        def exec(self, item):
            raise KeyboardInterrupt

    for node in (Stopped(name="stopped"), Items(name="items")):
        with pytest.raises(KeyboardInterrupt):
            Flow(start=node, name="main").run({}, observers=[recorder])
    assert recorder.of("error") == []  # a stop is not a failure
    ends = recorder.of("node_end") + recorder.of("item_end") + recorder.of("run_end")
    assert len(ends) == 7  # two runs, each: its node, the flow, the run; one item
    assert all(isinstance(event.error, KeyboardInterrupt) for event in ends)


def test_a_question_in_a_durable_run_reports_no_failure():
    recorder = Recorder()

    class Asks(Node):
        def exec(self, prep_res):
            return interrupt("go on?")

    with pytest.raises(Suspended):
        Flow(start=Asks(name="asks")).run({}, store=MemoryStore(), observers=[recorder])
    assert recorder.of("error") == []


def test_events_come_from_the_thread_where_they_happened():
    seen = []

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return [1, 2]

        def exec(self, item):
            self.emit(item)
            return item

    def observe(event):
        seen.append((event.kind, threading.current_thread().name))

    Items(max_concurrency=2).run({}, observers=[observe])
    emits = [name for kind, name in seen if kind == "emit"]
    assert len(emits) == 2
    assert all(name.startswith("braidflow-worker") for name in emits)


async def test_emit_streams_data_with_item_and_attempt_to_observers():
    recorder = Recorder()

    class Tokens(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["ab", "cd"]

        async def exec_async(self, text):
            for token in text:
                self.emit(token)
            return text

    await Tokens(max_retries=2).run_async({}, observers=[recorder])
    emitted = sorted((e.item, e.attempt, e.data) for e in recorder.of("emit"))
    assert emitted == [(0, 0, "a"), (0, 0, "b"), (1, 0, "c"), (1, 0, "d")]


def test_emit_without_observers_does_nothing():
    class Quiet(Node):
        def exec(self, prep_res):
            self.emit("ignored")
            return "done"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Quiet().run({}) == "done"


def test_an_observer_that_raises_is_reported_once_and_dropped():
    calls = []

    class Broken:
        def on_event(self, event):
            calls.append(event.kind)
            raise RuntimeError("observer bug")

        def __repr__(self):
            return "<Broken observer>"

    recorder = Recorder()
    first = Step()
    first >> Step()
    with pytest.warns(RuntimeWarning, match="<Broken observer>.*observer bug") as caught:
        Flow(start=first).run({}, observers=[Broken(), recorder])
    assert len(caught) == 1
    assert calls == ["run_start"]
    assert recorder.kinds()[-1] == "run_end"  # the others went on


@pytest.mark.parametrize("flow_kind", [Flow, AsyncFlow])
def test_an_observer_raising_cancelled_error_is_dropped_and_the_run_goes_on(flow_kind):
    def cancels(event):
        if event.kind == "node_start":
            raise asyncio.CancelledError("the observer's own")

    recorder, shared = Recorder(), {}
    step = Step(name="step") if flow_kind is Flow else AsyncStep(name="step")
    with pytest.warns(RuntimeWarning, match="CancelledError.*the observer's own") as caught:
        flow_kind(start=step).run(shared, observers=[cancels, recorder])
    assert len(caught) == 1
    assert shared == {"steps": ["step"]}
    assert recorder.kinds()[-1] == "run_end"
    assert recorder.of("run_end")[0].error is None


async def test_an_observer_raising_cancelled_error_as_the_run_is_cancelled_cancels_it():
    """A cancel of the run's task asked while an observer runs (a signal
    handler, say), the observer raising it on: the run is cancelled, the
    observer is not dropped for it, and every observer gets every event."""

    class Awaits(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.sleep(0)  # where the cancel lands

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = True

    recorder, seen, shared = Recorder(), [], {}
    run = None

    def cancels(event):
        seen.append(event.kind)
        if event.kind == "node_start" and not run.cancelling():
            run.cancel()
            raise asyncio.CancelledError

    run = asyncio.create_task(
        AsyncFlow(start=Awaits(name="step")).run_async(shared, observers=[cancels, recorder])
    )
    with pytest.raises(asyncio.CancelledError):
        await run
    assert shared == {}
    assert recorder.kinds() == seen
    assert recorder.kinds()[-1] == "run_end"
    assert isinstance(recorder.of("run_end")[0].error, asyncio.CancelledError)


@pytest.mark.parametrize("bad", [42, [print, "not an observer"], [object()]])
def test_an_observer_that_cannot_receive_events_is_refused_before_the_run(bad):
    ran = []

    class Marks(Node):
        def prep(self, shared):
            ran.append(True)

    with pytest.raises(InvalidParameterError, match="observer"):
        Marks().run({}, observers=bad)
    assert ran == []


def test_a_plain_callable_and_a_single_observer_are_accepted():
    seen = []
    Step().run({}, observers=seen.append)
    assert next(e.kind for e in seen) == "run_start"
    recorder = Recorder()
    Step().run({}, observers=recorder)
    assert recorder.kinds()[-1] == "run_end"


@pytest.mark.parametrize("kind", [BatchNode, ParallelBatchNode, BatchFlow, Node])
def test_every_sync_kind_reports_its_run(kind):
    recorder = Recorder()
    if issubclass(kind, BatchFlow):
        node = type("Sets", (BatchFlow,), {"prep": lambda self, shared: [{"n": 1}]})(start=Step())
    else:
        node = type("Items", (kind,), {"prep": lambda self, shared: [1, 2]})()
    node.run({}, observers=[recorder])
    assert recorder.kinds()[0] == "run_start"
    assert recorder.kinds()[-1] == "run_end"
    if kind is not Node:
        assert recorder.kinds("item_start")


def test_events_are_frozen():
    event = Event("emit", "r", "n", ("n",), 0.0)
    with pytest.raises(AttributeError):
        event.kind = "other"  # type: ignore[misc]


# -- stream() ---------------------------------------------------------------------------


async def test_stream_yields_the_runs_events_for_async_and_sync_flows():
    for flow in (AsyncFlow(start=AsyncStep(name="a")), Flow(start=Step(name="s"))):
        shared = {}
        kinds = [event.kind async for event in flow.stream(shared)]
        assert kinds[0] == "run_start"
        assert kinds[-1] == "run_end"
        assert "node_start" in kinds
        assert shared["steps"]


@pytest.mark.parametrize("bad", [42, [print, "not an observer"], [object()]])
async def test_stream_refuses_an_observer_that_cannot_receive_events_as_run_does(bad):
    ran = []

    class Marks(Node):
        def prep(self, shared):
            ran.append(True)

    async def consume():
        async with aclosing(Marks().stream({}, observers=bad)) as events:
            async for _ in events:
                pass

    with pytest.raises(InvalidParameterError, match="observer"):
        await consume()
    assert ran == []


async def test_stream_raises_the_runs_error_after_run_end():
    class Broken(AsyncNode):
        async def exec_async(self, prep_res):
            raise ValueError("broken")

    seen = []

    async def consume():
        async for event in AsyncFlow(start=Broken()).stream({}):
            seen.append(event.kind)

    with pytest.raises(ValueError, match="broken"):
        await consume()
    assert seen[-1] == "run_end"


async def test_leaving_a_stream_early_cancels_the_run_cleanly():
    wrote_after = []
    release = asyncio.Event()

    class Slow(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(10)

        async def exec_async(self, item):
            self.emit(item)
            await release.wait()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            wrote_after.append(True)
            shared["done"] = True

    shared = {}
    async with aclosing(Slow(max_concurrency=2).stream(shared)) as events:
        async for event in events:
            if event.kind == "emit":
                break
    release.set()
    await asyncio.sleep(0)
    assert other_tasks() == set()
    assert shared == {}
    assert wrote_after == []


async def test_cancelling_the_consumer_of_a_stream_cancels_the_run():
    started = asyncio.Event()

    class Waits(AsyncNode):
        async def exec_async(self, prep_res):
            started.set()
            await asyncio.Event().wait()

    async def consume():
        async with aclosing(AsyncFlow(start=Waits()).stream({})) as events:
            async for _ in events:
                pass

    consumer = asyncio.create_task(consume())
    await started.wait()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert other_tasks() == set()
