"""Draw the benchmarks page's picture and table from a run of bench/run.py.

    python bench/run.py                       # writes bench/results/latest.json
    cp bench/results/latest.json docs/benchmarks.json
    python docs/bench_plot.py                 # remakes the plot and the page's table

The table on docs/benchmarks.md sits between two markers and is rewritten
in place; the test suite checks that it matches docs/benchmarks.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RESULTS = DOCS / "benchmarks.json"
PAGE = DOCS / "benchmarks.md"
PICTURE = DOCS / "images" / "benchmarks.png"
BEGIN, END = "<!-- table: made by docs/bench_plot.py -->", "<!-- end of table -->"

LABELS = {
    ("chain", "us_per_node"): "chain of 1,000 async nodes, µs per node",
    ("chain_policies", "us_per_node"): "the same, each with a Limiter and 2 attempts",
    ("chain_noop", "us_per_node"): "the same, with a no-op observer",
    ("chain_jsonl", "us_per_node"): "the same, with a JSONL trace",
    ("chain_durable", "us_per_node"): "the same, durable (SQLite checkpoint per node)",
    ("chain_durable_async", "us_per_node"): 'the same, durability="async"',
    ("chain_durable_exit", "us_per_node"): 'the same, durability="exit"',
    ("sync_chain", "us_per_node"): "chain of 1,000 sync nodes, µs per node",
    ("fanout", "overhead_s"): "10k items x sleep(50 ms): seconds over 50 ms",
    ("fanout", "peak_rss_mb"): "the same: peak memory, MB",
    ("bounded", "time_s"): "items from a generator, bound 1,000: seconds",
    ("bounded", "peak_rss_mb"): "the same: peak memory, MB",
    ("subflows", "wall_s"): "100 parallel sub-flows (20 ms each): seconds",
    ("items", "us_per_item"): "100k items, no wait: µs per item",
    ("items_limited", "us_per_item"): "the same, through a Limiter: µs per item",
    ("stop_waiters", "stop_s"): "50k items queued on a Limiter, one fails: seconds to stop",
    ("items_durable", "us_per_item"): "10k items, bound 1,000, durable: extra µs per item",
    ("items_durable_unbounded", "us_per_item"): "the same, unbounded: extra µs per item",
    ("cache_hits", "hit_us"): "10k items, every one a cache hit in SQLite: µs per item",
    ("cache_hits", "extra_us"): "the same, over a batch without cache: µs per item",
    ("branches", "us_per_branch"): "fork/join of trivial branches: µs per branch",
    ("branches_big", "us_per_branch"): "the same, with 10 MB in shared: µs per branch",
    ("cpu_batch", "in_process_s"): "200 CPU-bound items (20 ms): in process, seconds",
    ("cpu_batch", "threads_s"): "the same in 2 threads (ParallelBatchNode), seconds",
    ("cpu_batch", "ray_s"): "the same on Ray, 2 CPUs (RayExecutor), seconds",
    ("cpu_batch", "ray_round_trip_ms"): "Ray's round trip per item, ms",
}


def rows() -> list[dict]:
    return json.loads(RESULTS.read_text())["rows"]


def _figure(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def table() -> str:
    """The page's table: every figure of the run, with braidflow's ratios."""
    lines = [
        "| workload | size | raw asyncio | PocketFlow 0.0.3 | braidflow | vs PocketFlow |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows():
        label = LABELS.get((row["workload"], row["metric"]), row["workload"])
        ours, theirs = row["braidflow"], row["pocketflow"]
        ratio = f"{ours / theirs:.2f}x" if ours is not None and theirs else "n/a"
        lines.append(
            f"| {label} | {row['size']:,} | {_figure(row['asyncio'])} | {_figure(theirs)} "
            f"| {_figure(ours)} | {ratio} |"
        )
    return "\n".join(lines)


def draw() -> None:
    """Bars of per-node and per-item cost for the three implementations."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    wanted = [("chain", "us_per_node"), ("sync_chain", "us_per_node"), ("items", "us_per_item")]
    found = {(row["workload"], row["metric"]): row for row in rows()}
    picked = [found[key] for key in wanted if key in found]
    names = ["async chain\nµs per node", "sync chain\nµs per node", "100k items\nµs per item"]
    figure, axes = plt.subplots(figsize=(8, 3.6), dpi=120)
    width = 0.26
    for offset, (impl, colour) in enumerate(
        [("asyncio", "#9e9e9e"), ("pocketflow", "#f4a259"), ("braidflow", "#3f51b5")]
    ):
        values = [row[impl] or 0 for row in picked]
        bars = axes.bar(
            [index + (offset - 1) * width for index in range(len(picked))],
            values,
            width,
            label={"asyncio": "raw asyncio", "pocketflow": "PocketFlow 0.0.3"}.get(impl, impl),
            color=colour,
        )
        axes.bar_label(bars, fmt="%.1f", fontsize=8)
    axes.set_xticks(range(len(picked)), names[: len(picked)])
    axes.set_ylabel("µs (lower is better)")
    axes.set_title("Cost per node and per item, measured in one run")
    axes.legend(frameon=False)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    PICTURE.parent.mkdir(exist_ok=True)
    figure.savefig(PICTURE)


def write_table() -> None:
    page = PAGE.read_text()
    before, _, rest = page.partition(BEGIN)
    _, _, after = rest.partition(END)
    PAGE.write_text(f"{before}{BEGIN}\n{table()}\n{END}{after}")


if __name__ == "__main__":
    draw()
    write_table()
    print(f"wrote {PICTURE} and the table of {PAGE}", file=sys.stderr)
