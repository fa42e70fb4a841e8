"""examples/showcase.py, what `make demo` runs: every part of it, in its --fast form.

The assertions are on what the report counts, never on times: every page
summarised, the bounds kept, the kill landing where it must, the resume
running only what was missing, the same digest three times, nothing left
behind.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SHOWCASE = Path(__file__).parent.parent / "examples" / "showcase.py"
PAGES, SAMPLE, AT_ONCE, QUOTA, KILL_AFTER = 12, 4, 4, 3, 5  # the showcase's FAST settings

pytestmark = [
    pytest.mark.slow,  # the showcase in a process of its own, with its libraries: 10 s
    pytest.mark.timeout(240),  # CI can be slow
]


def run_showcase(scratch: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The showcase, --fast, with its temporary files (and its child's) under ``scratch``."""
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(SHOWCASE), "--fast", "--no-progress", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


def report_of(output: str) -> dict[str, str]:
    """The report's rows, by label."""
    rows = output.split("\nReport\n", 1)[1].splitlines()
    return dict(re.match(r"  (\S[^:]*): +(.*)", row).groups() for row in rows if row[2] != " ")


def test_the_showcase_shows_every_part_and_leaves_nothing_behind(tmp_path):
    scratch = tmp_path / "tmp"
    done = run_showcase(scratch)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = report_of(done.stdout)

    assert report["pages summarised"] == (
        f"{SAMPLE} one at a time; {PAGES} of {PAGES} concurrently, and again durably"
    )
    assert re.fullmatch(
        rf"{SAMPLE} pages in \d+\.\d\d s: \d+\.\d pages a second", report["one at a time"]
    )
    assert re.fullmatch(
        rf"{PAGES} pages in \d+\.\d\d s: \d+\.\d pages a second", report[f"{AT_ONCE} at a time"]
    )
    assert re.fullmatch(r"\d+x the pages a second", report["speedup"])
    peak = re.fullmatch(
        rf"at most (\d+) \(limit {QUOTA}; the API saw at most (\d+)\)",
        report["LLM calls in flight"],
    )
    assert peak is not None
    assert 1 <= int(peak[2]) <= int(peak[1]) <= QUOTA  # the Limiter kept the API's quota
    assert report["429 answers"] == "0"
    assert report["retries"] == "0"
    # Killed where the showcase aimed: the API had answered KILL_AFTER calls, the
    # batch's workers each held a page; the store saw the process gone.
    assert report["killed (SIGKILL)"] == (
        f"{KILL_AFTER} pages in the store, {AT_ONCE} in flight; the store said 'interrupted'"
    )
    # The resume ran the missing pages only, each with one call to the API.
    missing = PAGES - KILL_AFTER
    assert report["resumed"].startswith(f"{missing} pages run, {missing} LLM calls, ")
    assert report["same digest"] == "yes (one at a time, for its pages; concurrent; resumed)"

    directory = Path(report["removed at exit"].split(" (")[0])
    assert directory.parent == scratch
    assert not directory.exists()
    assert report["timeline"] == str(directory / "timeline.html")
    assert list(scratch.iterdir()) == []  # no other temporary file either, the child's included


def test_with_out_the_files_stay_and_a_second_run_replaces_the_store(tmp_path):
    from braidflow import SQLiteStore

    out = tmp_path / "demo"
    for _ in range(2):  # the second run finds the first one's store in DIR
        done = run_showcase(tmp_path / "tmp", "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert "removed at exit" not in done.stdout
    assert sorted(path.name for path in out.iterdir()) == ["digest.md", "runs.db", "timeline.html"]
    assert (out / "timeline.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    digest = (out / "digest.md").read_text(encoding="utf-8").splitlines()
    assert len(digest) == PAGES
    assert digest[0] == (
        "- Lighthouses: a short history: "
        "The oldest lighthouses we know of are older than the towns around them."
    )
    with SQLiteStore(out / "runs.db") as store:
        [run] = store.runs()
        assert (run.run_id, run.status) == ("digest-1", "completed")  # the resume finished it
    assert list((tmp_path / "tmp").iterdir()) == []


def test_progress_can_be_asked_for_without_a_terminal(tmp_path):
    done = run_showcase(tmp_path / "tmp", "--progress")
    assert done.returncode == 0, done.stderr
    assert "same digest:          yes" in done.stdout
