"""The result cache: ``cache=`` keeps exec's results by node, code version and
input, in a store shared by runs and processes; a hit skips exec."""

import asyncio
import collections
import enum
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from braidflow import (
    AsyncFlow,
    AsyncParallelBatchNode,
    BatchNode,
    Cache,
    CacheError,
    Failure,
    Flow,
    InvalidParameterError,
    Limiter,
    MemoryStore,
    Node,
    ParallelBatchNode,
    SQLiteStore,
    Store,
)
from braidflow._cache import exec_version
from conftest import POSTGRES


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=1_000.0):
        self.now = now

    def __call__(self):
        return self.now


def upper_batch(kind, calls, **options):
    """A batch node of ``kind`` whose exec upper-cases each item, counting calls."""

    class Upper(kind):
        def prep(self, shared):
            return shared["items"]

        def exec(self, item):
            calls.append(item)
            return item.upper()

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    options.setdefault("name", "upper")
    return Upper(**options)


def kinds_of(events):
    return [event.kind for event in events]


@pytest.fixture(params=["sqlite", "memory", POSTGRES])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "postgres":
        from braidflow.stores import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_dsn"))
        yield made
        made.close()
    else:
        made = SQLiteStore(tmp_path / "cache.db")
        yield made
        made.close()


# -- hits and misses ----------------------------------------------------------------------


def test_a_second_run_takes_the_result_kept_and_exec_does_not_run(store):
    calls = []

    class Ask(Node):
        def prep(self, shared):
            return shared["question"]

        def exec(self, question):
            calls.append(question)
            return {"answer": question * 2}

        def post(self, shared, prep_res, exec_res):
            shared["answer"] = exec_res

    node = Ask(name="ask", cache=Cache(store=store))
    first, second, other = {"question": "hi"}, {"question": "hi"}, {"question": "ho"}
    node.run(first)
    events = []
    node.run(second, observers=[events.append])
    node.run(other)
    assert calls == ["hi", "ho"]
    assert first["answer"] == second["answer"] == {"answer": "hihi"}
    assert other["answer"] == {"answer": "hoho"}
    hits = [event for event in events if event.kind == "cache_hit"]
    assert len(hits) == 1
    assert hits[0].node == "ask"
    assert hits[0].item is None
    assert isinstance(hits[0].data["key"], str)
    assert store.cache_get(hits[0].data["key"]) is not None


def test_a_sequential_batch_keeps_each_item_and_hits_per_item(store):
    calls = []
    node = upper_batch(BatchNode, calls, cache=Cache(store=store))
    node.run({"items": ["a", "b"]})
    shared = {"items": ["b", "c", "a"]}
    events = []
    node.run(shared, observers=[events.append])
    assert calls == ["a", "b", "c"]
    assert shared["out"] == ["B", "C", "A"]
    assert sorted(e.item for e in events if e.kind == "cache_hit") == [0, 2]


def test_a_second_run_of_a_cached_batch_of_1000_items_makes_no_call(tmp_path):
    calls = []

    class Summarize(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [{"id": index, "text": f"text {index}"} for index in range(1000)]

        async def exec_async(self, item):
            calls.append(item["id"])
            return {"summary": item["text"][:4], "id": item["id"]}

        async def post_async(self, shared, prep_res, exec_res):
            shared["summaries"] = exec_res

    path = tmp_path / "cache.db"
    first = {}
    asyncio.run(AsyncFlow(start=Summarize(cache=Cache(store=SQLiteStore(path)))).run_async(first))
    assert len(calls) == 1000
    calls.clear()
    again = {}  # a new store object on the same file, as another run would open it
    node = Summarize(cache=Cache(store=SQLiteStore(path)))
    asyncio.run(AsyncFlow(start=node).run_async(again))
    assert calls == []
    assert again["summaries"] == first["summaries"]


@pytest.mark.slow
def test_another_process_takes_the_results_kept_in_a_shared_sqlite_file(tmp_path):
    program = textwrap.dedent(
        """
        import sys
        import braidflow as bf

        calls = []

        class Double(bf.BatchNode):
            def prep(self, shared):
                return list(range(20))

            def exec(self, item):
                calls.append(item)
                return item * 2

            def post(self, shared, prep_res, exec_res):
                shared["out"] = exec_res

        shared = {}
        Double(cache=bf.Cache(store=bf.SQLiteStore(sys.argv[1]))).run(shared)
        assert shared["out"] == [item * 2 for item in range(20)]
        print(len(calls))
        """
    )
    path = str(tmp_path / "cache.db")
    counts = [
        subprocess.run(
            [sys.executable, "-c", program, path], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert counts == ["20", "0"]


def test_cache_true_keeps_results_in_the_runs_store(tmp_path):
    calls = []
    store = SQLiteStore(tmp_path / "runs.db")
    node = upper_batch(BatchNode, calls, cache=True)
    Flow(start=node).run({"items": ["a", "b"]}, store=store)
    shared = {"items": ["a", "b"]}
    Flow(start=node).run(shared, store=store)
    assert calls == ["a", "b"]
    assert shared["out"] == ["A", "B"]
    store.close()


def test_a_parallel_batch_of_sync_items_in_threads_hits_too(store):
    calls = []
    node = upper_batch(ParallelBatchNode, calls, cache=Cache(store=store), max_concurrency=3)
    node.run({"items": ["a", "b", "c", "d"]})
    shared = {"items": ["d", "c", "b", "a"]}
    node.run(shared)
    assert sorted(calls) == ["a", "b", "c", "d"]
    assert shared["out"] == ["D", "C", "B", "A"]


def test_equal_inputs_built_differently_share_a_key_and_unequal_ones_do_not(store):
    calls = []
    node = upper_batch(BatchNode, calls, cache=Cache(store=store), name="n")
    node.exec = lambda item: calls.append(item) or len(calls)
    node.run({"items": [{"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, 1, 1.0, True, "1", (1,)]})
    # the dicts are equal (one key); 1, 1.0, True, "1" and (1,) are told apart
    assert len(calls) == 6


class Size(enum.IntEnum):
    ONE = 1


class Label(enum.StrEnum):
    POSITIVE = "positive"


def test_an_enum_or_other_subclass_input_does_not_share_a_key_with_its_plain_value(store):
    """Size.ONE == 1 and Counter(a=1) == {"a": 1}, but exec may tell them
    apart (``.value``, ``.most_common()``): each is keyed by its class too."""
    calls = []
    node = upper_batch(BatchNode, calls, cache=Cache(store=store), name="n")
    node.exec = lambda item: calls.append(item) or len(calls)
    inputs = [
        1, Size.ONE, "positive", Label.POSITIVE, [Size.ONE], [1],
        {"a": 1}, collections.Counter(a=1), collections.OrderedDict(a=1),
        {"positive": 1}, {Label.POSITIVE: 1},
    ]  # fmt: skip
    node.run({"items": inputs})
    assert len(calls) == len(inputs)
    node.run({"items": [Label.POSITIVE, collections.Counter(a=1), {Label.POSITIVE: 1}]})
    assert len(calls) == len(inputs)  # equal inputs of one class still share their key


KEYS_PROGRAM = """
import collections, enum, json
import braidflow as bf
from braidflow._cache import cache_key

class Label(enum.StrEnum):
    POSITIVE = "positive"

class Echo(bf.Node):
    def exec(self, item):
        return item

cache = bf.Cache(store=bf.MemoryStore(), version="1")
inputs = [
    Label.POSITIVE, [Label.POSITIVE], {Label.POSITIVE: {"x", "y", "z", "w"}},
    collections.Counter("abracadabra"), collections.defaultdict(list, q=[1], p=[2]),
]
print(json.dumps([cache_key(cache, Echo(name="echo"), given, None, "json") for given in inputs]))
"""


@pytest.mark.slow
def test_the_key_of_an_enum_or_subclass_input_is_the_same_in_every_process():
    """Keyed by the class's module and name and the value: no hash order in it."""
    keys = [
        subprocess.run(
            [sys.executable, "-c", KEYS_PROGRAM],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert keys[0] == keys[1]
    assert len(set(json.loads(keys[0]))) == 5


def test_a_hit_takes_no_limiter_slot_and_retries_nothing(store):
    limiter = Limiter(2)
    calls = []
    node = upper_batch(BatchNode, calls, cache=Cache(store=store), limits=[limiter], max_retries=3)
    node.run({"items": ["a", "b", "c"]})
    taken = limiter.statistics().acquired
    assert taken == 3
    node.run({"items": ["c", "a", "b"]})
    assert limiter.statistics().acquired == taken
    assert len(calls) == 3


# -- the key: version, key=, node name ------------------------------------------------------


def make_node(body, store, calls=None, **options):
    """A node named "work" whose exec is ``body``: classes made afresh, as after an edit."""
    namespace = {"calls": calls if calls is not None else []}
    exec(textwrap.dedent(body), namespace)

    class Work(Node):
        def prep(self, shared):
            return shared["input"]

        def post(self, shared, prep_res, exec_res):
            shared["output"] = exec_res

    Work.exec = namespace["exec"]
    return Work(name="work", cache=Cache(store=store, **options))


def test_editing_exec_misses_the_results_kept_and_a_comment_does_not(store):
    original = "def exec(self, text):\n    calls.append(text)\n    return text + '!'\n"
    commented = (
        "def exec(self, text):\n    # shout\n\n    calls.append(text)\n    return text + '!'\n"
    )
    edited = "def exec(self, text):\n    calls.append(text)\n    return text + '?'\n"
    calls, shared = [], {"input": "hi"}
    make_node(original, store, calls).run(shared)
    make_node(commented, store, calls).run(shared)
    assert (calls, shared["output"]) == (["hi"], "hi!")
    make_node(edited, store, calls).run(shared)
    assert (calls, shared["output"]) == (["hi", "hi"], "hi?")


def test_a_version_given_is_the_version_whatever_the_code(store):
    shared = {"input": "hi"}
    make_node("def exec(self, text):\n    return 1\n", store, version="v1").run(shared)
    make_node("def exec(self, text):\n    return 2\n", store, version="v1").run(shared)
    assert shared["output"] == 1
    make_node("def exec(self, text):\n    return 3\n", store, version="v2").run(shared)
    assert shared["output"] == 3


def test_the_version_follows_functions_exec_holds_in_its_closure():
    def build(factor):
        namespace = {}
        exec(
            f"def helper(value):\n    return value * {factor}\n"
            "def outer():\n"
            "    def exec(self, item):\n        return helper(item)\n"
            "    h = helper\n"
            "    def exec(self, item):\n        return h(item)\n"
            "    return exec\n",
            namespace,
        )

        class Work(Node):
            exec = namespace["outer"]()

        return Work(name="w")

    assert exec_version(build(2)) == exec_version(build(2))
    assert exec_version(build(2)) != exec_version(build(3))


def test_editing_a_default_value_of_exec_misses_the_results_kept(store):
    positional = "def exec(self, text, target='French'):\n    return text + ' in ' + target\n"
    keyword = "def exec(self, text, *, target='French'):\n    return text + ' in ' + target\n"
    for body in (positional, keyword):
        shared = {"input": "hi"}
        make_node(body, store).run(shared)
        make_node(body, store).run(shared)
        assert shared["output"].endswith("in French")
        make_node(body.replace("French", "German"), store).run(shared)
        assert shared["output"].endswith("in German")


def test_a_default_with_no_stable_text_counts_by_its_type():
    class Client:
        pass

    def build(default):
        class Work(Node):
            def exec(self, item, client=default):
                return item

        return Work(name="w")

    assert exec_version(build(Client())) == exec_version(build(Client()))
    assert exec_version(build(Client())) != exec_version(build(object()))


def test_a_simple_value_exec_holds_in_its_closure_counts_and_another_does_not():
    def build(prompt, client):
        class Work(Node):
            def exec(self, item):
                return (prompt, client, item)

        return Work(name="w")

    client = object()
    assert exec_version(build("Translate:", client)) == exec_version(build("Translate:", client))
    assert exec_version(build("Translate:", client)) != exec_version(build("Summarize:", client))
    assert exec_version(build(("fr", 2), client)) != exec_version(build(("de", 2), client))
    assert exec_version(build("Translate:", client)) == exec_version(build("Translate:", object()))


def test_two_nodes_with_one_exec_but_different_names_keep_apart(store):
    calls = []
    first = upper_batch(BatchNode, calls, cache=Cache(store=store))
    second = upper_batch(BatchNode, calls, cache=Cache(store=store))
    second.name = "other"
    first.run({"items": ["a"]})
    second.run({"items": ["a"]})
    assert calls == ["a", "a"]


def test_a_key_function_names_what_identifies_an_input(store):
    calls = []

    class Translate(BatchNode):
        def prep(self, shared):
            return shared["items"]

        def exec(self, item):
            calls.append(item["id"])
            return item["text"].upper()

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    node = Translate(cache=Cache(store=store, key=lambda item: item["id"]))
    node.run({"items": [{"id": 1, "text": "a", "client": object()}]})
    shared = {"items": [{"id": 1, "text": "a", "client": object()}, {"id": 2, "text": "b"}]}
    node.run(shared)
    assert calls == [1, 2]
    assert shared["out"] == ["A", "B"]


# -- ttl and refresh ------------------------------------------------------------------------


def test_a_result_older_than_the_ttl_is_computed_again(store):
    clock, calls = Clock(), []
    node = upper_batch(BatchNode, calls, cache=Cache(store=store, ttl=60, clock=clock))
    node.run({"items": ["a"]})
    clock.now += 59
    node.run({"items": ["a"]})
    assert calls == ["a"]
    clock.now += 1
    node.run({"items": ["a"]})
    assert calls == ["a", "a"]
    clock.now += 59  # kept anew at the last miss
    node.run({"items": ["a"]})
    assert calls == ["a", "a"]


def test_refresh_computes_each_result_once_again_then_uses_it(store):
    clock, calls = Clock(), []
    upper_batch(BatchNode, calls, cache=Cache(store=store, clock=clock)).run({"items": ["a"]})
    clock.now += 1
    refreshing = upper_batch(BatchNode, calls, cache=Cache(store=store, clock=clock, refresh=True))
    refreshing.run({"items": ["a", "b"]})
    refreshing.run({"items": ["a", "b"]})
    upper_batch(BatchNode, calls, cache=Cache(store=store, clock=clock)).run({"items": ["a"]})
    assert calls == ["a", "a", "b"]


# -- items that need one key at once ---------------------------------------------------------


async def test_items_that_need_one_key_at_once_compute_it_once(store):
    calls = []
    release = asyncio.Event()

    class Slow(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "b", "a", "a"]

        async def exec_async(self, item):
            calls.append(item)
            await release.wait()
            return item.upper()

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    events = []

    def look(event):
        events.append(event)
        if event.kind == "item_start" and sum(e.kind == "item_start" for e in events) == 4:
            asyncio.get_running_loop().call_soon(release.set)

    shared = {}
    await Slow(cache=Cache(store=store)).run_async(shared, observers=[look])
    assert sorted(calls) == ["a", "b"]
    assert shared["out"] == ["A", "B", "A", "A"]
    assert sorted(e.item for e in events if e.kind == "cache_hit") == [2, 3]


def test_sync_items_in_threads_that_need_one_key_at_once_compute_it_once(store):
    import threading

    calls = []
    all_started = threading.Event()

    class Slow(ParallelBatchNode):
        def prep(self, shared):
            return ["a", "a", "a"]

        def exec(self, item):
            calls.append(item)
            assert all_started.wait(timeout=30)
            return item.upper()

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    started = []

    def look(event):
        if event.kind == "item_start":
            started.append(event.item)
            if len(started) == 3:
                all_started.set()

    shared = {}
    Slow(cache=Cache(store=store), max_concurrency=3).run(shared, observers=[look])
    assert calls == ["a"]
    assert shared["out"] == ["A", "A", "A"]


def test_a_durable_run_checkpoints_items_served_from_the_cache_and_resumes(tmp_path):
    runs = SQLiteStore(tmp_path / "runs.db")
    calls, failing = [], {"c": True}

    class Work(BatchNode):
        def prep(self, shared):
            return ["a", "b", "c"]

        def exec(self, item):
            calls.append(item)
            if failing.get(item):
                raise ConnectionError(item)
            return item.upper()

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    flow = Flow(start=Work(cache=True))
    with pytest.raises(ConnectionError):
        flow.run({}, store=runs, run_id="warm")  # fills the cache with a, b; c fails
    assert calls == ["a", "b", "c"]
    with pytest.raises(ConnectionError):
        flow.run({}, store=runs, run_id="r")  # a, b from the cache; c fails again
    assert calls == ["a", "b", "c", "c"]
    failing.clear()
    shared = flow.resume("r", store=runs)
    assert shared["out"] == ["A", "B", "C"]
    assert calls == ["a", "b", "c", "c", "c"]  # a and b were checkpointed: not asked again
    runs.close()


async def test_when_the_item_computing_a_key_fails_the_one_waiting_computes_its_own(store):
    calls = []
    first_started = asyncio.Event()

    class Flaky(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "a"]

        async def exec_async(self, item):
            calls.append(item)
            if len(calls) == 1:
                await first_started.wait()
                raise ValueError("no luck")
            return item.upper()

        async def exec_fallback_async(self, prep_res, exc):
            return "fallback"

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    def look(event):
        if event.kind == "item_start" and event.item == 1:
            asyncio.get_running_loop().call_soon(first_started.set)

    shared = {}
    await Flaky(cache=Cache(store=store)).run_async(shared, observers=[look])
    assert calls == ["a", "a"]
    assert shared["out"] == ["fallback", "A"]
    again = {}
    await Flaky(cache=Cache(store=store)).run_async(again)
    assert again["out"] == ["A", "A"]  # the fallback's result was never kept
    assert len(calls) == 2


class _FailsFirst(AsyncParallelBatchNode):
    """Items of one key: the first call waits until every item has started
    (each other one then waits for it), then fails; a later call succeeds."""

    def __init__(self, calls, everyone_started, **options):
        super().__init__(**options)
        self.calls, self.everyone_started = calls, everyone_started

    async def prep_async(self, shared):
        return shared["items"]

    async def exec_async(self, item):
        self.calls.append(item)
        if len(self.calls) == 1:
            await self.everyone_started.wait()
            raise ValueError("no luck")
        return item.upper()

    async def post_async(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


def _when_started(count, event):
    """An observer that sets ``event`` once ``count`` items have started."""
    started = []

    def look(event_seen):
        if event_seen.kind == "item_start":
            started.append(event_seen.item)
            if len(started) == count:
                asyncio.get_running_loop().call_soon(event.set)

    return look


@pytest.mark.parametrize("max_concurrency", [None, 4])
async def test_when_the_item_computing_a_key_fails_under_raise_no_waiting_item_calls(
    store, max_concurrency
):
    calls, everyone_started = [], asyncio.Event()
    node = _FailsFirst(
        calls, everyone_started, cache=Cache(store=store), max_concurrency=max_concurrency
    )
    with pytest.raises(ValueError, match="no luck"):
        await node.run_async({"items": ["a"] * 4}, observers=[_when_started(4, everyone_started)])
    assert calls == ["a"]  # the batch stops: the items waiting are cancelled, none calls


def test_when_the_item_computing_a_key_fails_in_a_thread_no_waiting_item_calls(store):
    import threading

    calls, lock, everyone_started = [], threading.Lock(), threading.Event()

    class FailsFirst(ParallelBatchNode):
        def prep(self, shared):
            return ["a"] * 4

        def exec(self, item):
            with lock:
                calls.append(item)
                first = len(calls) == 1
            if first:
                assert everyone_started.wait(timeout=30)
                raise ValueError("no luck")
            return item.upper()

    started = []

    def look(event):
        if event.kind == "item_start":
            started.append(event.item)
            if len(started) == 4:
                everyone_started.set()

    with pytest.raises(ValueError, match="no luck"):
        FailsFirst(cache=Cache(store=store), max_concurrency=4).run({}, observers=[look])
    assert calls == ["a"]


async def test_under_collect_a_setup_error_of_the_item_computing_a_key_stops_the_waiting(store):
    calls, everyone_started = [], asyncio.Event()

    class Refused(_FailsFirst):
        async def exec_async(self, item):
            self.calls.append(item)
            await self.everyone_started.wait()
            raise InvalidParameterError("no price for this model")

    node = Refused(calls, everyone_started, cache=Cache(store=store), on_error="collect")
    with pytest.raises(InvalidParameterError):
        await node.run_async({"items": ["a"] * 3}, observers=[_when_started(3, everyone_started)])
    assert calls == ["a"]


async def test_under_collect_an_item_waiting_for_a_key_that_failed_computes_its_own(store):
    calls, everyone_started = [], asyncio.Event()
    node = _FailsFirst(calls, everyone_started, cache=Cache(store=store), on_error="collect")
    shared = {"items": ["a", "a"]}
    await node.run_async(shared, observers=[_when_started(2, everyone_started)])
    assert calls == ["a", "a"]
    assert isinstance(shared["out"][0], Failure)
    assert shared["out"][1] == "A"


async def test_an_item_of_another_run_waiting_for_a_key_that_failed_computes_its_own(store):
    calls, other_started = [], asyncio.Event()
    failing = _FailsFirst(calls, other_started, cache=Cache(store=store))
    other = _FailsFirst(calls, other_started, cache=Cache(store=store))
    first = asyncio.create_task(failing.run_async({"items": ["a"]}))
    while not calls:  # the failing run's item computes the key
        await asyncio.sleep(0)
    shared = {"items": ["a"]}
    await other.run_async(shared, observers=[_when_started(1, other_started)])
    assert shared["out"] == ["A"]  # its run is not stopping: it made its own call
    assert calls == ["a", "a"]
    with pytest.raises(ValueError, match="no luck"):
        await first


def test_a_failed_exec_keeps_nothing(store):
    calls = []

    class Fails(Node):
        def exec(self, prep_res):
            calls.append(1)
            raise RuntimeError("down")

    node = Fails(cache=Cache(store=store))
    for _ in range(2):
        with pytest.raises(RuntimeError, match="down"):
            node.run({})
    assert len(calls) == 2


# -- what cannot work -------------------------------------------------------------------------


def test_a_result_json_cannot_hold_is_an_error_naming_the_node(store):
    class Gives(Node):
        def exec(self, prep_res):
            return {1, 2}

    if store.serializer != "json":
        pytest.skip("a pickling store keeps sets")
    with pytest.raises(CacheError, match=r"'Gives'.*exec's result.*set.*json") as caught:
        Gives(cache=Cache(store=store)).run({})
    assert caught.value.node == "Gives"


def test_a_result_pickle_cannot_hold_is_an_error_naming_the_node_and_item(tmp_path):
    store = SQLiteStore(tmp_path / "cache.db", serializer="pickle")

    class Gives(BatchNode):
        def prep(self, shared):
            return [1, 2]

        def exec(self, item):
            return (lambda: item) if item == 2 else item

    with pytest.raises(CacheError, match=r"'Gives'.*exec's result on item 1.*pickle") as caught:
        Gives(cache=Cache(store=store)).run({})
    assert caught.value.item_index == 1
    store.close()


def test_an_input_with_no_stable_text_is_an_error_that_says_to_give_a_key(store):
    class Takes(BatchNode):
        def prep(self, shared):
            return ["fine", object()]

        def exec(self, item):
            return 1

    with pytest.raises(CacheError, match=r"'Takes'.*key of its input \(item 1\).*key=") as caught:
        Takes(cache=Cache(store=store)).run({})
    assert caught.value.item_index == 1


def test_a_key_function_that_fails_raises_its_own_error_with_a_note(store):
    class Takes(BatchNode):
        def prep(self, shared):
            return [{"id": 1}, {}]

        def exec(self, item):
            return 1

    with pytest.raises(KeyError) as caught:
        Takes(cache=Cache(store=store, key=lambda item: item["id"])).run({})
    assert any(
        "key= of node 'Takes'" in note and "item 1" in note for note in caught.value.__notes__
    )


def test_cache_true_in_a_run_without_a_store_says_to_give_one():
    with pytest.raises(CacheError, match=r"'Work'.*run's store.*has none.*store="):
        upper_batch(BatchNode, [], cache=True, name="Work").run({"items": ["a"]})


def test_cache_true_with_a_store_that_keeps_no_cache_entries_says_so():
    class RunsOnly:
        """A Store that keeps runs and nothing else (forwards to a MemoryStore)."""

        serializer = "json"

        def __init__(self):
            self._inner = MemoryStore()

        def __getattr__(self, name):
            if name.startswith("cache_"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    store = RunsOnly()
    assert isinstance(store, Store)
    with pytest.raises(CacheError, match=r"keeps no cache entries.*Cache\(store="):
        Flow(start=upper_batch(BatchNode, [], cache=True)).run({"items": ["a"]}, store=store)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": "1h"}, r"ttl='1h'.*seconds"),
        ({"ttl": 0}, r"ttl=0.*> 0"),
        ({"ttl": -5}, r"ttl=-5.*> 0"),
        ({"ttl": float("nan")}, r"ttl=nan"),
        ({"ttl": True}, r"ttl=True"),
        ({"version": 2}, r"version=2.*non-empty string"),
        ({"version": ""}, r"version=''.*non-empty string"),
        ({"key": "id"}, r"key='id'.*function"),
        ({"refresh": "yes"}, r"refresh='yes'.*True or False"),
        ({"clock": 5}, r"clock=5.*function"),
        ({"store": object()}, r"store=<object.*SQLiteStore"),
        ({"store": "cache.db"}, r"store='cache.db'.*SQLiteStore"),
    ],
)
def test_every_cache_option_is_checked_when_given(options, message):
    with pytest.raises(InvalidParameterError, match=message):
        Cache(**options)


@pytest.mark.parametrize("bad", ["yes", 1, "cache.db", MemoryStore()])
def test_a_nodes_cache_option_is_checked_when_given(bad):
    with pytest.raises(InvalidParameterError, match=r"'Work'.*cache=.*braidflow.Cache"):
        upper_batch(BatchNode, [], cache=bad, name="Work")


def test_a_cache_says_what_it_was_given():
    store = MemoryStore()
    cache = Cache(store=store, ttl=float("inf"), version="v", refresh=True)
    assert cache.ttl is None
    assert (cache.store, cache.version, cache.key, cache.refresh) == (store, "v", None, True)
    assert repr(cache) == f"Cache(store={store!r}, version='v', refresh=True)"
    assert repr(Cache(ttl=5)) == "Cache(ttl=5.0)"
    assert upper_batch(BatchNode, [], cache=False)._bf_cache is None
    assert isinstance(upper_batch(BatchNode, [], cache=True)._bf_cache, Cache)


# -- what the messages say to do works (see the catalogue in tests/test_advice.py) -----------


def code_in(error):
    """The pieces of code a message shows, in backticks, in order."""
    return re.findall(r"`([^`]+)`", str(error))


def test_advice_for_cache_true_without_a_store_works_both_ways(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    flow = Flow(start=upper_batch(BatchNode, calls, cache=True))
    shared = {"items": ["a"]}
    with pytest.raises(CacheError) as caught:
        flow.run(shared)
    run_with_store, own_store = code_in(caught.value)
    assert run_with_store == "flow.run(shared, store=SQLiteStore('runs.db'))"
    eval(run_with_store, {"flow": flow, "shared": shared, "SQLiteStore": SQLiteStore})
    names = {"Cache": Cache, "SQLiteStore": SQLiteStore}
    options = eval(f"dict({own_store})", names)
    Flow(start=upper_batch(BatchNode, calls, **options)).run(shared)
    Flow(start=upper_batch(BatchNode, calls, **options)).run(shared)
    assert shared["out"] == ["A"]
    assert calls == ["a", "a"]  # one per store; the second run of each would hit


def test_advice_for_a_run_store_without_a_cache_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class RunsOnly:
        serializer = "json"

        def __init__(self):
            self._inner = MemoryStore()

        def __getattr__(self, name):
            if name.startswith("cache_"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    with pytest.raises(CacheError) as caught:
        Flow(start=upper_batch(BatchNode, [], cache=True)).run({"items": ["a"]}, store=RunsOnly())
    (own_store,) = code_in(caught.value)
    options = eval(f"dict({own_store})", {"Cache": Cache, "SQLiteStore": SQLiteStore})
    shared = {"items": ["a"]}
    Flow(start=upper_batch(BatchNode, [], **options)).run(shared, store=RunsOnly())
    assert shared["out"] == ["A"]


def test_advice_for_a_bad_cache_option_on_a_node_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidParameterError) as caught:
        upper_batch(BatchNode, [], cache="cache.db")
    (written,) = code_in(caught.value)
    options = eval(f"dict({written})", {"Cache": Cache, "SQLiteStore": SQLiteStore})
    shared = {"items": ["a"]}
    upper_batch(BatchNode, [], **options).run(shared)
    assert shared["out"] == ["A"]


def test_advice_for_a_bad_cache_store_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidParameterError, match=r"use SQLiteStore\(path\) or MemoryStore\(\)"):
        Cache(store="cache.db")
    for store in (SQLiteStore("cache.db"), MemoryStore(), None):
        assert Cache(store=store).store is store


def test_advice_for_a_result_json_cannot_hold_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Gives(Node):
        def exec(self, prep_res):
            return {1, 2}

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    with pytest.raises(CacheError) as caught:
        Gives(cache=Cache(store=SQLiteStore("cache.db"))).run({})
    assert "return plain data from exec" in str(caught.value)
    (pickling,) = code_in(caught.value)
    cache = eval(pickling, {"Cache": Cache, "SQLiteStore": SQLiteStore})
    for _ in range(2):
        shared = {}
        Gives(cache=cache).run(shared)
        assert shared["out"] == {1, 2}


def test_advice_for_an_enum_result_json_would_give_back_plain_works(store):
    """JSON would give the enum back as its str: refused, saying to keep its
    value; kept so (and made an enum again), a hit gives the enum too."""

    class Classify(Node):
        def exec(self, prep_res):
            return Label.POSITIVE

        def post(self, shared, prep_res, exec_res):
            shared["label"] = exec_res

    with pytest.raises(CacheError) as caught:
        Classify(name="classify", cache=Cache(store=store)).run({})
    assert "store Label.POSITIVE.value, and Label(value) to have the enum again" in str(
        caught.value
    )

    calls = []

    class AsSaid(Classify):
        def exec(self, prep_res):
            calls.append(prep_res)
            return Label.POSITIVE.value

        def post(self, shared, prep_res, exec_res):
            shared["label"] = Label(exec_res)

    for _ in range(2):  # a miss, then a hit
        shared = {}
        AsSaid(name="classify", cache=Cache(store=store)).run(shared)
        assert shared["label"] is Label.POSITIVE
    assert calls == [None]


def test_advice_for_an_input_with_no_stable_text_works(store):
    class Page:
        def __init__(self, id):
            self.id = id
            self.client = object()  # no stable text: only its address

    class Fetch(BatchNode):
        def prep(self, shared):
            return [Page(1), Page(2)]

        def exec(self, item):
            return item.id * 10

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    with pytest.raises(CacheError) as caught:
        Fetch(cache=Cache(store=store)).run({})
    (written,) = code_in(caught.value)
    cache = eval(written.replace("Cache(", "Cache(store=store, "), {"Cache": Cache, "store": store})
    shared = {}
    Fetch(cache=cache).run(shared)
    assert shared["out"] == [10, 20]


def test_advice_for_an_exec_with_no_python_code_works(store):
    class Builtin(Node):
        exec = len

        def prep(self, shared):
            return "abc"

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    with pytest.raises(CacheError) as caught:
        Builtin(cache=Cache(store=store)).run({})
    (written,) = code_in(caught.value)
    cache = eval(written.replace("Cache(", "Cache(store=store, "), {"Cache": Cache, "store": store})
    shared = {}
    Builtin(cache=cache).run(shared)
    assert shared["out"] == 3
