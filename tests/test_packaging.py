"""braidflow as a user gets it: the wheel and the sdist that `python -m build`
makes (`make package` writes them into dist/), and the wheel installed in a
new environment that has nothing else, run from there.

The examples are not in the wheel: they are the source tree's (the sdist has
them), and `pip install 'braidflow[examples]'` installs what they use.
"""

import email.message
import email.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import braidflow

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.packaging

# What a source tree collects and an sdist must not carry.
JUNK = (
    ".venv",
    ".venv-peers",
    "site",
    ".cache",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "dist",
    "build",
    "results",
    ".git",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """The sdist and the wheel, built from this tree as `make package` builds
    them (the wheel from the sdist), with the build backend of this venv: no
    download."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("braidflow-*.whl")
    (sdist,) = out.glob("braidflow-*.tar.gz")
    return wheel, sdist


def metadata(text: str) -> email.message.Message:
    return email.parser.Parser().parsestr(text)


def test_the_wheel_holds_the_package_its_data_and_nothing_else(dist):
    wheel, _ = dist
    assert wheel.name == f"braidflow-{braidflow.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "braidflow/py.typed" in names  # type checkers use the annotations
    assert "braidflow/tracing/timeline.html" in names  # Timeline's page
    for part in ("templates/run.html", "templates/runs.html", "static/ui.js", "static/ui.css"):
        assert f"braidflow/ui/{part}" in names  # the dashboard's pages, script and style
    assert "braidflow/__main__.py" in names  # python -m braidflow
    info = f"braidflow-{braidflow.__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "braidflow = braidflow.cli:main" in entry_points
    outside = {name.split("/")[0] for name in names} - {"braidflow", info}
    assert outside == set()
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]


def test_the_metadata_says_what_the_package_is(dist):
    wheel, _ = dist
    info = f"braidflow-{braidflow.__version__}.dist-info/METADATA"
    meta = metadata(zipfile.ZipFile(wheel).read(info).decode())
    assert meta["Name"] == "braidflow"
    assert meta["Version"] == braidflow.__version__
    assert meta["Summary"].startswith("LLM and I/O workflows as graphs of nodes")
    assert meta["Requires-Python"] == ">=3.11"
    assert meta["License-Expression"] == "MIT"
    assert meta["License-File"] == "LICENSE"
    assert meta["Author"]
    assert "asyncio" in meta["Keywords"].split(",")
    requirements = meta.get_all("Requires-Dist")
    assert [r for r in requirements if "extra ==" not in r] == []  # the library needs nothing
    assert {"tracing", "ray", "postgres", "examples", "ui"} <= set(meta.get_all("Provides-Extra"))
    classifiers = meta.get_all("Classifier")
    for wanted in (
        "Development Status :: ",
        "Operating System :: ",
        "Programming Language :: Python :: 3.11",
        "Framework :: AsyncIO",
        "Typing :: Typed",
    ):
        assert any(c.startswith(wanted) for c in classifiers), wanted
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().strip() == (ROOT / "README.md").read_text().strip()


def test_the_sdist_is_the_source_tree_without_junk(dist):
    _, sdist = dist
    top = f"braidflow-{braidflow.__version__}"
    with tarfile.open(sdist) as archive:
        names = [name.removeprefix(f"{top}/") for name in archive.getnames()]
        meta = metadata(archive.extractfile(f"{top}/PKG-INFO").read().decode())
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "Makefile",
        "mkdocs.yml",
        "src/braidflow/py.typed",
        "src/braidflow/tracing/timeline.html",
        "tests/test_packaging.py",
        "docs/index.md",
        "examples/image_filters.py",
        "bench/peers/run.py",
    ):
        assert needed in names, needed
    junk = [name for name in names if set(name.split("/")) & set(JUNK) or name.endswith(".pyc")]
    assert junk == []
    assert meta["Version"] == braidflow.__version__
    assert meta["License-Expression"] == "MIT"


def fresh_venv(python: str, where: Path, wheel: Path) -> Path:
    """A new venv of ``python`` with the wheel installed and nothing else (no
    index: the wheel must need nothing more); its bin directory."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    install = ["install", "--quiet", "--no-index", str(wheel)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(where / "bin" / "python"), *install],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return where / "bin"


PIPELINE = textwrap.dedent(
    """
    import asyncio

    from braidflow import AsyncFlow, AsyncNode, AsyncParallelBatchNode


    class Greet(AsyncNode):
        async def prep_async(self, shared):
            return shared["name"]

        async def exec_async(self, name):
            return f"Hello, {name}"

        async def post_async(self, shared, prep_res, exec_res):
            shared["greeting"] = exec_res


    class Squares(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(5)

        async def exec_async(self, number):
            await asyncio.sleep(0)
            return number * number

        async def post_async(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res


    greet = Greet(name="greet")
    greet >> Squares(name="squares", max_concurrency=2)
    flow = AsyncFlow(start=greet, name="pipeline")
    """
)


def run(bin_directory: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command of the new venv, with an environment that knows nothing of this tree."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "BRAIDFLOW_STORE", "VIRTUAL_ENV")
    }
    environment["PATH"] = f"{bin_directory}{os.pathsep}{environment.get('PATH', '')}"
    done = subprocess.run(
        command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done


def test_the_installed_wheel_runs_the_command_and_a_flow(dist, tmp_path):
    wheel, _ = dist
    bin_directory = fresh_venv(sys.executable, tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    version = f"braidflow {braidflow.__version__}"
    assert run(bin_directory, "braidflow", "--version", cwd=work).stdout.strip() == version
    module = run(bin_directory, "python", "-m", "braidflow", "--version", cwd=work)
    assert module.stdout.strip() == version

    # The package comes from the new venv, typed, with its data.
    where = run(
        bin_directory,
        "python",
        "-c",
        "import braidflow, pathlib; print(pathlib.Path(braidflow.__file__).parent)",
        cwd=work,
    ).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv")
    assert (Path(where) / "py.typed").is_file()

    (work / "pipeline.py").write_text(PIPELINE)
    done = run(
        bin_directory,
        "braidflow",
        "run",
        "pipeline.py:flow",
        "--shared",
        '{"name": "Ada"}',
        "--store",
        "runs.db",
        "--run-id",
        "first",
        cwd=work,
    )
    assert json.loads(done.stdout) == {
        "name": "Ada",
        "greeting": "Hello, Ada",
        "squares": [0, 1, 4, 9, 16],
    }
    listed = run(bin_directory, "braidflow", "runs", "--store", "runs.db", cwd=work)
    assert listed.stdout.splitlines()[1].startswith("first ")
    run(
        bin_directory,
        "braidflow",
        "timeline",
        "first",
        "--store",
        "runs.db",
        "-o",
        "t.html",
        cwd=work,
    )
    assert (work / "t.html").read_text().startswith("<!DOCTYPE html>")
    drawn = run(bin_directory, "braidflow", "graph", "pipeline.py:flow", cwd=work)
    assert "squares" in drawn.stdout


def interpreter(version: str) -> str | None:
    """A working ``python3.X`` on PATH, or pyenv's latest of that version."""
    for candidate in (shutil.which(f"python{version}"), _from_pyenv(version)):
        if candidate and subprocess.run([candidate, "-c", ""], capture_output=True).returncode == 0:
            return candidate
    return None


def _from_pyenv(version: str) -> str | None:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    latest = subprocess.run([pyenv, "latest", version], capture_output=True, text=True)
    prefix = subprocess.run(
        [pyenv, "prefix", latest.stdout.strip()], capture_output=True, text=True
    )
    if latest.returncode or prefix.returncode:
        return None
    return str(Path(prefix.stdout.strip()) / "bin" / f"python{version}")


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_the_wheel_runs_on_the_other_pythons_it_claims(dist, tmp_path, version):
    """The classifiers name 3.11 to 3.13; this suite runs on one of them, and
    the others, where this machine has them, run the installed wheel."""
    python = interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version} here")
    wheel, _ = dist
    bin_directory = fresh_venv(python, tmp_path / "venv", wheel)
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    done = run(
        bin_directory, "braidflow", "run", "pipeline.py:flow", "--shared", '{"name": "Bo"}',
        cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(done.stdout)["squares"] == [0, 1, 4, 9, 16]
    there = run(bin_directory, "python", "-c", "import sys; print(sys.version)", cwd=tmp_path)
    assert there.stdout.startswith(f"{version}.")
