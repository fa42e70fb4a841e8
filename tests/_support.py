"""Shared test helpers."""

import contextlib
import re
import subprocess
import sys
from pathlib import Path

# How the tests start Debian's chromium (through playwright): as root, headless, and
# asking for nothing on the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def dashboard_served(store_path, *options):
    """``braidflow ui`` serving the store at ``store_path`` (with ``options``),
    started for real on a free port; the first line it prints (its address)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "braidflow",
            "ui",
            "--store",
            str(store_path),
            "--port",
            "0",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "http://" in line, line + server.stderr.read()
        yield line
    finally:
        server.terminate()
        server.communicate(timeout=30)


def forking_node(child):
    """A node whose exec runs ``child`` in a process forked there (from one
    of braidflow's threads, mid-run) and returns its exit code, which its
    post keeps in ``shared["exitcode"]``."""
    import multiprocessing

    from braidflow import Node

    class Forks(Node):
        def exec(self, prep_res):
            forked = multiprocessing.get_context("fork").Process(target=child)
            forked.start()
            forked.join(10)
            return forked.exitcode

        def post(self, shared, prep_res, exec_res):
            shared["exitcode"] = exec_res

    return Forks()


def dead_owner():
    """The owner string (as stores keep it) of a process of this host (and
    PID namespace) that has ended."""
    from braidflow.stores._owners import this_host

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{this_host()}:{child.stdout.strip()}:?"


class Gauge:
    """Counts work in flight exactly (no clock): call enter() and leave() around it."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self):
        self.now -= 1


def checkpoint_row(position, kind="step"):
    """A checkpoint row for store tests: its fields tell it apart by position
    (an odd one has no action and no start time)."""
    from braidflow.stores import Checkpoint

    return Checkpoint(
        kind,
        "0:flow",
        position,
        f"node{position}",
        "Node",
        None if position % 2 else '"next"',
        f"payload {position}".encode(),
        None if position % 2 else 1_800_000_000.25 + position,
        1_800_000_000.5 + position,
    )


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a documentation page."""
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)


def run_python_blocks(page: Path) -> None:
    """Run a page's Python blocks in turn, each on its own, as a reader pastes
    them: none may lean on an earlier one."""
    import pytest

    for number, block in enumerate(python_blocks(page), start=1):
        namespace: dict = {"__name__": f"docs_{page.stem}"}
        try:
            exec(compile(block, f"{page.name}[block {number}]", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page.name} block {number} failed: {error!r}\n{block}")


def uses_ray(page: Path) -> bool:
    """Whether a page's Python blocks start Ray: tests/test_ray.py runs those,
    on its own Ray instance, so that one test session starts Ray once."""
    return any("RayExecutor(" in block for block in python_blocks(page))


def braidflow_command(work, *args, env=None, unset=("BRAIDFLOW_STORE",)):
    """Run ``python -m braidflow ARGS`` in ``work`` as a user does, this
    interpreter's sys.path on PYTHONPATH; the variables ``unset`` left out."""
    import os

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for name in unset:
        environment.pop(name, None)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "braidflow", *args],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_drain_job(store, log):
    """Start tests/jobs/drain_job.py's batch with the command, as run "job" in
    ``store`` (a path or a URL), and wait until 100 of its items ended."""
    import os
    import time

    job = subprocess.Popen(
        [
            sys.executable, "-m", "braidflow", "run",
            f"{Path(__file__).parent}/jobs/drain_job.py:batch",
            "--store", str(store), "--run-id", "job",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "DRAIN_LOG": str(log)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not log.exists() or log.read_text().count("end ") < 100:
        if job.poll() is not None or time.monotonic() >= deadline:
            job.kill()
            raise AssertionError(job.communicate())
        time.sleep(0.01)
    return job
