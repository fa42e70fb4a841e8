"""The showcase (`make demo`): an LLM pipeline over a website, run one page at a time, then
concurrently within limits, then killed mid-run and resumed. Offline, about ten seconds.

It starts two services in this process, on 127.0.0.1 (examples/_local_services.py):
a small website (120 pages, each sent after 50 to 150 ms) and an OpenAI-compatible
chat API (300 to 500 ms a call, a quick model's short answer) with a quota, as
the real API has: 40 calls in flight at most, and a call above that gets 429
with Retry-After. The flow reads the site's index, fetches every page with
httpx, summarises each with the openai SDK (`AsyncOpenAI` pointed at the local
API) and collects a digest:

    index >> pages >> collect        pages: fetch >> summarise, for each page

It shows what braidflow gives such a pipeline:

1. Speed within limits. The flow runs one page at a time (`max_concurrency=1`)
   over the first 6 pages, long enough to time its rate, then over all 120
   pages, 48 at a time, every summarise call of every page holding one shared
   `Limiter(40)`, the API's quota. The report gives both rates (pages a
   second, each measured) and how many times faster the second is, the most
   calls in flight (the limiter's count and the API's: never above the
   quota), the 429s (none) and the retries (`Retry` would take care of a 429
   or a dropped connection).
2. Visibility. A live `Progress` display while the runs go (on a terminal), and
   a `Timeline` page of the concurrent run: a lane per page, its fetch and its
   summarise, waits for the limiter marked.
3. Durability. The concurrent flow runs again with `store=SQLiteStore(...)`, in
   a child process (this script with a hidden option), which is killed with
   SIGKILL once a third of the pages are summarised and in the store: the API
   stops answering there, so the kill lands at the same place every time.
   `flow.resume_async(...)` in this process runs the pages that were missing
   and only those (the API counts the calls), and the digest is the same as the
   uninterrupted run's.

Run it with: python examples/showcase.py  (needs httpx and openai; rich for progress)
Options: --out DIR keeps the timeline, the digest and the store in DIR (by default
they go to a temporary directory, removed at exit); --progress/--no-progress
(default: on when the output is a terminal); --fast: a small, quick run, for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
from _local_services import ChatAPI, Page, Website, last_user_text

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    Limiter,
    LimiterStatistics,
    Retry,
    SQLiteStore,
    StoreError,
    history,
)
from braidflow.tracing import Timeline

RUN_ID = "digest-1"  # the durable run's id in its store
MODEL = "local-model"
KILL_TIMEOUT = 60.0  # seconds the durable run may take to reach the point where it is killed


@dataclass(frozen=True)
class Settings:
    pages: int  # pages on the website, all summarised by the concurrent and durable runs
    sample: int  # the first pages, summarised one at a time (long enough to time the rate)
    at_once: int  # pages in flight in the concurrent runs: the batch flow's max_concurrency
    quota: int  # calls the chat API answers at once; the `llm` Limiter is set to the same
    kill_after: int  # pages summarised (and stored) before the durable run is killed
    time_scale: float  # multiplies every delay of the services

    def __post_init__(self) -> None:
        if self.kill_after + self.at_once > self.pages:  # see Showcase.kill_when_stored
            raise ValueError(
                "the kill waits for kill_after + at_once pages to start: too few pages"
            )


NORMAL = Settings(pages=120, sample=6, at_once=48, quota=40, kill_after=40, time_scale=1.0)
FAST = Settings(pages=12, sample=4, at_once=4, quota=3, kill_after=5, time_scale=0.05)


# -- the website and the model it is summarised with ------------------------------------

SUBJECTS = [
    "lighthouses",
    "rivers",
    "bridges",
    "orchards",
    "harbours",
    "glaciers",
    "libraries",
    "markets",
    "windmills",
    "observatories",
    "tunnels",
    "vineyards",
    "canals",
    "lighthouse keepers",
    "railways",
    "gardens",
    "castles",
    "ferries",
    "mountain huts",
    "bakeries",
    "clock towers",
    "salt marshes",
    "reservoirs",
    "printing presses",
]
ASPECTS = {
    "a short history": "The oldest {s} we know of are older than the towns around them.",
    "how they work": "All the {s} in this guide run on the same few simple ideas.",
    "famous examples": "A handful of {s} are known far beyond the places that keep them.",
    "visiting": "Most {s} welcome visitors, if you come at the right time of the year.",
    "what comes next": "The {s} of the next fifty years will not look like today's.",
}


def page_delay(number: int, scale: float) -> float:
    """How long the website takes to send page ``number``: 50 to 150 ms."""
    return (0.050 + (number * 7 % 11) * 0.010) * scale


def make_site(settings: Settings) -> dict[str, Page]:
    """A guide of short articles, one per (subject, aspect), and an index linking them all."""
    pages = {}
    topics = [(subject, aspect) for subject in SUBJECTS for aspect in ASPECTS]
    if settings.pages > len(topics):
        raise ValueError(f"the guide has {len(topics)} pages at most")
    for number, (subject, aspect) in enumerate(topics[: settings.pages]):
        delay = page_delay(number, settings.time_scale)
        text = (
            f"{ASPECTS[aspect].format(s=subject)} This page looks at {subject} from one "
            f"side: {aspect}.\n\nIt is one of the guide's {settings.pages} pages; the server "
            f"takes {delay * 1000:.0f} ms to send it, as a busy server would."
        )
        pages[f"/pages/{number}.html"] = Page(f"{subject.capitalize()}: {aspect}", text, (), delay)
    index = Page("A guide", "Every page of the guide.", tuple(pages), 0.010 * settings.time_scale)
    return {"/": index, **pages}


def summary_of(messages: list[dict[str, Any]]) -> str:
    """What the local model answers: the article's first sentence (a stand-in's summary)."""
    _title, _, body = last_user_text(messages).partition("\n\n")
    return re.split(r"(?<=\.)\s", body.strip(), maxsplit=1)[0]


def call_delay(scale: float) -> Callable[[list[dict[str, Any]]], float]:
    """How long the local model takes to answer: 300 to 500 ms, by the prompt's length
    (a short answer from a fast hosted model; a long one takes seconds)."""

    def delay(messages: list[dict[str, Any]]) -> float:
        return (0.300 + len(last_user_text(messages)) % 41 * 0.005) * scale

    return delay


# -- the flow ---------------------------------------------------------------------------

LINK = re.compile(r'href="([^"]+)"')
TITLE = re.compile(r"<h1>(.*?)</h1>", re.S)
PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.S)
RETRYABLE = (openai.RateLimitError, openai.APIConnectionError, openai.InternalServerError)


class ListPages(AsyncNode):
    """Read the site's index: the pages to summarise, in order (the first
    ``shared["limit"]`` of them, if given)."""

    def __init__(self, web: httpx.AsyncClient, **options: Any) -> None:
        super().__init__(**options)
        self.web = web

    async def prep_async(self, shared):
        return shared.get("limit")

    async def exec_async(self, limit):
        response = (await self.web.get("/")).raise_for_status()
        return LINK.findall(response.text)[:limit]

    async def post_async(self, shared, limit, links):
        shared["pages"] = links
        shared["articles"] = {}
        shared["summaries"] = {}


class Fetch(AsyncNode):
    """Fetch this sub-flow's page and keep its title and text."""

    def __init__(self, web: httpx.AsyncClient, **options: Any) -> None:
        super().__init__(**options)
        self.web = web

    async def prep_async(self, shared):
        return self.params["page"]

    async def exec_async(self, path):
        page = (await self.web.get(path)).raise_for_status().text
        paragraphs = [html.unescape(p) for p in PARAGRAPH.findall(page)]
        return {"title": html.unescape(TITLE.findall(page)[0]), "text": "\n\n".join(paragraphs)}

    async def post_async(self, shared, path, article):
        shared["articles"][path] = article


class Summarise(AsyncNode):
    """Ask the model for a one-line summary of this sub-flow's page."""

    def __init__(self, llm: openai.AsyncOpenAI, **options: Any) -> None:
        super().__init__(**options)
        self.llm = llm

    async def prep_async(self, shared):
        return shared["articles"][self.params["page"]]

    async def exec_async(self, article):
        completion = await self.llm.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": "Summarise the page in one line."},
                {"role": "user", "content": f"Title: {article['title']}\n\n{article['text']}"},
            ],
            max_tokens=60,
        )
        return completion.choices[0].message.content

    async def post_async(self, shared, article, summary):
        shared["summaries"][self.params["page"]] = summary


class EachPage(AsyncParallelBatchFlow):
    """Fetch >> summarise, once for each page of the index."""

    async def prep_async(self, shared):
        return [{"page": path} for path in shared["pages"]]


class Collect(AsyncNode):
    """The digest: every page's title and summary, in the index's order."""

    async def prep_async(self, shared):
        return shared["pages"], shared["articles"], shared["summaries"]

    async def exec_async(self, inputs):
        pages, articles, summaries = inputs
        return [
            {"page": path, "title": articles[path]["title"], "summary": summaries[path]}
            for path in pages
        ]

    async def post_async(self, shared, prep_result, digest):
        shared["digest"] = digest


def build_flow(
    web: httpx.AsyncClient, llm: openai.AsyncOpenAI, at_once: int, quota: int
) -> tuple[AsyncFlow, Limiter]:
    """index >> pages (fetch >> summarise, ``at_once`` pages at a time) >> collect.

    Every summarise call, of every page, holds the one `llm` limiter: never
    more calls in flight than the API's quota, however many pages run at once.
    """
    llm_limit = Limiter(max_concurrent=quota, name="llm")
    fetch = Fetch(
        web, name="fetch", retry=Retry(attempts=3, delay=0.1, retry_on=httpx.TransportError)
    )
    summarise = Summarise(
        llm,
        name="summarise",
        limits=[llm_limit],
        retry=Retry(attempts=5, delay=0.1, backoff=2.0, retry_on=RETRYABLE),
        timeout=30,
    )
    fetch >> summarise
    pages = EachPage(
        start=fetch,
        name="pages",
        max_concurrency=at_once,
        isolate=True,  # each page on its own view of shared; the views merge by these rules
        merge={"articles": "update", "summaries": "update"},
    )
    index = ListPages(web, name="index")
    index >> pages >> Collect(name="collect")
    return AsyncFlow(start=index, name="digest"), llm_limit


@contextlib.asynccontextmanager
async def clients(
    site_url: str, api_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, openai.AsyncOpenAI]]:
    """An HTTP client for the site and an OpenAI client for the API. The SDK's own
    retries are off: braidflow's `Retry` does it, where the run can see it."""
    # trust_env=False: the services are on 127.0.0.1 and must not go through a proxy.
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with (
        httpx.AsyncClient(base_url=site_url, trust_env=False, timeout=10, limits=limits) as web,
        openai.AsyncOpenAI(
            base_url=api_url,
            api_key="local",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
        ) as llm,
    ):
        yield web, llm


# -- running it ---------------------------------------------------------------------------


@dataclass
class Leg:
    """One run of the flow: how long it took, what it left in shared, its
    events by kind, and what the `llm` limiter and the chat API saw."""

    seconds: float
    shared: dict[str, Any]
    events: Counter[str]
    limiter: LimiterStatistics
    calls: int = 0  # calls the API answered
    rejected: int = 0  # calls it answered with 429
    api_peak: int = 0  # most calls it was answering at once


async def run_flow(
    settings: Settings,
    urls: tuple[str, str],
    at_once: int,
    observers: list[Any],
    resume_from: SQLiteStore | None = None,
    limit: int | None = None,
    **durable: Any,
) -> Leg:
    """Run the flow once (on the first ``limit`` pages, if given), or resume run
    RUN_ID from the store ``resume_from``."""
    events: Counter[str] = Counter()
    observers = [lambda event: events.update([event.kind]), *observers]
    async with clients(*urls) as (web, llm):
        flow, llm_limit = build_flow(web, llm, at_once, settings.quota)
        started = time.perf_counter()
        if resume_from is not None:
            shared = await flow.resume_async(RUN_ID, store=resume_from, observers=observers)
        else:
            shared = {} if limit is None else {"limit": limit}
            await flow.run_async(shared, observers=observers, **durable)
        seconds = time.perf_counter() - started
    return Leg(seconds, shared, events, llm_limit.statistics())


def live_progress(enabled: bool) -> list[Any]:
    """A Progress display (rich, on standard error), if asked for and installed."""
    if not enabled:
        return []
    try:
        from braidflow.tracing import Progress
    except ImportError:  # rich is missing: the showcase runs without it
        return []
    return [Progress()]


@dataclass
class Durable:
    """The durable run: killed in a child process, then resumed here."""

    stored: int  # pages summarised and in the store when the child was killed
    in_flight: int  # pages started and not finished then
    status: str  # what the store said of the run after the kill
    resumed: Leg


class Showcase:
    """The two services, the settings and the output directory the three parts share."""

    def __init__(
        self, settings: Settings, site: Website, api: ChatAPI, directory: Path, progress: bool
    ) -> None:
        self.settings = settings
        self.site = site
        self.api = api
        self.directory = directory
        self.progress = progress

    @property
    def urls(self) -> tuple[str, str]:
        return self.site.url, self.api.url

    def run(
        self,
        at_once: int,
        observers: list[Any] | None = None,
        progress: bool = True,
        **durable: Any,
    ) -> Leg:
        """Run (or resume) the flow in a new event loop; note what the API saw meanwhile."""
        observers = [*(observers or []), *live_progress(self.progress and progress)]
        api = self.api
        api.reset_counts()
        leg = asyncio.run(run_flow(self.settings, self.urls, at_once, observers, **durable))
        leg.calls, leg.rejected, leg.api_peak = api.answered, api.rejected, api.peak_in_flight
        return leg

    def durable(self) -> Durable:
        """Run the flow durably in a child process, SIGKILL it mid-batch, resume it here."""
        store_path = self.directory / "runs.db"
        for old in self.directory.glob("runs.db*"):  # an earlier showcase's, in --out DIR
            old.unlink()
        self.site.reset_counts()
        self.api.reset_counts()
        self.api.hold_after(self.settings.kill_after)
        child = self.start_child(store_path)
        try:
            self.kill_when_stored(child, store_path)
        finally:
            if child.poll() is None:  # something went wrong before the kill
                child.kill()
                child.communicate()
            self.api.let_go()  # the calls it holds are dropped: their caller is gone
        stored = self.api.answered  # pages finished, and so in the store
        started = len(self.site.visited - {"/"})
        with SQLiteStore(store_path) as store:
            status = store.get(RUN_ID).status  # its process is gone: "interrupted"
            # Its progress counts the pages stored before the kill as done ("reused").
            resumed = self.run(self.settings.at_once, resume_from=store)
        return Durable(stored, started - stored, status, resumed)

    def start_child(self, store_path: Path) -> subprocess.Popen[str]:
        """This script again, in a process of its own: the flow, durably."""
        site, api = self.urls
        command = [sys.executable, __file__, "--child", str(store_path), "--site", site]
        command += ["--api", api, *(["--fast"] if self.settings is FAST else [])]
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def kill_when_stored(self, child: subprocess.Popen[str], store_path: Path) -> None:
        """SIGKILL the child once ``kill_after`` pages are summarised and in its store.

        The API answers ``kill_after`` calls, then holds the others: no more
        pages can finish. This process reads the run's history from the
        store as the child writes it (reading changes nothing), and kills the
        child once the batch shows ``kill_after`` pages done.
        """
        settings = self.settings
        deadline = time.monotonic() + KILL_TIMEOUT
        while stored_pages(store_path) < settings.kill_after:
            if child.poll() is not None:
                _, errors = child.communicate()
                raise RuntimeError(f"the durable run ended before the kill:\n{errors}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the durable run did not store {settings.kill_after} pages")
            time.sleep(0.02)
        child.kill()  # SIGKILL: no handler runs, nothing is flushed or closed
        child.communicate()


def stored_pages(store_path: Path) -> int:
    """How many pages the durable run has in its store so far (0 before it is there)."""
    if not store_path.exists():
        return 0
    with SQLiteStore(store_path) as store:
        try:
            steps = history(RUN_ID, store=store)
        except StoreError:  # not recorded yet
            return 0
    return max((step.items_done or 0 for step in steps if step.node == "pages"), default=0)


def child_main(args: argparse.Namespace, settings: Settings) -> int:
    """The durable run, in the child process (killed before it ends)."""
    with SQLiteStore(args.child) as store:
        urls = (args.site, args.api)
        asyncio.run(run_flow(settings, urls, settings.at_once, [], store=store, run_id=RUN_ID))
    return 0


def showcase(settings: Settings, directory: Path, progress: bool) -> tuple[Leg, Leg, Durable]:
    """Start the services; run the flow one page at a time, concurrently, durably."""
    site = Website(make_site(settings))
    api = ChatAPI(
        reply=summary_of, delay=call_delay(settings.time_scale), max_in_flight=settings.quota
    )
    with site, api:
        scale = settings.time_scale
        print(
            f"website:  {site.url}  ({settings.pages} pages, "
            f"{50 * scale:g} to {150 * scale:g} ms each)"
        )
        print(
            f"chat API: {api.url}  ({300 * scale:g} to {500 * scale:g} ms a call; "
            f"quota: {settings.quota} calls in flight, 429 above)\n"
        )
        demo = Showcase(settings, site, api, directory, progress)
        print(
            f"1. one page at a time (max_concurrency=1), the first {settings.sample} pages ...",
            flush=True,
        )
        one = demo.run(1, limit=settings.sample)
        print(f"   {one.seconds:.2f} s: {rate(settings.sample, one)}")
        print(
            f"2. all {settings.pages} pages, {settings.at_once} at a time "
            f"(max_concurrency={settings.at_once}), every call through "
            f"Limiter({settings.quota}) ...",
            flush=True,
        )
        many = demo.run(settings.at_once, [Timeline(directory / "timeline.html")])
        print(f"   {many.seconds:.2f} s: {rate(settings.pages, many)}")
        print("3. durably, in a child process: killed with SIGKILL mid-batch, resumed here ...")
        durable = demo.durable()
        print(f"   resumed in {durable.resumed.seconds:.2f} s")
    return one, many, durable


# -- the report -----------------------------------------------------------------------------


def report(settings: Settings, one: Leg, many: Leg, durable: Durable, directory: Path) -> bool:
    """Print what the three runs showed; return whether all went as it should."""
    resumed = durable.resumed
    legs = (one, many, resumed)
    digests = [leg.shared["digest"] for leg in legs]
    complete = len(digests[0]) == settings.sample and all(
        len(digest) == settings.pages for digest in digests[1:]
    )
    same = digests[0] == digests[1][: settings.sample] and digests[1] == digests[2]
    rejected = sum(leg.rejected for leg in legs)
    speedup = (settings.pages / many.seconds) / (settings.sample / one.seconds)
    print("\nReport")
    row(
        "pages summarised",
        f"{len(digests[0])} one at a time; {len(digests[1])} of {settings.pages} "
        "concurrently, and again durably",
    )
    row(
        "one at a time",
        f"{settings.sample} pages in {one.seconds:.2f} s: {rate(settings.sample, one)}",
    )
    row(
        f"{settings.at_once} at a time",
        f"{settings.pages} pages in {many.seconds:.2f} s: {rate(settings.pages, many)}",
    )
    row("speedup", f"{speedup:.0f}x the pages a second")
    row(
        "LLM calls in flight",
        f"at most {many.limiter.peak_in_flight} (limit {settings.quota}; "
        f"the API saw at most {many.api_peak})",
    )
    row("429 answers", str(rejected))
    row("retries", str(sum(leg.events["retry"] for leg in legs)))
    row("timeline", str(directory / "timeline.html"))
    row(
        "killed (SIGKILL)",
        f"{durable.stored} pages in the store, {durable.in_flight} in flight; "
        f"the store said '{durable.status}'",
    )
    row(
        "resumed",
        f"{resumed.events['item_start']} pages run, {resumed.calls} LLM calls, "
        f"{resumed.seconds:.2f} s",
    )
    row(
        "same digest",
        f"{'yes' if same else 'NO'} (one at a time, for its pages; concurrent; resumed)",
    )
    row("digest", str(directory / "digest.md"))
    for entry in digests[1][:2]:
        print(f"    {entry['title']}: {entry['summary']}")
    return complete and same and rejected == 0


def rate(pages: int, leg: Leg) -> str:
    return f"{pages / leg.seconds:.1f} pages a second"


def row(label: str, text: str) -> None:
    print(f"  {label + ':':<21} {text}")


def digest_text(digest: list[dict[str, str]]) -> str:
    return "".join(f"- {entry['title']}: {entry['summary']}\n" for entry in digest)


@contextlib.contextmanager
def output_directory(out: Path | None) -> Iterator[Path]:
    """``out`` if given (kept), else a new temporary directory, removed at exit."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="braidflow-showcase-") as name:
        yield Path(name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="keep the output here (default: removed at exit)")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a live progress display (default: when the output is a terminal)",
    )
    parser.add_argument("--fast", action="store_true", help="a small, quick run, for tests")
    # The durable run's child process: this script again, with the services' URLs.
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    settings = FAST if args.fast else NORMAL
    if args.child is not None:
        return child_main(args, settings)
    progress = sys.stdout.isatty() if args.progress is None else args.progress
    started = time.perf_counter()
    with output_directory(args.out) as directory:
        one, many, durable = showcase(settings, directory, progress)
        (directory / "digest.md").write_text(digest_text(many.shared["digest"]))
        ok = report(settings, one, many, durable, directory)
    if args.out is None:
        row("removed at exit", f"{directory} (--out DIR keeps the files)")
    row("total time", f"{time.perf_counter() - started:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
