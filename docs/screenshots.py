"""Remake the pictures in docs/images: a timeline and a progress display of one
sample run (a crawl of 200 pages through a shared limiter, with retries and
failures).

    .venv/bin/python docs/screenshots.py   # needs Debian's chromium and playwright
"""

from __future__ import annotations

import asyncio
import io
import random
import shutil
import tempfile
from pathlib import Path

from rich.console import Console

from braidflow import AsyncFlow, AsyncNode, AsyncParallelBatchNode, Limiter
from braidflow.tracing import Progress, Timeline

IMAGES = Path(__file__).parent / "images"


class Fetch(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(shared["pages"])

    async def exec_async(self, page):
        await asyncio.sleep(random.uniform(0.002, 0.02))
        if page % 17 == 3 and self.cur_retry == 0:
            raise ConnectionError("connection reset")
        if page % 50 == 7:
            raise ValueError(f"page {page} is not HTML")
        self.emit(f"{page}: 200 OK")
        return page

    async def post_async(self, shared, prep_result, exec_result):
        shared["pages_fetched"] = exec_result


class Summarize(AsyncNode):
    async def exec_async(self, prep_result):
        await asyncio.sleep(0.02)


def sample_flow() -> AsyncFlow:
    api = Limiter(4, name="api")
    fetch = Fetch(name="fetch", max_concurrency=8, limits=[api], max_retries=2, on_error="collect")
    fetch >> Summarize(name="summarize")
    return AsyncFlow(start=fetch, name="crawl")


def main() -> None:
    random.seed(7)
    IMAGES.mkdir(exist_ok=True)
    page = Path(tempfile.mkdtemp()) / "timeline.html"
    # The live display draws into a dummy terminal; a snapshot of it, taken
    # when 120 pages are done, is what the picture shows.
    progress = Progress(console=Console(file=io.StringIO(), force_terminal=True, width=120))
    picture = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    done = []

    def snapshot(event):
        if event.kind == "item_end":
            done.append(event)
            if len(done) == 120:
                picture.print(progress)

    sample_flow().run({"pages": 200}, observers=[Timeline(page), progress, snapshot])
    picture.save_svg(str(IMAGES / "progress.svg"), title="braidflow.tracing.Progress")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=["--no-sandbox", "--disable-gpu"]
        )
        view = browser.new_page(viewport={"width": 1200, "height": 640})
        view.goto(page.as_uri())
        view.wait_for_function("window.braidflowTimeline !== undefined")
        view.mouse.move(520, 330)
        view.screenshot(path=str(IMAGES / "timeline.png"))
        browser.close()
    print(f"wrote {IMAGES / 'timeline.png'} and {IMAGES / 'progress.svg'}")


if __name__ == "__main__":
    main()
