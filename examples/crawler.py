"""A polite web crawler: breadth-first, through one shared limit, with retries and a timeline.

The crawler starts a small website of its own on 127.0.0.1, so it needs no
internet, and crawls it with httpx. It shows:

- one `Limiter` (8 requests in flight, 50 started per second) that every
  request of two nodes goes through, so the crawl stays polite however wide a
  level is;
- `Retry` for server errors only: two pages answer 500 the first time they
  are asked;
- `on_error="collect"`: a broken link (a 404) is reported, not fatal;
- a loop in the flow: the crawl node returns "more" while a level found new
  links, and "done" when none are left;
- observers: a count of the retries, a live `Progress` display (on a terminal,
  with rich) and a `Timeline` of the whole run as one HTML page.

Run it with: python examples/crawler.py  (about 2 seconds; needs httpx)
Options: --pages N (the site's size, default 60), --fast (20 pages and no
latency, for tests), --timeline PATH (default: a file in a new temporary
directory; the path is printed).
"""

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from braidflow import AsyncFlow, AsyncNode, AsyncParallelBatchNode, Failure, Limiter, Retry
from braidflow.tracing import Timeline

WORDS = "braid flow node limit retry crawl page link level queue polite server".split()
FIRST_LEVEL = 8  # pages the index links to
CHILDREN = 4  # new pages each page links to: the site is a few levels deep
BROKEN_LINK = "/pages/retired.html"
PAGE_PATH = re.compile(r"/pages/(\d+)\.html")
LINK = re.compile(r'href="([^"#]+)"')


# -- the website ---------------------------------------------------------------


class Site:
    """An index and pages 0 to size-1, as a tree with cross links, a broken
    link and two pages that fail once."""

    def __init__(self, size: int, latency: bool) -> None:
        self.size = size
        self.latency = latency
        self.flaky = {2, size // 2}
        self._failed_once: set[int] = set()
        self._lock = threading.Lock()  # the server answers from many threads at once

    def links(self, number: int) -> list[str]:
        first_child = FIRST_LEVEL + CHILDREN * number
        # The "see also" link mostly points at a page found already: the crawler
        # must not fetch it twice.
        see_also = (number * 7 + 3) % self.size
        targets = [*range(first_child, first_child + CHILDREN), see_also]
        links = [f"/pages/{target}.html" for target in targets if target < self.size]
        if number == 1:
            links.append(BROKEN_LINK)
        return links

    def answer(self, path: str) -> tuple[int, str]:
        """The status and HTML body for a GET of ``path``."""
        match = PAGE_PATH.fullmatch(path)
        number = int(match[1]) if match else -1
        if self.latency:
            # 20 to 60 ms, the same for a page every run, so runs compare.
            time.sleep(0.020 + (number * 13 % 41) / 1000)
        if path == "/":
            index = [f"/pages/{number}.html" for number in range(min(FIRST_LEVEL, self.size))]
            return 200, html_page("Index", "Welcome to the generated site.", index)
        if not 0 <= number < self.size:
            return 404, html_page("Not found", f"Nothing at {path}.", [])
        with self._lock:
            if number in self.flaky and number not in self._failed_once:
                self._failed_once.add(number)
                return 500, html_page("Server error", "Try again later.", [])
        text = " ".join(WORDS[(number + k * k) % len(WORDS)] for k in range(12))
        return 200, html_page(f"Page {number}", text, self.links(number))


def html_page(title: str, text: str, links: list[str]) -> str:
    anchors = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
    return f"<html><head><title>{title}</title></head><body><p>{text}</p><ul>{anchors}</ul>"


@contextlib.contextmanager
def serving(site: Site) -> Iterator[str]:
    """Serve ``site`` from a background thread; yield its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the crawler reuses its connections

        def do_GET(self) -> None:
            status, body = site.answer(self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the output to the crawl's report

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: any free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- the crawler ---------------------------------------------------------------


class ServerError(Exception):
    """A 5xx answer: worth asking again a little later."""


class PageError(Exception):
    """A 4xx answer: asking again would not help."""


@dataclass
class Page:
    path: str
    links: list[str]  # on this site, in the order they appear


async def fetch(client: httpx.AsyncClient, path: str) -> Page:
    response = await client.get(path)
    status = f"{response.status_code} {response.reason_phrase} for {path}"
    if response.status_code >= 500:
        raise ServerError(status)
    if response.status_code >= 400:
        raise PageError(status)
    links = []
    for href in LINK.findall(response.text):
        url = response.url.join(href)
        if url.host == response.url.host and url.port == response.url.port:
            links.append(url.path)  # this site only: a crawler stays on the site it was given
    return Page(path, links)


class FetchIndex(AsyncNode):
    def __init__(self, client: httpx.AsyncClient, **options: object) -> None:
        super().__init__(**options)
        self.client = client

    async def exec_async(self, prep_result):
        return await fetch(self.client, "/")

    async def post_async(self, shared, prep_result, page):
        shared["pages"] = {page.path: page}
        shared["frontier"] = list(dict.fromkeys(page.links))
        shared["seen"] = {page.path, *page.links}
        shared["levels"] = []
        shared["failures"] = []


class CrawlLevel(AsyncParallelBatchNode):
    """Fetch every page of one level at once (as far as the limiter lets), then
    queue the links nobody has seen as the next level."""

    def __init__(self, client: httpx.AsyncClient, **options: object) -> None:
        super().__init__(**options)
        self.client = client

    async def prep_async(self, shared):
        return shared["frontier"]  # this level's new links

    async def exec_async(self, path):
        return await fetch(self.client, path)

    async def post_async(self, shared, prep_result, results):
        found = []
        for result in results:
            if isinstance(result, Failure):
                shared["failures"].append(result)
            else:
                shared["pages"][result.path] = result
                found.extend(result.links)
        new = [link for link in dict.fromkeys(found) if link not in shared["seen"]]
        shared["seen"].update(new)
        shared["levels"].append(len(results))
        shared["frontier"] = new
        return "more" if new else "done"


def crawler(client: httpx.AsyncClient, limiter: Limiter) -> AsyncFlow:
    # Server errors are retried with backoff; a 404 or any other error is not.
    retry = Retry(attempts=3, delay=0.1, backoff=2.0, retry_on=(ServerError, httpx.TransportError))
    index = FetchIndex(client, name="index", limits=[limiter], retry=retry)
    crawl = CrawlLevel(
        client,
        name="crawl",
        limits=[limiter],  # the index's limiter too: one limit for the whole site
        retry=retry,
        on_error="collect",  # a failed page becomes a Failure in post; the others go on
        # Tasks at once, no more than the limiter lets run: a level of 10,000
        # links does not start 10,000 tasks that wait in the limiter's queue.
        max_concurrency=8,
    )
    index >> crawl
    crawl - "more" >> crawl  # the next level, breadth-first
    crawl - "done" >> None
    return AsyncFlow(start=index, name="crawler")


def live_progress() -> list[object]:
    """A Progress display when someone watches a terminal and rich is installed."""
    if not sys.stderr.isatty():
        return []
    try:
        from braidflow.tracing import Progress

        return [Progress()]
    except ImportError:  # Progress needs rich; the crawl itself does not
        return []


async def crawl(base_url: str, limiter: Limiter, observers: list[object]) -> dict:
    shared: dict = {}
    # trust_env=False: the site is on 127.0.0.1 and must not go through a proxy.
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=10) as client:
        await crawler(client, limiter).run_async(shared, observers=observers)
    return shared


def report(shared: dict, retries: list[str], limiter: Limiter, elapsed: float) -> None:
    levels = shared["levels"]
    pages = len(shared["pages"])
    print(f"levels below the index: {len(levels)}, pages asked for in each: ", end="")
    print(", ".join(str(count) for count in levels))
    print(f"pages fetched: {pages} (the index and {pages - 1} pages)")
    print(f"failures: {len(shared['failures'])}")
    for failure in shared["failures"]:
        print(f"  {failure.item}: {type(failure.error).__name__}: {failure.error}")
    print(f"retries: {len(retries)}")
    for reason in retries:
        print(f"  after {reason}")
    statistics = limiter.statistics()
    print(f"{limiter!r}: {statistics.acquired} requests started (retries included), ", end="")
    print(f"at most {statistics.peak_in_flight} in flight at once")
    print(f"  {statistics}")
    print(f"wall time: {elapsed:.2f} s ({statistics.acquired / elapsed:.0f} requests/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, help="pages in the site (default 60, 20 with --fast)")
    parser.add_argument("--fast", action="store_true", help="a small site with no latency")
    parser.add_argument("--timeline", type=Path, help="where to write the HTML timeline")
    args = parser.parse_args()
    size = args.pages if args.pages is not None else 20 if args.fast else 60
    if size < 4:
        parser.error("--pages must be at least 4")
    # A new temporary directory by default: running the example leaves no file
    # in the directory it was started from.
    timeline_path = args.timeline or Path(tempfile.mkdtemp(prefix="crawl-")) / "timeline.html"

    site = Site(size, latency=not args.fast)
    limiter = Limiter(max_concurrent=8, rate=50, per=1.0, name="site")  # polite: 8 at once, 50/s
    retries: list[str] = []

    def count_retries(event) -> None:
        if event.kind == "retry":
            retries.append(str(event.error))

    observers = [count_retries, Timeline(timeline_path), *live_progress()]
    with serving(site) as base_url:
        print(f"crawling {base_url}: {size} pages and an index")
        started = time.perf_counter()
        shared = asyncio.run(crawl(base_url, limiter, observers))
        elapsed = time.perf_counter() - started
    report(shared, retries, limiter, elapsed)
    print(f"timeline: {timeline_path}")


if __name__ == "__main__":
    main()
