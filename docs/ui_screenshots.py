"""Remake the pictures of the dashboard in docs/images (ui-*.png): a store of sample
runs (crawls that completed, one that failed on a page, a reply that waits for
approval, a fork), served by `braidflow ui` and photographed in Debian's chromium.

    .venv/bin/python docs/ui_screenshots.py   # needs chromium, playwright, braidflow[ui]
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import braidflow as bf

IMAGES = Path(__file__).parent / "images"
TARGET = str(Path(__file__).resolve())  # the flows below are this file's, for the actions


class Fetch(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(shared["pages"])

    async def exec_async(self, page):
        await asyncio.sleep(0.002 + (page % 7) / 1000)
        if page == 83:
            raise ConnectionError("connection reset by peer")
        return {"page": page, "bytes": 1000 + page * 37}

    async def post_async(self, shared, prep_result, exec_result):
        shared["fetched"] = len(exec_result)


class Summarize(bf.AsyncNode):
    async def post_async(self, shared, prep_result, exec_result):
        shared["summary"] = f"{shared['fetched']} pages"


class Draft(bf.Node):
    def exec(self, prep_result):
        return "Dear Ada, your refund is on its way."

    def post(self, shared, prep_result, exec_result):
        shared["draft"] = exec_result


class Approve(bf.Node):
    def prep(self, shared):
        return shared["draft"]

    def exec(self, draft):
        return bf.interrupt({"question": "Send this reply?", "draft": draft})

    def post(self, shared, prep_result, exec_result):
        shared["sent"] = exec_result == "yes"


def crawl() -> bf.AsyncFlow:
    fetch = Fetch(name="fetch", max_concurrency=8)
    fetch >> Summarize(name="summarize")
    return bf.AsyncFlow(start=fetch, name="crawl")


def reply() -> bf.Flow:
    draft = Draft(name="draft")
    draft >> Approve(name="approve")
    return bf.Flow(start=draft, name="reply")


def record(store_path: Path, name: str, run_id: str, shared: dict) -> None:
    """Run one of the flows above as the braidflow command would: durable, its
    events kept, its TARGET remembered (for the dashboard's actions)."""
    store = bf.SQLiteStore(store_path)
    flow = {"crawl": crawl, "reply": reply}[name]()
    metadata = {"braidflow.target": f"{TARGET}:{name}", "braidflow.directory": str(Path.cwd())}
    try:
        flow.run(shared, store=store, run_id=run_id, record_events=True, metadata=metadata)
    except (bf.Suspended, ConnectionError):
        pass
    finally:
        store.close()


def make_store(path: Path) -> None:
    for number in range(1, 4):
        record(path, "crawl", f"nightly-{number:02d}", {"pages": 60})
    record(path, "crawl", "nightly-04", {"pages": 200})  # fails on page 83
    record(path, "reply", "ticket-42", {"customer": "Ada"})
    store = bf.SQLiteStore(path)
    try:
        crawl().fork(  # as `braidflow fork` makes one
            "nightly-02", store=store, at=1, update={"note": "re-run"}, record_events=True
        )
    finally:
        store.close()


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    directory = Path(tempfile.mkdtemp())
    path = directory / "runs.db"
    worker = threading.Thread(target=make_store, args=(path,))
    worker.start()
    worker.join()
    server = subprocess.Popen(
        [sys.executable, "-m", "braidflow", "ui", "--store", "runs.db", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=directory,  # the page names the store as given: runs.db
    )
    try:
        assert server.stdout is not None
        found = re.search(r"http://\S+/", server.stdout.readline())
        assert found, "the dashboard did not start"
        photograph(found.group(0))
    finally:
        server.terminate()
        server.wait(30)
    print(f"wrote {', '.join(sorted(p.name for p in IMAGES.glob('ui-*.png')))} in {IMAGES}")


def photograph(base: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(base)
        page.screenshot(path=str(IMAGES / "ui-runs.png"))
        page.goto(f"{base}runs/nightly-04")
        page.frame_locator("iframe.timeline").locator(".lane-label").first.wait_for()
        page.screenshot(path=str(IMAGES / "ui-run.png"), full_page=False)
        page.goto(f"{base}runs/ticket-42")
        page.locator("#answer").fill('"yes"')
        page.screenshot(path=str(IMAGES / "ui-answer.png"))
        page.goto(f"{base}runs/nightly-02-fork-1?at=2")
        page.evaluate("document.getElementById('steps').scrollIntoView()")
        page.screenshot(path=str(IMAGES / "ui-fork.png"))
        browser.close()


if __name__ == "__main__":
    main()
