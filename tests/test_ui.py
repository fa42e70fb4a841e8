"""The dashboard (braidflow ui) served in this process by Starlette's test client:
what its pages show, its actions, and its guards; the command's one-line refusals.
Its pages in a real browser: tests/test_ui_in_browser.py."""

import contextlib
import hashlib
import html
import http.client
import json
import re
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")  # the test client

from starlette.testclient import TestClient

import braidflow as bf
import ui_flows
from _support import dashboard_served, start_drain_job
from braidflow.cli import main
from braidflow.ui import create_app
from braidflow.ui._guard import COOKIE
from braidflow.ui._listing import PAGE, USAGE_KEY
from ui_flows import record

FLOWS = Path(ui_flows.__file__)
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "reply", "ticket-1", {"customer": "Ada"})
    record(path, "crawl", "crawl-ok", {"pages": 5})
    record(path, "crawl", "crawl-bad", {"pages": 12, "broken": 7})
    return path


def client_of(store_path, serializer="json", **options):
    store = bf.SQLiteStore(store_path, read_only=True, serializer=serializer)
    app = create_app(store, store_path, **options)
    return TestClient(app, base_url=LOCAL, follow_redirects=False)


def csrf_of(page):
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def finish_actions(client):
    """Wait for the runs the dashboard's actions started to end."""
    for thread in list(client.app.state.actions._going.values()):
        thread.join(30)


# -- the runs table ---------------------------------------------------------------------


def test_the_table_lists_each_run_with_where_it_is_and_its_batch(store_path):
    page = client_of(store_path).get("/").text
    for run_id in ("ticket-1", "crawl-ok", "crawl-bad"):
        assert f'data-run="{run_id}"' in page
    bad = page.split('data-run="crawl-bad"')[1].split("</tr>")[0]
    assert "failed" in bad
    assert "fetch" in bad
    assert '<progress value="7" max="12">' in bad  # 7 of its 12 pages were done
    assert "ValueError: page 7 is not HTML" in bad
    waiting = page.split('data-run="ticket-1"')[1].split("</tr>")[0]
    assert "Send this reply?" in waiting
    assert "tokens" not in page  # no run recorded its usage: no such column


def test_a_batch_in_a_branch_shows_where_the_run_is_on_the_table_and_its_page(tmp_path):
    class Batch(bf.BatchNode):
        def prep(self, shared):
            return range(10)

        def exec(self, item):
            return bf.interrupt("item 7?") if item == 7 else item

    fan = bf.Parallel(Batch(name="batch"), bf.Node(name="plain"), name="fan")
    path = tmp_path / "runs.db"
    store = bf.SQLiteStore(path)
    with pytest.raises(bf.Suspended):
        bf.Flow(start=fan, name="job").run({}, store=store, run_id="branch")
    store.close()
    client = client_of(path)
    row = client.get("/").text.split('data-run="branch"')[1].split("</tr>")[0]
    assert "fan/batch/batch" in row
    assert '<progress value="7" max="10">' in row
    page = client.get("/runs/branch").text
    assert '<p class="where">at <b>fan/batch/batch</b>: <progress value="7" max="10">' in page


def test_the_table_filters_by_status_and_searches_by_id(store_path):
    client = client_of(store_path)
    failed = client.get("/?status=failed").text
    assert 'data-run="crawl-bad"' in failed
    assert 'data-run="crawl-ok"' not in failed
    found = client.get("/?q=CRAWL").text
    assert 'data-run="crawl-ok"' in found
    assert 'data-run="ticket-1"' not in found
    assert "2 runs of 3" in found
    assert "No runs whose id holds" in client.get("/?q=nothing").text


def test_the_table_is_served_a_page_at_a_time(tmp_path):
    store = bf.MemoryStore()
    flow = ui_flows.make_crawl()
    for number in range(PAGE + 10):
        flow.run({"pages": 1}, store=store, run_id=f"run-{number:03d}")
    client = TestClient(create_app(store, tmp_path / "memory"), base_url=LOCAL)
    first = client.get("/").text
    assert first.count('class="run ') == PAGE
    assert 'data-run="run-059"' in first  # newest first
    assert "page 1 of 2" in first
    assert 'rel="next"' in first
    second = client.get("/?page=2").text
    assert second.count('class="run ') == 10
    assert 'data-run="run-000"' in second


def test_tokens_and_cost_are_shown_where_a_run_recorded_them(store_path):
    store = bf.SQLiteStore(store_path)
    store.set_metadata(
        "crawl-ok", {USAGE_KEY: {"input_tokens": 1200, "output_tokens": 34, "cost": 0.0123}}
    )
    store.set_metadata("crawl-bad", {USAGE_KEY: {"total_tokens": 10, "cost": 5.1e-06}})
    store.close()
    client = client_of(store_path)
    page = client.get("/").text
    assert '<th class="num">tokens</th>' in page
    row = page.split('data-run="crawl-ok"')[1].split("</tr>")[0]
    assert "1,234" in row
    assert "0.0123" in row
    row = page.split('data-run="crawl-bad"')[1].split("</tr>")[0]
    assert "5.1e-06" in row  # one cheap call: not 0.0000
    assert "10 tokens · cost 5.1e-06" in client.get("/runs/crawl-bad").text


# -- a run's page -----------------------------------------------------------------------


def test_a_failed_run_shows_its_error_with_notes_steps_and_events(store_path):
    page = client_of(store_path).get("/runs/crawl-bad").text
    assert "ValueError: page 7 is not HTML" in page
    assert "braidflow: node &#39;fetch&#39; (Fetch) failed on item 7" in page
    assert "7 of 12" in page  # the batch's progress in its step
    assert 'src="/runs/crawl-bad/timeline?v=' in page
    assert "run_start" in page
    assert "item_end" in page
    problems = client_of(store_path).get("/runs/crawl-bad?kind=problems").text
    assert "item_start" not in problems.split('id="events"')[1].split("<tbody>")[1]


def test_shared_after_a_step_shows_what_the_step_changed(store_path):
    page = client_of(store_path).get("/runs/crawl-ok?at=2").text
    assert "ended at <b>summarize</b>" in page  # inside its flow, as the table says it
    assert "shared after step 2 (summarize)" in page
    change = page.split('class="change"')[1].split("</tr>")[0]
    assert ">+<" in change
    assert "total" in change
    assert "100" in change


def test_values_from_shared_are_escaped(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "reply", "x", {"customer": "<script>alert(1)</script>"})
    page = client_of(path).get("/runs/x?at=1").text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_run_the_store_does_not_have_is_a_page_that_says_so(store_path):
    client = client_of(store_path)
    answer = client.get("/runs/nobody")
    assert answer.status_code == 404
    assert "No run nobody" in answer.text
    timeline = client.get("/runs/nobody/timeline")
    assert timeline.status_code == 404
    assert "No run nobody" in timeline.text


def test_an_action_asked_for_by_get_says_to_use_the_run_s_page(store_path):
    client = client_of(store_path)
    for action in ("resume", "fork", "drain"):
        answer = client.get(f"/runs/crawl-bad/{action}")
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST"
        assert f"To {action} run crawl-bad, use the button on" in answer.text
        assert 'href="/runs/crawl-bad"' in answer.text
    assert client.get("/runs/crawl-bad").status_code == 200  # the page it points to


def test_the_timeline_is_the_timeline_page_allowed_only_its_own_script(store_path):
    answer = client_of(store_path).get("/runs/crawl-bad/timeline")
    assert "braidflowTimeline" in answer.text
    policy = answer.headers["content-security-policy"]
    assert "script-src 'sha256-" in policy
    assert "unsafe-inline'" not in policy.split("style")[0]


def test_the_version_follows_the_record(store_path):
    version = client_of(store_path).get("/runs/ticket-1/version").json()
    assert version["status"] == "waiting"


# -- actions ----------------------------------------------------------------------------


def test_answering_a_waiting_run_resumes_it_to_its_end(store_path):
    client = client_of(store_path)
    page = client.get("/runs/ticket-1").text
    assert "Send this reply?" in page
    assert "Answer and resume" in page
    done = client.post("/runs/ticket-1/resume", data={"csrf": csrf_of(page), "answer": '"yes"'})
    assert done.status_code == 303
    assert done.headers["location"] == "/runs/ticket-1"
    finish_actions(client)
    store = bf.SQLiteStore(store_path, read_only=True)
    assert store.get("ticket-1").status == "completed"
    assert "completed" in client.get("/runs/ticket-1").text


def test_a_pickle_run_is_shown_and_answered_where_the_dashboard_reads_pickle(tmp_path):
    from braidflow.cli._store import target_metadata

    path = tmp_path / "runs.db"
    with bf.SQLiteStore(path, serializer="pickle") as pickled, pytest.raises(bf.Suspended):
        ui_flows.make_reply().run(
            {"customer": "Ada", "tags": {"vip"}},  # a set: a JSON run could not keep it
            store=pickled,
            run_id="p",
            metadata=target_metadata(f"{FLOWS}:reply"),
        )
    reading_json = client_of(path)  # refused, saying why, never a server error
    for at in ("?at=1", ""):
        refused = reading_json.get(f"/runs/p{at}")
        assert refused.status_code == 409
        assert "cannot be read here" in refused.text
        assert "--serializer pickle" in refused.text
    client = client_of(path, serializer="pickle")  # braidflow ui --serializer pickle
    page = client.get("/runs/p?at=1").text
    assert "shared after step 1 (draft)" in page
    assert "vip" in page
    done = client.post("/runs/p/resume", data={"csrf": csrf_of(page), "answer": '"yes"'})
    assert done.status_code == 303
    finish_actions(client)
    with bf.SQLiteStore(path, serializer="pickle") as store:
        assert store.get("p").status == "completed"
        assert bf.stored_state("p", store=store)["tags"] == {"vip"}  # written on as pickle


def test_an_answer_that_is_not_json_is_refused_and_the_run_waits(store_path):
    client = client_of(store_path)
    csrf = csrf_of(client.get("/runs/ticket-1").text)
    refused = client.post("/runs/ticket-1/resume", data={"csrf": csrf, "answer": "yes"})
    assert refused.status_code == 400
    assert "the answer is not valid JSON" in refused.text
    assert bf.SQLiteStore(store_path, read_only=True).get("ticket-1").status == "waiting"
    empty = client.post("/runs/ticket-1/resume", data={"csrf": csrf, "answer": " "})
    assert "give it as JSON" in empty.text
    done = client.post("/runs/ticket-1/resume", data={"csrf": csrf, "answer": '"no"'})
    assert done.status_code == 303  # as JSON, it is taken
    finish_actions(client)
    assert bf.SQLiteStore(store_path, read_only=True).get("ticket-1").status == "completed"


def test_a_run_whose_id_ends_as_an_action_or_a_part_has_a_page(tmp_path):
    path = tmp_path / "runs.db"
    ends = ["resume", "fork", "drain", "version", "timeline"]
    for end in ends:
        record(path, "crawl", f"x/{end}", {"pages": 2})
    record(path, "crawl", "x", {"pages": 2})
    client = client_of(path)
    for end in ends:
        shown = client.get(f"/runs/x%2F{end}")  # as the table links it
        assert shown.status_code == 200, end
        assert f"<title>run x/{end}" in shown.text
    assert client.get("/runs/x%2Fversion/version").json()["status"] == "completed"
    assert client.get("/runs/x/resume").status_code == 405  # the action of run x, by GET
    assert client.get("/runs/x/version").json()["status"] == "completed"


ODD_IDS = [".", "..", "a/b", "x?y#z", "50%", "sp ace", "é", "!..", "%2E%2E"]


def as_a_browser_goes(address, link):
    """Where a browser goes for ``link`` on the page at ``address``: it takes
    the segments ``.`` and ``..`` out of the path, spelled ``%2E`` too (the
    URL standard), as urljoin does the first."""
    return urljoin(address, re.sub("%2e", ".", html.unescape(link), flags=re.IGNORECASE))


def test_a_run_s_link_leads_to_its_page_whatever_its_id(tmp_path):
    path = tmp_path / "runs.db"
    for run_id in ODD_IDS:
        record(path, "crawl", run_id, {"pages": 2})
    client = client_of(path)
    table = client.get("/").text
    for run_id in ODD_IDS:
        link = re.search(rf'<a href="([^"]*)">{re.escape(html.escape(run_id))}</a>', table)[1]
        shown = client.get(as_a_browser_goes(f"{LOCAL}/", link))
        assert f"<title>run {html.escape(run_id)} " in shown.text, (run_id, link)
    assert client.get("/runs/%21.").status_code == 404  # run "!.": there is none


@pytest.mark.slow
def test_every_page_and_action_of_a_run_works_whatever_its_id(tmp_path):
    path, outage = tmp_path / "runs.db", tmp_path / "outage"
    outage.touch()
    for run_id in ODD_IDS:
        record(path, "crawl", run_id, {"pages": 2, "broken": 1, "outage": str(outage)})
    pages = {}  # run id: its page's address, as a browser went to it from the table
    with served(path) as address:
        table = ask(address)[2]
        for run_id in ODD_IDS:
            shown = html.escape(run_id)
            link = re.search(rf'<a href="([^"]*)">{re.escape(shown)}</a>', table)[1]
            pages[run_id] = where = as_a_browser_goes(address, link)
            page = ask(where)[2]
            assert f"<title>run {shown} " in page, (run_id, link)
            # What the page's script asks for (data-run: the run's segment), and its timeline.
            segment = re.search(r'data-run="([^"]*)"', page)[1]
            version = ask(as_a_browser_goes(where, f"/runs/{segment}/version"))[2]
            assert json.loads(version)["status"] == "failed", run_id
            timeline = re.search(r'<iframe [^>]*src="([^"]*)"', page)[1]
            assert "braidflowTimeline" in ask(as_a_browser_goes(where, timeline))[2], run_id
            status, _, by_get = ask(as_a_browser_goes(where, f"/runs/{segment}/fork"))
            assert status == 405, run_id
            back = re.search(r'<a href="([^"]*)">its page', by_get)[1]
            assert as_a_browser_goes(where, back) == where, run_id
            # Drain: refused (the run is not running), on the run's own page.
            drain = as_a_browser_goes(where, f"/runs/{segment}/drain")
            status, _, refused = ask(drain, {"csrf": csrf_of(page)})
            assert status == 400, run_id
            assert f"run {run_id!r} is failed, not running" in html.unescape(refused), run_id
            # Fork, then from the fork's page back to the run it came from.
            fork = re.search(r'<form method="post" action="([^"]*)" class="fork"', page)[1]
            edited = json.dumps({"pages": 2, "broken": -1, "outage": str(outage)})
            form = {"csrf": csrf_of(page), "at": "0", "shared": edited}
            status, headers, _ = ask(as_a_browser_goes(where, fork), form)
            assert status == 303, run_id
            forked = ask(as_a_browser_goes(where, headers["location"]))[2]
            assert f"<title>run {shown}-fork-1 " in forked, run_id
            came_from = re.search(r'forked from <a href="([^"]*)"', forked)[1]
            assert as_a_browser_goes(where, came_from) == where, run_id
        outage.unlink()  # the failures' cause gone: each run resumes to its end
        for run_id, where in pages.items():
            page = ask(where)[2]
            resume = re.search(r'<form method="post" action="([^"]*)" class="resume"', page)[1]
            status, headers, _ = ask(as_a_browser_goes(where, resume), {"csrf": csrf_of(page)})
            assert status == 303, run_id
            assert as_a_browser_goes(where, headers["location"]) == where, run_id
        store = bf.SQLiteStore(path, read_only=True)
        for run_id in ODD_IDS:
            assert until_ended(store, run_id) == "completed", run_id
            assert until_ended(store, f"{run_id}-fork-1") == "completed", run_id


@contextlib.contextmanager
def served(store_path):
    """The dashboard of the store, served by the command; its address."""
    with dashboard_served(store_path) as line:
        yield re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)


def ask(url, form=None):
    """GET ``url``, or POST ``form`` to it, sending its path as it is (nothing
    decoded or normalised); the status, the headers and the text answered."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if form is None:
            connection.request("GET", target)
        else:
            kind = {"Content-Type": "application/x-www-form-urlencoded"}
            connection.request("POST", target, urlencode(form), kind)
        answer = connection.getresponse()
        return answer.status, answer.headers, answer.read().decode()
    finally:
        connection.close()


def until_ended(store, run_id):
    """The status of a run the dashboard resumed, once it is no longer running."""
    deadline = time.monotonic() + 30
    while store.get(run_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    return store.get(run_id).status


def test_a_run_whose_process_stopped_shows_no_time_going_on(tmp_path):
    import sqlite3

    path = tmp_path / "runs.db"
    with bf.SQLiteStore(path) as store:  # a run its process never ended (SIGKILL, say)
        store.create_run("k", "flow", "g", b"{}", "gone-host:1:1")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runs SET lease=0, started=1 WHERE run_id='k'")  # long gone
    db.close()
    client = client_of(path)
    page = client.get("/runs/k").text
    assert "interrupted" in page
    assert " · for " not in page  # no duration counting up since 1970
    row = client.get("/").text.split('data-run="k"')[1].split("</tr>")[0]
    assert " h " not in row


def test_a_form_too_large_to_read_is_told_so(store_path, monkeypatch):
    from braidflow.ui import _app

    monkeypatch.setattr(_app, "_LARGEST_FORM", 1 << 20)  # (16 MB in use: 1 here)
    client = client_of(store_path)
    csrf = csrf_of(client.get("/runs/crawl-bad").text)
    for action, data in [
        ("fork", {"csrf": csrf, "at": "0", "shared": '{"pages": "' + "x" * (2 << 20) + '"}'}),
        ("resume", {"csrf": csrf, "answer": '"' + "y" * (2 << 20) + '"'}),
    ]:
        refused = client.post(f"/runs/crawl-bad/{action}", data=data)
        assert refused.status_code == 413
        assert "This form is larger than the dashboard takes" in refused.text
    assert len(bf.SQLiteStore(store_path, read_only=True).runs()) == 3  # nothing forked


def test_resuming_a_failed_run_once_its_cause_is_gone(tmp_path):
    path, outage = tmp_path / "runs.db", tmp_path / "outage"
    outage.touch()
    shared = {"pages": 12, "broken": 7, "outage": str(outage)}
    record(path, "crawl", "crawl-bad", shared)
    client = client_of(path)
    page = client.get("/runs/crawl-bad").text
    assert "Resume</button>" in page
    outage.unlink()
    done = client.post("/runs/crawl-bad/resume", data={"csrf": csrf_of(page)})
    assert done.status_code == 303
    finish_actions(client)
    assert bf.SQLiteStore(path, read_only=True).get("crawl-bad").status == "completed"


def test_forking_from_a_step_with_shared_edited(store_path):
    client = client_of(store_path)
    page = client.get("/runs/crawl-bad?at=0").text
    assert "Fork from the start" in page
    edited = '{"pages": 12, "broken": -1}'
    done = client.post(
        "/runs/crawl-bad/fork", data={"csrf": csrf_of(page), "at": "0", "shared": edited}
    )
    assert done.status_code == 303
    new = done.headers["location"].rsplit("/", 1)[1]
    assert new != "crawl-bad"
    finish_actions(client)
    store = bf.SQLiteStore(store_path, read_only=True)
    assert store.get(new).status == "completed"
    assert store.get(new).metadata["braidflow.forked_from"]["run"] == "crawl-bad"
    assert store.get("crawl-bad").status == "failed"  # the run forked is left as it was


def test_a_fork_keeps_an_edit_to_a_value_python_takes_as_equal(store_path):
    # 12 -> 12.0 (or 1 -> true): equal in Python, another value in JSON.
    client = client_of(store_path)
    page = client.get("/runs/crawl-bad?at=0").text
    edited = '{"pages": 12.0, "broken": 7}'
    done = client.post(
        "/runs/crawl-bad/fork", data={"csrf": csrf_of(page), "at": "0", "shared": edited}
    )
    assert done.status_code == 303
    new = done.headers["location"].rsplit("/", 1)[1]
    finish_actions(client)
    store = bf.SQLiteStore(store_path, read_only=True)
    updates = [step for step in bf.history(new, store=store) if step.kind == "update"]
    assert [step.changed for step in updates] == [("pages",)]


def test_a_fork_that_removes_a_key_is_refused(store_path):
    client = client_of(store_path)
    csrf = csrf_of(client.get("/runs/crawl-bad").text)
    refused = client.post(
        "/runs/crawl-bad/fork", data={"csrf": csrf, "at": "0", "shared": '{"pages": 3}'}
    )
    assert refused.status_code == 400
    said = "cannot remove keys of shared (&#39;broken&#39;); set them to null instead"
    assert said in refused.text
    nulled = '{"pages": 3, "broken": null}'
    done = client.post("/runs/crawl-bad/fork", data={"csrf": csrf, "at": "0", "shared": nulled})
    assert done.status_code == 303  # as it said
    finish_actions(client)
    new = done.headers["location"].rsplit("/", 1)[1]
    assert bf.SQLiteStore(store_path, read_only=True).get(new).status == "completed"


@pytest.mark.parametrize("at", ["abc", "", None])
def test_a_fork_at_no_step_number_says_so(store_path, at):
    client = client_of(store_path)
    csrf = csrf_of(client.get("/runs/crawl-bad").text)
    form = {"csrf": csrf, "shared": '{"pages": 3}'} | ({} if at is None else {"at": at})
    refused = client.post("/runs/crawl-bad/fork", data=form)
    assert refused.status_code == 400
    assert "the step to fork at must be a step&#39;s number, not" in refused.text
    assert "-1" not in refused.text.split("must be")[1][:40]


def test_a_run_waiting_on_several_questions_is_answered_one_or_more_at_a_time(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "reviews", "batch-1", {"drafts": ["Dear Ada", "Dear Grace"]})
    first, second = bf.SQLiteStore(path, read_only=True).get("batch-1").questions
    client = client_of(path)
    page = client.get("/runs/batch-1").text
    assert "It waits for 2 answers" in page
    assert "(and 1 more question)" in client.get("/").text
    assert f'name="answer-{first.id}"' in page
    assert "Dear Grace" in page
    csrf = csrf_of(page)
    some = client.post(
        "/runs/batch-1/resume",
        data={"csrf": csrf, f"answer-{first.id}": '"yes"', f"answer-{second.id}": " "},
    )
    assert some.status_code == 303
    finish_actions(client)
    waiting = bf.SQLiteStore(path, read_only=True).get("batch-1")
    assert waiting.status == "waiting"
    assert [question.id for question in waiting.questions] == [second.id]
    bad = client.post("/runs/batch-1/resume", data={"csrf": csrf, "answer": "no"})
    assert "the answer is not valid JSON" in bad.text
    done = client.post("/runs/batch-1/resume", data={"csrf": csrf, "answer": '"no"'})
    assert done.status_code == 303
    finish_actions(client)
    assert bf.SQLiteStore(path, read_only=True).get("batch-1").status == "completed"
    shown = html.unescape(client.get("/runs/batch-1").text)
    assert '"verdicts": [\n    "yes",\n    "no"\n  ]' in shown  # each item its answer


def test_a_drained_run_resumes_from_its_page(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "pausing", "deploy", {})
    client = client_of(path)
    assert 'data-status="drained"' in client.get("/?status=drained").text
    page = client.get("/runs/deploy").text
    assert ">drained<" in page
    done = client.post("/runs/deploy/resume", data={"csrf": csrf_of(page)})
    assert done.status_code == 303
    finish_actions(client)
    assert bf.SQLiteStore(path, read_only=True).get("deploy").status == "completed"


def test_a_fork_from_a_step_that_did_not_finish_is_refused(store_path):
    client = client_of(store_path)
    csrf = csrf_of(client.get("/runs/crawl-bad").text)
    refused = client.post("/runs/crawl-bad/fork", data={"csrf": csrf, "at": "1", "shared": "{}"})
    assert refused.status_code == 400
    assert "did not finish" in refused.text


def test_with_no_target_known_the_page_says_what_to_run(tmp_path, capsys):
    path, outage = tmp_path / "runs.db", tmp_path / "outage"
    outage.touch()
    store = bf.SQLiteStore(path)
    with pytest.raises(ValueError, match="page 2"):  # started from Python: no TARGET kept
        ui_flows.make_crawl().run(
            {"pages": 4, "broken": 2, "outage": str(outage)}, store=store, run_id="py-run"
        )
    store.close()
    page = client_of(path).get("/runs/py-run").text
    assert "Resume</button>" not in page
    assert "Fork from" not in page
    assert "start the dashboard with <code>--target</code>" in page
    with_target = client_of(path, target=f"{FLOWS}:crawl").get("/runs/py-run").text
    assert "Resume</button>" in with_target  # as it says: with --target, a button
    said = re.search(r"Resume it with: <code>(braidflow resume [^<]+)</code>", page).group(1)
    assert said == f"braidflow resume py-run path/to/file.py:name --store {path}"
    forked = re.search(r"Fork it with: <code>(braidflow fork [^<]+)</code>", page).group(1)
    assert (
        forked == f"braidflow fork py-run path/to/file.py:name --at 0 --store {path} --set KEY=JSON"
    )
    outage.unlink()
    words = said.replace("path/to/file.py:name", f"{FLOWS}:crawl").split()[1:]
    assert main(words) == 0  # as it says, once the cause is gone
    capsys.readouterr()
    assert bf.SQLiteStore(path, read_only=True).get("py-run").status == "completed"


def test_what_to_run_instead_works_for_a_run_id_that_starts_with_a_dash(tmp_path, capsys):
    path = tmp_path / "runs.db"
    with bf.SQLiteStore(path) as store, pytest.raises(ValueError, match="page 2"):
        ui_flows.make_crawl().run({"pages": 4, "broken": 2}, store=store, run_id="-py")
    page = client_of(path).get("/runs/-py").text
    target = f"{FLOWS}:crawl"
    forked = html.unescape(re.search(r"Fork it with: <code>([^<]+)</code>", page).group(1))
    assert forked.endswith(" -- -py path/to/file.py:name")
    words = shlex.split(
        forked.replace("path/to/file.py:name", target).replace("KEY=JSON", "broken=9")
    )
    assert main(words[1:]) == 0  # the fork runs past page 2 now
    said = html.unescape(re.search(r"Resume it with: <code>([^<]+)</code>", page).group(1))
    assert main(shlex.split(said.replace("path/to/file.py:name", target))[1:]) == 1  # it ran
    capsys.readouterr()
    assert bf.SQLiteStore(path, read_only=True).get("-py-fork-1").status == "completed"


def test_an_action_without_the_pages_csrf_token_is_refused(store_path):
    client = client_of(store_path)
    assert client.post("/runs/ticket-1/resume", data={"answer": '"yes"'}).status_code == 403
    assert (
        client.post("/runs/ticket-1/resume", data={"csrf": "guess", "answer": '"yes"'}).status_code
        == 403
    )
    csrf = csrf_of(client.get("/runs/ticket-1").text)
    elsewhere = client.post(
        "/runs/ticket-1/resume",
        data={"csrf": csrf, "answer": '"yes"'},
        headers={"Origin": "http://evil.example"},
    )
    assert elsewhere.status_code == 403
    assert bf.SQLiteStore(store_path, read_only=True).get("ticket-1").status == "waiting"


# -- guards -----------------------------------------------------------------------------


def test_a_page_asked_for_by_another_host_name_is_refused(store_path):
    client = client_of(store_path)
    assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 403
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_with_a_token_only_requests_that_carry_it_are_served(store_path):
    token = "a-token-of-sixteen-or-more"
    client = client_of(store_path, token=token, hosts=None)
    assert client.get("/").status_code == 403
    assert client.get("/runs/ticket-1?token=wrong").status_code == 403
    entry = client.get(f"/runs/ticket-1?token={token}")
    assert entry.status_code == 303
    assert entry.headers["location"] == "/runs/ticket-1"
    assert f"{COOKIE}={token}" in entry.headers["set-cookie"]
    assert "HttpOnly" in entry.headers["set-cookie"]
    assert client.get("/runs/ticket-1").status_code == 200  # the cookie carries it now


def test_the_token_s_redirect_stays_on_the_dashboard():
    # A request line "GET //elsewhere.example/?token=T": sent on to "//..." a
    # browser would leave for that site.
    import asyncio

    from braidflow.ui._guard import Guard

    class App:
        state = None

    token = "a-token-of-sixteen-or-more"
    guard = Guard(App(), token=token, hosts=None)
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "//elsewhere.example/",
        "raw_path": b"//elsewhere.example/",
        "query_string": f"token={token}&at=2".encode(),
        "headers": [(b"host", b"127.0.0.1:8000")],
    }
    asyncio.run(guard(scope, None, send))
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 303
    assert headers[b"location"] == b"/elsewhere.example/?at=2"  # a path here, not a host


def test_pages_load_nothing_from_elsewhere(store_path):
    client = client_of(store_path)
    for url in ("/", "/runs/crawl-bad", "/runs/ticket-1"):
        page = client.get(url)
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        for link in re.findall(r'(?:src|href)="([^"]*)"', page.text):
            assert link.startswith(("/", "?", "#")), link


def test_looking_never_writes_to_the_store(store_path):
    before = hashlib.sha256(store_path.read_bytes()).hexdigest()
    client = client_of(store_path)
    for url in ("/", "/?status=failed", "/runs/crawl-bad", "/runs/crawl-ok?at=1", "/runs/ticket-1"):
        client.get(url)
    client.get("/runs/crawl-bad/timeline")
    assert hashlib.sha256(store_path.read_bytes()).hexdigest() == before
    # A WAL reader makes SQLite's shared index (-shm) and an empty log: nothing written.
    wal = store_path.with_name("runs.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0


# -- the command ------------------------------------------------------------------------


def test_the_command_refuses_a_store_that_does_not_exist(tmp_path, capsys):
    assert main(["ui", "--store", str(tmp_path / "none.db"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no store at" in err


def test_the_command_refuses_a_port_in_use(store_path, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        assert main(["ui", "--store", str(store_path), "--port", str(port)]) == 2
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"port {port} on 127.0.0.1 is in use" in err


@pytest.mark.parametrize("token", ["short", "has spaces in it, sixteen+", ""])
def test_the_command_refuses_a_bad_token(store_path, capsys, token):
    assert main(["ui", "--store", str(store_path), "--token", token]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--token must be 16 or more" in err


def test_the_command_refuses_a_target_that_does_not_load(store_path, tmp_path, capsys):
    assert main(["ui", "--store", str(store_path), "--target", f"{tmp_path}/none.py:flow"]) == 2
    assert "no file" in capsys.readouterr().err


def test_the_command_says_which_extra_it_needs(store_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    assert main(["ui", "--store", str(store_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pip install 'braidflow[ui]'" in err


@pytest.mark.slow
def test_served_elsewhere_than_loopback_it_prints_a_token_and_asks_for_it(store_path):
    # 127.0.0.2 is this machine too, but not an address the dashboard trusts
    # without a token: as any other address, it gets one.
    with dashboard_served(store_path, "--host", "127.0.0.2") as line:
        found = re.search(r"(http://127\.0\.0\.2:\d+/)\?token=([\w-]+)", line)
        assert found, line
        base, token = found.groups()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base, timeout=30)
        refused.value.close()
        assert refused.value.code == 403
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(f"{base}?token={token}", timeout=30) as page:
            assert page.status == 200  # sent on, with the cookie, to the runs
            assert b"crawl-bad" in page.read()


def test_events_come_a_page_at_a_time_and_filtered_by_kind(tmp_path):
    path = tmp_path / "runs.db"
    record(path, "crawl", "big", {"pages": 150, "broken": 120})
    events = [json.loads(line) for line in bf.SQLiteStore(path, read_only=True).events("big")]
    client = client_of(path)
    first = client.get("/runs/big").text.split('id="events"')[1]
    assert first.count('<tr class="event') == 200
    assert "later →" in first
    last = client.get("/runs/big?offset=200").text.split('id="events"')[1]
    assert last.count('<tr class="event') == len(events) - 200
    assert "← earlier" in last
    problems = client.get("/runs/big?kind=problems").text.split('id="events"')[1]
    bad = [event for event in events if event["error"] is not None or event["kind"] == "retry"]
    assert problems.count('<tr class="event bad"') == len(bad) == problems.count('<tr class="event')
    assert "page 120 is not HTML" in problems
    starts = client.get("/runs/big?kind=item_start").text.split('id="events"')[1]
    item_starts = sum(event["kind"] == "item_start" for event in events)
    assert starts.count('<tr class="event') == item_starts


@pytest.mark.slow
def test_a_running_run_is_drained_from_its_page(tmp_path):
    path, log = tmp_path / "runs.db", tmp_path / "items.log"
    job = start_drain_job(path, log)
    try:
        client = client_of(path)
        page = client.get("/runs/job").text
        assert 'action="/runs/job/drain"' in page
        assert client.post("/runs/job/drain", data={"csrf": csrf_of(page)}).status_code == 303
        _out, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 75, err
    assert bf.SQLiteStore(path, read_only=True).get("job").status == "drained"
    page = client.get("/runs/job").text
    assert 'action="/runs/job/drain"' not in page  # nothing to drain now
    refused = client.post("/runs/job/drain", data={"csrf": csrf_of(page)})
    assert refused.status_code == 400
    assert "drained, not running: there is nothing to drain" in refused.text


class Spends(bf.BatchNode):
    def prep(self, shared):
        return range(5)

    def exec(self, item):
        self.report_usage(input_tokens=100)


def test_a_run_waiting_for_a_higher_budget_says_the_command_that_gives_one(tmp_path):
    path = tmp_path / "runs.db"
    with bf.SQLiteStore(path) as store, pytest.raises(bf.Suspended):
        Spends().run({}, store=store, run_id="b", budget=bf.Budget(tokens=200, on_exceed="suspend"))
    client = client_of(path)
    page = client.get("/runs/b").text
    assert "It waits for a higher budget" in page
    assert "--budget-tokens N" in page
    assert "Answer and resume" not in page  # no button that cannot work
