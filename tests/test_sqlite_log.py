"""SQLiteStore's run logs: a run's checkpoints go to a file of the run as they
come and into the database in batches. Killed processes, torn records and
crashes between a fold and the log's reset lose nothing and add nothing twice."""

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from _support import checkpoint_row as row
from _support import dead_owner
from braidflow import SQLiteStore, StoreError
from braidflow._store import Checkpoint, this_owner
from braidflow.stores import sqlite as sqlite_store


def logs(tmp_path):
    return sorted(path.name for path in tmp_path.glob("*.log"))


def killed_writer(tmp_path, body):
    """Run ``body`` in a process that opens the store as ``store``, makes run
    ``r`` and then kills itself with SIGKILL (nothing of Python's shutdown runs)."""
    script = (
        textwrap.dedent(
            f"""
        import os, signal
        from braidflow import SQLiteStore
        from braidflow._store import Checkpoint, this_owner
        from braidflow.stores import _runlog

        def row(position, kind="step"):
            return Checkpoint(kind, "0:flow", position, f"node{{position}}", "Node",
                              None if position % 2 else '"next"', f"payload {{position}}".encode())

        store = SQLiteStore({str(tmp_path / "runs.db")!r})
        store.create_run("r", "flow", "graph", b"{{}}", this_owner())
        """
        )
        + textwrap.dedent(body)
        + "\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_rows_of_a_killed_process_are_read_back_from_its_log(tmp_path):
    killed_writer(
        tmp_path,
        """
        store.append("r", [row(0), row(1)])
        store.append("r", [row(2, "items")])
        """,
    )
    assert len(logs(tmp_path)) == 1  # nothing reached the database but the run
    store = SQLiteStore(tmp_path / "runs.db")
    assert store.get("r").status == "interrupted"
    rows = store.claim("r", this_owner())[3]
    assert rows == [row(0), row(1), row(2, "items")]
    store.append("r", [row(3)])
    store.finish("r", "completed")
    assert logs(tmp_path) == []  # all of it is in the database now
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT folded FROM runs").fetchone() == (3,)
    store.close()


def test_a_torn_record_ends_the_log(tmp_path):
    killed_writer(
        tmp_path,
        """
        store.append("r", [row(0)])
        store.append("r", [row(1), row(2)])
        """,
    )
    (log,) = tmp_path.glob("*.log")
    whole = log.read_bytes()
    with open(log, "ab") as torn:  # a power cut in the middle of a third record
        torn.write(whole[: len(whole) // 3])
    store = SQLiteStore(tmp_path / "runs.db")
    assert store.claim("r", this_owner())[3] == [row(0), row(1), row(2)]
    store.close()


def test_a_record_that_fails_its_check_ends_the_log_there(tmp_path):
    killed_writer(
        tmp_path,
        """
        store.append("r", [row(0)])
        store.append("r", [row(1)])
        store.append("r", [row(2)])
        """,
    )
    (log,) = tmp_path.glob("*.log")
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the second record
    log.write_bytes(bytes(data))
    store = SQLiteStore(tmp_path / "runs.db")
    assert store.claim("r", this_owner())[3] == [row(0)]
    store.close()


def test_a_crash_between_a_fold_and_the_log_reset_adds_nothing_twice(tmp_path):
    killed_writer(
        tmp_path,
        """
        _runlog.RunLog.folded = lambda self: None  # the process dies before the reset
        store.append("r", [row(0)])
        store.append("r", [row(1)])
        store.get("r")  # folds both into the database
        store._logs["r"].bodies = []
        store.append("r", [row(2)])
        """,
    )
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT folded FROM runs").fetchone() == (2,)
    store = SQLiteStore(tmp_path / "runs.db")
    assert store.claim("r", this_owner())[3] == [row(0), row(1), row(2)]
    store.close()


def test_a_log_is_folded_once_it_holds_enough_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_FOLD_ROWS", 3)
    store = SQLiteStore(tmp_path / "runs.db")
    reader = SQLiteStore(tmp_path / "runs.db")  # as another process sees the file
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0), row(1)])
    assert reader.get("r").node is None  # still only in the log
    store.append("r", [Checkpoint("items", "0:flow/3:fan", 5, "fan", "Fan", None, b"[]")])
    assert reader.get("r").node == "flow/fan"  # where the last folded row was made
    assert store.get("r").node == "flow/fan"
    store.close()
    reader.close()


def test_this_process_sees_its_own_rows_at_once(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    assert store.get("r").node == "flow/node0"
    assert [record.node for record in store.runs()] == ["flow/node0"]
    store.close()


def test_closing_the_store_folds_the_logs_of_runs_still_going(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", dead_owner())
    store.append("r", [row(0), row(1)])
    store.close()
    assert logs(tmp_path) == []
    again = SQLiteStore(tmp_path / "runs.db")
    assert again.claim("r", this_owner())[3] == [row(0), row(1)]
    again.close()


def test_a_durable_store_commits_every_row_and_keeps_no_log(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db", durable=True)
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    assert logs(tmp_path) == []
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT kind, node FROM checkpoints").fetchall() == [("step", "node0")]
    store.close()


def test_a_log_that_cannot_be_written_is_a_store_error(tmp_path, monkeypatch):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreError, match=r"cannot write the log of run 'r'.*No space left"):
        store.append("r", [row(0)])
    monkeypatch.undo()
    store.append("r", [row(1)])
    store.finish("r", "failed")
    assert store.claim("r", this_owner())[3] == [row(1)]  # the failed write left nothing
    store.close()


def test_a_store_from_before_run_logs_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # schema 1, as braidflow wrote it before run logs
        db.executescript(
            sqlite_store._SCHEMA.replace(",\n    folded INTEGER NOT NULL DEFAULT 0", "")
        )
        db.execute("INSERT INTO braidflow_meta VALUES ('schema', '1')")
        db.execute(
            "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial) "
            "VALUES ('r', 'flow', 'g', 'failed', 1.0, NULL, x'7b7d')"
        )
        db.execute(sqlite_store._INSERT_CHECKPOINT, ("r", *row(0)))
    store = SQLiteStore(path)
    assert store.claim("r", this_owner())[3] == [row(0)]
    store.append("r", [row(1)])
    store.finish("r", "completed")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM braidflow_meta").fetchone() == ("2",)
    store.close()


def test_a_short_write_leaves_no_torn_record_to_hide_later_ones(tmp_path, monkeypatch):
    from braidflow.stores._runlog import read_log

    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    real_write = os.write

    def half(fd, data):  # the disk fills up in the middle of the record
        return real_write(fd, data[: len(data) // 2])

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(StoreError, match="short write"):
        store.append("r", [row(1)])
    monkeypatch.undo()
    store.append("r", [row(2)])
    assert read_log(store._logs["r"].path, 0) == ([row(0), row(2)], 2)
    store.close()


def test_a_fold_that_fails_does_not_fail_the_append_it_follows(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_store, "_FOLD_ROWS", 1)
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    real_insert = store._insert

    def locked(*args):
        raise sqlite3.OperationalError("database is locked")

    store._insert = locked
    store.append("r", [row(0)])  # written to the log: the append stands
    store.append("r", [row(1)])
    store._insert = real_insert
    store.finish("r", "failed")
    assert store.claim("r", this_owner())[3] == [row(0), row(1)]  # each once
    store.close()


def test_a_run_s_end_that_cannot_be_recorded_says_where_its_checkpoints_are(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    log = store._logs["r"].path

    def broken(*args):
        raise sqlite3.OperationalError("disk I/O error")

    store._insert = broken
    with pytest.raises(StoreError, match=r"cannot record that run 'r' is completed .*kept in"):
        store.finish("r", "completed")
    assert log.exists()


def test_without_a_log_file_every_row_goes_to_the_database(tmp_path, monkeypatch):
    from braidflow.stores import _runlog

    def refused(*args, **kwargs):
        raise PermissionError("read-only")

    store = SQLiteStore(tmp_path / "runs.db")
    monkeypatch.setattr(_runlog.os, "open", refused)
    store.create_run("r", "flow", "g", b"{}", dead_owner())
    store.append("r", [row(0)])
    monkeypatch.undo()
    assert logs(tmp_path) == []
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT node FROM checkpoints").fetchall() == [("node0",)]
    assert store.claim("r", this_owner())[3] == [row(0)]
    store.close()
