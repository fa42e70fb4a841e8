"""The dashboard in a real browser: `braidflow ui` started as a user starts it, on a
free port, driven with playwright in Debian's chromium. Each test checks that no
page logged an error and that nothing was asked of any other address."""

import os
import re
import shutil

import pytest

from _support import CHROMIUM_ARGS, dashboard_served
from braidflow import SQLiteStore
from ui_flows import in_thread, make_reply, record

pytest.importorskip("starlette")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("BRAIDFLOW_REQUIRE_BROWSER"),
        reason="no chromium here (Debian: apt-get install chromium)",
    ),
]
SOON = 15_000  # ms: how long the page may take to show what changed


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "reply", "ticket-1", {"customer": "Ada"})
    record(path, "crawl", "crawl-ok", {"pages": 5})
    record(path, "crawl", "crawl-bad", {"pages": 40, "broken": 7})
    return path


@pytest.fixture
def address(store_path):
    """The dashboard of the store, served by the command; its address."""
    with dashboard_served(store_path) as line:
        yield re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)


@pytest.fixture
def page(browser, address):
    """A page of the browser, with what went wrong on it: console errors,
    script errors, and requests to anywhere but the dashboard."""
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    opened.on("console", lambda message: message.type == "error" and problems.append(message.text))
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on(
        "request",
        lambda request: None if request.url.startswith(address) else problems.append(request.url),
    )
    opened.problems = problems
    opened.address = address
    yield opened
    opened.close()


def rows(page):
    return page.locator("tr.run").evaluate_all("(rows) => rows.map((row) => row.dataset.run)")


def answer_elsewhere(store_path, run_id):
    """Answer a waiting reply run "no", as another process would."""
    store = SQLiteStore(store_path)
    try:
        make_reply().resume(run_id, store=store, input="no", record_events=True)
    finally:
        store.close()


def status_is(page, status):
    page.locator("#status").filter(has_text=status).wait_for(timeout=SOON)


def test_the_runs_table_filters_searches_and_opens_a_run_with_its_timeline(page):
    page.goto(page.address)
    assert rows(page) == ["crawl-bad", "crawl-ok", "ticket-1"]  # newest first
    page.locator("a.filter[data-status=failed]").click()
    assert rows(page) == ["crawl-bad"]
    page.locator("a.filter", has_text="all").click()
    page.locator("input[name=q]").fill("ticket")
    page.locator("input[name=q]").press("Enter")
    page.wait_for_url(re.compile(r"q=ticket"))
    assert rows(page) == ["ticket-1"]
    page.goto(page.address)
    page.locator("tr.run[data-run=crawl-bad] a").first.click()
    page.wait_for_url(re.compile(r"/runs/crawl-bad$"))
    assert "ValueError: page 7 is not HTML" in page.locator("#error").inner_text()
    assert "failed on item 7" in page.locator("#error .notes").inner_text()
    timeline = page.frame_locator("iframe.timeline")
    timeline.locator(".lane-label").first.wait_for()
    labels = timeline.locator(".lane-label").all_inner_texts()
    assert labels[:3] == ["crawl", "fetch", "fetch [0]"]
    assert "1 failed" in timeline.locator("#summary").inner_text()
    assert page.problems == []


def test_the_table_and_a_run_follow_the_store_without_a_reload(page, store_path):
    page.goto(page.address)
    page.evaluate("window.stillHere = true")
    record(store_path, "reply", "ticket-2", {"customer": "Grace"})
    page.locator("tr.run[data-run=ticket-2]").wait_for(timeout=SOON)
    page.goto(f"{page.address}runs/ticket-2")
    status_is(page, "waiting")
    page.evaluate("window.stillHere = true")

    in_thread(lambda: answer_elsewhere(store_path, "ticket-2"))  # at the command line, say
    status_is(page, "completed")
    assert page.evaluate("window.stillHere") is True  # the same page: no reload
    assert page.problems == []


def test_answering_an_interrupt_runs_the_run_to_its_end(page):
    page.goto(f"{page.address}runs/ticket-1")
    status_is(page, "waiting")
    assert "Send this reply?" in page.locator("#prompt").inner_text()
    answer = page.locator("#answer")
    answer.fill("yes")  # not JSON: refused before it is sent
    assert "not JSON" in page.locator("form.answer .json-error").inner_text()
    page.evaluate("window.stillHere = true")
    page.locator("form.answer button").click()
    assert page.evaluate("window.stillHere") is True  # nothing was sent
    answer.fill('"yes"')
    assert page.locator("form.answer .json-error").inner_text() == ""
    with page.expect_navigation():
        page.locator("form.answer button").click()
    status_is(page, "completed")
    page.goto(f"{page.address}runs/ticket-1?at=2")
    assert '"sent": true' in page.locator("#shared").input_value()
    assert page.problems == []


def test_forking_a_run_from_a_step_with_shared_edited(page):
    page.goto(f"{page.address}runs/crawl-bad?at=0")
    edited = page.locator("#shared")
    assert '"broken": 7' in edited.input_value()
    edited.fill('{"pages": 40, "broken": 7')  # cut short: refused before it is sent
    assert "not JSON" in page.locator("form.fork .json-error").inner_text()
    edited.fill('{"pages": 40, "broken": -1}')
    with page.expect_navigation():
        page.locator("form.fork button").click()
    page.wait_for_url(re.compile(r"/runs/crawl-bad-"))
    status_is(page, "completed")
    assert "forked from" in page.locator("#head .facts").inner_text()
    page.goto(page.address)
    assert rows(page)[0].startswith("crawl-bad-")  # the fork, newest
    assert page.problems == []


def test_a_page_sent_back_for_a_refused_answer_is_the_run_s_and_follows_it(page, store_path):
    page.goto(f"{page.address}runs/ticket-1")
    status_is(page, "waiting")
    page.locator("#answer").fill("yes")  # not JSON: sent past the page's own check
    with page.expect_navigation():
        page.locator("form.answer").evaluate("(form) => form.submit()")
    page.wait_for_url(re.compile(r"/runs/ticket-1$"))  # the run's page, not the action's
    status_is(page, "waiting")
    page.problems.clear()  # (the browser logs the refusal's 400)

    in_thread(lambda: answer_elsewhere(store_path, "ticket-1"))
    status_is(page, "completed")  # it follows the store again
    assert page.problems == []


def test_a_run_whose_id_is_dots_is_opened_and_answered_from_the_table(page, store_path):
    # "." and "..": a browser takes them out of a path, spelled %2E too.
    for run_id in (".", ".."):
        record(store_path, "reply", run_id, {"customer": "Ada"})
        page.goto(page.address)
        page.locator(f'tr.run[data-run="{run_id}"] a').first.click()
        page.locator("#head h1 .id").filter(has_text=run_id).wait_for(timeout=SOON)
        assert page.locator("#head h1 .id").inner_text() == run_id
        status_is(page, "waiting")
        page.locator("#answer").fill('"yes"')
        with page.expect_navigation():
            page.locator("form.answer button").click()
        assert page.locator("#head h1 .id").inner_text() == run_id
        status_is(page, "completed")  # followed by the page's script, at /runs/!.../version
    assert page.problems == []
