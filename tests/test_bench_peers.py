"""The peers benchmark's smoke mode: every library's workloads still run and
do all their work (tiny sizes, one process per library), so the suite that
publishes the figures cannot rot. The figures come from `make bench-peers`."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

PEERS = Path(__file__).parent.parent / "bench" / "peers" / "run.py"


def test_every_peer_workload_runs_and_loses_nothing():
    done = subprocess.run(
        [sys.executable, str(PEERS), "--smoke", "--limit", "120"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    for library in ("raw asyncio", "braidflow", "PocketFlow", "LangGraph", "pydantic-graph"):
        assert library in table
    assert "failed" not in table.split("Not measured")[0]


def test_the_report_shows_figures_ratios_limits_and_memory():
    spec = importlib.util.spec_from_file_location("peers_run", PEERS)
    peers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peers)
    results = {
        "items:1000": {
            "raw": {"seconds": 0.01, "peak_rss_mb": 20.0},
            "braidflow": {"seconds": 0.02, "peak_rss_mb": 30.4},
            "langgraph": {"timeout": 120},
        },
        "bounded:1000": {"pocketflow": {"unsupported": "no bound"}},
    }
    text = peers.report("a machine", {"raw": "3.11"}, results, [("items", 1000), ("bounded", 1000)])
    assert text.startswith("Measured on a machine; raw asyncio 3.11.")
    items_row = next(line for line in text.splitlines() if line.startswith("| items at once"))
    assert "| 10 | 20 (2.0x) |" in items_row  # µs per item, ratio to raw asyncio
    assert "> 120 s" in items_row
    assert "PocketFlow, bounded: no bound" in text
    memory = text.split("Peak memory")[1]
    assert "| 20 | 30 |" in memory


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
