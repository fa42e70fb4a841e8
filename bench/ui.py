"""How fast the dashboard (braidflow ui) serves a large store: the runs table of a
store of 10,000 runs, and the page of a run with a 10,000-item batch.

The store is made first (real runs through SQLiteStore: most completed, some
failed, some waiting for input, and one batch of 10,000 items with its
events recorded); then `braidflow ui` is started as a user starts it, and
each page is asked for over HTTP: the first time (cold) and the median of
five more, a second apart so that each reads the store again. Figures are
printed and written to bench/results/ui.json.

    python bench/ui.py            # 10,000 runs, 10,000 items
    python bench/ui.py --quick    # 1,000 of each: a smoke test
    python bench/ui.py --postgres # the store in PostgreSQL (a server of its own,
                                  # tests/_postgres.py), given to the command as a URL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import braidflow as bf

RESULTS = Path(__file__).parent / "results"


class Step(bf.Node):
    def exec(self, prep_result):
        return None

    def post(self, shared, prep_result, exec_result):
        shared["steps"] = shared.get("steps", 0) + 1
        if shared.get("fail"):
            raise ValueError("the service said no")
        if shared.get("ask"):
            shared["answer"] = bf.interrupt({"question": "Go on?"})


class Items(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return range(shared["items"])

    async def exec_async(self, item):
        await asyncio.sleep(0)
        return item

    async def post_async(self, shared, prep_result, exec_result):
        shared["done"] = len(exec_result)


def make_store(store: Any, runs: int, items: int) -> None:
    first = Step(name="fetch")
    first >> Step(name="store")
    small = bf.Flow(start=first, name="nightly")
    for number in range(runs - 1):
        shared = {"fail": number % 20 == 7, "ask": number % 20 == 13}
        try:
            small.run(shared, store=store, run_id=f"run-{number:05d}")
        except (ValueError, bf.Suspended):
            pass
    batch = bf.AsyncFlow(start=Items(name="items", max_concurrency=64), name="big")
    batch.run({"items": items}, store=store, run_id="big", record_events=True)
    store.close()


@contextlib.contextmanager
def store_place(postgres: bool) -> Iterator[tuple[Any, str]]:
    """A new store, and what ``--store`` names it by: a SQLite file in a
    temporary directory, or a PostgreSQL server of its own and its URL."""
    if not postgres:
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "runs.db"
            yield bf.SQLiteStore(path), str(path)
        return
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from _postgres import postgres_server
    from braidflow.stores import PostgresStore

    with postgres_server(durable=True) as server:
        url = f"postgresql://braidflow@127.0.0.1:{server.port}/postgres"
        yield PostgresStore(url), url


def fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        size = len(answer.read())
    return time.perf_counter() - started, size


def measure(url: str) -> dict[str, float]:
    cold, size = fetch(url)
    times = []
    for _ in range(5):
        time.sleep(1.1)  # past the second the table keeps a reading of the store
        times.append(fetch(url)[0])
    warm = statistics.median(times)
    return {"cold_s": round(cold, 4), "warm_s": round(warm, 4), "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 runs and items")
    parser.add_argument("--postgres", action="store_true", help="the store in PostgreSQL")
    args = parser.parse_args()
    size = 1_000 if args.quick else 10_000
    with store_place(args.postgres) as (store, where):
        started = time.perf_counter()
        make_store(store, size, size)
        made = time.perf_counter() - started
        server = subprocess.Popen(
            [sys.executable, "-m", "braidflow", "ui", "--store", where, "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            found = re.search(r"http://\S+/", server.stdout.readline())
            assert found, "the dashboard did not start"
            base = found.group(0)
            pages = {
                f"runs table, {size:,} runs (first page)": base,
                "runs table, failed only": f"{base}?status=failed",
                "runs table, searched by id": f"{base}?q=run-0012",
                "runs table, last page": f"{base}?page={size // 50}",
                f"run page, a {size:,}-item batch": f"{base}runs/big",
                f"its timeline, {size:,} items": f"{base}runs/big/timeline",
            }
            results = {name: measure(url) for name, url in pages.items()}
        finally:
            server.terminate()
            server.wait(30)
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{kind} store of {size:,} runs made in {made:.1f} s")
    print(f"{'page':<40} {'first (s)':>10} {'then (s)':>10} {'KB':>8}")
    for name, figures in results.items():
        print(
            f"{name:<40} {figures['cold_s']:>10.3f} {figures['warm_s']:>10.3f} "
            f"{figures['bytes'] / 1024:>8.0f}"
        )
    RESULTS.mkdir(exist_ok=True)
    name = "ui_postgres.json" if args.postgres else "ui.json"
    figures = {"size": size, "store": kind, "pages": results}
    (RESULTS / name).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
