"""The Python examples in the docs run, page by page, as a reader would paste them."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def code_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", [p for p in PAGES if code_blocks(p)], ids=lambda p: p.name)
def test_every_python_block_on_the_page_runs(page, capsys):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(code_blocks(page), start=1):
        try:
            exec(compile(block, f"{page.name}[block {number}]", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page.name} block {number} failed: {error!r}\n{block}")
    capsys.readouterr()
