"""The examples `make examples` runs still work and still show what they claim."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each example in a process of its own, with its libraries

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("weather.py", "Sunny in London"),
        ("parallel_squares.py", "squares: [1, 4, 9, 16, 25]"),
        ("mixed_flow.py", "counted (nested sync Flow) -> published (nested AsyncFlow)"),
        ("concurrency.py", "peak in flight: 3 (limit 3)"),
        ("research.py", "3 searches, 7 findings"),
        ("review.py", "The money will be back on your card within 5 working days."),
        ("invoices.py", "99 approved; 98 checks in all (none redone)"),
        ("image_filters.py --fast", "8 images written to"),
    ],
)
def test_example_runs(script, expected):
    script, *args = script.split()
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert expected in completed.stdout
    assert "Warning" not in completed.stderr, completed.stderr


def test_the_image_pipeline_writes_every_pair_and_a_timeline(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "image_filters.py"), "--fast", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "speedup: " in completed.stdout
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == sorted(
        f"picture{number}-{name}.png"
        for number in (1, 2)
        for name in ("blur", "sharpen", "edges", "sepia")
    )
    assert (tmp_path / "timeline.html").read_text().startswith("<!DOCTYPE html>")


def test_the_image_pipeline_leaves_no_temporary_directory_behind(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "image_filters.py"), "--fast"],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "8 images written to " + str(tmp_path) in completed.stdout
    assert list(tmp_path.iterdir()) == []  # its directory was removed at exit
