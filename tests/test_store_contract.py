"""The Store contract: what any store must do for the engine. Every store
braidflow ships passes it; a new one (a server database) must too."""

import os
import socket

import pytest

from _support import checkpoint_row as row
from _support import dead_owner
from braidflow import MemoryStore, RunRecord, SQLiteStore, Store, StoreError
from braidflow.stores import Checkpoint
from braidflow.stores._owners import this_owner


@pytest.fixture(params=["sqlite", "sqlite-durable", "memory"])
def store(request, tmp_path):
    if request.param.startswith("sqlite"):
        made = SQLiteStore(tmp_path / "runs.db", durable=request.param == "sqlite-durable")
        yield made
        made.close()
    else:
        yield MemoryStore()


def live_owner():
    """The owner string of another process that is alive: init."""
    from braidflow.stores._owners import process_start as _process_start

    return f"{socket.gethostname()}:1:{_process_start(1)}"


def test_a_store_is_a_store(store):
    assert isinstance(store, Store)
    assert store.serializer in ("json", "pickle")


def test_a_new_run_is_running_and_its_id_is_taken(store):
    record = store.create_run("a", "flow", "graph", b"initial", this_owner())
    assert isinstance(record, RunRecord)
    assert (record.run_id, record.flow, record.status, record.owner) == (
        "a",
        "flow",
        "running",
        this_owner(),
    )
    assert store.get("a").status == "running"
    with pytest.raises(StoreError, match="already used") as caught:
        store.create_run("a", "flow", "graph", b"other", this_owner())
    assert caught.value.run_id == "a"


def test_checkpoints_come_back_in_order_with_the_graph_and_initial_state(store):
    store.create_run("a", "flow", "the graph", b"initial", dead_owner())
    store.append("a", [row(0), row(1)])
    store.append("a", [row(2, "items")])
    store.append("a", [])
    record, graph, initial, rows = store.claim("a", this_owner())
    assert (graph, initial) == ("the graph", b"initial")
    assert rows == [row(0), row(1), row(2, "items")]
    assert record.status == "interrupted"  # as it was: its process is gone
    assert record.owner != this_owner()
    claimed = store.get("a")
    assert (claimed.status, claimed.owner) == ("running", this_owner())


def test_how_a_run_ended_is_kept(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.finish("a", "failed", node="0:flow/1:fetch", error="ValueError: bad")
    record = store.get("a")
    assert (record.status, record.node, record.error) == (
        "failed",
        "0:flow/1:fetch",
        "ValueError: bad",
    )
    assert record.ended is not None
    assert record.ended >= record.started
    store.create_run("b", "flow", "g", b"", this_owner())
    store.finish("b", "waiting", node="0:flow/2:ask", prompt={"question": "ok?"})
    assert store.get("b").prompt == {"question": "ok?"}
    assert store.get("b").status == "waiting"


def test_a_running_run_whose_process_is_gone_shows_as_interrupted(store):
    store.create_run("gone", "flow", "g", b"", dead_owner())
    store.create_run("here", "flow", "g", b"", this_owner())
    assert store.get("gone").status == "interrupted"
    assert store.get("here").status == "running"
    assert [r.run_id for r in store.runs(status="interrupted")] == ["gone"]


def test_runs_are_listed_oldest_first_and_by_status(store):
    for run_id in ("one", "two", "three"):
        store.create_run(run_id, "flow", "g", b"", this_owner())
    store.finish("two", "completed")
    assert [r.run_id for r in store.runs()] == ["one", "two", "three"]
    assert [r.run_id for r in store.runs(status="completed")] == ["two"]
    assert store.runs(status="failed") == []


def test_claims_refuse_unknown_completed_and_live_runs(store):
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.claim("nope", this_owner())
    with pytest.raises(StoreError, match="no run"):
        store.get("nope")
    store.create_run("done", "flow", "g", b"", this_owner())
    store.finish("done", "completed")
    with pytest.raises(StoreError, match="completed"):
        store.claim("done", this_owner())
    store.create_run("busy", "flow", "g", b"", live_owner())
    with pytest.raises(StoreError, match=r"running in a live process \(.+\)"):
        store.claim("busy", this_owner())
    store.create_run("mine", "flow", "g", b"", this_owner())  # another thread has it
    with pytest.raises(StoreError, match="running in this process"):
        store.claim("mine", this_owner())
    for status in ("failed", "waiting"):
        store.create_run(status, "flow", "g", b"", this_owner())
        store.finish(status, status, prompt="ok?")
        assert store.claim(status, this_owner())[0].status == status
        assert store.get(status).status == "running"


def test_a_claim_can_be_given_back_as_it_was(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.finish("a", "waiting", node="flow/ask", prompt={"q": "ok?"})
    before = store.get("a")
    record = store.claim("a", this_owner())[0]
    store.finish(
        "a",
        record.status,
        node=record.node,
        error=record.error,
        prompt=record.prompt,
        ended=record.ended,
    )
    assert store.get("a") == before


def test_a_prompt_comes_back_as_json_would_give_it(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.finish("a", "waiting", prompt=("ok?", object.__name__, 1))
    assert store.get("a").prompt == ["ok?", "object", 1]
    store.create_run("b", "flow", "g", b"", this_owner())
    unsaveable = object()
    store.finish("b", "waiting", prompt=unsaveable)
    assert store.get("b").prompt == repr(unsaveable)


def test_a_running_run_is_at_the_path_of_its_last_checkpoint(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    assert store.get("a").node is None
    store.append("a", [Checkpoint("step", "0:flow/0:inner", 1, "s1", "S", None, b"[]")])
    assert store.get("a").node == "flow/inner/s1"
    store.append("a", [Checkpoint("items", "0:flow/2:items", 7, "items", "I", None, b"[]")])
    assert store.get("a").node == "flow/items"


def test_events_are_kept_in_order(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.add_events("a", ['{"kind": "run_start"}', '{"kind": "node_start"}'])
    store.add_events("a", ['{"kind": "run_end"}'])
    assert store.events("a") == [
        '{"kind": "run_start"}',
        '{"kind": "node_start"}',
        '{"kind": "run_end"}',
    ]
    with pytest.raises(StoreError):
        store.events("nope")


# -- what only a file-backed store does --------------------------------------------------------


def test_two_store_objects_on_one_file_share_its_runs(tmp_path):
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    first.create_run("a", "flow", "g", b"", this_owner())
    assert second.get("a").flow == "flow"
    first.close()
    second.close()


def test_a_file_that_is_not_a_braidflow_store_is_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all " * 100)
    with pytest.raises(StoreError, match="not a braidflow store"):
        SQLiteStore(text)
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a braidflow store"):
        SQLiteStore(other)
    with pytest.raises(StoreError, match="does not exist"):
        SQLiteStore(tmp_path / "missing" / "runs.db")


def test_a_store_from_a_newer_braidflow_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE braidflow_meta SET value='99' WHERE key='schema'")
    with pytest.raises(StoreError, match="newer braidflow"):
        SQLiteStore(path)


def test_the_pickle_serializer_is_an_explicit_choice(tmp_path):
    assert SQLiteStore(tmp_path / "a.db").serializer == "json"
    assert SQLiteStore(tmp_path / "b.db", serializer="pickle").serializer == "pickle"
    with pytest.raises(StoreError, match="serializer"):
        SQLiteStore(tmp_path / "c.db", serializer="yaml")
    assert os.path.exists(tmp_path / "a.db")
