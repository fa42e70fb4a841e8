"""What durable runs can store and recognise: braidflow's own values in
checkpoints."""

import itertools
import pathlib
import threading

import pytest

import braidflow as bf
from braidflow import (
    AsyncFlow,
    AsyncParallelBatchNode,
    BatchNode,
    CheckpointError,
    Failure,
    Flow,
    MemoryStore,
    Node,
    Parallel,
    SQLiteStore,
)
from braidflow.durable import RecordedError
from braidflow.durable import _codec as codec_module
from braidflow.durable._codec import TAG, Codec


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
