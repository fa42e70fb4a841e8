"""examples/crawler.py crawls its own local site and reports what it shows."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the example in a process of its own, with httpx

CRAWLER = Path(__file__).parent.parent / "examples" / "crawler.py"


def test_crawler_fetches_every_page_and_reports_the_broken_link(tmp_path):
    pytest.importorskip("httpx")
    timeline = tmp_path / "t.html"
    completed = subprocess.run(
        [sys.executable, str(CRAWLER), "--fast", "--timeline", str(timeline)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    output = completed.stdout
    # --fast: 20 pages and the index; the broken link is the one failure, and
    # each of the two flaky pages answers 500 once, so is retried once.
    assert "pages fetched: 21 (the index and 20 pages)" in output
    assert "failures: 1\n" in output
    assert "/pages/retired.html: PageError: 404 Not Found" in output
    assert "retries: 2\n" in output
    assert "acquired=24" in output  # 21 pages, the 404 and 2 retries: all through the limiter
    assert f"timeline: {timeline}" in output
    assert timeline.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
