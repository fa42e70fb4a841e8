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
    assert labels[:2] == ["crawl", "crawl / fetch"]
    assert [label for label in labels if label.startswith("fetch [")] == [
        f"fetch [{n}]" for n in range(5)
    ]
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
            const scale = (canvas.width - 260 - 12) / Math.max(data.run.duration, 1e-6);
            return {x: canvas.left + 260 + ((span[1] + span[2]) / 2) * scale,
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
    assert all(
        "10000 items" in label for label in page.locator(".lane-label.slot").all_inner_texts()
    )
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
    labels = page.locator(".lane-label").all_inner_texts()
    assert "main / both / left" in labels
    assert "main / both / right" in labels
    assert "branch" in page.locator("#legend").inner_text()
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
