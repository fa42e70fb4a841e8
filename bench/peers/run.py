"""braidflow against its peers: the same workloads in raw asyncio, braidflow,
PocketFlow, LangGraph, LlamaIndex Workflows and pydantic-graph.

    make bench-peers                         # isolated env with pinned versions, full run
    python bench/peers/run.py --smoke        # tiny sizes, once each: a check, not figures

Each measurement runs in a fresh process under a time limit (a workload
that exceeds it is reported as such); figures are medians of --repeat
processes. The full run writes bench/peers/results/latest.json, and with
--docs the table and plot of docs/benchmarks.md's "Against the peers".
How a library's workloads are written: bench/peers/CONTRACT.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCS_PAGE = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "images" / "peers.png"
RESULTS = HERE / "results" / "latest.json"
BEGIN, END = "<!-- peers: made by bench/peers/run.py -->", "<!-- end of peers -->"

LIBRARIES = ["raw", "braidflow", "pocketflow", "langgraph", "llamaindex", "pydantic_graph"]

# (workload, n) in the order of the table.
PLAN = [
    ("chain", 100),
    ("chain", 1_000),
    ("chain", 10_000),
    ("items", 1_000),
    ("items", 10_000),
    ("items", 100_000),
    ("fanout", 1_000),
    ("fanout", 10_000),
    ("fanout", 100_000),
    ("subflows", 100),
    ("bounded", 1_000_000),
    ("fork", 100),
    ("checkpointed", 1_000),
]
SMOKE = [
    ("chain", 20),
    ("items", 100),
    ("fanout", 50),
    ("subflows", 5),
    ("bounded", 300),
    ("fork", 3),
    ("checkpointed", 10),
]

# What one unit of each workload is, and what a run must report having done.
UNITS = {
    "chain": ("µs per step", lambda n: n),
    "items": ("µs per item", lambda n: n),
    "fanout": ("µs per item over 50 ms", lambda n: n),
    "subflows": ("ms over 20 ms", lambda n: 3 * n),
    "bounded": ("µs per item", lambda n: n),
    "fork": ("µs per branch", lambda n: 16 * n),
    "checkpointed": ("µs per step", lambda n: n),
}
DESCRIPTIONS = {
    "chain": "chain of async steps",
    "items": "items at once, no wait",
    "fanout": "items at once, each sleeping 50 ms",
    "subflows": "parallel sub-flows a -> b (20 ms) -> c",
    "bounded": "items from a generator, at most 1,000 in flight",
    "fork": "fork/join of 16 branches, repeated",
    "checkpointed": "chain, a SQLite checkpoint per step",
}


def per_unit(workload: str, n: int, seconds: float) -> float:
    """The figure the table shows for a run that took ``seconds``."""
    if workload == "fanout":
        return (seconds - 0.05) / n * 1e6
    if workload == "subflows":
        return (seconds - 0.02) * 1e3
    return seconds / UNITS[workload][1](n) * 1e6


# -- one measurement, in a fresh process ------------------------------------------------


def measure_here(library: str, workload: str, n: int) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(f"lib_{library}")
    try:
        run = getattr(module, workload)(n)  # each lib_*.py names a function after each workload
    except NotImplementedError as why:
        return {"unsupported": str(why)}

    # The garbage of the imports is collected now, not in whichever timed run
    # happens to cross the collector's threshold.
    gc.collect()

    async def timed() -> tuple[float, int]:
        started = time.perf_counter()
        count = await run()
        return time.perf_counter() - started, count

    seconds, count = asyncio.run(timed())
    expected = UNITS[workload][1](n)
    if count != expected:
        return {"error": f"the run reported {count}, not {expected}: work was lost"}
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux keeps ``ru_maxrss`` across ``exec``, so a
    child would report its parent's peak if that was higher: read the peak of
    this program's own memory (VmHWM) where there is one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compile_first() -> None:
    """Write the bytecode of braidflow and of the workload files before any
    measuring process starts: with PYTHONDONTWRITEBYTECODE set, a cache older
    than its source would be compiled again in every fresh process, and that
    shows in a first run's figures."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("braidflow")
    folders = [HERE, *(spec.submodule_search_locations or [] if spec else [])]
    for folder in folders:
        compileall.compile_dir(str(folder), quiet=2)


def measure(library: str, workload: str, n: int, repeat: int, limit: float) -> dict[str, Any]:
    """Median of ``repeat`` fresh processes; the first timeout or error stops it."""
    runs = []
    for _ in range(repeat):
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--one", library, workload, str(n)],
                capture_output=True,
                text=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"timeout": limit}
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            return {"error": last[:200]}
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if "seconds" not in result:
            return result
        runs.append(result)
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def smoke(library: str, limit: float) -> dict[str, dict[str, Any]]:
    """Every smoke workload of one library, in one fresh process."""
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--smoke-of", library],
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {f"{w}:{n}": {"timeout": limit} for w, n in SMOKE}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {f"{w}:{n}": {"error": last[:200]} for w, n in SMOKE}
    found: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


# -- the report ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {}
    for library in LIBRARIES[1:]:
        module = _module(library)
        package = getattr(module, "PACKAGE", None) if module else None
        if package:
            try:
                found[library] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                found[library] = "not installed"
    return found


def _module(library: str) -> Any:
    sys.path.insert(0, str(HERE))
    try:
        return importlib.import_module(f"lib_{library}")
    except ImportError:
        return None


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({model}), "
        f"{memory:.0f} GiB, Python {platform.python_version()}"
    )


def label(library: str) -> str:
    module = _module(library)
    return getattr(module, "LABEL", library) if module else library


def cell(result: dict[str, Any], workload: str, n: int) -> str:
    if "seconds" in result:
        return _number(per_unit(workload, n, result["seconds"]))
    if "timeout" in result:
        if result.get("skipped"):
            return f"not run (> {result['timeout']:.0f} s at a smaller n)"
        return f"> {result['timeout']:.0f} s"
    if "unsupported" in result:
        return "n/a"
    return "failed"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(results: dict[str, dict[str, dict[str, Any]]], plan: list[tuple[str, int]]) -> str:
    libraries = [lib for lib in LIBRARIES if any(lib in row for row in results.values())]
    head = "| workload | n | unit | " + " | ".join(label(lib) for lib in libraries) + " |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * len(libraries)]
    for workload, n in plan:
        row = results.get(f"{workload}:{n}", {})
        raw = row.get("raw", {})
        cells = []
        for lib in libraries:
            result = row.get(lib, {})
            text = cell(result, workload, n)
            if "seconds" in result and "seconds" in raw and lib != "raw":
                ours = per_unit(workload, n, result["seconds"])
                floor = per_unit(workload, n, raw["seconds"])
                if floor > 0:
                    text += f" ({ours / floor:.1f}x)"
            cells.append(text)
        unit = UNITS[workload][0]
        lines.append(f"| {DESCRIPTIONS[workload]} | {n:,} | {unit} | " + " | ".join(cells) + " |")
    notes = sorted(
        {
            f"{label(lib)}, {workload}: {result.get('unsupported') or result.get('error', '')}"
            for key, row in results.items()
            for lib, result in row.items()
            for workload in [key.split(":")[0]]
            if "unsupported" in result or "error" in result
        }
    )
    if notes:
        lines += ["", "Not measured: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def plot(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 3, figsize=(14, 4.8), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for panel, workload in zip(panels, ("chain", "items", "fanout"), strict=True):
        for color, library in zip(colors, LIBRARIES, strict=False):
            measured, exceeded = [], []
            for key, row in results.items():
                name, n = key.split(":")[0], int(key.split(":")[1])
                result = row.get(library, {})
                if name != workload:
                    continue
                if "seconds" in result:
                    measured.append((n, per_unit(workload, n, result["seconds"])))
                elif "timeout" in result and not result.get("skipped"):
                    # Over the limit: the cost per unit was at least this.
                    exceeded.append((n, per_unit(workload, n, result["timeout"])))
            if measured:
                measured.sort()
                xs, ys = zip(*measured, strict=True)
                panel.plot(xs, [max(y, 0.01) for y in ys], marker="o", color=color,
                           label=label(library))  # fmt: skip
            for n, floor in exceeded:  # side by side where several share a limit
                nudge = 1.12 ** (LIBRARIES.index(library) - len(LIBRARIES) / 2)
                panel.plot([n * nudge], [floor], marker="^", color=color, markerfacecolor="none",
                           markersize=9, linestyle="none")  # fmt: skip
        panel.set_xscale("log")
        panel.set_yscale("log")
        panel.set_xlabel("steps (n)" if workload == "chain" else "items (n)")
        panel.set_ylabel(UNITS[workload][0] + " (log)")
        panel.set_title(DESCRIPTIONS[workload])
        panel.grid(True, which="both", alpha=0.3)
    handles, labels = panels[0].get_legend_handles_labels()
    exceeded_mark = plt.Line2D([], [], marker="^", color="grey", markerfacecolor="none",
                               linestyle="none", markersize=9)  # fmt: skip
    figure.legend([*handles, exceeded_mark], [*labels, "over the time limit: at least this"],
                  loc="lower center", ncol=len(labels) + 1, fontsize=9, frameon=False)  # fmt: skip
    figure.suptitle("Cost per step and per item as n grows: flat lines scale, rising ones do not")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(PLOT)


def save(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    RESULTS.parent.mkdir(exist_ok=True)
    record = {"machine": machine(), "versions": versions(), "results": results}
    RESULTS.write_text(json.dumps(record, indent=2))


def report(
    machine: str,
    versions: dict[str, str],
    results: dict[str, dict[str, dict[str, Any]]],
    plan: list[tuple[str, int]],
) -> str:
    facts = f"{machine}; " + ", ".join(f"{label(lib)} {v}" for lib, v in versions.items())
    return (
        f"Measured on {facts}.\n\n{table(results, plan)}\n\n"
        f"Peak memory of the measuring process (RSS, MB; the interpreter and the "
        f"library included):\n\n{memory_table(results, plan)}"
    )


def memory_table(results: dict[str, dict[str, dict[str, Any]]], plan: list[tuple[str, int]]) -> str:
    libraries = [lib for lib in LIBRARIES if any(lib in row for row in results.values())]
    lines = [
        "| workload | n | " + " | ".join(label(lib) for lib in libraries) + " |",
        "|" + " --- |" * 2 + " ---: |" * len(libraries),
    ]
    for workload, n in plan:
        row = results.get(f"{workload}:{n}", {})
        cells = [
            f"{row[lib]['peak_rss_mb']:,.0f}" if "peak_rss_mb" in row.get(lib, {}) else "-"
            for lib in libraries
        ]
        lines.append(f"| {DESCRIPTIONS[workload]} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    page = DOCS_PAGE.read_text()
    before, _, rest = page.partition(BEGIN)
    _, _, after = rest.partition(END)
    DOCS_PAGE.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, once each")
    parser.add_argument("--repeat", type=int, default=3, help="processes per figure (median)")
    parser.add_argument("--limit", type=float, default=120, help="seconds per process at most")
    parser.add_argument("--libraries", help="comma-separated, of: " + ", ".join(LIBRARIES))
    parser.add_argument("--docs", action="store_true", help="write the table and plot into docs")
    parser.add_argument(
        "--docs-from",
        type=Path,
        metavar="JSON",
        help=f"write the table and plot into docs from a saved run ({RESULTS.relative_to(HERE)})",
    )
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--smoke-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        library, workload, n = args.one
        print(json.dumps(measure_here(library, workload, int(n))))
        return 0

    if args.smoke_of:
        print(json.dumps({f"{w}:{n}": measure_here(args.smoke_of, w, n) for w, n in SMOKE}))
        return 0

    if args.docs_from:
        record = json.loads(args.docs_from.read_text())
        results = record["results"]
        plan = [(w, n) for w, n in PLAN if f"{w}:{n}" in results]
        write_docs(report(record["machine"], record["versions"], results, plan))
        plot(results)
        return 0

    plan = SMOKE if args.smoke else PLAN
    compile_first()
    chosen = args.libraries.split(",") if args.libraries else LIBRARIES
    unknown = set(chosen) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries: {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    if args.smoke:  # one process per library, every workload tiny: a check, not figures
        for library in chosen:
            for key, result in smoke(library, args.limit).items():
                results.setdefault(key, {})[library] = result
    else:
        exceeded: set[tuple[str, str]] = set()  # a larger n would only exceed it again
        for workload, n in plan:
            row = results.setdefault(f"{workload}:{n}", {})
            for library in chosen:
                if (library, workload) in exceeded:
                    row[library] = result = {"timeout": args.limit, "skipped": True}
                else:
                    result = measure(library, workload, n, args.repeat, args.limit)
                    row[library] = result
                    if "timeout" in result:
                        exceeded.add((library, workload))
                shown = cell(result, workload, n)
                print(f"{workload:>12} {n:>9,} {label(library):>22}: {shown}", flush=True)
                save(results)  # as it goes: a run cut short keeps what it measured
    failed = [
        f"{library} {key}: {result['error']}"
        for key, row in results.items()
        for library, result in row.items()
        if "error" in result or ("timeout" in result and args.smoke)
    ]
    text = report(machine(), versions(), results, plan)
    print()
    print(text)
    if not args.smoke:
        save(results)
        if args.docs:
            plot(results)
            write_docs(text)
    if failed:
        print("\nfailed:\n" + "\n".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
