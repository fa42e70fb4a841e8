"""Crash tests: a durable job killed with SIGKILL mid-run resumes where it
stopped. Its final state equals an uninterrupted run's, no unit of work is
missing, and at most the 20 that were in flight ran twice."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import POSTGRES

JOB = Path(__file__).parent / "jobs" / "durable_job.py"


def start(kind, store, log, mode):
    return subprocess.Popen(
        [sys.executable, str(JOB), kind, str(store), str(log), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def lines(log):
    return log.read_text().splitlines() if log.exists() else []


def finish(process):
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()


def opened(store):
    """The store a job writes: a SQLite file, or a PostgreSQL database by its DSN."""
    if isinstance(store, str):
        from braidflow.stores import PostgresStore

        return PostgresStore(store)
    from braidflow import SQLiteStore

    return SQLiteStore(store)


@pytest.fixture(params=["sqlite", POSTGRES])
def stores(request, tmp_path):
    """Where the job and its reference keep their runs: two SQLite files, or two
    PostgreSQL databases."""
    if request.param == "sqlite":
        return tmp_path / "job.db", tmp_path / "reference.db"
    from conftest import new_database

    server = request.getfixturevalue("postgres")
    return new_database(server), new_database(server)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["batch", "batch flow", "shared batch flow", "branches"])
def test_a_killed_job_resumes_and_ends_as_an_uninterrupted_run(tmp_path, kind, stores):
    store, reference = stores
    # The reference: the same job, never interrupted.
    reference_log = tmp_path / "reference.log"
    finish(start(kind, reference, reference_log, "run"))
    expected = [line for line in lines(reference_log) if line.startswith("result ")]

    log = tmp_path / "job.log"
    job = start(kind, store, log, "run")
    deadline = time.monotonic() + 60
    while sum(line.startswith("end ") for line in lines(log)) < 100:  # mid-run, by its own count
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)
    before = Counter(line.split()[1] for line in lines(log) if line.startswith("start "))
    assert not any(line.startswith("result ") for line in lines(log))
    with opened(store) as kept:  # marked running, but its process is gone (on this host)
        assert kept.get("job").status == "interrupted"

    finish(start(kind, store, log, "resume"))
    after = [line for line in lines(log) if line.startswith("result ")]
    assert after == expected  # the same final state
    started = Counter(line.split()[1] for line in lines(log) if line.startswith("start "))
    assert set(started) == {str(unit) for unit in range(300)}  # nothing missing
    twice = [unit for unit, count in started.items() if count > 1]
    assert len(twice) <= 20, twice  # only what was in flight at the kill ran again
    assert all(count <= 2 for count in started.values())
    assert set(before) <= set(started)


def test_a_run_another_live_process_is_running_cannot_be_resumed_here(tmp_path, stores):
    from braidflow import StoreError

    store, _ = stores
    log = tmp_path / "job.log"
    job = start("batch", store, log, "run")
    try:
        while sum(line.startswith("end ") for line in lines(log)) < 10:
            assert job.poll() is None
            time.sleep(0.005)
        with opened(store) as kept:
            with pytest.raises(StoreError, match="running in a live process"):
                kept.claim("job", "someone-else:1:?")
            assert kept.get("job").status == "running"
    finally:
        os.kill(job.pid, signal.SIGKILL)
        job.communicate(timeout=30)
    finish(start("batch", store, log, "resume"))
    assert any(line.startswith("result ") for line in lines(log))
