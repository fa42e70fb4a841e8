"""Flows the dashboard's tests (and docs/ui_screenshots.py) run through the braidflow
command: a reply that waits for a person's approval, and a crawl over pages that
fails on a page marked broken."""

import asyncio
import threading
from pathlib import Path

import braidflow as bf
from braidflow.cli._store import target_metadata


class Draft(bf.Node):
    def prep(self, shared):
        return shared.get("customer", "customer")

    def exec(self, customer):
        return f"Dear {customer}, your refund is on its way."

    def post(self, shared, prep_result, exec_result):
        shared["draft"] = exec_result


class Approve(bf.Node):
    def prep(self, shared):
        return shared["draft"]

    def exec(self, draft):
        return bf.interrupt({"question": "Send this reply?", "draft": draft})

    def post(self, shared, prep_result, exec_result):
        shared["verdict"] = exec_result
        shared["sent"] = exec_result == "yes"


def make_reply():
    draft = Draft(name="draft")
    draft >> Approve(name="approve")
    return bf.Flow(start=draft, name="reply")


reply = make_reply()


class Fetch(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        # The page to fail on is the node's for this run (one run at a time in
        # these tests); the items stay the same whatever it is, so a run forked
        # with another "broken" goes on with the items it had.
        self.broken = shared.get("broken", -1)
        self.outage = shared.get("outage")  # a file: the page fails while it exists
        return list(range(shared.get("pages", 20)))

    async def exec_async(self, page):
        await asyncio.sleep(0)
        if page == self.broken and _out(self.outage):
            raise ValueError(f"page {page} is not HTML")
        return page * 10

    async def post_async(self, shared, prep_result, exec_result):
        shared["sizes"] = exec_result


class Summarize(bf.AsyncNode):
    async def prep_async(self, shared):
        return shared["sizes"]

    async def exec_async(self, sizes):
        return sum(sizes)

    async def post_async(self, shared, prep_result, exec_result):
        shared["total"] = exec_result


def _out(outage):
    """Whether the outage goes on: no file given, or the file is there."""
    return outage is None or Path(outage).exists()


def make_crawl():
    fetch = Fetch(name="fetch", max_concurrency=8)
    fetch >> Summarize(name="summarize")
    return bf.AsyncFlow(start=fetch, name="crawl")


crawl = make_crawl()


class Review(bf.AsyncParallelBatchNode):
    """Asks a person about each draft; each item waits alone for its answer."""

    async def prep_async(self, shared):
        return shared["drafts"]

    async def exec_async(self, draft):
        return bf.interrupt({"question": "Send this?", "draft": draft})

    async def post_async(self, shared, prep_result, exec_result):
        shared["verdicts"] = exec_result


def make_reviews():
    return bf.AsyncFlow(start=Review(name="review"), name="reviews")


reviews = make_reviews()


class Pause(bf.Node):
    """Asks the durable runs of this process to stop after it (a deploy, say)."""

    def post(self, shared, prep_result, exec_result):
        if not shared.get("paused"):
            shared["paused"] = True
            bf.drain()


class Finish(bf.Node):
    def post(self, shared, prep_result, exec_result):
        shared["finished"] = True


def make_pausing():
    pause = Pause(name="pause")
    pause >> Finish(name="finish")
    return bf.Flow(start=pause, name="pausing")


pausing = make_pausing()


def record(store_path, name, run_id, shared):
    """Run flow ``name`` of this module as the braidflow command runs it:
    durable, its events kept, its TARGET remembered; a run that fails or
    waits is left so. It runs in a thread of its own: playwright's sync API
    keeps an event loop running in the test's, where run() would return an
    awaitable."""
    makers = {
        "reply": make_reply,
        "crawl": make_crawl,
        "pausing": make_pausing,
        "reviews": make_reviews,
    }
    flow = makers[name]()

    def run():
        store = bf.SQLiteStore(store_path)
        try:
            flow.run(
                shared,
                store=store,
                run_id=run_id,
                record_events=True,
                metadata=target_metadata(f"{__file__}:{name}"),
            )
        except (bf.Suspended, bf.Drained, ValueError):
            pass
        finally:
            store.close()

    in_thread(run)


def in_thread(work):
    """Do ``work()`` in a thread of its own, and wait for it."""
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
