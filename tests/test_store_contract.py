"""The Store contract: what any store must do for the engine. Every store
braidflow ships passes it; a new one (a server database) must too."""

import importlib
import os

import pytest

from _support import checkpoint_row as row
from _support import dead_owner
from braidflow import MemoryStore, RunRecord, SQLiteStore, Store, StoreError
from braidflow.stores import CacheEntry, CacheStore, Checkpoint
from braidflow.stores._owners import this_owner
from conftest import POSTGRES

# Another store runs the contract too: BRAIDFLOW_CONTRACT_STORE=module:function,
# a function of the test's tmp_path that gives a new, empty store.
CUSTOM = os.environ.get("BRAIDFLOW_CONTRACT_STORE")


@pytest.fixture(
    params=["sqlite", "sqlite-durable", "memory", POSTGRES, *(["custom"] if CUSTOM else [])]
)
def store(request, tmp_path):
    if request.param == "postgres":
        from braidflow.stores import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_dsn"))
        yield made
        made.close()
    elif request.param == "custom":
        module, _, name = (CUSTOM or "").partition(":")
        made = getattr(importlib.import_module(module), name)(tmp_path)
        yield made
        close = getattr(made, "close", None)
        if callable(close):
            close()
    elif request.param.startswith("sqlite"):
        made = SQLiteStore(tmp_path / "runs.db", durable=request.param == "sqlite-durable")
        yield made
        made.close()
    else:
        yield MemoryStore()


def live_owner():
    """The owner string of another process that is alive: init."""
    from braidflow.stores._owners import process_start as _process_start
    from braidflow.stores._owners import this_host

    return f"{this_host()}:1:{_process_start(1)}"


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


def test_a_run_is_read_without_being_taken_over(store):
    store.create_run("a", "flow", "the graph", b"initial", this_owner())
    store.append("a", [row(0), row(1)])
    store.append("a", [row(2, "items")])
    record, graph, initial, rows = store.read("a")
    assert (record.status, record.owner) == ("running", this_owner())
    assert (graph, initial) == ("the graph", b"initial")
    assert rows == [row(0), row(1), row(2, "items")]  # times too
    assert rows[0].started == row(0).started
    assert rows[1].started is None
    assert store.get("a").status == "running"  # nothing changed: still its owner's
    store.finish("a", "failed", node="flow/node2", error="Boom: no")
    assert store.read("a")[0] == store.get("a")
    with pytest.raises(StoreError, match="no run") as caught:
        store.read("nothing")
    assert caught.value.run_id == "nothing"


def test_reading_a_run_of_a_gone_process_leaves_it_resumable(store):
    store.create_run("a", "flow", "g", b"", dead_owner())
    store.append("a", [row(0)])
    assert store.read("a")[0].status == "interrupted"
    assert store.read("a")[3] == [row(0)]
    record, _, _, rows = store.claim("a", this_owner())  # the read took nothing
    assert (record.status, rows) == ("interrupted", [row(0)])


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


# -- a result cache's entries (CacheStore) ------------------------------------------------------


@pytest.fixture
def cache_store(store):
    if not isinstance(store, CacheStore):
        pytest.skip(f"{store!r} keeps no result cache (it is not a CacheStore)")
    return store


KEY = "0123456789abcdef" * 2


def test_a_cache_entry_comes_back_as_kept_and_a_new_one_replaces_it(cache_store):
    assert cache_store.cache_get(KEY) is None
    cache_store.cache_put(KEY, CacheEntry(b"\x00first", 1.5, "summarize"))
    got = cache_store.cache_get(KEY)
    assert isinstance(got, CacheEntry)
    assert got == (b"\x00first", 1.5, "summarize")
    cache_store.cache_put(KEY, CacheEntry(b"second", 2.0, "summarize"))
    assert cache_store.cache_get(KEY) == (b"second", 2.0, "summarize")
    assert cache_store.cache_get(KEY[::-1]) is None


def test_cache_entries_are_kept_apart_from_runs(cache_store):
    cache_store.cache_put(KEY, CacheEntry(b"v", 1.0, "n"))
    assert cache_store.runs() == []
    cache_store.create_run(KEY, "flow", "g", b"", this_owner())
    assert cache_store.cache_get(KEY) == (b"v", 1.0, "n")


@pytest.mark.parametrize("key", ["", 5, None, b"bytes", "\ud800"])
def test_a_cache_key_that_is_not_valid_text_is_refused(cache_store, key):
    with pytest.raises(StoreError):
        cache_store.cache_get(key)
    with pytest.raises(StoreError):
        cache_store.cache_put(key, CacheEntry(b"v", 1.0, "n"))


@pytest.mark.parametrize(
    "entry",
    [
        (b"v", 1.0),
        "not an entry",
        CacheEntry("text, not bytes", 1.0, "n"),
        CacheEntry(b"v", "yesterday", "n"),
        CacheEntry(b"v", True, "n"),
        CacheEntry(b"v", 1.0, 5),
        CacheEntry(b"v", 1.0, "\ud800"),
    ],
)
def test_a_cache_entry_the_store_cannot_keep_as_given_is_refused_and_nothing_kept(
    cache_store, entry
):
    with pytest.raises(StoreError):
        cache_store.cache_put(KEY, entry)
    assert cache_store.cache_get(KEY) is None


# -- what only a file-backed store does --------------------------------------------------------


def test_two_store_objects_on_one_file_share_its_runs(tmp_path):
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    first.create_run("a", "flow", "g", b"", this_owner())
    assert second.get("a").flow == "flow"
    first.close()
    second.close()


def test_two_store_objects_on_one_file_share_its_cache_entries(tmp_path):
    first, second = SQLiteStore(tmp_path / "shared.db"), SQLiteStore(tmp_path / "shared.db")
    first.cache_put(KEY, CacheEntry(b"v", 1.0, "n"))
    assert second.cache_get(KEY) == (b"v", 1.0, "n")
    first.close()
    second.close()


def test_a_store_from_before_result_caches_gets_its_cache_table(tmp_path):
    import sqlite3

    from braidflow.stores.sqlite import SCHEMA_VERSION

    path = tmp_path / "old.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:  # schema 4, as braidflow wrote it before caches
        db.execute("DROP TABLE cache")
        db.execute("UPDATE braidflow_meta SET value='4' WHERE key='schema'")
    db.close()
    store = SQLiteStore(path)
    store.cache_put(KEY, CacheEntry(b"v", 1.0, "n"))
    assert store.cache_get(KEY) == (b"v", 1.0, "n")
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM braidflow_meta").fetchone() == (str(SCHEMA_VERSION),)
    db.close()


def test_a_closed_store_refuses_cache_entries(tmp_path):
    store = SQLiteStore(tmp_path / "runs.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.cache_get(KEY)
    with pytest.raises(StoreError, match="closed"):
        store.cache_put(KEY, CacheEntry(b"v", 1.0, "n"))


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


# -- metadata ------------------------------------------------------------------------------------


def test_metadata_is_kept_merged_and_removed_by_none(store):
    record = store.create_run("a", "flow", "g", b"", this_owner(), {"team": "ops", "try": 1})
    assert record.metadata == {"team": "ops", "try": 1}
    assert store.create_run("b", "flow", "g", b"", this_owner()).metadata == {}
    store.set_metadata("a", {"try": 2, "note": {"why": ["retry"]}})
    assert store.get("a").metadata == {"team": "ops", "try": 2, "note": {"why": ["retry"]}}
    store.set_metadata("a", {"team": None, "absent": None})  # None removes; absent is fine
    assert store.get("a").metadata == {"try": 2, "note": {"why": ["retry"]}}
    store.set_metadata("a", {})
    assert store.get("a").metadata == {"try": 2, "note": {"why": ["retry"]}}
    assert store.get("b").metadata == {}


def test_metadata_outlives_a_claim_and_an_end(store):
    store.create_run("a", "flow", "g", b"", dead_owner(), {"k": "v"})
    assert store.claim("a", this_owner())[0].metadata == {"k": "v"}
    store.finish("a", "failed", error="ValueError: x")
    assert store.get("a").metadata == {"k": "v"}
    assert [record.metadata for record in store.runs()] == [{"k": "v"}]


@pytest.mark.parametrize(
    "metadata",
    [
        {"value": object()},
        {"value": float("nan")},
        {"value": {1, 2}},
        {1: "a key that is not a string"},
        ["not", "a", "dict"],
    ],
    ids=["object", "nan", "set", "int-key", "list"],
)
def test_metadata_json_cannot_hold_is_refused_and_nothing_changes(store, metadata):
    with pytest.raises(StoreError, match="metadata"):
        store.create_run("a", "flow", "g", b"", this_owner(), metadata)
    with pytest.raises(StoreError, match="no run"):
        store.get("a")
    store.create_run("b", "flow", "g", b"", this_owner(), {"kept": True})
    with pytest.raises(StoreError, match="metadata") as caught:
        store.set_metadata("b", metadata)
    assert caught.value.run_id == "b"
    assert store.get("b").metadata == {"kept": True}


def test_metadata_of_an_unknown_run_is_refused(store):
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.set_metadata("nope", {"a": 1})


# -- odd input: every store gives the same answer ------------------------------------------------


ODD_RUN_IDS = ["\ud800", "a\udfffb", "", 7, None, b"bytes"]


@pytest.mark.parametrize("run_id", ODD_RUN_IDS, ids=repr)
def test_a_run_id_that_is_not_valid_text_is_refused_by_every_method(store, run_id):
    with pytest.raises(StoreError, match="run id"):
        store.create_run(run_id, "flow", "g", b"", this_owner())
    calls = [
        lambda: store.get(run_id),
        lambda: store.claim(run_id, this_owner()),
        lambda: store.append(run_id, [row(0)]),
        lambda: store.finish(run_id, "failed"),
        lambda: store.set_metadata(run_id, {}),
        lambda: store.add_events(run_id, ["{}"]),
        lambda: store.events(run_id),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            call()
    assert store.runs() == []


@pytest.mark.parametrize(
    "run_id", ["a\x00b", "ünïcödé ☃ 🚀", "x" * 10_000, " ", "'; DROP TABLE runs"]
)
def test_a_run_id_of_any_valid_text_is_kept_as_it_is(store, run_id):
    store.create_run(run_id, "flow", "g", b"", dead_owner())
    store.append(run_id, [row(0)])
    assert store.get(run_id).run_id == run_id
    assert store.claim(run_id, this_owner())[3] == [row(0)]
    store.finish(run_id, "completed")
    assert [record.run_id for record in store.runs(status="completed")] == [run_id]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flow", "\ud800"),
        ("flow", None),
        ("graph", "g\udc00"),
        ("graph", b"g"),
        ("initial", "text, not bytes"),
        ("initial", None),
        ("owner", ""),
        ("owner", None),
        ("owner", "host\ud800:1:?"),
    ],
)
def test_a_new_run_the_store_cannot_keep_as_given_is_refused(store, field, value):
    given = {"flow": "flow", "graph": "g", "initial": b"", "owner": this_owner(), field: value}
    with pytest.raises(StoreError):
        store.create_run("a", **given)
    with pytest.raises(StoreError, match="no run"):
        store.get("a")


def test_a_claim_needs_an_owner(store):
    store.create_run("a", "flow", "g", b"", dead_owner())
    for owner in ("", None, "\ud800"):
        with pytest.raises(StoreError):
            store.claim("a", owner)
    assert store.get("a").status == "interrupted"  # left as it was


@pytest.mark.parametrize(
    "bad",
    [
        row(1)._replace(payload="text, not bytes"),
        row(1)._replace(payload=None),
        row(1)._replace(position=1.5),
        row(1)._replace(position=1 << 63),
        row(1)._replace(position="1"),
        row(1)._replace(node=None),
        row(1)._replace(kind="\ud800"),
        row(1)._replace(frame=b"0:flow"),
        row(1)._replace(node_class="N\udfff"),
        row(1)._replace(action=7),
        row(1)._replace(action="\ud800"),
        ("step", "0:flow", 1),
        "not a row",
        None,
    ],
    ids=repr,
)
def test_rows_a_store_cannot_keep_as_given_are_refused_whole(store, bad):
    store.create_run("a", "flow", "g", b"", dead_owner())
    store.append("a", [row(0)])
    with pytest.raises(StoreError) as caught:
        store.append("a", [row(1), bad])  # all or none: row(1) is not kept either
    assert caught.value.run_id == "a"
    store.append("a", [row(2)])
    assert store.claim("a", this_owner())[3] == [row(0), row(2)]


def test_rows_of_an_unknown_run_are_refused(store):
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.append("nope", [row(0)])
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.add_events("nope", ['{"kind": "run_start"}'])
    assert store.runs() == []


@pytest.mark.parametrize("event", [None, 7, b"{}", '{"text": "\ud800"}'], ids=repr)
def test_events_that_are_not_valid_text_are_refused(store, event):
    store.create_run("a", "flow", "g", b"", this_owner())
    with pytest.raises(StoreError, match="event"):
        store.add_events("a", ['{"kind": "first"}', event])
    assert store.events("a") == []


def test_an_end_the_store_cannot_record_as_given_is_refused(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    for status in ("done", "running", "", None):
        with pytest.raises(StoreError, match="can end as"):
            store.finish("a", status)
    for ended in ("yesterday", True):
        with pytest.raises(StoreError, match="ended"):
            store.finish("a", "failed", ended=ended)
    assert store.get("a").status == "running"  # nothing changed, and still held
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.finish("nope", "failed")


def test_an_error_text_utf8_cannot_hold_is_kept_escaped(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.finish("a", "failed", node="flow/n\ud800", error="ValueError: bad \udcff byte")
    record = store.get("a")
    assert (record.node, record.error) == ("flow/n\\ud800", "ValueError: bad \\udcff byte")
    store.create_run("b", "flow", "g", b"", this_owner())
    store.finish("b", "waiting", prompt={"q": "\ud800?"})
    assert store.get("b").prompt == {"q": "\ud800?"}  # JSON escapes it


def test_texts_are_kept_exactly(store):
    texts = "a\x00b ünï ☃ 🚀 \n\t'\""
    store.create_run("a", texts, texts, b"\x00\xff", dead_owner(), {texts: texts})
    store.append("a", [Checkpoint(texts, texts, -(1 << 63), texts, texts, texts, b"\x00")])
    store.add_events("a", [texts])
    record, graph, initial, rows = store.claim("a", this_owner())
    assert (record.flow, graph, initial, record.metadata) == (
        texts,
        texts,
        b"\x00\xff",
        {texts: texts},
    )
    assert rows == [Checkpoint(texts, texts, -(1 << 63), texts, texts, texts, b"\x00")]
    assert store.events("a") == [texts]


# -- who runs a run: this process, while it runs it ----------------------------------------------


def test_a_run_this_process_let_go_of_without_an_end_can_be_resumed_here(store):
    """A run whose end could not be recorded (its store failed) is released
    by the engine: it is then interrupted, not 'running in this process'."""
    if not callable(getattr(store, "release", None)):
        pytest.skip("the store keeps no record of the runs this process runs (no release)")
    store.create_run("a", "flow", "g", b"", this_owner())
    store.append("a", [row(0)])
    assert store.get("a").status == "running"
    store.release("a")
    assert store.get("a").status == "interrupted"
    record, _graph, _initial, rows = store.claim("a", this_owner())
    assert (record.status, rows) == ("interrupted", [row(0)])
    assert store.get("a").status == "running"  # held again, by this claim
    with pytest.raises(StoreError, match="running in this process"):
        store.claim("a", this_owner())
    store.release("a")
    store.release("a")  # twice, or for a run never held, is fine
    store.release("never")
    assert store.get("a").status == "interrupted"


def test_a_run_ends_held_by_nobody_even_when_its_end_is_refused(store):
    store.create_run("a", "flow", "g", b"", this_owner())
    store.finish("a", "failed")
    assert store.claim("a", this_owner())[0].status == "failed"
    store.finish("a", "interrupted")
    assert store.get("a").status == "interrupted"
    assert store.claim("a", this_owner())[0].status == "interrupted"


def test_a_run_of_another_process_on_this_host_is_running_while_that_process_lives(store):
    store.create_run("busy", "flow", "g", b"", live_owner())
    store.create_run("gone", "flow", "g", b"", dead_owner())
    reused = live_owner().rsplit(":", 1)[0] + ":12345"  # pid 1, but started at another time
    store.create_run("reused", "flow", "g", b"", reused)
    assert [store.get(run).status for run in ("busy", "gone", "reused")] == [
        "running",
        "interrupted",
        "interrupted",
    ]
    assert store.claim("gone", this_owner())[0].status == "interrupted"
    assert store.claim("reused", this_owner())[0].status == "interrupted"


@pytest.fixture(params=["sqlite", POSTGRES])
def two_stores(request, tmp_path):
    """Two store objects of this process on one database."""
    if request.param == "postgres":
        from braidflow.stores import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        made = PostgresStore(dsn), PostgresStore(dsn)
    else:
        made = SQLiteStore(tmp_path / "one.db"), SQLiteStore(tmp_path / "one.db")
    yield made
    for one in made:
        one.close()


def test_a_run_claimed_through_one_store_object_is_held_before_another_can_look(two_stores):
    """Right after the claim commits (before the store's own bookkeeping),
    another store object of this process on the same database must find the
    run running here: found not held, it would claim the run too."""
    first, second = two_stores
    first.create_run("r", "flow", "g", b"", dead_owner())
    seen = []
    kept_hold = first._hold

    def hold_later(run_id, owner):  # the moment after the commit: the other one looks
        try:
            second.claim(run_id, this_owner())
            seen.append("claimed it too")
        except StoreError as refused:
            seen.append(str(refused))
        kept_hold(run_id, owner)

    first._hold = hold_later
    first.claim("r", this_owner())
    assert len(seen) == 1
    assert "running in this process" in seen[0]


@pytest.fixture(params=["sqlite", POSTGRES])
def pickle_and_json_stores(request, tmp_path):
    """Two store objects on one database: one that writes new runs with pickle, one with JSON."""
    if request.param == "postgres":
        from braidflow.stores import PostgresStore

        dsn = request.getfixturevalue("postgres_dsn")
        made = PostgresStore(dsn, serializer="pickle"), PostgresStore(dsn)
    else:
        path = tmp_path / "one.db"
        made = SQLiteStore(path, serializer="pickle"), SQLiteStore(path)
    yield made
    for one in made:
        one.close()


def test_a_run_is_read_and_resumed_with_its_own_serializer_where_it_may_be(
    pickle_and_json_stores,
):
    from braidflow import Flow, Node, StoreError, stored_state

    class Tag(Node):
        def post(self, shared, prep_res, exec_res):
            shared["tags"] = shared.get("tags", ["a"])

    class Then(Node):
        up = False

        def post(self, shared, prep_res, exec_res):
            if not Then.up:
                raise ConnectionError("down")
            shared["done"] = True

    def flow():
        tag = Tag(name="tag")
        tag >> Then(name="then")
        return Flow(start=tag)

    pickled, plain = pickle_and_json_stores
    for store, run_id, tags in ((pickled, "p", {"a"}), (plain, "j", ["a"])):
        with pytest.raises(ConnectionError):
            flow().run({"tags": tags}, store=store, run_id=run_id)
    assert plain.get("p").metadata["braidflow.serializer"] == "pickle"
    assert "braidflow.serializer" not in pickled.get("j").metadata
    Then.up = True
    # A JSON run is read and written on as JSON through a pickle store object;
    # a pickle run only through one (unpickling runs code: the reader's choice).
    assert flow().resume("j", store=pickled) == {"tags": ["a"], "done": True}
    with pytest.raises(StoreError, match="serializer='pickle'"):
        flow().resume("p", store=plain)
    assert plain.get("p").status == "failed"  # left as it was
    assert flow().resume("p", store=pickled) == {"tags": {"a"}, "done": True}
    assert stored_state("p", store=pickled) == {"tags": {"a"}, "done": True}
    for store in (pickled, plain):
        assert stored_state("j", store=store) == {"tags": ["a"], "done": True}
