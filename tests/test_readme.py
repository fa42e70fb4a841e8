"""Every ``python`` block of the README runs as pasted into a file: ``python file.py``,
in an empty directory, offline, in a few seconds, each block on its own."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's ```python blocks, with the line each starts on."""
    text = page.read_text()
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in re.finditer(r"```python\n(.*?)```", text, flags=re.DOTALL)
    ]


def test_the_readme_has_python_blocks():
    assert len(python_blocks(README)) >= 5


@pytest.mark.parametrize(
    ("line", "block"),
    [pytest.param(line, block, id=f"line-{line}") for line, block in python_blocks(README)],
)
def test_every_readme_block_runs_as_a_file(line, block, tmp_path):
    program = tmp_path / "snippet.py"
    program.write_text(block)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-W", "error", str(program)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"README.md line {line}:\n{block}\n{done.stderr}"
    assert done.stderr == "", f"README.md line {line}:\n{done.stderr}"
