"""The peers benchmark (bench/peers), checked without its peers installed.

LangGraph, LlamaIndex Workflows and pydantic-graph live in the benchmark's own
environment (`make bench-peers`; `make bench-peers-smoke` runs every library's
workloads there at tiny sizes). Here, with the test tools only, the harness
runs for real on raw asyncio, braidflow and PocketFlow (every workload, one
fresh process per library, results counted so no work is lost), reports a
library that cannot run as failed, and every library's module, the peers'
included, is checked against bench/peers/CONTRACT.md without importing it.
"""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent.parent / "bench" / "peers"
PEERS = HERE / "run.py"
OURS = ("raw", "braidflow", "pocketflow")  # what the test tools have


def load_harness():
    spec = importlib.util.spec_from_file_location("peers_run", PEERS)
    assert spec is not None
    assert spec.loader is not None
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    return peers


def smoke(*libraries):
    return subprocess.run(
        [
            sys.executable,
            str(PEERS),
            "--smoke",
            "--limit",
            "120",
            "--libraries",
            ",".join(libraries),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_braidflow_and_pocketflow_run_every_workload_and_lose_nothing():
    done = smoke(*OURS)
    assert done.returncode == 0, done.stdout + done.stderr
    figures, notes = done.stdout.split("Not measured: ")
    head, _, *rows = figures.strip().split("\n\n")[1].splitlines()
    assert head.endswith("| raw asyncio | braidflow | PocketFlow |")
    assert len(rows) == len(load_harness().SMOKE)
    assert "failed" not in figures
    for row in rows:
        raw, braidflow, pocketflow = (cell.strip() for cell in row.strip("| ").split("|")[3:6])
        assert braidflow[0].isdigit(), row  # braidflow runs every workload
        assert raw[0].isdigit() or raw == "n/a", row
        assert pocketflow[0].isdigit() or pocketflow == "n/a", row
    # What PocketFlow cannot do is said, with the reason its module gives.
    assert "PocketFlow, bounded: PocketFlow has no concurrency bound" in notes
    assert "PocketFlow, fork: " in notes
    assert "Peak memory" in done.stdout


def test_a_library_that_cannot_run_is_reported_failed_and_the_run_exits_1():
    peer = "pydantic_graph"
    if importlib.util.find_spec(peer):
        pytest.skip(f"{peer} is installed here: this test needs a library that is not")
    done = smoke("raw", peer)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert f"{peer} chain:20: ModuleNotFoundError" in done.stderr
    assert "| chain of async steps | 20 | µs per step |" in done.stdout
    assert "failed" in done.stdout.split("Not measured")[0]


def workload_functions(module: ast.Module) -> dict[str, int]:
    return {
        node.name: len(node.args.args)
        for node in module.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    }


def constants(module: ast.Module) -> dict[str, object]:
    found = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


@pytest.mark.parametrize("library", load_harness().LIBRARIES)
def test_every_library_module_keeps_the_contract(library):
    """CONTRACT.md: LABEL, PACKAGE, and a setup function of one argument (n)
    named after each workload: read from the source, so the peers' modules
    are checked where the peers are not installed."""
    peers = load_harness()
    path = HERE / f"lib_{library}.py"
    module = ast.parse(path.read_text(), filename=str(path))
    values = constants(module)
    assert isinstance(values.get("LABEL"), str), f"{path.name} has no LABEL"
    assert "PACKAGE" in values, f"{path.name} has no PACKAGE"
    assert values["PACKAGE"] is None or isinstance(values["PACKAGE"], str)
    functions = workload_functions(module)
    for workload in peers.UNITS:
        assert functions.get(workload) == 1, f"{path.name}: no {workload}(n)"
    compile(path.read_text(), str(path), "exec")


def test_the_harness_knows_every_library_module():
    modules = {path.stem.removeprefix("lib_") for path in HERE.glob("lib_*.py")}
    assert modules == set(load_harness().LIBRARIES)


def test_the_report_shows_figures_ratios_limits_failures_and_memory():
    peers = load_harness()
    results = {
        "items:1000": {
            "raw": {"seconds": 0.01, "peak_rss_mb": 20.0},
            "braidflow": {"seconds": 0.02, "peak_rss_mb": 30.4},
            "langgraph": {"timeout": 120},
            "llamaindex": {"error": "ImportError: no workflows"},
        },
        "bounded:1000": {"pocketflow": {"unsupported": "no bound"}},
    }
    text = peers.report("a machine", {"raw": "3.11"}, results, [("items", 1000), ("bounded", 1000)])
    assert text.startswith("Measured on a machine; raw asyncio 3.11.")
    items_row = next(line for line in text.splitlines() if line.startswith("| items at once"))
    assert "| 10 | 20 (2.0x) |" in items_row  # µs per item, ratio to raw asyncio
    assert "> 120 s" in items_row
    assert items_row.endswith("| failed |")
    assert "PocketFlow, bounded: no bound" in text
    assert ", items: ImportError: no workflows" in text  # the label: LlamaIndex's if installed
    memory = text.split("Peak memory")[1]
    assert "| 20 | 30 |" in memory


@pytest.mark.slow
def test_a_measuring_process_reports_its_own_peak_memory_not_its_parents():
    """Linux keeps ru_maxrss across exec: a child of a large process would
    report the parent's peak. The figure is the child's own."""
    ballast = bytearray(200 * 1024 * 1024)  # this process: over 200 MB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    done = subprocess.run(
        [sys.executable, str(PEERS), "--one", "raw", "chain", "10"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < figures["peak_rss_mb"] < 100
