"""The ready-made observers: JSONL trace, progress, OpenTelemetry spans, HTML timeline."""

import asyncio
import io
import itertools
import json
import subprocess
import sys
import warnings

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchNode,
    Cache,
    Flow,
    InvalidParameterError,
    Limiter,
    MemoryStore,
    Node,
)
from braidflow.tracing import JSONLTrace, OpenTelemetry, Progress, Timeline
from braidflow.tracing._timeline import (
    ASKED,
    BACKOFF,
    CANCELLED,
    EMIT,
    ERROR,
    FAILED,
    INTERRUPTED,
    ITEM,
    NODE,
    OK,
    REUSED,
    UNFINISHED,
    WAIT,
    timeline_data,
)


class Items(AsyncParallelBatchNode):
    """Three items: item 1 fails once then succeeds, item 2 always fails."""

    async def prep_async(self, shared):
        return [0, 1, 2]

    async def exec_async(self, item):
        await asyncio.sleep(0)
        self.emit({"token": item})
        if item == 1 and self.cur_retry == 0:
            raise ConnectionError("flaky")
        if item == 2:
            raise ValueError("broken")
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


def sample_flow(limiter=None):
    items = Items(name="items", max_retries=2, on_error="collect", limits=limiter)
    return AsyncFlow(start=items, name="main")


def test_importing_braidflow_and_its_tracing_package_pulls_in_no_integration():
    code = (
        "import sys, braidflow, braidflow.tracing; "
        "loaded = [m for m in ('rich', 'opentelemetry') if m in sys.modules]; "
        "print(loaded)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == "[]"


# -- JSONLTrace --------------------------------------------------------------------------


def test_jsonl_trace_writes_one_json_object_per_event(tmp_path):
    path = tmp_path / "run.jsonl"
    trace = JSONLTrace(path)
    shared = {}
    sample_flow().run(shared, observers=[trace])
    records = [json.loads(line) for line in path.read_text().splitlines()]  # flushed at run end
    assert records[0]["kind"] == "run_start"
    assert records[-1]["kind"] == "run_end"
    assert set(records[0]) == {
        "kind",
        "run_id",
        "node",
        "path",
        "time",
        "item",
        "attempt",
        "duration",
        "error",
        "data",
    }
    failure = next(r for r in records if r["kind"] == "error" and r["item"] == 2)
    assert failure["error"] == {
        "type": "ValueError",
        "message": "broken",
        "notes": ["braidflow: node 'items' (Items) failed on item 2, attempt 2 of 2"],
    }
    assert failure["path"] == ["main", "items"]
    assert {r["data"]["token"] for r in records if r["kind"] == "emit"} == {0, 1, 2}
    retry = next(r for r in records if r["kind"] == "retry" and r["item"] == 1)
    assert (retry["item"], retry["attempt"], retry["data"]) == (1, 0, {"delay": 0})
    trace.close()


def test_jsonl_trace_writes_values_json_cannot_hold_as_their_repr(tmp_path):
    class Emits(Node):
        def exec(self, prep_res):
            self.emit({1, 2})
            self.emit(object)
            self.emit({"score": float("nan"), "max": [float("inf")]})  # not JSON numbers

    with JSONLTrace(tmp_path / "t.jsonl") as trace:
        Emits().run({}, observers=trace)

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    data = [strict(line)["data"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert "{1, 2}" in data
    assert "<class 'object'>" in data
    assert {"score": "nan", "max": ["inf"]} in data


def test_data_json_cannot_encode_never_costs_the_trace_nor_the_event_log_an_event(tmp_path):
    """Keys JSON has none for, an int too long to write and a repr that raises
    are written as their repr or a placeholder naming the type: every event
    is kept, in the trace, the store's event log and the timeline."""
    import enum

    from braidflow import recorded_events
    from braidflow._events import make_event
    from braidflow.durable._recorder import EVENT_LIMIT, cut_line
    from braidflow.tracing._jsonl import event_line

    class Color(enum.Enum):
        RED = 1

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    class Unsayable(Exception):
        def __str__(self):
            raise RuntimeError("no str")

    huge = 10**5000  # past Python's 4,300 digits an int is not written as text
    samples = [
        {Color.RED: 3},
        {(1, 2): "pair"},
        {frozenset({1}): 1},
        {Broken(): 1},
        huge,
        {"n": huge},
        Broken(),
        [Broken()],
    ]

    class Emits(Node):
        def exec(self, prep_res):
            for sample in samples:
                self.emit(sample)
            self.emit({Color.RED: "x" * EVENT_LIMIT})  # too large: kept cut down

    seen, store = [], MemoryStore()
    with JSONLTrace(tmp_path / "t.jsonl") as trace:
        Emits(name="emits").run(
            {},
            observers=[seen.append, trace, Timeline(tmp_path / "t.html")],
            store=store,
            run_id="odd",
            record_events=True,
        )
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [line["kind"] for line in lines] == [event.kind for event in seen]
    assert [event.kind for event in recorded_events(store, "odd")] == [e.kind for e in seen]
    assert (tmp_path / "t.html").exists()
    assert "emit: <Broken: repr raised RuntimeError>" in timeline_data(seen)["info"]
    data = [line["data"] for line in lines if line["kind"] == "emit"]
    assert data[:-1] == [
        {"<Color.RED: 1>": 3},
        {"(1, 2)": "pair"},
        {"frozenset({1})": 1},
        {"<Broken: repr raised RuntimeError>": 1},
        "<int: repr raised ValueError>",
        {"n": "<int: repr raised ValueError>"},
        "<Broken: repr raised RuntimeError>",
        ["<Broken: repr raised RuntimeError>"],
    ]
    cut = [event.data for event in recorded_events(store, "odd") if event.kind == "emit"][-1]
    assert cut["preview"].startswith('{"<Color.RED: 1>": "xxx')
    unsaid = make_event("error", "odd", "emits", ("emits",), 1.0, None, 0, None, Unsayable())
    for line in (event_line(unsaid), cut_line(unsaid, EVENT_LIMIT + 1)):
        assert json.loads(line)["error"]["message"] == "<Unsayable: str raised RuntimeError>"


def test_trace_paths_that_cannot_be_written_fail_before_the_run(tmp_path):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        JSONLTrace(tmp_path / "missing" / "run.jsonl")
    with pytest.raises(InvalidParameterError, match="is a directory"):
        JSONLTrace(tmp_path)
    with pytest.raises(InvalidParameterError, match="does not exist"):
        Timeline(tmp_path / "missing" / "run.html")


# -- Timeline -----------------------------------------------------------------------------


def rows_of(data):
    """The timeline's lanes in order, each as (label, depth)."""
    return [(lane["label"], lane["depth"]) for lane in data["lanes"]]


def test_timeline_data_has_a_lane_per_step_and_item_with_marks(tmp_path):
    recorded = []
    limiter = Limiter(1, name="api")
    sample_flow(limiter).run({}, observers=recorded.append)
    data = timeline_data(recorded)
    assert rows_of(data) == [
        ("main", 0),
        ("items", 1),
        ("items [0]", 2),
        ("items [1]", 2),
        ("items [2]", 2),
    ]
    assert [lane["title"] for lane in data["lanes"][:3]] == [
        "main",
        "main / items",
        "main / items [0]",
    ]
    outcomes = {data["lanes"][s[0]]["label"]: s[4] for s in data["spans"] if s[3] == ITEM}
    assert outcomes == {"items [0]": OK, "items [1]": OK, "items [2]": FAILED}
    assert any(s[3] == WAIT for s in data["spans"])
    assert data["run"]["items"] == 3
    assert data["run"]["failed"] == 1
    assert data["run"]["retries"] == 2  # item 1 once, item 2 once before its fallback
    assert all(0 <= s[1] <= s[2] <= data["run"]["duration"] for s in data["spans"])


class Download(AsyncNode):
    async def exec_async(self, prep_res):
        self.emit("got it")
        await asyncio.sleep(0)  # holding the limiter: the other set's download waits


class Sets(AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"n": 0}, {"n": 1}]


class Chunks(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return [0, 1]

    async def exec_async(self, item):
        return item


def nested_flow():
    """load >> sets (download >> parse, per parameter set) >> chunks (2 items)."""
    download = Download(name="download", limits=[Limiter(1, name="api")])
    download >> AsyncNode(name="parse")
    load = AsyncNode(name="load")
    load >> Sets(start=download, name="sets") >> Chunks(name="chunks")
    return AsyncFlow(start=load, name="main")


def test_timeline_nests_each_items_sub_flow_steps_right_under_the_item():
    recorded = []
    nested_flow().run({}, observers=recorded.append)
    data = timeline_data(recorded)
    assert rows_of(data) == [
        ("main", 0),
        ("load", 1),
        ("sets", 1),
        ("sets [0]", 2),
        ("download", 3),
        ("parse", 3),
        ("sets [1]", 2),
        ("download", 3),
        ("parse", 3),
        ("chunks", 1),
        ("chunks [0]", 2),
        ("chunks [1]", 2),
    ]
    titles = [lane["title"] for lane in data["lanes"]]
    assert titles[3:6] == ["main / sets [0]", "main / sets[0] / download", "main / sets[0] / parse"]
    assert len(set(titles)) == len(titles)  # every row is a different thing, and says which
    # An emit of a sub-flow's step is drawn on that step's lane (it carries the set's index).
    emits = [mark for mark in data["marks"] if mark[2] == EMIT]
    assert sorted(titles[mark[0]] for mark in emits) == [
        "main / sets[0] / download",
        "main / sets[1] / download",
    ]
    # The second set's download waited for the limiter: on its own lane.
    waits = [span for span in data["spans"] if span[3] == WAIT]
    assert [titles[span[0]] for span in waits] == ["main / sets[1] / download"]


def test_timeline_of_a_flow_without_a_batch_counts_no_items():
    recorded = []
    first = Node(name="first")
    first >> Node(name="second")
    Flow(start=first, name="plain").run({}, observers=recorded.append)
    data = timeline_data(recorded)
    assert rows_of(data) == [("plain", 0), ("first", 1), ("second", 1)]
    assert data["run"]["items"] == 0
    assert data["load"] == []


def load_at(data, at):
    """(running, waiting, backing off) at time ``at`` of the timeline's strip."""
    now = (0, 0, 0)
    for point in data["load"]:
        if point[0] <= at:
            now = tuple(point[1:])
    return now


def test_timeline_counts_items_running_waiting_and_backing_off_where_the_work_is():
    sets, step = ("main", "sets"), ("main", "sets[0]", "fetch")
    chunks = ("main", "sets[0]", "chunks")
    api = {"data": {"limiters": ["api"]}}
    events = events_of(
        ("run_start", ["main"], None, 0.0),
        ("node_start", ["main"], None, 0.0),
        ("node_start", sets, None, 0.0),
        ("item_start", sets, 0, 0.0),
        ("node_start", step, None, 0.0),
        ("limiter_wait_start", step, None, 1.0, api),
        ("limiter_wait", step, None, 3.0, {"duration": 2.0, **api}),
        ("retry", step, None, 3.5, {"attempt": 0, "error": ValueError(), "data": {"delay": 1.0}}),
        ("node_end", step, None, 5.0),
        ("node_start", chunks, None, 5.0),
        ("item_start", chunks, 0, 6.0),
        ("item_start", chunks, 1, 6.0),
        ("item_end", chunks, 0, 7.0),
        ("item_end", chunks, 1, 8.0),
        ("node_end", chunks, None, 8.0),
        ("item_end", sets, 0, 9.0),
        ("node_end", sets, None, 9.0),
        ("node_end", ["main"], None, 9.0),
        ("run_end", ["main"], None, 9.0),
    )
    data = timeline_data(events)
    # The set's item runs its steps itself, waits with its step, backs off
    # with its step's retry, and counts for nothing while its own batch's items run.
    expected = {
        0.5: (1, 0, 0),
        2.0: (0, 1, 0),
        3.2: (1, 0, 0),
        4.0: (0, 0, 1),
        4.7: (1, 0, 0),
        6.5: (2, 0, 0),
        7.5: (1, 0, 0),
        8.5: (1, 0, 0),
        9.5: (0, 0, 0),
    }
    assert {at: load_at(data, at) for at in expected} == expected
    assert any(span[3] == BACKOFF for span in data["spans"])


def test_timeline_never_shows_more_items_running_than_their_limiter_allows():
    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(12))

        async def exec_async(self, item):
            for _ in range(item % 3 + 1):
                await asyncio.sleep(0)
            return item

    recorded = []
    node = Calls(name="calls", max_concurrency=6, limits=[Limiter(2, name="api")])
    AsyncFlow(start=node, name="main").run({}, observers=recorded.append)
    data = timeline_data(recorded)
    assert max(point[1] for point in data["load"]) == 2
    assert max(point[2] for point in data["load"]) >= 4  # the others of the 6 in flight
    assert all(point[1] + point[2] <= 6 for point in data["load"])


def test_timeline_packs_a_large_batch_into_lanes_whose_items_never_overlap():
    class Many(Chunks):
        async def prep_async(self, shared):
            return list(range(150))

    recorded = []
    AsyncFlow(start=Many(name="many", max_concurrency=4), name="main").run(
        {}, observers=recorded.append
    )
    data = timeline_data(recorded)
    assert data["groups"] == [{"label": "many", "items": 150, "slots": data["groups"][0]["slots"]}]
    assert 1 <= data["groups"][0]["slots"] <= 4
    on_slot = {}
    for index, lane in enumerate(data["lanes"]):
        if "pack" in lane:
            spans = [s for s in data["spans"] if s[0] == index]
            on_slot.setdefault(lane["pack"][1], []).extend((s[1], s[2]) for s in spans)
    assert sum(len(spans) for spans in on_slot.values()) == 150
    for spans in on_slot.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


async def test_timeline_marks_cancelled_and_unfinished_work():
    recorded = []
    started = asyncio.Event()

    class Waits(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            started.set()
            await asyncio.Event().wait()

    run = asyncio.create_task(Waits().run_async({}, observers=recorded.append))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    data = timeline_data(recorded)
    assert {s[4] for s in data["spans"] if s[3] == ITEM} == {CANCELLED}
    assert {s[4] for s in data["spans"] if s[3] == NODE} == {CANCELLED}
    assert "CancelledError" in data["run"]["error"]


async def test_timeline_draws_a_limiter_wait_cut_short_up_to_its_items_end():
    recorded = []
    limiter = Limiter(1, name="api")
    holding = asyncio.Event()

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            holding.set()
            await asyncio.Event().wait()

    run = asyncio.create_task(Calls(limits=[limiter]).run_async({}, observers=recorded.append))
    await holding.wait()
    while limiter.statistics().waiting < 1:
        await asyncio.sleep(0)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    data = timeline_data(recorded)
    (wait,) = [span for span in data["spans"] if span[3] == WAIT]
    item = next(s for s in data["spans"] if s[3] == ITEM and s[0] == wait[0])
    assert data["lanes"][wait[0]]["label"] == "Calls [1]"
    assert wait[4] == CANCELLED
    assert wait[2] == item[2]
    assert load_at(data, wait[1]) == (1, 1, 0)


def test_timeline_writes_one_self_contained_page_at_run_end(tmp_path):
    path = tmp_path / "run.html"
    timeline = Timeline(path, title="sample <run>")
    sample_flow().run({}, observers=[timeline])
    page = path.read_text()
    assert "<title>sample &lt;run&gt;</title>" in page
    for fetch in ("http://", "https://", "<link", "src="):
        assert fetch not in page
    data = json.loads(page.split('type="application/json">')[1].split("</script>")[0])
    assert data["run"]["name"] == "main"


@pytest.mark.parametrize(
    "text", ["__DATA__ <img src=x onerror=alert(1)>", "<!--<script>", "</script><b>x</b>"]
)
def test_a_runs_own_text_never_reaches_the_timeline_page_as_markup(tmp_path, text):
    # In the title (which once took the data's place when it held __DATA__),
    # a node's name and an error: the page keeps its two script elements,
    # the title is text, and the data block holds no "<" at all.
    class Bad(Node):
        def exec(self, prep_res):
            raise ValueError(f"bad input: {text}")

    path = tmp_path / "run.html"
    with pytest.raises(ValueError, match="bad input"):
        Flow(start=Bad(name=text), name=text).run({}, observers=[Timeline(path, title=text)])
    page = path.read_text()
    assert page.count("<script") == 2
    head, _, rest = page.partition('type="application/json">')
    block = rest.partition("</script>")[0]
    assert "<" not in block
    assert "<img" not in head
    assert text not in head
    data = json.loads(block)
    assert text in json.dumps(data, ensure_ascii=False)  # the page still shows it, as text


@pytest.mark.parametrize("stopped_by", ["CancelledError", "KeyboardInterrupt"])
def test_a_recorded_cancellation_is_drawn_cancelled(stopped_by):
    from braidflow.durable._exceptions import stand_in_class

    cancelled = {"error": stand_in_class(stopped_by)()}
    events = events_of(
        ("run_start", ["main"], None, 0.0),
        ("node_start", ["main"], None, 0.0),
        ("node_end", ["main"], None, 1.0, cancelled),
        ("run_end", ["main"], None, 1.0, cancelled),
    )
    data = timeline_data(events)
    assert [span[4] for span in data["spans"]] == [CANCELLED]
    assert data["parts"][0]["ended"] == "cancelled"


# -- A resumed run: one part per attempt --------------------------------------------------


def killed_and_resumed(failed_item_in_part_1=False):
    """A run of `work` (4 items) whose process died after 2 s, resumed in
    another process (its clock elsewhere) that finished it. Part 1: item 0
    ends; items 1 and 2 have no end recorded (item 2 waits for a limiter when
    the recording stops). Part 2 runs items 2 and 3 only: item 1 had finished,
    and its result is reused."""
    work = ("main", "work")
    total = {"data": {"total": 4}}
    api = {"data": {"limiters": ["api"]}}
    first = events_of(
        ("run_start", ["main"], None, 100.0),
        ("node_start", ["main"], None, 100.0),
        ("node_start", work, None, 100.0),
        ("item_start", work, 0, 100.0, total),
        ("item_start", work, 1, 100.0, total),
        ("item_end", work, 0, 101.0),
        ("item_start", work, 2, 101.0, total),
        ("limiter_wait_start", work, 2, 101.5, api),
        ("emit", work, 1, 102.0, {"data": "last words"}),
    )
    if failed_item_in_part_1:
        first[5] = events_of(("item_end", work, 0, 101.0, {"error": ValueError("bad")}))[0]
    second = events_of(
        ("run_start", ["main"], None, 5.0),
        ("node_start", ["main"], None, 5.0),
        ("node_start", work, None, 5.0),
        *([("item_start", work, 0, 5.0, total)] if failed_item_in_part_1 else []),
        ("item_start", work, 2, 5.0, total),
        ("item_start", work, 3, 5.0, total),
        *([("item_end", work, 0, 5.5)] if failed_item_in_part_1 else []),
        ("item_end", work, 2, 6.0),
        ("item_end", work, 3, 7.0),
        ("node_end", work, None, 7.0),
        ("node_end", ["main"], None, 7.0),
        ("run_end", ["main"], None, 7.0),
    )
    return first + second


def spans_on(data, label, shape=ITEM):
    lane = next(index for index, lane in enumerate(data["lanes"]) if lane["title"] == label)
    return [span for span in data["spans"] if span[0] == lane and span[3] == shape]


def assert_no_span_outlives_its_part(data):
    for span in data["spans"]:
        (part,) = [p for p in data["parts"] if p["begin"] <= span[1] <= p["end"]]
        assert span[2] <= part["end"], (span, part, data["info"][span[5]])


def test_a_resumed_runs_parts_follow_each_other_and_each_ends_what_it_left_open():
    data = timeline_data(killed_and_resumed())
    gap = 0.02 * (2.0 + 2.0)  # a pause between parts is drawn as 2% of the time they ran
    assert data["parts"] == [
        {"begin": 0.0, "end": 2.0, "ended": "interrupted", "error": ""},
        {"begin": 2.0 + gap, "end": 4.0 + gap, "ended": "completed", "error": ""},
    ]
    assert data["run"]["duration"] == 4.0 + gap
    assert_no_span_outlives_its_part(data)
    assert not [span for span in data["spans"] if span[4] == UNFINISHED]
    # The steps part 1 was in when its process died: cut off there, then run again.
    for title in ("main", "main / work"):
        cut, again = spans_on(data, title, NODE)
        assert (cut[1], cut[2], cut[4]) == (0.0, 2.0, INTERRUPTED)
        assert "part 1 has no end recorded (its process died)" in data["info"][cut[5]]
        assert (again[1], again[2], again[4]) == (2.0 + gap, 4.0 + gap, OK)
    (resumed_step,) = [s for s in spans_on(data, "main / work", NODE) if s[4] == OK]
    assert (
        "ran 2 of its 4 items; the other 2 had finished before: part 2 reused"
        in (data["info"][resumed_step[5]])
    )
    # Item 1 had finished (part 2 did not run it): cut off, its result reused.
    (reused,) = spans_on(data, "main / work [1]")
    assert (reused[1], reused[2], reused[4]) == (0.0, 2.0, REUSED)
    assert "part 2 reused its checkpointed result" in data["info"][reused[5]]
    # Item 2 was in flight, waiting for its limiter: cut off, and run again.
    cut, again = spans_on(data, "main / work [2]")
    assert (cut[1], cut[2], cut[4]) == (1.0, 2.0, INTERRUPTED)
    assert data["info"][cut[5]].endswith("; it ran again in part 2")
    assert (again[1], again[2], again[4]) == (2.0 + gap, 3.0 + gap, OK)
    (wait,) = spans_on(data, "main / work [2]", WAIT)
    assert (wait[1], wait[2], wait[4]) == (1.5, 2.0, INTERRUPTED)
    assert data["run"] | {"duration": 0} == {
        "id": "r",
        "name": "main",
        "duration": 0,
        "ended": "completed",
        "error": "",
        "items": 4,  # 0, 1, and 2 and 3 as part 2 ran them
        "failed": 0,
        "interrupted": 2,
        "reused": 1,
        "unrecorded": 0,
        "retries": 0,
        "waits": 1,
    }


def test_a_resumed_runs_strip_counts_in_each_part_only_what_ran_in_it():
    data = timeline_data(killed_and_resumed())
    gap = 0.02 * 4.0
    expected = {
        0.5: (2, 0, 0),
        1.7: (1, 1, 0),  # item 2 waits for its limiter
        2.0 + gap / 2: (0, 0, 0),  # between the parts, nothing runs
        2.5 + gap: (2, 0, 0),  # part 2's two items, not part 1's too
        3.5 + gap: (1, 0, 0),
        4.5 + gap: (0, 0, 0),
    }
    assert {at: load_at(data, at) for at in expected} == expected


def test_a_part_that_ended_ends_what_it_left_open_there_not_at_the_runs_end():
    work = ("main", "work")
    events = events_of(
        ("run_start", ["main"], None, 0.0),
        ("node_start", ["main"], None, 0.0),
        ("node_start", work, None, 0.0),  # abandoned: it never ends
        ("node_end", ["main"], None, 1.0, {"error": ConnectionError("down")}),
        ("run_end", ["main"], None, 1.0, {"error": ConnectionError("down")}),
        ("run_start", ["main"], None, 50.0),
        ("node_start", ["main"], None, 50.0),
        ("node_end", ["main"], None, 53.0),
        ("run_end", ["main"], None, 53.0),
    )
    data = timeline_data(events)
    assert [(p["ended"], p["error"]) for p in data["parts"]] == [
        ("failed", "ConnectionError: down"),
        ("completed", ""),
    ]
    assert data["run"]["error"] == ""  # the run completed: its last part says so
    assert_no_span_outlives_its_part(data)
    (abandoned,) = spans_on(data, "main / work", NODE)
    assert (abandoned[2], abandoned[4]) == (1.0, UNFINISHED)
    assert "no end recorded before part 1 ended" in data["info"][abandoned[5]]


def test_a_run_completed_in_one_part_has_nothing_cut_off_or_unfinished():
    recorded = []
    sample_flow(Limiter(1, name="api")).run({}, observers=recorded.append)
    data = timeline_data(recorded)
    assert [p["ended"] for p in data["parts"]] == ["completed"]
    assert {span[4] for span in data["spans"]} <= {OK, FAILED}
    assert data["run"]["interrupted"] == 0


def test_a_run_whose_events_stop_is_cut_off_at_its_last_event_maybe_still_running():
    events = killed_and_resumed()[:9]  # part 1 only
    data = timeline_data(events)
    assert data["parts"] == [{"begin": 0.0, "end": 2.0, "ended": "interrupted", "error": ""}]
    assert {span[4] for span in data["spans"] if span[3] != WAIT} == {OK, INTERRUPTED}
    assert_no_span_outlives_its_part(data)
    (cut,) = spans_on(data, "main / work [1]")
    assert (
        "the run has no end recorded (its process died, or it is still running)"
        in (data["info"][cut[5]])
    )


def test_an_item_that_failed_and_ran_again_after_the_resume_is_not_counted_failed():
    data = timeline_data(killed_and_resumed(failed_item_in_part_1=True))
    failed, again = spans_on(data, "main / work [0]")
    assert (failed[4], again[4]) == (FAILED, OK)
    assert data["info"][failed[5]].endswith("ValueError: bad · it ran again in part 2")
    assert data["run"]["failed"] == 0
    assert data["run"]["items"] == 5  # item 0 ran twice, to an end each time


def test_a_run_that_asked_for_input_and_was_resumed_with_it_asked_rather_than_failed():
    import braidflow as bf

    class Ask(Node):
        def exec(self, prep_res):
            return bf.interrupt("ship it?")

    flow = Flow(start=Ask(name="ask"), name="review")
    store = bf.MemoryStore()
    seen = []
    with pytest.raises(bf.Suspended):
        flow.run({}, store=store, run_id="r", record_events=True, observers=[seen.append])
    waiting = timeline_data(seen)
    assert (waiting["run"]["ended"], waiting["run"]["error"]) == ("waiting", "")
    flow.resume("r", store=store, input="yes", record_events=True)
    data = timeline_data(bf.recorded_events(store, "r"))  # errors as stand-ins now
    assert [(p["ended"], p["error"]) for p in data["parts"]] == [("waiting", ""), ("completed", "")]
    asked, answered = spans_on(data, "review / ask", NODE)
    assert (asked[4], answered[4]) == (ASKED, OK)
    assert data["info"][asked[5]].endswith("asked for input: ship it?")
    assert [mark for mark in data["marks"] if mark[2] == ERROR] == []
    assert (data["run"]["ended"], data["run"]["error"]) == ("completed", "")


def checkpointed_items(store, run_id):
    """How many batch items of a run are in its store (an items row holds several)."""
    _record, _graph, _initial, rows = store.read(run_id)
    return sum(row.position for row in rows if row.kind == "items")


def progress_of(path):
    """(items checkpointed, whether 1,000 events are kept) of run "job" in the
    store at ``path``: (0, False) while the job is still making the store."""
    from braidflow import SQLiteStore, StoreError

    try:
        with SQLiteStore(path) as store:
            return checkpointed_items(store, "job"), len(store.events("job")) >= 1000
    except StoreError:  # its tables, or its run, not made yet
        return 0, False


@pytest.mark.slow
def test_the_timeline_of_a_run_killed_mid_batch_and_resumed_tells_what_happened(tmp_path):
    import os
    import signal
    import time
    from pathlib import Path

    from braidflow import SQLiteStore, recorded_events

    job = Path(__file__).parent / "jobs" / "recorded_job.py"
    path = tmp_path / "runs.db"
    running = subprocess.Popen([sys.executable, str(job), str(path), "run"])
    try:
        deadline = time.monotonic() + 60
        # Items 0-499 finish, then the job hangs: kill it once they are all
        # in the store, and two batches of events (500 each) with them.
        while True:
            assert running.poll() is None, "the job ended before it was killed"
            assert time.monotonic() < deadline, "the job never checkpointed its items"
            if path.exists() and progress_of(path) == (500, True):
                break
            time.sleep(0.01)
    finally:
        os.kill(running.pid, signal.SIGKILL)
        running.wait(timeout=30)
    resumed = subprocess.run(
        [sys.executable, str(job), str(path), "resume"], capture_output=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr.decode()
    with SQLiteStore(path) as store:
        assert store.get("job").status == "completed"
        events = recorded_events(store, "job")
    data = timeline_data(events)
    first, second = data["parts"]
    assert (first["ended"], second["ended"]) == ("interrupted", "completed")
    assert first["end"] < second["begin"]
    assert_no_span_outlives_its_part(data)
    assert not [span for span in data["spans"] if span[4] == UNFINISHED]
    # The steps the job was in when it died end where its recorded events do.
    for title in ("job", "job / work"):
        cut, again = spans_on(data, title, NODE)
        assert (cut[2], cut[4], again[4]) == (first["end"], INTERRUPTED, OK)
    # Never more items in flight than max_concurrency, in either part.
    assert max(sum(point[1:]) for point in data["load"]) <= 20
    # Each item cut off by the kill either ran again in part 2, or had
    # finished and part 2 reused its result; its events as far as recorded.
    items = [lane for lane in data["lanes"] if lane["kind"] == "item"]
    for lane in items:
        spans = spans_on(data, lane["title"])
        cut = [span for span in spans if span[4] in (INTERRUPTED, REUSED)]
        if not cut:
            continue
        (span,) = cut
        assert span[2] == first["end"]
        ran_again = [s for s in spans if s[1] >= second["begin"]]
        assert (span[4] == INTERRUPTED) == bool(ran_again), data["info"][span[5]]
    assert data["run"]["interrupted"] >= 1  # 20 were in flight at any time
    # Every item is drawn, or counted as having run with its events unwritten.
    assert len(items) + data["run"]["unrecorded"] == 1000
    page = tmp_path / "job.html"
    Timeline(page).write(events)
    drawn = json.loads(page.read_text().split('type="application/json">')[1].split("</script>")[0])
    assert len(drawn["parts"]) == 2


# -- Progress -----------------------------------------------------------------------------


def numbers(progress, label):
    """The numbers on one line of a Progress, by what they say: {"running": 3, ...}."""
    row = next(row for row in progress._rows() if row.label == label)
    counted = {}
    for text, _ in row.numbers:
        count, _, what = text.partition(" ")
        if count.isdigit():
            counted[what] = int(count)
    return row.numbers[0][0], counted


def test_progress_shows_each_batch_with_done_total_and_failures():
    from rich.console import Console

    console = Console(record=True, force_terminal=True, width=140)
    progress = Progress(console=console)
    sample_flow().run({}, observers=[progress])
    text = console.export_text()
    assert "main / items" in text
    assert "3/3" in text
    assert "1 failed" in text


def test_progress_counts_items_that_ask_as_waiting_not_failed_nor_done():
    from rich.console import Console

    from braidflow import AsyncFlow, AsyncParallelBatchNode, MemoryStore, Suspended, interrupt

    class Ask(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(3)

        async def exec_async(self, item):
            if item == 0:
                return item
            return interrupt(f"approve {item}?")  # a question is no failure

    console = Console(record=True, force_terminal=True, width=140)
    progress = Progress(console=console)
    with pytest.raises(Suspended):
        AsyncFlow(start=Ask(name="ask")).run(
            {}, store=MemoryStore(), run_id="r", observers=[progress]
        )
    console.print(progress)
    text = console.export_text()
    assert "1/3" in text
    assert "failed" not in text


class CachedDouble(BatchNode):
    def prep(self, shared):
        return shared["items"]

    def exec(self, item):
        return item * 2


def test_progress_counts_items_served_from_a_result_cache():
    cache = Cache(store=MemoryStore())
    CachedDouble(name="double", cache=cache).run({"items": [1, 2]})
    progress = Progress()
    CachedDouble(name="double", cache=cache).run({"items": [1, 2, 3]}, observers=[progress])
    assert numbers(progress, "double") == ("3/3", {"cached": 2})


def test_progress_is_quiet_when_the_output_is_not_a_terminal():
    from rich.console import Console

    output = io.StringIO()
    sample_flow().run({}, observers=[Progress(console=Console(file=output))])
    assert output.getvalue() == ""


def test_progress_counts_lazy_input_without_a_total_until_it_is_all_read():
    from rich.console import Console

    class Lazy(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return (n for n in range(4))

        async def exec_async(self, item):
            return item

    console = Console(record=True, force_terminal=True, width=140)
    progress = Progress(console=console)
    seen = []

    def look(event):
        if event.kind == "item_end" and event.item == 1:
            seen.append(numbers(progress, "lazy")[0])

    Lazy(name="lazy").run({}, observers=[progress, look])
    assert seen == ["2/?"]
    assert "4/4" in console.export_text()


def test_progress_adds_up_a_batch_that_runs_again_in_a_loop():
    from rich.console import Console

    class Level(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(shared["levels"][shared["level"]]))

        async def exec_async(self, item):
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["level"] += 1
            return "more" if shared["level"] < len(shared["levels"]) else "done"

    level = Level(name="level")
    level - "more" >> level
    level - "done" >> None
    console = Console(record=True, force_terminal=True, width=140)
    AsyncFlow(start=level).run({"levels": [2, 3, 4], "level": 0}, observers=[Progress(console)])
    assert "9/9" in console.export_text()


async def test_progress_counts_items_waiting_for_a_limiter_apart_from_those_running():
    from rich.console import Console

    limiter = Limiter(2, name="api")
    gate = asyncio.Event()

    class Calls(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):
            await gate.wait()
            return item

    async def open_gate():
        while limiter.statistics().waiting < 4:
            await asyncio.sleep(0)
        gate.set()

    progress = Progress(Console(file=io.StringIO()))
    counts = []

    def look(event):  # after Progress has taken the event
        if event.kind in ("limiter_wait_start", "limiter_wait", "item_end"):
            counts.append(numbers(progress, "calls")[1])

    opener = asyncio.create_task(open_gate())
    node = Calls(name="calls", max_concurrency=6, limits=[limiter])
    await node.run_async({}, observers=[progress, look])
    await opener
    assert max(count["running"] for count in counts if "running" in count) == 2
    assert max(count.get("waiting", 0) for count in counts) == 4
    assert all(count.get("running", 0) + count.get("waiting", 0) <= 6 for count in counts)


def events_of(*specs):
    """Events from (kind, path, item, time, extra fields) tuples, all of run "r"."""
    from braidflow._events import make_event

    made = []
    for kind, path, item, at, *extra in specs:
        fields = extra[0] if extra else {}
        made.append(
            make_event(
                kind,
                "r",
                path[-1] if path else "main",
                tuple(path),
                at,
                item,
                fields.get("attempt"),
                fields.get("duration"),
                fields.get("error"),
                fields.get("data"),
            )
        )
    return made


def feed(progress, events, now):
    for event in events:
        progress.on_event(event)
    progress._clock = lambda: now


def test_progress_gives_a_batch_flows_items_the_waits_and_retries_of_their_sub_flows():
    from rich.console import Console

    progress = Progress(Console(file=io.StringIO()))
    sets, step = ("main", "sets"), ("main", "sets[0]", "fetch")
    other = ("main", "sets[1]", "fetch")
    two = {"data": {"total": 2}}
    feed(
        progress,
        events_of(
            ("run_start", ["main"], None, 0.0),
            ("node_start", sets, None, 0.0),
            ("item_start", sets, 0, 1.0, two),
            ("item_start", sets, 1, 1.0, two),
            ("node_start", step, None, 1.0),
            ("limiter_wait_start", step, None, 1.0, {"data": {"limiters": ["api"]}}),
            ("node_start", other, None, 1.0),
            ("retry", other, None, 2.0, {"attempt": 0, "data": {"delay": 5.0}}),
        ),
        now=3.0,
    )
    assert numbers(progress, "main / sets")[1] == {"running": 0, "waiting": 1, "backing off": 1}
    progress._clock = lambda: 8.0  # the retry's delay is over
    assert numbers(progress, "main / sets")[1] == {"running": 1, "waiting": 1}
    feed(
        progress,
        events_of(
            ("limiter_wait", step, None, 9.0, {"duration": 8.0, "data": {"limiters": ["api"]}}),
            ("node_end", step, None, 10.0),
            ("item_end", sets, 0, 10.0),
        ),
        now=10.0,
    )
    assert numbers(progress, "main / sets") == ("1/2", {"running": 1})


def test_progress_draws_a_batch_inside_a_batch_flow_once_for_every_parameter_set():
    from rich.console import Console

    progress = Progress(Console(file=io.StringIO()))
    sets = ("main", "sets")
    chunks = [("main", f"sets[{n}]", "chunks") for n in range(2)]
    feed(
        progress,
        events_of(
            ("run_start", ["main"], None, 0.0),
            ("node_start", sets, None, 0.0),
            ("item_start", sets, 0, 0.0, {"data": {"total": 2}}),
            ("item_start", sets, 1, 0.0, {"data": {"total": 2}}),
            ("node_start", chunks[0], None, 0.0),
            ("node_start", chunks[1], None, 0.0),
            *[
                ("item_start", chunks[n], i, 0.0, {"data": {"total": 3}})
                for n in (0, 1)
                for i in (0, 1, 2)
            ],
            ("item_end", chunks[1], 2, 1.0, {"error": ValueError("bad")}),
        ),
        now=1.0,
    )
    assert [row.label for row in progress._rows()] == ["main / sets", "main / sets / chunks"]
    assert numbers(progress, "main / sets / chunks") == ("1/6", {"running": 5, "failed": 1})
    assert numbers(progress, "main / sets")[1] == {"running": 2}


def test_progress_has_one_line_per_batch_of_the_graph_in_a_real_batch_flow():
    from rich.console import Console

    class Chunks(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            return item

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": n} for n in range(3)]

    progress = Progress(Console(file=io.StringIO()))
    flow = AsyncFlow(start=Sets(start=Chunks(name="chunks"), name="sets"), name="main")
    flow.run({}, observers=[progress])
    assert [(row.label, row.numbers[0][0]) for row in progress._rows()] == [
        ("main / sets", "3/3"),
        ("main / sets / chunks", "6/6"),
    ]


def wide_progress():
    """A Progress with two lines whose numbers are long, as they stand at 10 s."""
    from rich.console import Console

    progress = Progress(Console(file=io.StringIO()))
    crawl = ("crawl", "fetch_pages_from_the_web")
    feed(
        progress,
        events_of(
            ("run_start", ["crawl"], None, 0.0),
            ("node_start", crawl, None, 0.0),
            *[("item_start", crawl, i, 0.0, {"data": {"total": 1000}}) for i in range(32)],
            *[("limiter_wait_start", crawl, i, 0.0) for i in range(16)],
            *[("item_end", crawl, i, 5.0, {"error": ValueError()}) for i in range(16, 28)],
            ("node_start", ("crawl", "embed"), None, 6.0),
            ("item_start", ("crawl", "embed"), 0, 6.0),
        ),
        now=10.0,
    )
    return progress


@pytest.mark.parametrize("width", [40, 80, 120])
def test_progress_lines_fit_the_width_with_every_number_whole(width):
    from rich.console import Console

    progress = wide_progress()
    console = Console(record=True, force_terminal=True, width=width, file=io.StringIO())
    console.print(progress)
    lines = console.export_text().splitlines()
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    for row in progress._rows():
        for number, _ in row.numbers:
            assert number in text, (width, number)
    assert "12/1000" in text
    assert "4 running" in text
    assert "16 waiting" in text
    assert "12 failed" in text
    if width == 120:  # room for everything: whole names and a bar
        assert "crawl / fetch_pages_from_the_web ━" in text


def test_progress_shrinks_its_bar_before_it_cuts_a_name_and_never_cuts_a_number():
    from rich.console import Console

    from braidflow.tracing._progress import BAR, LEAST_BAR, lay_out

    rows = wide_progress()._rows()
    name = max(len(row.label) for row in rows)
    last_bar = BAR
    for width in range(160, 19, -1):
        console = Console(record=True, force_terminal=True, width=width, file=io.StringIO())
        for line in lay_out(rows, width):
            console.print(line)
        lines = console.export_text().splitlines()
        assert all(len(line) <= width for line in lines), width
        for row in rows:
            for number, _ in row.numbers:
                assert any(number in line for line in lines), (width, number)
        bar = max(line.count("━") + line.count("╸") for line in lines)
        assert bar <= last_bar, width  # the bar only shrinks as the width does
        last_bar = bar
        cut = any("…" in line for line in lines)
        if cut:  # a name is cut only once the bar is as short as it gets
            assert bar <= LEAST_BAR, width
        if bar == BAR:
            assert lines[0].startswith(rows[0].label.ljust(name)), width


# -- OpenTelemetry -------------------------------------------------------------------------


@pytest.fixture
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_opentelemetry_nests_run_flow_node_and_item_spans(spans):
    provider, exporter = spans
    limiter = Limiter(1, name="api")
    sample_flow(limiter).run({}, observers=[OpenTelemetry(tracer_provider=provider)])
    finished = {span.name: span for span in exporter.get_finished_spans()}
    run, main, items = finished["braidflow run main"], finished["main"], finished["items"]
    assert main.parent.span_id == run.context.span_id
    assert items.parent.span_id == main.context.span_id
    for index in range(3):
        assert finished[f"items[{index}]"].parent.span_id == items.context.span_id
    assert finished["items[0]"].attributes["braidflow.outcome"] == "ok"
    assert finished["items[1]"].attributes["braidflow.attempts"] == 2
    assert [e.name for e in finished["items[1]"].events].count("retry") == 1
    failed = finished["items[2]"]
    assert failed.attributes["braidflow.outcome"] == "error"
    assert failed.status.status_code.name == "ERROR"
    assert any(e.name == "exception" for e in failed.events)
    assert any(e.name == "limiter_wait" for s in finished.values() for e in s.events)
    assert all(span.end_time >= span.start_time for span in finished.values())


def test_opentelemetry_ends_a_stop_s_spans_with_no_error(spans):
    import braidflow

    provider, exporter = spans

    class Asks(Node):
        def exec(self, prep_res):
            return braidflow.interrupt("go on?")

    class Drains(Node):
        def exec(self, prep_res):
            braidflow.drain("drained")

    class Stopped(Node):
        def exec(self, prep_res):
            raise KeyboardInterrupt  # Ctrl-C

    observer = OpenTelemetry(tracer_provider=provider)
    drains = Drains(name="drains")
    drains >> Node(name="never")  # the drain stops the run before it
    for node, run_id, stop in [
        (Asks(name="asks"), "asked", braidflow.Suspended),
        (drains, "drained", braidflow.Drained),
        (Stopped(name="stopped"), "stopped", KeyboardInterrupt),
    ]:
        with pytest.raises(stop):
            Flow(start=node, name=run_id).run(
                {}, store=MemoryStore(), run_id=run_id, observers=[observer]
            )
    outcomes = {
        span.name: (span.attributes["braidflow.outcome"], span.status.status_code.name)
        for span in exporter.get_finished_spans()
        if span.name in ("asks", "asked", "drained", "stopped")
    }
    assert outcomes == {
        "asks": ("waiting", "UNSET"),
        "asked": ("waiting", "UNSET"),  # its flow
        "drained": ("drained", "UNSET"),  # the flow the drain stopped
        "stopped": ("cancelled", "UNSET"),
    }
    assert not any(e.name == "exception" for s in exporter.get_finished_spans() for e in s.events)


def test_opentelemetry_fed_a_stored_runs_events_ends_its_spans_as_the_live_run_did():
    """Recorded errors come back as stand-ins of their class (`RecordedError`,
    an ``Exception``): a question, a drain or Ctrl-C is still no error."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import braidflow

    def traced():
        exporter, provider = InMemorySpanExporter(), TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return OpenTelemetry(tracer_provider=provider), exporter

    def ended(exporter):
        return sorted(
            (span.name, span.attributes["braidflow.outcome"], span.status.status_code.name)
            for span in exporter.get_finished_spans()
        )

    class Asks(Node):
        def exec(self, prep_res):
            return braidflow.interrupt("go on?")

    class Drains(Node):
        def exec(self, prep_res):
            braidflow.drain("drains")  # this run's id

    class Stopped(Node):
        def exec(self, prep_res):
            raise KeyboardInterrupt  # Ctrl-C

    class Fails(Node):
        def exec(self, prep_res):
            raise ValueError("broken")

    store = MemoryStore()
    drains = Drains(name="drains")
    drains >> Node(name="never")  # the drain stops the run before it
    for node, stop in [
        (Asks(name="asks"), braidflow.Suspended),
        (drains, braidflow.Drained),
        (Stopped(name="stopped"), KeyboardInterrupt),
        (Fails(name="fails"), ValueError),
    ]:
        live, live_spans = traced()
        with pytest.raises(stop):
            Flow(start=node, name="flow").run(
                {}, store=store, run_id=node.name, record_events=True, observers=[live]
            )
        replayed, replayed_spans = traced()
        for event in braidflow.recorded_events(store, node.name):
            replayed.on_event(event)
        assert ended(replayed_spans) == ended(live_spans), node.name
        failed = node.name == "fails"
        assert ("ERROR" in {status for *_, status in ended(live_spans)}) == failed, node.name


def test_a_batch_a_drain_stops_past_its_grace_period_is_drained_in_every_tracer(spans, tmp_path):
    """Its step, its items, its flow and the run: drained in the spans, the
    timeline, the JSON-lines trace and Progress, not cancelled (the drain
    cancels what still runs when the grace period ends)."""
    import braidflow

    provider, exporter = spans

    class Forever(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            if item == 1:  # both workers are in an item
                braidflow.drain("held", timeout=0)
            await asyncio.Event().wait()

    events, progress = [], Progress()
    flow = AsyncFlow(start=Forever(name="items", max_concurrency=2), name="flow")
    with pytest.raises(braidflow.Drained), JSONLTrace(tmp_path / "trace.jsonl") as trace:
        flow.run(
            {},
            store=MemoryStore(),
            run_id="held",
            observers=[OpenTelemetry(tracer_provider=provider), events.append, trace, progress],
        )
    outcomes = {
        span.name: (span.attributes["braidflow.outcome"], span.status.status_code.name)
        for span in exporter.get_finished_spans()
    }
    drained = ("drained", "UNSET")
    assert outcomes == dict.fromkeys(
        ["braidflow run flow", "flow", "items", "items[0]", "items[1]"], drained
    )
    data = timeline_data(events)
    assert data["parts"][0]["ended"] == "drained"
    assert all(
        "drained: stopped at the end of the drain's grace period" in note for note in data["info"]
    )
    lines = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert {line["error"]["type"] for line in lines if line["kind"].endswith("_end")} == {
        "DrainStop"
    }
    counted = numbers(progress, "flow / items")[1]
    assert counted["drained"] == 2
    assert "cancelled" not in counted
    assert "failed" not in counted


async def test_opentelemetry_parents_sub_flow_steps_on_their_parameter_set(spans):
    provider, exporter = spans

    class Step(AsyncNode):
        pass

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 0}, {"n": 1}]

    await Sets(start=Step(name="step"), name="sets").run_async(
        {}, observers=OpenTelemetry(tracer_provider=provider)
    )
    finished = exporter.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}
    steps = [span for span in finished if span.name == "step"]
    assert len(steps) == 2
    assert sorted(by_id[span.parent.span_id].name for span in steps) == ["sets[0]", "sets[1]"]


def test_opentelemetry_marks_an_item_served_from_a_result_cache(spans):
    provider, exporter = spans
    cache = Cache(store=MemoryStore())
    CachedDouble(name="double", cache=cache).run({"items": [1]})
    observer = OpenTelemetry(tracer_provider=provider)
    CachedDouble(name="double", cache=cache).run({"items": [1, 2]}, observers=[observer])
    finished = {span.name: span for span in exporter.get_finished_spans()}
    assert finished["double[0]"].attributes.get("braidflow.cache_hit") is True
    assert "braidflow.cache_hit" not in finished["double[1]"].attributes


def test_a_sync_flow_is_traced_too(spans):
    provider, exporter = spans

    class Step(Node):
        pass

    first = Step(name="a")
    first >> Step(name="b")
    Flow(start=first, name="sync").run({}, observers=[OpenTelemetry(tracer_provider=provider)])
    assert sorted(span.name for span in exporter.get_finished_spans()) == [
        "a",
        "b",
        "braidflow run sync",
        "sync",
    ]


def test_jsonl_lines_are_the_records_json_would_write(tmp_path):
    from braidflow._events import make_event
    from braidflow.tracing._jsonl import event_line, event_record

    samples = [
        make_event("run_start", "abc", "main", ("main",), 1.5),
        make_event(
            "emit", "abc", 'say "hi"', ("main", 'say "hi"'), 2.0, 3, 0, None, None, {"t": [1]}
        ),
        make_event(
            "item_end", "abc", "x", ("x",), 2.5, 7, None, 0.25, ValueError("bad\nline"), None
        ),
        make_event("emit", "abc", "é", ("é",), 3.0, None, None, None, None, object),
    ]
    for event in samples:
        assert json.loads(event_line(event)) == json.loads(
            json.dumps(event_record(event), default=repr)
        )


def test_jsonl_trace_escapes_a_run_id_with_quotes(tmp_path):
    from braidflow import MemoryStore, recorded_events

    store = MemoryStore()
    with JSONLTrace(tmp_path / "t.jsonl") as trace:
        Flow(start=Node()).run(
            {}, observers=[trace], store=store, run_id='a"b\\c', record_events=True
        )
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert records
    assert {record["run_id"] for record in records} == {'a"b\\c'}
    assert {event.run_id for event in recorded_events(store, 'a"b\\c')} == {'a"b\\c'}


def test_progress_of_a_resumed_batch_counts_what_finished_before():
    """Items that finished before a resume are not run (nor observed) again:
    the line counts them done, says so, and times only what runs now."""
    from rich.console import Console

    from braidflow import BatchNode, MemoryStore

    class Numbers(BatchNode):
        down = True

        def prep(self, shared):
            return list(range(10))

        def exec(self, item):
            if item == 6 and Numbers.down:
                raise RuntimeError("down")
            return item

    store = MemoryStore()
    flow = Flow(start=Numbers(name="numbers"))
    with pytest.raises(RuntimeError):
        flow.run({}, store=store, run_id="r")
    Numbers.down = False
    progress = Progress(Console(file=io.StringIO()))
    flow.resume("r", store=store, observers=[progress])
    shown, counted = numbers(progress, "Flow / numbers")
    assert shown == "10/10"
    assert counted["reused"] == 6
    row = next(row for row in progress._rows() if row.label == "Flow / numbers")
    assert row.finished
    assert row.fraction == 1.0


def test_opentelemetry_records_an_error_whose_str_raises_and_keeps_tracing():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no message")

    class Fails(Node):
        def exec(self, prep_res):
            raise Unprintable("x")

    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the observer is not dropped
        with pytest.raises(Unprintable):
            Flow(start=Fails(name="fails", max_retries=2)).run(
                {}, observers=[OpenTelemetry(tracer_provider=provider)]
            )
    spans = {span.name: span for span in exporter.get_finished_spans()}
    events = {event.name: event.attributes for event in spans["fails"].events}
    assert events["retry"]["exception.message"] == "<Unprintable whose str() fails>"
    assert events["exception"]["exception.message"] == "<Unprintable whose str() fails>"
    assert spans["fails"].status.status_code.name == "ERROR"
