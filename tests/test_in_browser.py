"""What braidflow draws, checked in a real headless browser (Debian's chromium,
driven by playwright): the HTML timeline, and mermaid charts rendered by
mermaid itself. Skipped when chromium (or mermaid's script, found through
BRAIDFLOW_MERMAID_JS) is missing, unless BRAIDFLOW_REQUIRE_BROWSER is set, as
CI sets it."""

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from _support import CHROMIUM_ARGS
from braidflow import AsyncFlow, AsyncParallelBatchNode, Limiter
from braidflow.tracing import Timeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("BRAIDFLOW_REQUIRE_BROWSER"),
        reason="no chromium here (Debian: apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser, path):
    """Load a timeline page; return it with its console errors and outside requests."""
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    problems = []
    page.on(
        "console",
        lambda message: problems.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "request",
        lambda request: None if request.url.startswith("file://") else problems.append(request.url),
    )
    page.goto(path.as_uri())
    page.wait_for_function("window.braidflowTimeline !== undefined")
    return page, problems


def run_flow(flow, observers):
    """Run a flow to completion in a thread of its own: playwright's sync API
    keeps an event loop running in this one, where run() would return an
    awaitable instead."""
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(flow.run({}, observers=observers)))
    worker.start()
    worker.join()
    assert outcome, "the run failed"


def make_items(count, fail_every=0):
    class Fetch(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(count))

        async def exec_async(self, item):
            await asyncio.sleep(0)
            if fail_every and item % fail_every == 1 and self.cur_retry == 0:
                raise ConnectionError("flaky")
            return item

    return Fetch


def test_the_page_loads_offline_and_shows_a_lane_per_step_and_item(browser, tmp_path):
    path = tmp_path / "run.html"
    node = make_items(5, fail_every=2)(
        name="fetch", max_concurrency=2, max_retries=2, limits=[Limiter(1, name="api")]
    )
    run_flow(AsyncFlow(start=node, name="crawl"), [Timeline(path)])
    page, problems = open_page(browser, path)
    labels = page.locator(".lane-label").all_inner_texts()
    assert labels == ["crawl", "fetch", *(f"fetch [{n}]" for n in range(5))]
    legend = page.locator("#legend").inner_text()
    for key in ("item", "failed", "limiter wait", "retry"):
        assert key in legend
    assert "5 items" in page.locator("#summary").inner_text()
    page.screenshot(path=str(tmp_path / "timeline.png"))
    assert problems == []


def test_hovering_an_item_shows_its_details(browser, tmp_path):
    path = tmp_path / "run.html"
    run_flow(AsyncFlow(start=make_items(3)(name="fetch"), name="crawl"), [Timeline(path)])
    page, problems = open_page(browser, path)
    where = page.evaluate(
        """() => {
            const data = window.braidflowTimeline.data;
            const row = data.lanes.findIndex((lane) => lane.label === "fetch [1]");
            const span = data.spans.find((s) => s[0] === row && s[3] === 1);
            const canvas = document.getElementById("canvas").getBoundingClientRect();
            const labels = window.braidflowTimeline.labelsWidth;
            const scale = (canvas.width - labels - 12) / Math.max(data.run.duration, 1e-6);
            return {x: canvas.left + labels + ((span[1] + span[2]) / 2) * scale,
                    y: canvas.top + row * 18 + 9};
        }"""
    )
    page.mouse.move(where["x"], where["y"])
    tip = page.locator("#tip")
    assert tip.is_visible()
    assert tip.inner_text().startswith("fetch [1]")
    assert problems == []


def test_ten_thousand_items_pack_into_a_few_lanes_and_unpack_on_request(browser, tmp_path):
    path = tmp_path / "run.html"
    node = make_items(10_000)(name="fetch", max_concurrency=16)
    run_flow(AsyncFlow(start=node, name="big"), [Timeline(path)])
    page, problems = open_page(browser, path)
    packed = page.evaluate("window.braidflowTimeline.lanes")
    assert 3 <= packed <= 2 + 16  # two node lanes, at most one lane per item in flight
    slots = page.locator(".lane-label.slot")
    # The batch is named once, on its first lane; every lane says which it is on hover.
    assert slots.all_inner_texts() == [f"fetch · 10000 items on {packed - 2} lanes"] + [""] * (
        packed - 3
    )
    assert slots.nth(1).get_attribute("title") == f"fetch · 10000 items · lane 2 of {packed - 2}"
    page.locator("#per-item").check()
    assert page.evaluate("window.braidflowTimeline.lanes") == 10_002
    assert page.locator(".lane-label").count() < 100  # only the lanes in view exist
    page.locator("#scroller").evaluate("(box) => { box.scrollTop = 90000; }")
    page.wait_for_timeout(50)
    assert any(
        label.startswith("fetch [") for label in page.locator(".lane-label").all_inner_texts()
    )
    assert problems == []


def test_branches_are_lanes_of_their_own(browser, tmp_path):
    from braidflow import Parallel

    path = tmp_path / "run.html"
    fan_out = Parallel(make_items(2)(name="left"), make_items(2)(name="right"), name="both")
    run_flow(AsyncFlow(start=fan_out, name="main"), [Timeline(path)])
    page, problems = open_page(browser, path)
    rows = lane_rows(page)
    both = next(row for row in rows if row["title"] == "main / both")
    for side in ("left", "right"):
        lane = next(row for row in rows if row["title"] == f"main / both / {side}")
        assert lane["label"] == side
        assert lane["indent"] > both["indent"]  # drawn under the fork
    assert "branch" in page.locator("#legend").inner_text()
    assert problems == []


def lane_rows(page):
    """The lane labels drawn, top to bottom: text, title, indent, and whether
    the text is cut (wider than its box)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.lane-label')]
            .sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top))
            .map((e) => ({label: e.textContent, title: e.title,
                          indent: parseFloat(e.style.paddingLeft),
                          cut: e.scrollWidth > e.clientWidth}))"""
    )


LONG = "download_the_page_and_everything_it_links_to"  # cut at 260 px before


def test_a_batch_flows_sub_flow_steps_are_nested_under_their_item_uncut(browser, tmp_path):
    from braidflow import AsyncNode, AsyncParallelBatchFlow

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": 0}, {"n": 1}]

    class Step(AsyncNode):
        async def exec_async(self, prep_res):
            await asyncio.sleep(0)

    download = Step(name=LONG, limits=[Limiter(1, name="api")])
    download >> Step(name="parse")
    path = tmp_path / "run.html"
    run_flow(AsyncFlow(start=Sets(start=download, name="sets"), name="main"), [Timeline(path)])
    page, problems = open_page(browser, path)
    rows = lane_rows(page)
    assert [row["label"] for row in rows] == [
        "main", "sets", "sets [0]", LONG, "parse", "sets [1]", LONG, "parse",
    ]  # fmt: skip
    indents = [row["indent"] for row in rows]
    assert indents[0] < indents[1] < indents[2] < indents[3] == indents[4]
    assert indents[5] == indents[2]
    assert not any(row["cut"] for row in rows)  # the label column fits the longest label
    assert rows[3]["title"] == f"main / sets[0] / {LONG}"
    assert page.evaluate("window.braidflowTimeline.labelsWidth") > 300
    assert page.evaluate("window.braidflowTimeline.strip")[0].startswith("running, peak ")
    page.screenshot(path=str(tmp_path / "nested.png"))
    assert problems == []


def test_a_label_too_long_for_the_page_is_cut_and_whole_on_hover(browser, tmp_path):
    from braidflow import AsyncNode

    name = "x" * 400
    path = tmp_path / "run.html"
    run_flow(AsyncFlow(start=AsyncNode(name=name), name="main"), [Timeline(path)])
    page, problems = open_page(browser, path)
    rows = lane_rows(page)
    assert rows[1]["cut"]
    assert rows[1]["title"] == f"main / {name}"
    assert page.evaluate("window.braidflowTimeline.labelsWidth") <= 1200 * 0.45
    assert problems == []


def test_a_flow_without_a_batch_says_nothing_about_items(browser, tmp_path):
    from braidflow import Flow, Node

    first = Node(name="first")
    first >> Node(name="second")
    path = tmp_path / "run.html"
    run_flow(Flow(start=first, name="plain"), [Timeline(path)])
    page, problems = open_page(browser, path)
    assert "item" not in page.locator("#summary").inner_text()
    assert page.evaluate("window.braidflowTimeline.strip") == []
    ticks = page.evaluate("window.braidflowTimeline.ticks")
    assert len(ticks) >= 3
    assert len(set(ticks)) == len(ticks)  # a run of microseconds: no two ticks read alike
    assert problems == []


def killed_and_resumed_events():
    """A run of 12 items, 4 in flight, whose process died 4 s in with items
    4-7 in flight as far as its events say (5 and 6 had finished, their ends
    unwritten), resumed in another process to run items 4, 7 and 8-11."""
    from braidflow._events import make_event

    events = []

    def add(kind, at, item=None, data=None, path=("crawl", "fetch")):
        events.append(make_event(kind, "r", path[-1], path, at, item, data=data))

    for at in (100.0, 7.0):  # each part's clock: its own process's
        add("run_start", at, path=("crawl",))
        add("node_start", at, path=("crawl",))
        add("node_start", at)
        items = range(8) if at == 100.0 else (4, 7, 8, 9, 10, 11)
        for number, item in enumerate(items):  # one starts as another ends
            add("item_start", at + (number > 3) * (1 + (number - 4) * 0.5), item, {"total": 12})
            if at != 100.0 or item < 4:
                add("item_end", at + 1 + number * 0.5, item)
    add("emit", 104.0, 7, "the last event part 1 wrote")
    add("node_end", 13.0)
    add("node_end", 13.0, path=("crawl",))
    add("run_end", 13.0, path=("crawl",))
    return sorted(events, key=lambda event: (event.time < 50, event.time))


def test_a_resumed_run_marks_each_resume_and_what_the_crash_cut_off(browser, tmp_path):
    path = tmp_path / "run.html"
    Timeline(path).write(killed_and_resumed_events())
    page, problems = open_page(browser, path)
    label = page.locator("#resumes .resume")
    assert label.count() == 1
    assert label.is_visible()
    assert label.inner_text() == "resumed · part 2"
    assert "resumed after part 1 stopped with no end recorded" in label.get_attribute("title")
    box, strip = label.bounding_box(), page.locator("#overview").bounding_box()
    assert strip["y"] <= box["y"]
    assert box["y"] + box["height"] <= strip["y"] + strip["height"]
    assert box["x"] > page.evaluate("window.braidflowTimeline.labelsWidth")
    summary = page.locator("#summary").inner_text()
    assert "2 parts (resumed once)" in summary
    assert "4 cut off by a crash (2 of them finished: their results were reused)" in summary
    assert page.evaluate("window.braidflowTimeline.strip") == ["running, peak 4"]
    legend = page.locator("#legend").inner_text()
    for key in ("cut off by a crash", "cut off, result reused", "resumed"):
        assert key in legend
    page.screenshot(path=str(tmp_path / "resumed.png"))
    assert problems == []


MERMAID_JS = os.environ.get("BRAIDFLOW_MERMAID_JS", "")


@pytest.mark.skipif(
    not os.path.isfile(MERMAID_JS) and not os.environ.get("BRAIDFLOW_REQUIRE_BROWSER"),
    reason="no mermaid script here (npm install mermaid; set BRAIDFLOW_MERMAID_JS)",
)
def test_mermaid_renders_every_chart_and_shows_the_names(browser, tmp_path):
    import json

    from braidflow import AsyncParallelBatchFlow, Flow, Node

    class Decide(Node):
        pass

    load, decide = Node(name="load"), Decide(name='say "hi" <b>')
    load >> decide
    decide - "again" >> load
    decide - "work" >> make_items(1)(name="work")
    decide - "done" >> None

    class Sets(AsyncParallelBatchFlow):
        pass

    inner = AsyncFlow(start=load, name="inner")
    inner >> Sets(start=Flow(start=Node(name="x")), name="sets")
    charts = [AsyncFlow(start=inner, name="main").to_mermaid(), Node().to_mermaid()]
    page_path = tmp_path / "charts.html"
    page_path.write_text(
        f"<html><body><script src='{Path(MERMAID_JS).as_uri()}'></script><script>"
        "window.results = []; (async () => { mermaid.initialize({startOnLoad: false});"
        f"for (const chart of {json.dumps(charts)}) {{"
        "try { const drawn = await mermaid.render('g' + window.results.length, chart);"
        "document.body.insertAdjacentHTML('beforeend', drawn.svg); window.results.push('ok'); }"
        "catch (error) { window.results.push(String(error)); } } window.done = true; })();"
        "</script></body></html>"
    )
    page = browser.new_page()
    page.goto(page_path.as_uri())
    page.wait_for_function("window.done === true", timeout=20_000)
    assert page.evaluate("window.results") == ["ok", "ok"]
    names = page.evaluate(
        "[...document.querySelectorAll('svg .nodeLabel')].map(e => e.textContent)"
    )
    for name in ("load", 'say "hi" <b>', "work", "end", "sets", "x", "start"):
        assert any(label.startswith(name) for label in names), name
