"""Branch isolation: what a branch's view copies, kind by kind, and what it shares."""

import array
import dataclasses
import threading
import time
import typing
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple

import pytest

from braidflow import SharedView
from braidflow._merge import data_copy, merge

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
