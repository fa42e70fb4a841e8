"""Branch isolation and joins: what a branch's view copies, and that a join applies
what the branches changed since the fork, never undoing a write made meanwhile
by other code (the sub-flows of a parallel batch flow that is not isolated)."""

import array
import asyncio
import copy
import dataclasses
import threading
import time
import typing
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braidflow import (
    MISSING,
    AsyncNode,
    AsyncParallelBatchFlow,
    MergeConflict,
    Parallel,
    SharedView,
)
from braidflow._isolation import data_copy
from braidflow._merge import merge

Pair = namedtuple("Pair", "tags name")


class Typed(typing.NamedTuple):
    items: list
    label: str = "t"


class Point(tuple):
    """A tuple subclass that is not a namedtuple, with its own __new__ and attributes."""

    def __new__(cls, x, y):
        return super().__new__(cls, (x, y))


class Tags(list):
    pass


class Names(set):
    pass


class Table(dict):
    pass


@dataclasses.dataclass
class Box:
    items: list
    count: int = 0


@dataclasses.dataclass(frozen=True)
class FrozenBox:
    items: list


@dataclasses.dataclass(slots=True)
class SlotBox:
    items: list


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenSlotBox:
    items: list
    meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class Handle:
    """A dataclass compared by identity: copies of it are never ==."""

    items: list


# -- a fork beside other code writing the store ------------------------------------------


class Call(AsyncNode):
    def __init__(self, body, name):
        super().__init__(name=name)
        self.body = body

    async def post_async(self, shared, prep_res, exec_res):
        await self.body(shared)


class Side(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        return self.params["side"]


class Both(AsyncParallelBatchFlow):
    """Not isolated: both sub-flows write the one shared dict, as in PocketFlow."""

    async def prep_async(self, shared):
        return [{"side": "fork"}, {"side": "outside"}]


def beside(branches, outside, merge=None, fork=None):
    """A parallel batch flow of two sub-flows on one store: one forks ``branches``
    (async functions of shared) in a Parallel, the other runs ``outside``."""
    side = Side()
    side - "fork" >> (
        fork
        if fork is not None
        else Parallel(*(Call(body, f"b{i}") for i, body in enumerate(branches)), merge=merge)
    )
    side - "outside" >> Call(outside, "outside")
    return Both(start=side)


class Recording(dict):
    """A store that notes the keys written to it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self.writes.append(key)
        super().__delitem__(key)

    def pop(self, key, *default):
        self.writes.append(key)
        return super().pop(key, *default)


# -- a branch that only reads never writes ------------------------------------------------

READ_ONLY_CASES = {
    "list": (lambda: [], lambda v: v.append("x"), lambda v: v == ["x"]),
    "dict": (lambda: {"k": 0}, lambda v: v.update(k=1, n=2), lambda v: v == {"k": 1, "n": 2}),
    "set": (lambda: {1}, lambda v: v.add(2), lambda v: v == {1, 2}),
    "nested": (
        lambda: {"inner": {"items": [1]}, "other": [[]]},
        lambda v: (v["inner"]["items"].append(2), v["other"][0].append(3)),
        lambda v: v == {"inner": {"items": [1, 2]}, "other": [[3]]},
    ),
    "namedtuple": (
        lambda: Pair([], "n"),
        lambda v: v.tags.append("x"),
        lambda v: v == Pair(["x"], "n"),
    ),
    "dataclass": (
        lambda: Box([]),
        lambda v: (v.items.append("x"), setattr(v, "count", 5)),
        lambda v: v == Box(["x"], 5),
    ),
    "dataclass by identity": (
        lambda: Handle([]),
        lambda v: v.items.append("x"),
        lambda v: v.items == ["x"],
    ),
}


@pytest.mark.parametrize("kind", list(READ_ONLY_CASES))
async def test_a_branch_that_only_reads_never_undoes_a_write_made_meanwhile(kind):
    make, mutate, expected = READ_ONLY_CASES[kind]
    touched, written = asyncio.Event(), asyncio.Event()

    async def reader(shared):
        value = shared["value"]  # copied for the branch: a read, not a change
        repr(value)
        touched.set()
        await written.wait()
        assert shared["value"] is value  # the branch goes on seeing its own copy

    async def sibling(shared):
        shared["sibling"] = True

    async def outside(shared):
        await touched.wait()
        mutate(shared["value"])  # in place, on the live store
        written.set()

    original = make()
    shared = Recording(value=original)
    await beside([reader, sibling], outside).run_async(shared)
    assert shared["value"] is original
    assert expected(shared["value"])
    assert shared["sibling"] is True
    assert "value" not in shared.writes


async def test_a_branch_that_only_reads_never_restores_a_key_replaced_or_deleted_meanwhile():
    touched, written = asyncio.Event(), asyncio.Event()

    async def reader(shared):
        assert shared["replaced"] == [1]
        assert shared["gone"] == {"a": 1}
        assert shared["scalar"] == 1
        assert shared.get("absent") is None
        touched.set()
        await written.wait()
        # Each key reads as it did when the branch first touched it.
        assert shared["scalar"] == 1
        assert "gone" in shared
        assert "absent" not in shared
        assert sorted(shared) == ["gone", "replaced", "scalar"]

    async def outside(shared):
        await touched.wait()
        shared["replaced"] = ["new"]
        del shared["gone"]
        shared["scalar"] = 2
        shared["absent"] = "here now"
        written.set()

    shared = {"replaced": [1], "gone": {"a": 1}, "scalar": 1}
    await beside([reader], outside).run_async(shared)
    assert shared == {"replaced": ["new"], "scalar": 2, "absent": "here now"}


async def test_a_key_written_then_restored_is_no_change():
    touched, written = asyncio.Event(), asyncio.Event()

    async def restores(shared):
        shared["log"] = ["temporary"]  # written before any read: noted as it was then
        shared["n"] = 5
        shared["cfg"]["mode"] = "fast"  # in place, then back
        touched.set()
        await written.wait()
        shared["log"] = []
        shared["n"] = 0
        shared["cfg"]["mode"] = "slow"

    async def outside(shared):
        await touched.wait()
        shared["log"].append("kept")
        shared["n"] = 7
        shared["cfg"]["extra"] = 1
        written.set()

    shared = Recording(log=[], n=0, cfg={"mode": "slow"})
    await beside([restores], outside).run_async(shared)
    assert shared == {"log": ["kept"], "n": 7, "cfg": {"mode": "slow", "extra": 1}}
    assert shared.writes == ["n"]  # only the outside's


async def test_a_deleted_key_is_a_change_and_one_deleted_then_restored_is_not():
    touched, written = asyncio.Event(), asyncio.Event()

    async def deletes(shared):
        del shared["dropped"]
        del shared["restored"]
        touched.set()
        await written.wait()
        shared["restored"] = [1]  # equal to the value at the fork
        assert "dropped" not in shared

    async def outside(shared):
        await touched.wait()
        shared["dropped"].append("late")
        shared["restored"].append("kept")
        written.set()

    shared = {"dropped": [0], "restored": [1]}
    await beside([deletes], outside).run_async(shared)
    assert shared == {"restored": [1, "kept"]}  # the deletion is the branch's change


def test_a_view_compares_with_the_value_when_it_first_touched_a_key():
    store = {"log": [], "n": 1, "d": {"a": 1}, "gone": 0}
    view = SharedView(store)
    log = view["log"]
    assert view["n"] == 1
    view["d"] = {"a": 1}  # written first: noted as the store held it then
    del view["gone"]
    store["log"].append("outside")
    store["n"] = 2
    store["d"]["b"] = 2
    store["gone"] = 5
    assert view.changes() == {"gone": MISSING}
    assert view.changes().before == {"gone": 0}
    log.append("mine")
    assert view.changes() == {"log": ["mine"], "gone": MISSING}
    assert view.changes().before["log"] == []


# -- merge rules when the store moved meanwhile -------------------------------------------


def fork_of(store, *bodies):
    """Views of ``store``, each changed by one body (a function of the view)."""
    views = [SharedView(store) for _ in bodies]
    for view, body in zip(views, bodies, strict=True):
        body(view, "touch")
    return views


def changes_of(views, *bodies):
    for view, body in zip(views, bodies, strict=True):
        body(view, "change")
    return [(f"b{i}", view.changes()) for i, view in enumerate(views)]


def appends(item):
    def body(view, stage):
        if stage == "touch":
            view["log"]
        else:
            view["log"].append(item)

    return body


def test_extend_appends_each_branch_s_additions_to_the_list_at_the_join():
    store = {"log": ["a"]}
    bodies = (appends("b1"), appends("b2"))
    views = fork_of(store, *bodies)
    store["log"].append("outside")
    assert merge(store, changes_of(views, *bodies), {"log": "extend"}) == {
        "log": ["a", "outside", "b1", "b2"]
    }
    # One branch, the store moved: the rule still applies, onto the store's value.
    store = {"log": ["a"]}
    views = fork_of(store, bodies[0])
    store["log"] = ["replaced"]
    assert merge(store, changes_of(views, bodies[0]), {"log": "extend"}) == {
        "log": ["replaced", "b1"]
    }
    # The key removed meanwhile: the additions onto an empty list.
    store = {"log": ["a"]}
    views = fork_of(store, bodies[0])
    del store["log"]
    assert merge(store, changes_of(views, bodies[0]), {"log": "extend"}) == {"log": ["b1"]}


def test_extend_cannot_combine_a_branch_that_rewrote_the_list_with_a_moved_store():
    def rewrites(view, stage):
        if stage == "touch":
            view["log"]
        else:
            view["log"][0] = "changed"

    store = {"log": ["a"]}
    views = fork_of(store, rewrites)
    changes = changes_of(views, rewrites)
    assert merge(store, changes, {"log": "extend"}) == {"log": ["changed"]}  # store unmoved
    store["log"].append("outside")
    with pytest.raises(MergeConflict, match="did not only append"):
        merge(store, changes, {"log": "extend"})
    store["log"] = "text"
    with pytest.raises(MergeConflict, match="not a list"):
        merge(store, changes, {"log": "extend"})


def adds(amount):
    def body(view, stage):
        if stage == "touch":
            view["n"]
        else:
            view["n"] += amount

    return body


def test_sum_adds_each_branch_s_change_to_the_value_at_the_join():
    store = {"n": 10}
    bodies = (adds(1), adds(2))
    views = fork_of(store, *bodies)
    store["n"] = 100
    changes = changes_of(views, *bodies)
    assert [c.before for _, c in changes] == [{"n": 10}, {"n": 10}]
    assert merge(store, changes, {"n": "sum"}) == {"n": 103}
    store = {"n": 10}
    views = fork_of(store, bodies[0])
    store["n"] += 5
    assert merge(store, changes_of(views, bodies[0]), {"n": "sum"}) == {"n": 16}
    # Without a rule, one branch's value is its value (the last write wins).
    assert merge(store, changes_of(views, bodies[0]), {}) == {"n": 12}


def sets(inner, value):
    def body(view, stage):
        if stage == "touch":
            view["d"]
        elif value is MISSING:
            del view["d"][inner]
        else:
            view["d"][inner] = value

    return body


def test_update_applies_each_branch_s_inner_changes_onto_the_dict_at_the_join():
    store = {"d": {"k": 0, "gone": 1, "mine": 0}}
    bodies = (sets("a", 1), sets("gone", MISSING), sets("mine", 2))
    views = fork_of(store, *bodies)
    store["d"]["outside"] = 9
    store["d"]["mine"] = 5  # changed by a branch too: the branch's change is applied
    assert merge(store, changes_of(views, *bodies), {"d": "update"}) == {
        "d": {"k": 0, "mine": 2, "outside": 9, "a": 1}
    }
    store = {"d": {"k": 0}}
    views = fork_of(store, bodies[0])
    store["d"] = {"new": True}
    assert merge(store, changes_of(views, bodies[0]), {"d": "update"}) == {
        "d": {"new": True, "a": 1}
    }
    store["d"] = ["not", "a", "dict"]
    with pytest.raises(MergeConflict, match="not a dict"):
        merge(store, changes_of(views, bodies[0]), {"d": "update"})


def test_last_and_a_function_get_the_value_at_the_fork_and_their_result_is_written():
    calls = []

    def combine(before, values):
        calls.append((copy.deepcopy(before), values))
        return before + [v[-1] for v in values]

    store = {"log": ["a"], "n": 1}
    bodies = (appends("b1"), appends("b2"))
    views = fork_of(store, *bodies)
    store["log"].append("outside")
    assert merge(store, changes_of(views, *bodies), {"log": combine}) == {"log": ["a", "b1", "b2"]}
    assert calls == [(["a"], [["a", "b1"], ["a", "b2"]])]
    views = fork_of(store, *bodies)
    store["log"].append("again")
    assert merge(store, changes_of(views, *bodies), {"log": "last"}) == {
        "log": ["a", "outside", "b2"]
    }
    # One branch, the store moved: a function still gets the value at the fork.
    calls.clear()
    store = {"log": ["a"]}
    views = fork_of(store, bodies[0])
    store["log"].append("outside")
    assert merge(store, changes_of(views, bodies[0]), {"log": combine}) == {"log": ["a", "b1"]}
    assert calls == [(["a"], [["a", "b1"]])]


async def test_rules_at_a_real_join_keep_what_was_written_meanwhile():
    touched, written = asyncio.Event(), asyncio.Event()
    count = 0

    def branch(tag, amount, inner):
        async def body(shared):
            nonlocal count
            shared["log"].append(tag)
            shared["n"] += amount
            shared["d"][inner] = tag
            count += 1
            if count == 2:
                touched.set()
            await written.wait()

        return body

    async def outside(shared):
        await touched.wait()
        shared["log"].append("outside")
        shared["n"] += 100
        shared["d"]["outside"] = True
        written.set()

    shared = {"log": [], "n": 0, "d": {}}
    flow = beside(
        [branch("a", 1, "x"), branch("b", 2, "y")],
        outside,
        merge={"log": "extend", "n": "sum", "d": "update"},
    )
    await flow.run_async(shared)
    assert shared == {
        "log": ["outside", "a", "b"],
        "n": 103,
        "d": {"outside": True, "x": "a", "y": "b"},
    }


async def test_an_isolated_batch_flow_joins_onto_the_store_as_it_is_at_the_join():
    touched, written = asyncio.Event(), asyncio.Event()
    count = 0

    class Work(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            nonlocal count
            assert shared["seen"] == []  # read only
            shared["log"].append(self.params["i"])
            count += 1
            if count == 2:
                touched.set()
            await written.wait()

    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"i": 0}, {"i": 1}]

    async def outside(shared):
        await touched.wait()
        shared["seen"].append("outside")
        shared["log"].append("outside")
        written.set()

    shared = {"seen": [], "log": []}
    isolated = Each(start=Work(), isolate=True, merge={"log": "extend"})
    await beside([], outside, fork=isolated).run_async(shared)
    assert shared == {"seen": ["outside"], "log": ["outside", 0, 1]}


# -- what a branch's view copies ---------------------------------------------------------

ISOLATION_CASES = {
    "dict": (lambda: {"a": [1]}, lambda v: v["a"].append(2)),
    "OrderedDict": (lambda: OrderedDict(a=1, b=[2]), lambda v: v.move_to_end("a")),
    "defaultdict": (lambda: defaultdict(list, a=[1]), lambda v: v["new"].append(1)),
    "Counter": (lambda: Counter("aab"), lambda v: v.update("c")),
    "dict subclass": (lambda: Table(a=[1]), lambda v: v["a"].append(2)),
    "list": (lambda: [[1], 2], lambda v: v[0].append(3)),
    "list subclass": (lambda: Tags([1, [2]]), lambda v: v[1].append(3)),
    "deque": (lambda: deque([[1]], maxlen=3), lambda v: (v[0].append(2), v.append(3))),
    "set": (lambda: {1, 2}, lambda v: v.discard(1)),
    "set subclass": (lambda: Names({"a"}), lambda v: v.add("b")),
    "bytearray": (lambda: bytearray(b"ab"), lambda v: v.extend(b"c")),
    "array": (lambda: array.array("i", [1, 2]), lambda v: v.append(3)),
    "tuple": (lambda: ([1], "x"), lambda v: v[0].append(2)),
    "namedtuple": (lambda: Pair([], "n"), lambda v: v.tags.append("x")),
    "typing.NamedTuple": (lambda: Typed([1]), lambda v: v.items.append(2)),
    "tuple subclass": (lambda: Point([1], 2), lambda v: v[0].append(2)),
    "struct_time": (
        lambda: time.struct_time(([1], 2, 3, 4, 5, 6, 7, 8, 9)),
        lambda v: v[0].append(2),
    ),
    "dataclass": (lambda: Box([1]), lambda v: (v.items.append(2), setattr(v, "count", 1))),
    "frozen dataclass": (lambda: FrozenBox([1]), lambda v: v.items.append(2)),
    "slots dataclass": (lambda: SlotBox([1]), lambda v: v.items.append(2)),
    "frozen slots dataclass": (
        lambda: FrozenSlotBox([1], {"k": [1]}),
        lambda v: (v.items.append(2), v.meta["k"].append(2)),
    ),
    "dataclass by identity": (lambda: Handle([1]), lambda v: v.items.append(2)),
    "nested": (
        lambda: {"t": (Box([Pair({"s": {1}}, "p")]),), "q": deque([[1]])},
        lambda v: (v["t"][0].items[0].tags["s"].add(2), v["q"][0].append(2)),
    ),
}


@pytest.mark.parametrize("kind", list(ISOLATION_CASES))
def test_a_branch_changing_a_value_in_place_is_seen_by_no_one_before_the_join(kind):
    make, mutate = ISOLATION_CASES[kind]
    original, pristine = make(), make()
    store = {"value": original}
    mine, sibling = SharedView(store), SharedView(store)
    sibling_copy = sibling["value"]  # the sibling touched it first
    value = mine["value"]
    assert type(value) is type(original)
    mutate(value)
    assert value != pristine or kind == "dataclass by identity"
    assert store["value"] is original
    assert _alike_deep(original, pristine)  # the store, before the join
    assert _alike_deep(sibling_copy, pristine)  # the sibling's view
    assert _alike_deep(sibling["value"], pristine)
    changed = mine.changes()
    assert list(changed) == ["value"]
    assert _alike_deep(changed.before["value"], pristine)  # the value at the fork
    assert changed["value"] is value
    assert sibling.changes() == {}  # read, not changed
    merged = merge(store, [("mine", changed), ("sibling", sibling.changes())], {})
    assert merged == {"value": value}


def _alike_deep(a, b):
    """Equal, and of the same types throughout (compared by their fields where
    a dataclass compares by identity)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Handle):
        return _alike_deep(a.items, b.items)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_alike_deep(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple | deque):
        return len(a) == len(b) and all(_alike_deep(x, y) for x, y in zip(a, b, strict=True))
    if dataclasses.is_dataclass(a):
        return all(
            _alike_deep(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    return a == b


def test_copies_keep_what_makes_each_kind_what_it_is():
    dd = data_copy(defaultdict(list))
    dd["x"].append(1)
    assert dd == {"x": [1]}
    assert data_copy(deque([1], maxlen=2)).maxlen == 2
    assert list(data_copy(OrderedDict(b=1, a=2))) == ["b", "a"]
    assert data_copy(array.array("d", [1.5])).typecode == "d"
    point = Point([1], 2)
    point.label = "p"
    assert data_copy(point).label == "p"
    frozen = data_copy(FrozenSlotBox([1]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.items = []  # still frozen
    assert data_copy(Typed([1])).label == "t"


def test_values_holding_nothing_mutable_and_other_objects_are_shared():
    lock, client = threading.Lock(), object()
    for value in (
        (1, "a", (2.0, None)),
        Pair((), "n"),
        FrozenBox(items=(1, 2)),
        frozenset({1}),
        lock,
        client,
        range(3),
    ):
        assert data_copy(value) is value
    copied = data_copy({"lock": lock, "items": [client]})
    assert copied["lock"] is lock
    assert copied["items"][0] is client


def test_copies_keep_shared_references_and_cycles():
    inner = [1]
    copied = data_copy({"a": inner, "b": (inner,), "c": Box(inner)})
    assert copied["a"] is not inner
    assert copied["b"][0] is copied["a"]
    assert copied["c"].items is copied["a"]

    loop = []
    loop.append(loop)
    copied = data_copy(loop)
    assert copied[0] is copied
    assert copied is not loop

    through_tuple = [None]
    through_tuple[0] = (through_tuple,)
    copied = data_copy(through_tuple)
    assert copied[0][0] is copied

    @dataclasses.dataclass(frozen=True)
    class Node:
        children: list

    node = Node([])
    node.children.append(node)
    copied = data_copy(node)
    assert copied is not node
    assert copied.children[0] is copied

    store = {"loop": loop}
    view = SharedView(store)
    assert view["loop"][0] is view["loop"]
    assert view.changes() == {}  # a cycle, read only: unchanged
    view["loop"].append(1)
    assert list(view.changes()) == ["loop"]


def test_a_touched_value_is_copied_at_most_twice_and_an_untouched_one_never():
    calls = []

    class Counted(dict):
        def __copy__(self):
            calls.append("copy")
            return Counted(self)

        def __reduce_ex__(self, protocol):
            calls.append("reduce")
            return super().__reduce_ex__(protocol)

    store = {"big": Counted(data=list(range(10_000))), "small": {"a": 1}}
    view = SharedView(store)
    view["small"]["b"] = 2
    view["other"] = 1
    del view["other"]
    assert calls == []
    view["big"]["data"].append(1)
    assert len(calls) == 2  # the branch's copy, and the value at the fork
    view["big"]["data"].append(2)
    assert len(calls) == 2


# -- property: no outside write is lost ----------------------------------------------------


@st.composite
def interleavings(draw):
    branch_op = st.one_of(
        st.tuples(st.just("read"), st.sampled_from(["seen", "cfg", "tags", "count"])),
        st.tuples(st.just("rewrite"), st.sampled_from(["seen", "cfg"])),  # an equal value back
        st.tuples(st.just("tag"), st.integers(0, 99)),
        st.tuples(st.just("add"), st.integers(1, 5)),
    )
    outside_op = st.one_of(
        st.tuples(st.just("append"), st.sampled_from(["seen", "tags"]), st.integers(100, 199)),
        st.tuples(st.just("rebind"), st.sampled_from(["seen", "tags"]), st.integers(200, 299)),
        st.tuples(st.just("put"), st.sampled_from(["x", "y"]), st.integers(0, 9)),
        st.tuples(st.just("rebind_cfg"), st.sampled_from(["x", "y"]), st.integers(0, 9)),
        st.tuples(st.just("add"), st.just("count"), st.integers(1, 5)),
    )
    branches = draw(st.lists(st.lists(branch_op, max_size=5), min_size=1, max_size=3))
    outside = draw(st.lists(outside_op, max_size=6))
    yields = draw(st.lists(st.integers(0, 4), min_size=1, max_size=10))
    return branches, outside, yields


def run_outside(store, ops):
    for kind, key, value in ops:
        if kind == "append":
            store[key].append(value)
        elif kind == "rebind":
            store[key] = [*store[key], value]
        elif kind == "put":
            store["cfg"][key] = value
        elif kind == "rebind_cfg":
            store["cfg"] = {**store["cfg"], key: value}
        else:
            store[key] += value


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(interleavings())
def test_no_interleaving_of_branches_and_outside_writers_loses_an_outside_write(scenario):
    branches, outside_ops, yields = scenario

    async def pause(step):
        for _ in range(yields[step % len(yields)]):
            await asyncio.sleep(0)

    def branch(index, ops):
        async def body(shared):
            for step, (kind, arg) in enumerate(ops):
                await pause(index * 7 + step)
                if kind == "read":
                    repr(shared[arg])
                elif kind == "rewrite":
                    shared[arg] = copy.deepcopy(shared[arg])
                elif kind == "tag":
                    shared["tags"].append(arg)
                else:
                    shared["count"] += arg

        return body

    async def outside(shared):
        for step, op in enumerate(outside_ops):
            await pause(step + 3)
            run_outside(shared, [op])

    initial = {"seen": [0], "cfg": {"x": 0}, "tags": [1], "count": 10}
    shared = copy.deepcopy(initial)
    flow = beside(
        [branch(index, ops) for index, ops in enumerate(branches)],
        outside,
        merge={"tags": "extend", "count": "sum"},
    )
    asyncio.run(flow.run_async(shared))

    # Keys the branches only read (or wrote back unchanged): the outside's alone.
    expected = copy.deepcopy(initial)
    run_outside(expected, outside_ops)
    assert shared["seen"] == expected["seen"]
    assert shared["cfg"] == expected["cfg"]
    # Keys the branches changed by a rule: every outside write and every branch's.
    branch_tags = [arg for ops in branches for kind, arg in ops if kind == "tag"]
    assert sorted(shared["tags"]) == sorted(expected["tags"] + branch_tags)
    added = sum(arg for ops in branches for kind, arg in ops if kind == "add")
    assert shared["count"] == expected["count"] + added
