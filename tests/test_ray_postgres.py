"""Ray, end to end, with the runs in PostgreSQL: drivers on a Ray cluster they
share (started here), checkpoints and a shared limiter in one database. A
driver killed mid-batch is resumed by another process, which redoes only what
was in flight; a limit holds across drivers, counted by the server they call.

Marked ``ray`` (skip with ``-m 'not ray'``); skipped when ray is not installed,
unless BRAIDFLOW_REQUIRE_RAY is set (CI sets it).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.timeout(300)]

DRIVER = Path(__file__).parent / "jobs" / "ray_driver.py"
# The head and its drivers on 127.0.0.1, without Ray's token: a cluster of the tests' own.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of the tests' own (2 CPUs), in a session of its own so that
    it, and only it, is stopped at the end; yields its address. Ray is looked for
    here, not as the file is collected: make test collects it without Ray."""
    if not os.environ.get("BRAIDFLOW_REQUIRE_RAY"):
        pytest.importorskip("ray")
    from _postgres import free_port

    port = free_port()
    temp = tempfile.mkdtemp(prefix="bfray", dir="/tmp")
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray),
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={port}",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
        env=RAY_ENV,
    )
    try:
        for line in head.stdout:
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("the Ray head did not start")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        head.stdout.close()
        shutil.rmtree(temp, ignore_errors=True)


def driver(address, dsn, log, port, run_id, mode):
    return subprocess.Popen(
        [sys.executable, str(DRIVER), address, dsn, str(log), str(port), run_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=RAY_ENV,
    )


def ended(log, mode=""):
    """The items that ended, by the driver in ``mode`` if given."""
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.endswith(mode)]


def finish(process):
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode().splitlines()[-1] == "result True"


def test_a_killed_driver_is_resumed_by_another_and_finished_items_are_not_redone(
    ray_head, postgres_dsn, counting, tmp_path
):
    log, port = tmp_path / "items.log", counting.server_address[1]
    first = driver(ray_head, postgres_dsn, log, port, "r", "run")
    deadline = time.monotonic() + 180
    while len(ended(log)) < 10:  # mid-batch, by the items' own count
        assert first.poll() is None, first.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    from braidflow.stores import PostgresStore

    with PostgresStore(postgres_dsn) as store:
        done_before = sum(row.position for row in store.read("r")[3] if row.kind == "items")
    finish(driver(ray_head, postgres_dsn, log, port, "r", "resume"))
    assert set(ended(log)) == {str(n) for n in range(40)}
    # Run again: only what had not been checkpointed; those checkpointed, never.
    assert len(ended(log, "resume")) == 40 - done_before
    assert done_before >= 10 - 4  # at most the 4 in flight ended uncheckpointed


def test_a_shared_limiter_holds_across_drivers_on_ray(ray_head, postgres_dsn, counting, tmp_path):
    port = counting.server_address[1]
    from braidflow.stores import PostgresStore

    PostgresStore(postgres_dsn).close()  # its tables, before the drivers race to make them
    drivers = [
        driver(ray_head, postgres_dsn, tmp_path / f"items{n}.log", port, f"run{n}", "run")
        for n in range(2)
    ]
    for process in drivers:
        finish(process)
    assert counting.calls == 80
    assert counting.peak <= 2


def test_the_driver_on_the_scaling_page_runs_and_resumes(ray_head, postgres_dsn, tmp_path):
    """docs/scaling.md's driver (a ```py block: it needs a server and a cluster),
    run as written, on the tests' server and Ray head."""
    import re

    page = (Path(__file__).parent.parent / "docs" / "scaling.md").read_text()
    (block,) = re.findall(r"```py\n(.*?)```", page, flags=re.DOTALL)
    assert 'PostgresStore("host=db.internal dbname=runs user=app")' in block
    script = tmp_path / "driver.py"
    script.write_text(
        # The page's driver joins the cluster it runs in ("auto"); here, the tests' head.
        f"import ray\nray.init(address={ray_head!r}, _node_ip_address='127.0.0.1')\n"
        + block.replace("host=db.internal dbname=runs user=app", postgres_dsn)
    )
    for mode in ("run", "resume"):
        done = subprocess.run(
            [sys.executable, str(script), "tenant-1", mode],
            capture_output=True,
            env=RAY_ENV,
            timeout=240,
        )
        if mode == "run":
            assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"has completed; there is nothing to resume" in done.stderr
    from braidflow.stores import PostgresStore

    with PostgresStore(postgres_dsn) as store:
        assert store.get("tenant-1").status == "completed"
