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
from pathlib import Path

import pytest

from _support import checkpoint_row as row
from _support import dead_owner
from braidflow import SQLiteStore, StoreError
from braidflow.stores import Checkpoint
from braidflow.stores import sqlite as sqlite_store
from braidflow.stores._owners import this_owner


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
        from braidflow.stores import Checkpoint
        from braidflow.stores._owners import this_owner
        from braidflow.stores import _runlog
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from _support import checkpoint_row as row

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
        store._logs["r"].records = []
        store._logs["r"].count = 0
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

    def in_database():
        with sqlite3.connect(tmp_path / "runs.db") as db:
            return db.execute("SELECT count(*) FROM checkpoints").fetchone()[0]

    assert in_database() == 0  # still only in the log,
    assert reader.get("r").node == "flow/node1"  # which another process reads too
    store.append("r", [Checkpoint("items", "0:flow/3:fan", 5, "fan", "Fan", None, b"[]")])
    assert in_database() == 1  # folded: one packed row
    assert reader.get("r").node == "flow/fan"  # where the last row was made
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


SCHEMA_1 = """
CREATE TABLE braidflow_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, graph TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, node TEXT, error TEXT, prompt TEXT, owner TEXT,
    initial BLOB NOT NULL
);
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, kind TEXT NOT NULL, frame TEXT NOT NULL,
    position INTEGER NOT NULL, node TEXT NOT NULL, node_class TEXT NOT NULL, action TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX checkpoints_of_run ON checkpoints (run_id, seq);
CREATE TABLE events (seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX events_of_run ON events (run_id, seq);
"""


def test_a_store_from_before_run_logs_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # schema 1, as braidflow wrote it before run logs
        db.executescript(SCHEMA_1)
        db.execute("INSERT INTO braidflow_meta VALUES ('schema', '1')")
        db.execute(
            "INSERT INTO runs (run_id, flow, graph, status, started, owner, initial) "
            "VALUES ('r', 'flow', 'g', 'failed', 1.0, NULL, x'7b7d')"
        )
        db.execute(
            "INSERT INTO checkpoints (run_id, kind, frame, position, node, node_class, action, "
            "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("r", *row(0)[:7]),  # rows had no times then
        )
    store = SQLiteStore(path)
    assert store.claim("r", this_owner())[3] == [row(0)._replace(started=None, ended=None)]
    store.append("r", [row(1)])
    store.finish("r", "completed")
    assert store.read("r")[3][1] == row(1)  # rows written since keep their times
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM braidflow_meta").fetchone() == (
            str(sqlite_store.SCHEMA_VERSION),
        )
    store.close()


@pytest.mark.parametrize("cut_back", [True, False])
def test_after_a_failed_write_every_row_is_committed_and_none_is_lost(
    tmp_path, monkeypatch, cut_back
):
    """A write fails halfway (a full disk). Whether or not the torn record can
    be cut off again, the rows appended before are kept, the failed one is
    not, and later ones are committed to the database instead of the log."""
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    real_write = os.write

    def half(fd, data):
        return real_write(fd, data[: len(data) // 2])

    def refused(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", half)
    if not cut_back:
        monkeypatch.setattr(os, "ftruncate", refused)
    with pytest.raises(StoreError, match="short write"):
        store.append("r", [row(1)])
    monkeypatch.undo()
    assert logs(tmp_path) == []  # given up: its rows are in the database
    store.append("r", [row(2)])
    store.append("r", [row(3)])
    with sqlite3.connect(tmp_path / "runs.db") as db:
        assert db.execute("SELECT log FROM runs").fetchone() == (None,)
    store.finish("r", "failed")
    assert store.claim("r", this_owner())[3] == [row(0), row(2), row(3)]
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


def test_a_database_reached_through_a_symlink_finds_its_logs(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "app").mkdir()
    SQLiteStore(tmp_path / "data" / "runs.db").close()
    (tmp_path / "app" / "current.db").symlink_to(tmp_path / "data" / "runs.db")
    linked = SQLiteStore(tmp_path / "app" / "current.db")
    linked.create_run("r", "flow", "g", b"{}", dead_owner())
    linked.append("r", [row(0), row(1)])
    assert logs(tmp_path / "app") == []
    assert len(logs(tmp_path / "data")) == 1
    real = SQLiteStore(tmp_path / "data" / "runs.db")
    assert real.claim("r", this_owner())[3] == [row(0), row(1)]
    real.close()


def test_a_finishing_owner_cannot_remove_the_log_of_the_next_one(tmp_path, monkeypatch):
    """The first owner records the run's end and then removes its log; a
    second one resumes the run in between and logs under a name of its own."""
    from braidflow.stores import _runlog

    first, second = SQLiteStore(tmp_path / "runs.db"), SQLiteStore(tmp_path / "runs.db")
    first.create_run("r", "flow", "g", b"{}", this_owner())
    first.append("r", [row(0)])
    real_unlink = os.unlink

    def claim_first(path):
        monkeypatch.setattr(_runlog.os, "unlink", real_unlink)
        assert second.claim("r", dead_owner())[3] == [row(0)]  # as if it died after
        second.append("r", [row(1)])
        real_unlink(path)

    monkeypatch.setattr(_runlog.os, "unlink", claim_first)
    first.finish("r", "failed")
    assert len(logs(tmp_path)) == 1  # the second owner's
    third = SQLiteStore(tmp_path / "runs.db")
    assert third.claim("r", this_owner())[3] == [row(0), row(1)]
    for store in (first, third):
        store.close()


def test_reading_does_not_wait_for_another_writer(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.create_run("r", "flow", "g", b"{}", this_owner())
    store.append("r", [row(0)])
    other = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writes meanwhile
    # Read at once, without folding: the database as it is, then the run's log.
    assert store.get("r").node == "flow/node0"
    assert [record.run_id for record in store.runs()] == ["r"]
    assert store.read("r")[3] == [row(0)]
    other.execute("COMMIT")
    assert store.get("r").node == "flow/node0"
    other.close()
    store.close()


def test_a_log_left_by_an_older_run_of_the_same_id_is_never_read(tmp_path):
    killed_writer(tmp_path, 'store.append("r", [row(7)])')
    assert len(logs(tmp_path)) == 1
    for leftover in tmp_path.glob("runs.db*"):
        if not leftover.name.endswith(".log"):
            leftover.unlink()  # the database is gone; its run's log stays
    for durable in (True, False):
        path = tmp_path / f"runs-{durable}.db"
        store = SQLiteStore(path, durable=durable)
        store.create_run("r", "flow", "g", b"{}", dead_owner())
        store.append("r", [row(0)])
        assert store.claim("r", this_owner())[3] == [row(0)]
        store.close()
    store = SQLiteStore(tmp_path / "runs.db")  # the same name as the lost one
    store.create_run("r", "flow", "g", b"{}", dead_owner())
    assert store.claim("r", this_owner())[3] == []
    store.close()


def test_a_row_larger_than_sqlite_holds_is_refused_when_appended(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store._largest = 150
    store.create_run("r", "flow", "g", b"{}", this_owner())
    with pytest.raises(StoreError, match=r"node 'node0' holds 200 bytes, more than SQLite holds"):
        store.append("r", [row(0)._replace(payload=b"x" * 200)])
    for position in range(5):  # together more than one packed row can hold
        store.append("r", [row(position)._replace(payload=b"y" * 60)])
    store.finish("r", "failed")
    with sqlite3.connect(tmp_path / "runs.db") as db:
        packed = db.execute("SELECT position FROM checkpoints WHERE kind='packed'").fetchall()
    assert len(packed) > 1
    assert sum(count for (count,) in packed) == 5
    rows = store.claim("r", this_owner())[3]
    assert rows == [row(position)._replace(payload=b"y" * 60) for position in range(5)]
    store.close()


def test_a_claim_gives_the_run_as_its_log_left_it(tmp_path):
    killed_writer(tmp_path, 'store.append("r", [row(0)])\nstore.append("r", [row(2)])')
    store = SQLiteStore(tmp_path / "runs.db")
    record = store.claim("r", this_owner())[0]
    assert (record.status, record.node) == ("interrupted", "flow/node2")
    store.close()


def test_log_records_written_before_rows_had_times_still_read():
    from braidflow.stores._runlog import _ROW, decode

    old = row(0)._replace(started=None, ended=None)
    texts = [text.encode() for text in (old.kind, old.frame, old.node, old.node_class)]
    action = old.action.encode()
    body = (
        _ROW.pack(old.position, *map(len, texts), len(action), len(old.payload))
        + b"".join(texts)
        + action
        + old.payload
    )
    assert decode(body) == [old]
    assert decode(body + body) == [old, old]


def test_updating_a_run_s_record_does_not_write_its_initial_state_again(tmp_path):
    """A run's graph and initial state are written once, apart from its record:
    renewing its lease, setting its metadata or its end write a few pages,
    not the megabytes it started with (SQLite rewrites a whole row)."""
    path = tmp_path / "runs.db"
    wal = tmp_path / "runs.db-wal"
    with SQLiteStore(path) as store:
        initial = b"[" + b'["text",1,"' + b"x" * 4_000_000 + b'"]]'
        store.create_run("r", "flow", "g", initial, this_owner())
        with sqlite3.connect(path) as other:  # the WAL's pages into the file: the WAL empty
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert wal.stat().st_size == 0
        for number in range(3):
            store.set_metadata("r", {"step": number})
        store.finish("r", "completed")
        assert wal.stat().st_size < 100_000, wal.stat().st_size
        assert store.read("r")[2] == initial
