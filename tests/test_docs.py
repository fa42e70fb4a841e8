"""The Python examples in the docs run, page by page, as a reader would paste them."""

import re
from pathlib import Path

import pytest

from _support import python_blocks, run_python_blocks, uses_ray

DOCS = Path(__file__).parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


# Pages whose examples wait on purpose (a timeout, a blocking call): over a second each.
SLOW_PAGES = {"concurrency.md", "branches.md"}


@pytest.mark.parametrize(
    "page",
    # A page whose blocks use Ray runs in tests/test_ray.py, on the Ray instance there.
    [
        pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW_PAGES else p
        for p in PAGES
        if python_blocks(p) and not uses_ray(p)
    ],
    ids=lambda p: p.name,
)
def test_every_python_block_on_the_page_runs(page, capsys):
    run_python_blocks(page)
    capsys.readouterr()


def test_the_pages_that_use_ray_are_run_by_the_ray_tests():
    assert [p.name for p in PAGES if uses_ray(p)] == ["scaling.md"]


# -- shell blocks: the commands on the pages, run in a scratch directory -----------------

REPO = DOCS.parent


def shell_commands(page: Path) -> list[str]:
    """The commands of the page's ```bash blocks (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
        commands += [line for line in block.splitlines() if line and not line.startswith("#")]
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if shell_commands(p)], ids=lambda p: p.name)
def test_every_command_on_the_page_runs(page, tmp_path):
    """Run as a reader would, from a directory holding the examples. Exit code 3
    (a run waiting for input) is what some of them show."""
    import os
    import subprocess
    import sys

    (tmp_path / "examples").symlink_to(REPO / "examples")
    bin_directory = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_directory}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("BRAIDFLOW_STORE", None)
    for command in shell_commands(page):
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode in (0, 3), f"{command}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr


# -- the API reference: every public name has a docstring ---------------------------------


PUBLIC_MODULES = ["braidflow", "braidflow.tracing", "braidflow.executors", "braidflow.llm"]


def public_names():
    """(module, name) of every public name; braidflow.ui's if its extra is installed."""
    import importlib

    modules = [importlib.import_module(name) for name in PUBLIC_MODULES]
    try:
        import braidflow.ui  # the ui extra

        modules.append(braidflow.ui)
    except ImportError:
        pass
    for module in modules:
        for name in module.__all__:
            yield module.__name__, name


# Ids are the names: the same in every process (pytest-xdist's workers must agree).
# RayExecutor is imported with ray, which make test does not install: left to make test-rest.
@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param(
            module,
            name,
            id=f"{module}.{name}",
            marks=[pytest.mark.ray] if name == "RayExecutor" else [],
        )
        for module, name in public_names()
    ],
)
def test_every_public_name_has_a_docstring(module, name):
    """The name and the public methods of a class, as the reference shows them."""
    import importlib
    import inspect

    value = getattr(importlib.import_module(module), name)
    named = [(f"{module}.{name}", value)]
    if inspect.isclass(value):
        named += [
            (f"{module}.{name}.{attribute}", member)
            for attribute, member in vars(value).items()
            if not attribute.startswith("_") and callable(member)
        ]
    missing = [
        full_name
        for full_name, each in named
        # a constant (MISSING) is described where it is documented
        if (inspect.isclass(each) or inspect.isfunction(each) or inspect.ismethod(each))
        and not (each.__doc__ or "").strip()
    ]
    assert not missing, f"no docstring, the reference would miss them: {missing}"


# -- the benchmarks page ------------------------------------------------------------------


def test_the_benchmarks_table_is_the_one_the_results_give():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_plot", DOCS / "bench_plot.py")
    assert spec is not None
    assert spec.loader is not None
    bench_plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_plot)
    page = (DOCS / "benchmarks.md").read_text()
    assert f"{bench_plot.BEGIN}\n{bench_plot.table()}\n{bench_plot.END}" in page
    assert (DOCS / "images" / "benchmarks.png").exists()
