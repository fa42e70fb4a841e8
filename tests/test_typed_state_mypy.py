"""`mypy --strict` on typed shared state: it accepts tests/typed_state/accepted.py
and reports each mistake marked in tests/typed_state/rejected.py, no more."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # mypy from a cold cache: 20 s

ROOT = Path(__file__).parent.parent
SOURCE = ROOT / "src"


@pytest.mark.timeout(300)
def test_mypy_strict_accepts_typed_nodes_and_reports_each_wrong_key_and_type(tmp_path):
    # Relative to the checkout, as mypy names them in its report.
    accepted, rejected = (
        Path("tests/typed_state/accepted.py"),
        Path("tests/typed_state/rejected.py"),
    )
    (tmp_path / "none.ini").write_text("[mypy]\n")  # not the project's settings: --strict alone
    completed = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11",
            "--config-file", str(tmp_path / "none.ini"), "--cache-dir", str(tmp_path / "cache"),
            "--no-error-summary", "--show-error-codes", str(accepted), str(rejected),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(SOURCE), "PATH": "/usr/bin:/bin"},
        check=False,
    )  # fmt: skip
    errors = [line for line in completed.stdout.splitlines() if ": error: " in line]
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert not [line for line in errors if line.startswith(str(accepted))], completed.stdout
    reported = {
        int(re.match(rf"{re.escape(str(rejected))}:(\d+):", line).group(1))
        for line in errors
        if line.startswith(str(rejected))
    }
    marked = {
        number
        for number, line in enumerate((ROOT / rejected).read_text().splitlines(), start=1)
        if "# error:" in line
    }
    assert len(marked) == 7
    assert reported == marked, completed.stdout
    assert 'TypedDict "Research" has no key "questoin"' in completed.stdout
    assert 'Value of "question" has incompatible type "int"; expected "str"' in completed.stdout
    assert 'supertype defines the argument type as "Research"' in completed.stdout
