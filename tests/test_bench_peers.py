"""The peers benchmark's smoke mode: every library's workloads still run and
do all their work (tiny sizes, one process per library), so the suite that
publishes the figures cannot rot. The figures come from `make bench-peers`."""

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
