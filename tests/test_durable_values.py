"""What durable runs can store and recognise: braidflow's own values in
checkpoints, a fingerprint for every batch item, and events of any size."""

import collections
import dataclasses
import datetime
import decimal
import enum
import itertools
import json
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import zlib

import pytest

import braidflow as bf
from braidflow import (
    AsyncFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    CheckpointError,
    Failure,
    Flow,
    MemoryStore,
    Node,
    Parallel,
    ResumeError,
    SQLiteStore,
)
from braidflow.durable import RecordedError
from braidflow.durable import _codec as codec_module
from braidflow.durable._codec import JSON_TEXT, TAG, Codec
from braidflow.durable._fingerprint import fingerprint
from braidflow.durable._recorder import EVENT_LIMIT, MESSAGE_LIMIT, PREVIEW


@pytest.fixture(params=["memory-json", "memory-pickle", "sqlite-json", "sqlite-pickle"])
def store(request, tmp_path):
    kind, serializer = request.param.split("-")
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "runs.db", serializer=serializer)
    return MemoryStore(serializer=serializer)


@pytest.fixture(params=["memory", "sqlite"])
def json_store(request, tmp_path):
    return SQLiteStore(tmp_path / "runs.db") if request.param == "sqlite" else MemoryStore()


def chain(*nodes):
    for left, right in itertools.pairwise(nodes):
        left >> right
    return nodes[0]


class Gate:
    """A node that fails while ``down`` (the crash a run resumes after)."""

    def __init__(self):
        self.down = True

    def node(self, name="then"):
        gate = self

        class Then(Node):
            def exec(self, prep_res):
                if gate.down:
                    raise ConnectionError("down")

        return Then(name=name)


def through_a_resume(store, value):
    """Put ``value`` in shared, fail, resume: the value as the store gives it back."""
    gate = Gate()

    class Put(Node):
        def post(self, shared, prep_res, exec_res):
            shared["value"] = value

    flow = Flow(start=chain(Put(name="put"), gate.node()))
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    gate.down = False
    return flow.resume("r", store=store)["value"]


# -- braidflow's own values ------------------------------------------------------------------


class Rejected(Exception):
    """Needs a keyword argument: pickle alone cannot rebuild it."""

    def __init__(self, message, *, code):
        super().__init__(message)
        self.code = code


class Coded(Exception):
    """Its argument is not its args: called again, it would say something else."""

    def __init__(self, code):
        super().__init__(f"code {code}")
        self.code = code


class Pickles(Exception):
    """Says itself how pickle is to rebuild it."""

    def __init__(self, message, *, tries):
        super().__init__(message)
        self.tries = tries

    def __reduce__(self):
        return rebuild_pickles, (self.args[0], self.tries)


def rebuild_pickles(message, tries):
    return Pickles(message, tries=tries)


def noted(error, note="braidflow: noted"):
    error.add_note(note)
    return error


def assert_same_error(back, original):
    assert type(back) is type(original)
    assert str(back) == str(original)
    assert back.args == original.args
    assert back.__dict__ == original.__dict__  # attributes and notes


def assert_same(back, original):
    if isinstance(original, BaseException):
        assert_same_error(back, original)
    elif isinstance(original, Failure):
        assert type(back) is Failure
        assert_same_error(back.error, original.error)
        assert (back.item, back.index) == (original.item, original.index)
    elif isinstance(original, list):
        assert type(back) is list
        assert len(back) == len(original)
        for one, other in zip(back, original, strict=True):
            assert_same(one, other)
    elif isinstance(original, dict):
        assert type(back) is dict
        assert back.keys() == original.keys()
        for key in original:
            assert_same(back[key], original[key])
    else:
        assert back is original if original is bf.MISSING else back == original


def own_values():
    """Everything braidflow puts into shared or a result, in the shapes it does."""
    return {
        "failure": Failure(noted(ValueError("bad")), "branch", 1),
        "collected": [
            "done",
            Failure(
                noted(bf.NodeTimeoutError("slow", node="n", timeout=1.5, attempt=2, item_index=1)),
                {"doc": 1},
                1,
            ),
            Failure(bf.NodeCancelledError("cancelled itself", node="n", item_index=2), None, 2),
            Failure(bf.MergeConflict("two wrote k", key="k", branches=["a", "b"]), "p", 3),
            Failure(bf.CheckpointError("cannot save", node="n", key="k"), [1, "x"], 4),
        ],
        "missing": [bf.MISSING],
        "missing inside": {"before": bf.MISSING, "list": [bf.MISSING, 1]},
        "an error": noted(ConnectionError("refused"), "first note"),
        "keyword-only": Failure(Rejected("no", code=403), "x", 0),
        "args unlike its init": Failure(Coded(7), "y", 0),
        "os error": Failure(FileNotFoundError(2, "No such file", "in.txt"), "z", 0),
        "nested": Failure(ValueError("outer", ValueError("inner")), "w", 5),
        "its own reduce": Failure(Pickles("once more", tries=3), "v", 6),
    }


@pytest.mark.parametrize("name", list(own_values()))
def test_braidflow_s_own_values_come_back_from_every_store(store, name):
    value = own_values()[name]
    back = through_a_resume(store, value)
    assert back is not value  # read back, not the object itself
    if name == "nested":  # an exception in the arguments of another
        assert (type(back.error), str(back.error)) == (ValueError, str(value.error))
        assert back.error.args[0] == "outer"
        assert_same_error(back.error.args[1], value.error.args[1])
        return
    if name == "its own reduce" and store.serializer == "json":  # JSON calls no reducer
        assert isinstance(back.error, RecordedError)
        assert (type(back.error).__name__, str(back.error)) == ("Pickles", "once more")
        assert back.error.tries == 3
        return
    assert_same(back, value)


def test_a_parallel_that_collects_failures_is_checkpointed_and_resumed(store):
    class Ok(Node):
        def post(self, shared, prep_res, exec_res):
            shared["ok"] = True

    class Bad(Node):
        def exec(self, prep_res):
            raise ValueError("bad branch")

    gate = Gate()
    fork = Parallel(Ok(name="ok"), Bad(name="bad"), on_error="collect")
    fork >> gate.node()
    flow = Flow(start=fork, name="job")
    shared = {}
    with pytest.raises(ConnectionError):
        flow.run(shared, store=store, run_id="r")
    (failure,) = shared["branch_failures"]
    gate.down = False
    resumed = flow.resume("r", store=store)
    (back,) = resumed["branch_failures"]
    assert (back.item, back.index) == ("bad", 1)
    assert_same_error(back.error, failure.error)
    assert any("branch 'bad'" in note for note in back.error.__notes__)
    # and a run that goes through with it just completes
    Flow(start=Parallel(Ok(name="ok"), Bad(name="bad"), on_error="collect")).run(
        {}, store=store, run_id="whole"
    )
    assert store.get("whole").status == "completed"


@pytest.mark.parametrize("bound", [None, 2])
async def test_a_collected_batch_s_results_with_failures_survive_a_resume(store, bound):
    gate = Gate()

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2, 3]

        async def exec_async(self, item):
            if item % 2:
                raise ValueError(f"odd {item}")
            return item * 10

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow = AsyncFlow(start=chain(Items(max_concurrency=bound, on_error="collect"), gate.node()))
    shared = {}
    with pytest.raises(ConnectionError):
        await flow.run_async(shared, store=store, run_id="r")
    gate.down = False
    back = (await flow.resume_async("r", store=store))["results"]
    assert [0, 20] == [back[0], back[2]]
    for index in (1, 3):
        assert type(back[index]) is Failure
        assert (back[index].item, back[index].index) == (index, index)
        assert_same_error(back[index].error, shared["results"][index].error)


def test_items_results_holding_braidflow_values_are_reused_on_resume(store):
    ran = []
    failing = [True]

    class Items(BatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            ran.append(item)
            if item == 2 and failing[0]:
                raise ValueError("two")
            if item == 1:
                return bf.MISSING
            return [bf.MISSING, Failure(noted(KeyError("k")), item, item)]

        def post(self, shared, prep_res, exec_res):
            shared["second"] = exec_res[1] is bf.MISSING
            shared["first"] = exec_res[0]

    flow = Flow(start=Items(name="items"))
    with pytest.raises(ValueError, match="two"):
        flow.run({}, store=store, run_id="r")
    failing[0] = False
    resumed = flow.resume("r", store=store)
    assert ran == [0, 1, 2, 2]  # 0 and 1 came from the store
    assert resumed["second"] is True
    missing, failure = resumed["first"]
    assert missing is bf.MISSING
    assert_same_error(failure.error, noted(KeyError("k")))
    assert (failure.item, failure.index) == (0, 0)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_an_exception_comes_back_as_its_class_if_it_can_else_a_stand_in(serializer):
    class Local(Exception):  # no importable name
        pass

    codec = Codec(serializer)
    local = noted(Local("from a function"))
    back = codec.decode(codec.encode(local))
    assert isinstance(back, RecordedError)
    assert not isinstance(back, Local)
    assert (type(back).__name__, str(back)) == ("Local", "from a function")
    assert back.__notes__ == local.__notes__
    assert type(codec.decode(codec.encode(local))) is type(back)  # one stand-in class per name
    assert codec.encode(back) == codec.encode(local)  # and it is written as the original was

    unsavable = noted(ValueError("holds a lock"))
    unsavable.lock = threading.Lock()
    back = codec.decode(codec.encode(unsavable))
    assert isinstance(back, RecordedError)
    assert type(back).__name__ == "ValueError"
    assert (str(back), back.__notes__) == ("holds a lock", unsavable.__notes__)

    tuple_key = KeyError(("a", 1))  # JSON would give its tuple back as a list
    back = codec.decode(codec.encode(tuple_key))
    if serializer == "json":
        assert isinstance(back, RecordedError)
        assert (type(back).__name__, str(back)) == ("KeyError", "('a', 1)")
    else:
        assert_same_error(back, tuple_key)


def test_a_dict_using_the_reserved_key_is_refused_with_where_it_is(json_store):
    for value, where in [
        ({TAG: "mine"}, "the dict has"),
        ([{"a": {TAG: 1}}], r"the dict at \[0\]\['a'\] has"),
        ([Failure(ValueError("x"), {"p": {TAG: 1}}, 0)], r"the dict at \[0\]\.item\['p'\] has"),
    ]:

        class Keeps(Node):
            def post(self, shared, prep_res, exec_res):
                shared["scores"] = value  # noqa: B023 - run at once

        with pytest.raises(CheckpointError, match=rf"shared\['scores'\].*{where} the key '{TAG}'"):
            Flow(start=Keeps(name="keeps")).run({}, store=json_store)

    class Returns(BatchNode):
        def prep(self, shared):
            return ["a"]

        def exec(self, item):
            return {TAG: "Failure"}

    with pytest.raises(CheckpointError, match=rf"item 0 .*the key '{TAG}'"):
        Flow(start=Returns(name="returns")).run({}, store=json_store)


def test_a_payload_without_a_tag_is_read_without_the_object_hook(monkeypatch):
    def hook(record):
        raise AssertionError("the object hook ran")

    monkeypatch.setattr(codec_module, "_untagged", hook)
    codec = Codec("json")
    plain = codec.join([codec.encode({"a": [1, {"b": None}]}), codec.encode("text")])
    assert codec.split(plain) == [{"a": [1, {"b": None}]}, "text"]
    assert codec.unpack(codec.pack([("k", codec.encode({"n": 1}))])) == [("k", {"n": 1})]
    with pytest.raises(AssertionError, match="object hook"):
        codec.split(codec.join([codec.encode(bf.MISSING)]))


def test_a_non_json_value_is_named_where_it_is(json_store):
    class Keeps(Node):
        def post(self, shared, prep_res, exec_res):
            shared["failures"] = [Failure(ValueError("x"), pathlib.Path("/in"), 0)]

    with pytest.raises(CheckpointError, match=r"the PosixPath at \[0\]\.item is not JSON data"):
        Flow(start=Keeps(name="keeps")).run({}, store=json_store)


class Label(enum.StrEnum):
    POSITIVE = "positive"


class Size(enum.IntEnum):
    ONE = 1


class Name(str):
    """A str of a class of its own."""


# What JSON writes as its base type and would give back as that: the value, and what is said.
SUBCLASSES = {
    "enum": (
        lambda: {"label": Label.POSITIVE},
        r"the enum Label\.POSITIVE at \['label'\] would come back as the plain str "
        r"'positive'; store Label\.POSITIVE\.value",
    ),
    "IntEnum": (
        lambda: [Size.ONE],
        r"the enum Size\.ONE at \[0\] would come back as the plain int 1; store Size\.ONE\.value",
    ),
    "Counter": (
        lambda: collections.Counter("aab"),
        r"the Counter would come back as a plain dict; store dict\(value\) instead",
    ),
    "OrderedDict": (
        lambda: [{"by": collections.OrderedDict(b=1, a=2)}],
        r"the OrderedDict at \[0\]\['by'\] would come back as a plain dict; store dict\(value\)",
    ),
    "str subclass": (
        lambda: ["a", Name("b")],
        r"the Name at \[1\] would come back as a plain str; store str\(value\)",
    ),
    "IntEnum as a key": (
        lambda: {"counts": {Size.ONE: 2}},
        r"the key <Size\.ONE: 1> \(Size\) at \['counts'\] would come back as "
        r'the string "1"; key it by a str: str\(Size\.ONE\.value\)',
    ),
}


@pytest.mark.parametrize("kind", list(SUBCLASSES))
def test_a_subclass_of_a_json_type_is_refused_not_given_back_as_its_base(json_store, kind):
    """JSON writes an enum of str as the str, a Counter as a dict...: a resumed
    run would get the plain value back (no ``.value``), so it is refused, as
    a tuple is, saying what to store; pickle keeps it as it is."""
    make, said = SUBCLASSES[kind]

    class Keeps(Node):
        def post(self, shared, prep_res, exec_res):
            shared["value"] = make()

    class Returns(BatchNode):
        def prep(self, shared):
            return ["a"]

        def exec(self, item):
            return make()

    with pytest.raises(CheckpointError, match=rf"shared\['value'\] holds .*\({said}"):
        Flow(start=Keeps(name="keeps")).run({}, store=json_store)
    with pytest.raises(CheckpointError, match=rf"item 0 .*{said}"):
        Flow(start=Returns(name="returns")).run({}, store=json_store)
    pickled = MemoryStore(serializer="pickle")
    Flow(start=Keeps(name="keeps")).run({}, store=pickled, run_id="r")
    back = bf.stored_state("r", store=pickled)["value"]
    assert (type(back), back) == (type(make()), make())


def test_a_key_of_a_str_subclass_is_kept_as_its_string_and_found_by_it(json_store):
    # A StrEnum naming the keys of shared (and of a dict in it): a dict finds
    # a key by the enum or by its string, so a resumed run's lookups hold.
    fail = [True]

    class Keys(Node):
        def post(self, shared, prep_res, exec_res):
            shared[Label.POSITIVE] = 1
            shared["by"] = {Label.POSITIVE: 2}

    class Last(Node):
        def post(self, shared, prep_res, exec_res):
            if fail[0]:
                raise RuntimeError("fails once")
            shared["found"] = [shared[Label.POSITIVE], shared["by"][Label.POSITIVE]]

    def flow():
        keys = Keys(name="keys")
        keys >> Last(name="last")
        return Flow(start=keys)

    with pytest.raises(RuntimeError, match="fails once"):
        flow().run({}, store=json_store, run_id="r")
    fail[0] = False
    assert flow().resume("r", store=json_store)["found"] == [1, 2]


# -- fingerprints of batch items ------------------------------------------------------------


@pytest.mark.parametrize(
    "item", [0, "x", [1, "a", None, 2.5], {"k": [1, {"n": True}]}, (1, "two"), {"1": [(2, 3)]}]
)
def test_a_json_item_s_fingerprint_is_what_it_was(item):
    """Runs recorded before still resume: the CRC-32 of the compact JSON
    (with pickle, of the pickle of plain data)."""
    assert fingerprint(Codec("json"), item) == zlib.crc32(JSON_TEXT(item).encode())
    assert fingerprint(Codec("pickle"), item) == zlib.crc32(
        pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    )
    assert fingerprint(Codec("json"), {"a": [1, 2]}) == zlib.crc32(b'{"a":[1,2]}') == 399956868


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Job:
    path: pathlib.Path
    tags: frozenset


@dataclasses.dataclass(slots=True)
class Slim:
    n: int


Point = collections.namedtuple("Point", "x y")


class Plain:
    """An object whose identity is its plain attributes."""

    def __init__(self, name, when):
        self.name, self.when = name, when


UTC = datetime.UTC
# Each kind of item: three items, and the first two as a prep that changed gives them.
KINDS = {
    "paths": (
        lambda: [pathlib.Path("/a"), pathlib.Path("/b"), pathlib.Path("/c")],
        lambda: [pathlib.Path("/x"), pathlib.Path("/y")],
    ),
    "tuples": (
        lambda: [("a", pathlib.Path("/a")), ("b", 1), ("c", 2)],
        lambda: [("a", pathlib.Path("/z")), ("b", 1.0)],
    ),
    "sets": (
        lambda: [{"alpha", "beta", "gamma"}, {"one"}, set()],
        lambda: [{"alpha", "beta", "delta"}, {"one", "two"}],
    ),
    "frozensets": (
        lambda: [frozenset({"p", "q"}), frozenset({1, 2}), frozenset()],
        lambda: [frozenset({"p", "r"}), frozenset({1})],
    ),
    "dataclasses": (
        lambda: [Job(pathlib.Path("/j"), frozenset({"x"})), Slim(1), Slim(2)],
        lambda: [Job(pathlib.Path("/j"), frozenset({"y"})), Slim(-1)],
    ),
    "namedtuples": (
        lambda: [Point(1, 2), Point(3, 4), Point(5, 6)],
        lambda: [Point(2, 1), Point(3, 5)],
    ),
    "enums": (lambda: [Color.RED, Color.BLUE, Color.RED], lambda: [Color.BLUE, Color.RED]),
    "datetimes": (
        lambda: [
            datetime.datetime(2024, 5, 1, 12, tzinfo=UTC),
            datetime.date(2024, 5, 1),
            datetime.timedelta(hours=1),
        ],
        lambda: [datetime.datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC), datetime.date(2024, 5, 2)],
    ),
    "decimals": (
        lambda: [decimal.Decimal("1.10"), decimal.Decimal("2"), decimal.Decimal("3")],
        lambda: [decimal.Decimal("1.11"), decimal.Decimal("2.0")],
    ),
    "bytes": (lambda: [b"ab", bytearray(b"cd"), b""], lambda: [b"ac", bytearray(b"ce")]),
    "nested": (
        lambda: [{"k": {1, 2}, "p": (pathlib.Path("/n"),)}, [Slim(1), {"s"}], {Color.RED: 1}],
        lambda: [{"k": {1, 3}, "p": (pathlib.Path("/n"),)}, [Slim(1), {"t"}]],
    ),
    "objects": (
        lambda: [Plain("a", datetime.date(2020, 1, 1)), Plain("b", None), Plain("c", [1])],
        lambda: [Plain("a", datetime.date(2020, 1, 2)), Plain("b", 0)],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_item_that_changed_is_told_apart_and_an_equal_one_is_not(store, kind):
    make, changed = KINDS[kind]
    ran = []
    state = {"items": make, "failing": True}

    class Work(BatchNode):
        def prep(self, shared):
            return state["items"]()  # new objects each time

        def exec(self, item):
            ran.append(len(ran))
            if len(ran) == 3 and state["failing"]:
                raise ValueError("the third item")
            return type(item).__name__

        def post(self, shared, prep_res, exec_res):
            shared["done"] = exec_res

    flow = Flow(start=Work(name="work"))
    for run_id in ("same", "changed"):
        with pytest.raises(ValueError, match="third"):
            flow.run({}, store=store, run_id=run_id)
        ran.clear()
    state["failing"] = False

    done = flow.resume("same", store=store)["done"]  # equal items, made again
    assert len(done) == 3
    assert len(ran) == 1  # only the third ran again

    first, second = changed()
    state["items"] = lambda: [first, make()[1], make()[2]]
    with pytest.raises(ResumeError, match=r"node 'work' \(Work\): item 0 is not the one recorded"):
        flow.resume("changed", store=store)
    state["items"] = lambda: [make()[0], second, make()[2]]
    with pytest.raises(ResumeError, match="item 1 is not the one recorded"):
        flow.resume("changed", store=store)


def test_the_paths_of_the_example_are_told_apart(store):
    """Items /a /b /c, a failure at /c; prep then gives /x /y /c: resuming
    pairs no old result with a new item."""
    items = [pathlib.Path("/a"), pathlib.Path("/b"), pathlib.Path("/c")]
    failing = [True]

    class Upper(BatchNode):
        def prep(self, shared):
            return items

        def exec(self, path):
            if path.name == "c" and failing[0]:
                raise OSError("c is busy")
            return str(path).upper()

        def post(self, shared, prep_res, exec_res):
            shared["upper"] = exec_res

    flow = Flow(start=Upper(name="upper"))
    with pytest.raises(OSError, match="busy"):
        flow.run({}, store=store, run_id="r")
    failing[0] = False
    items[:2] = [pathlib.Path("/x"), pathlib.Path("/y")]
    with pytest.raises(ResumeError, match="item 0 is not the one recorded"):
        flow.resume("r", store=store)
    items[:2] = [pathlib.Path("/a"), pathlib.Path("/b")]
    assert flow.resume("r", store=store)["upper"] == ["/A", "/B", "/C"]


ITEMS_MODULE = """
import collections, dataclasses, datetime, decimal, enum, pathlib

class Color(enum.Enum):
    RED = "red"

@dataclasses.dataclass(frozen=True)
class Job:
    path: pathlib.Path
    tags: frozenset

Point = collections.namedtuple("Point", "x y")

class Plain:
    def __init__(self, name):
        self.name = name

def items():
    return [
        pathlib.Path("/a"), {"alpha", "beta", "gamma", "delta", "epsilon"},
        frozenset({"x", "y", "z", "w"}), Job(pathlib.Path("/j"), frozenset({"p", "q", "r"})),
        Point(1, {"s", "t"}), Color.RED, datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
        decimal.Decimal("1.10"), b"bytes", [{"k": {"u", "v", "w"}}, (pathlib.Path("/n"),)],
        Plain({"m", "n", "o"}), {("a", "b"): {"c", "d"}}, float("nan"),
    ]
"""

FINGERPRINTS = """
import json, sys
from braidflow.durable._codec import Codec
from braidflow.durable._fingerprint import fingerprint
from items_here import items
print(json.dumps([fingerprint(Codec(k), item) for k in ("json", "pickle") for item in items()]))
"""


@pytest.mark.slow
def test_fingerprints_are_the_same_in_every_process(tmp_path):
    """Across processes with different string hashes (set order differs), and
    the same as in this one for the standard library's kinds."""
    (tmp_path / "items_here.py").write_text(ITEMS_MODULE)
    source = pathlib.Path(bf.__file__).parent.parent
    seen = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(source)])
        child = subprocess.run(
            [sys.executable, "-c", FINGERPRINTS],
            capture_output=True,
            text=True,
            env=env,
            timeout=50,
        )
        assert child.returncode == 0, child.stderr
        seen.append(json.loads(child.stdout))
    assert seen[0] == seen[1] == seen[2]
    assert len(set(seen[0][:13])) == 13  # thirteen different items, thirteen fingerprints
    here = [
        fingerprint(Codec(kind), item)
        for kind in ("json", "pickle")
        for item in (pathlib.Path("/a"), decimal.Decimal("1.10"), b"bytes")
    ]
    assert here == [seen[0][i] for i in (0, 7, 8, 13, 20, 21)]


class Client:
    """A live object: a connection's lock."""

    def __init__(self):
        self.url = "https://example.com"
        self.lock = threading.Lock()


class Marker:
    """Nothing but its identity."""


def refused_items():
    return {
        "identity": (object(), r"the object has no state but its identity"),
        "marker": (Marker(), r"the Marker has no state but its identity"),
        "client": (
            {"with": [Client()]},
            r"the lock cannot be pickled .* \(at item\['with'\]\[0\]\.lock\)",
        ),
        "generator": ((n for n in range(2)), "the generator cannot be pickled"),
    }


@pytest.mark.parametrize("what", list(refused_items()))
def test_an_item_without_a_stable_fingerprint_is_refused_before_it_runs(json_store, what):
    item, said = refused_items()[what]
    ran = []

    class Items(BatchNode):
        def prep(self, shared):
            return ["fine", item, "never"]

        def exec(self, one):
            ran.append(one)
            return 1

    with pytest.raises(
        CheckpointError, match=rf"node 'items' \(Items\): item 1 cannot be fingerprinted: {said}"
    ) as caught:
        Flow(start=Items(name="items")).run({}, store=json_store)
    assert ran == ["fine"]
    assert "keep clients, connections and other live objects" in str(caught.value)
    assert caught.value.node == "items"


@pytest.mark.parametrize("bound", [None, 1, 2])
async def test_a_parallel_batch_refuses_such_an_item_too(json_store, bound):
    ran = []

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["fine", Client(), "never"]

        async def exec_async(self, one):
            ran.append(one)
            return 1

    flow = AsyncFlow(start=Items(name="items", max_concurrency=bound))
    with pytest.raises(CheckpointError, match=r"'items' \(Items\): item 1 cannot be fingerprinted"):
        await flow.run_async({}, store=json_store)
    assert all(not isinstance(one, Client) for one in ran)


def test_a_batch_flow_refuses_a_parameter_set_holding_a_live_object(json_store):
    class Each(BatchFlow):
        def prep(self, shared):
            return [{"n": 1}, {"n": 2, "client": Client()}]

    with pytest.raises(
        CheckpointError, match=r"item 1 cannot be fingerprinted.*at item\['client'\]\.lock"
    ):
        Each(start=Node(name="inner"), name="each").run({}, store=json_store)


def test_a_resumed_batch_whose_recorded_item_is_now_refused_says_so(json_store):
    items = ["a", "b"]
    failing = [True]

    class Items(BatchNode):
        def prep(self, shared):
            return items

        def exec(self, one):
            if one == "b" and failing[0]:
                raise ValueError("b")
            return 1

    flow = Flow(start=Items(name="items"))
    with pytest.raises(ValueError, match="b"):
        flow.run({}, store=json_store, run_id="r")
    items[0], failing[0] = Marker(), False
    with pytest.raises(CheckpointError, match=r"'items' \(Items\): item 0 cannot be fingerprinted"):
        flow.resume("r", store=json_store)


# -- events of any size, stores that refuse some -------------------------------------------


def test_a_large_event_is_kept_cut_down_and_recording_goes_on(json_store):
    class Loud(Node):
        def exec(self, prep_res):
            self.emit("x" * 2_000_000)
            self.emit({"small": True})

    flow = Flow(start=chain(Loud(name="loud"), Node(name="after")), name="job")
    seen = []
    flow.run({}, store=json_store, run_id="r", observers=[seen.append], record_events=True)
    lines = json_store.events("r")
    assert max(len(line) for line in lines) <= EVENT_LIMIT
    kept = bf.recorded_events(json_store, "r")
    assert [event.kind for event in kept] == [event.kind for event in seen]
    big, small = (event for event in kept if event.kind == "emit")
    assert big.data[TAG] == "cut"
    assert big.data["size"] > 2_000_000
    assert big.data["preview"] == '"' + "x" * (PREVIEW - 1)
    assert small.data == {"small": True}
    assert kept[-1].kind == "run_end"
    assert [event.node for event in kept if event.kind == "node_start"] == ["job", "loud", "after"]


def test_an_event_with_a_huge_error_message_is_cut_too(json_store):
    class Fails(Node):
        def exec(self, prep_res):
            raise ValueError("y" * 300_000)

    with pytest.raises(ValueError, match="yyy"):
        Flow(start=Fails(name="fails")).run({}, store=json_store, run_id="r", record_events=True)
    kept = bf.recorded_events(json_store, "r")
    assert all(len(line) <= EVENT_LIMIT for line in json_store.events("r"))
    error = next(event for event in kept if event.kind == "error")
    assert type(error.error).__name__ == "ValueError"
    assert str(error.error).startswith("y" * MESSAGE_LIMIT + "... [cut: 300,000 characters]")
    assert error.data[TAG] == "cut"
    assert error.data["size"] > 300_000
    assert kept[-1].kind == "run_end"


class Refusing(MemoryStore):
    """Refuses to add events while ``refuse(lines)`` says so; counts its calls."""

    def __init__(self, refuse):
        super().__init__()
        self.refuse = refuse
        self.calls = []

    def add_events(self, run_id, records):
        self.calls.append(list(records))
        if self.refuse(records, len(self.calls)):
            raise bf.StoreError("the event log is full")
        super().add_events(run_id, records)


def many_events(store, observer):
    """A run of about 2,400 events: five batches of 500 and a last one."""

    class Marks(BatchNode):
        def prep(self, shared):
            return range(1200)

        def exec(self, item):
            return item

    flow = Flow(start=chain(Node(name="first"), Marks(name="marks")), name="job")
    flow.run({}, store=store, run_id="r", observers=[observer], record_events=True)


def test_a_batch_refused_once_is_written_with_the_next():
    store = Refusing(lambda records, call: call == 1)
    seen = []
    many_events(store, seen.append)  # no warning: nothing is lost
    assert [event.kind for event in bf.recorded_events(store, "r")] == [e.kind for e in seen]
    assert len(store.calls[1]) == 1000  # the refused batch and the next, together


def test_a_batch_refused_twice_is_dropped_with_one_warning_and_recording_goes_on():
    store = Refusing(lambda records, call: any('"node": "first"' in line for line in records))
    seen = []
    with pytest.warns(RuntimeWarning) as caught:
        many_events(store, seen.append)
    assert len(caught) == 1
    assert "refused 500 events of run 'r' twice" in str(caught[0].message)
    assert "the event log is full" in str(caught[0].message)
    kept = bf.recorded_events(store, "r")
    assert [(e.kind, e.node, e.item) for e in kept] == [
        (e.kind, e.node, e.item) for e in seen[500:]
    ]
    assert kept[-1].kind == "run_end"


def test_a_last_batch_refused_twice_is_warned_about_as_the_run_s_last_events():
    store = Refusing(lambda records, call: any('"kind": "run_end"' in line for line in records))
    with pytest.warns(RuntimeWarning) as caught:
        many_events(store, lambda event: None)
    message = str(caught[0].message)
    assert "They were among the run's last events: it is ending" in message
    assert "goes on" not in message  # (the run ended: nothing of it goes on)


def test_a_store_that_refuses_every_batch_is_still_offered_each_one_and_warned_about_once():
    store = Refusing(lambda records, call: True)
    seen = []
    with pytest.warns(RuntimeWarning, match="refused") as caught:
        many_events(store, seen.append)
    assert len(caught) == 1  # not the observer's drop: the recorder stayed
    assert store.events("r") == []
    assert '"kind": "run_end"' in store.calls[-1][-1]  # offered up to the end
    # Each batch twice: alone, then with the next (the last: with the one
    # before it, then alone at once).
    assert sum(len(call) for call in store.calls) == 2 * len(seen)


def test_the_last_batch_refused_once_is_offered_again_at_once():
    store = Refusing(
        lambda records, call: any('"run_end"' in line for line in records) and call == 5
    )
    seen = []
    many_events(store, seen.append)
    assert [event.kind for event in bf.recorded_events(store, "r")] == [e.kind for e in seen]
