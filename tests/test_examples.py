"""The examples `make demo` runs still work and still show what they claim."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("weather.py", "Sunny in London"),
        ("parallel_squares.py", "squares: [1, 4, 9, 16, 25]"),
        ("mixed_flow.py", "counted (nested sync Flow) -> published (nested AsyncFlow)"),
        ("concurrency.py", "peak in flight: 3 (limit 3)"),
    ],
)
def test_example_runs(script, expected):
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert expected in completed.stdout
