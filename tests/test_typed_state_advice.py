"""What braidflow says to do about a state type, done as it says, works
(the catalogue in tests/test_advice.py points here)."""

import dataclasses
import operator
import re
import sys
import types
from typing import Annotated, NotRequired, TypedDict

import pydantic
import pytest

import braidflow
from braidflow import Flow, InvalidParameterError, MergeConflict, Node, Parallel, StateError


def code_in(text: object) -> list[str]:
    return re.findall(r"`([^`]+)`", str(text))


class Write(Node):
    def __init__(self, key, value, name=None):
        super().__init__(name=name)
        self.key, self.value = key, value

    def post(self, shared, prep_res, exec_res):
        shared[self.key] = self.value


def test_a_conflict_on_a_key_of_the_type_gives_the_annotation_and_it_works():
    class Review(TypedDict):
        status: str

    def flow(state):
        fork = Parallel(Write("status", "approved", "a"), Write("status", "rejected", "b"))
        return Flow(start=fork, state=state)

    with pytest.raises(MergeConflict) as caught:
        flow(Review).run({"status": "new"})
    declared = code_in(caught.value)[0]
    assert declared == "status: Annotated[str, braidflow.merge.last]"
    key, annotation = declared.split(": ", 1)
    fixed = TypedDict(
        "Review", {key: eval(annotation, {"Annotated": Annotated, "braidflow": braidflow})}
    )
    shared = {"status": "new"}
    flow(fixed).run(shared)
    assert shared == {"status": "rejected"}


def test_a_langgraph_reducer_is_refused_and_the_rule_it_names_works():
    class Notes(TypedDict):
        notes: Annotated[list[str], operator.add]

    with pytest.raises(InvalidParameterError) as caught:
        Flow(state=Notes)
    assert "for a list, use braidflow.merge.extend" in str(caught.value)

    class Appended(Node):
        def post(self, shared, prep_res, exec_res):
            shared["notes"].append(self.name)

    class Fixed(TypedDict):
        notes: Annotated[list[str], braidflow.merge.extend]

    shared = {"notes": []}
    Flow(start=Parallel(Appended(name="a"), Appended(name="b")), state=Fixed).run(shared)
    assert shared == {"notes": ["a", "b"]}


def test_two_rules_on_a_key_say_to_give_one_and_one_works():
    class Two(TypedDict):
        n: Annotated[int, braidflow.merge.add, braidflow.merge.last]

    with pytest.raises(InvalidParameterError, match=r"give it one"):
        Flow(state=Two)

    class One(TypedDict):
        n: Annotated[int, braidflow.merge.add]

    assert Flow(state=One)._bf_state.rules == {"n": "sum"}


def test_a_frozen_dataclass_says_to_declare_a_plain_one_and_that_works():
    @dataclasses.dataclass(frozen=True)
    class Frozen:
        n: int

    with pytest.raises(InvalidParameterError, match=r"declare it with a plain @dataclass"):
        Flow(state=Frozen)

    @dataclasses.dataclass
    class Plain:
        n: int

    given = Plain(1)
    Flow(start=Write("n", 2), state=Plain).run(given)
    assert given.n == 2


def test_a_frozen_model_says_to_leave_frozen_out_and_that_works():
    class Frozen(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        n: int

    with pytest.raises(InvalidParameterError, match=r"leave frozen=True out of its model_config"):
        Flow(state=Frozen)

    class Thawed(pydantic.BaseModel):
        n: int

    given = Thawed(n=1)
    Flow(start=Write("n", 2), state=Thawed).run(given)
    assert given.n == 2


def test_annotations_naming_what_cannot_be_found_say_to_define_it_and_that_works():
    module = types.ModuleType("typed_state_advice_module")
    sys.modules[module.__name__] = module
    try:
        exec(
            "from __future__ import annotations\n"
            "from dataclasses import dataclass\n"
            "@dataclass\n"
            "class Holder:\n"
            "    item: Item | None = None\n",
            module.__dict__,
        )
        with pytest.raises(
            InvalidParameterError, match=r"define the types they name where the class is defined"
        ):
            Flow(state=module.Holder)
        exec("class Item:\n    pass\n", module.__dict__)  # defined where Holder is
        assert Flow(state=module.Holder)._bf_state.hints["item"] == module.Item | None
    finally:
        del sys.modules[module.__name__]


def test_shared_of_another_kind_says_what_to_give_and_that_works():
    @dataclasses.dataclass
    class Draft:
        topic: str

    flow = Flow(start=Write("topic", "seas"), state=Draft)
    with pytest.raises(StateError, match=r"give a Draft, or a dict of its keys"):
        flow.run(["rivers"])
    shared = {"topic": "rivers"}
    flow.run(shared)
    assert shared == {"topic": "seas"}
    given = Draft("rivers")
    flow.run(given)
    assert given.topic == "seas"


def test_validate_without_a_type_says_to_give_one_and_that_works():
    class Counted(TypedDict):
        n: int

    with pytest.raises(InvalidParameterError, match=r"give the type too: state=State"):
        Flow(start=Write("n", "x"), validate=True)
    with pytest.raises(StateError, match=r"shared\['n'\] should be int, got 'x'"):
        Flow(start=Write("n", "x"), state=Counted, validate=True).run({"n": 0})


def test_collecting_failures_in_a_key_the_type_lacks_says_to_declare_it_and_that_works():
    class Fails(Node):
        def post(self, shared, prep_res, exec_res):
            raise ConnectionError("down")

    class Report(Node):
        def prep(self, shared):
            return shared.branch_failures

        def post(self, shared, prep_res, exec_res):
            shared.said = f"{len(prep_res)} failed"

    def flow(state, **options):
        fork = Parallel(Write("said", "ok", "ok"), Fails(name="bad"), on_error="collect", **options)
        fork - "failed" >> Report()
        return Flow(start=fork, state=state)

    @dataclasses.dataclass
    class Before:
        said: str = ""

    with pytest.raises(braidflow.WiringError) as caught:
        flow(Before).run(Before())
    said = str(caught.value)
    assert "shared['branch_failures'] (on_error='collect')" in said
    assert "declare it in Before (branch_failures: list[braidflow.Failure]" in said

    @dataclasses.dataclass
    class Declared:  # as it says
        said: str = ""
        branch_failures: list[braidflow.Failure] = dataclasses.field(default_factory=list)

    state = Declared()
    flow(Declared).run(state)
    assert state.said == "1 failed"
    assert [failure.item for failure in state.branch_failures] == ["bad"]


def test_collecting_failures_in_a_frozen_field_says_to_declare_it_without_frozen_and_that_works():
    class Fails(Node):
        def post(self, shared, prep_res, exec_res):
            raise ConnectionError("down")

    def flow(state):
        return Flow(start=Parallel(Fails(name="bad"), on_error="collect"), state=state)

    class Frozen(pydantic.BaseModel):
        branch_failures: list = pydantic.Field([], frozen=True)

    with pytest.raises(braidflow.WiringError) as caught:  # when the run starts, not at its end
        flow(Frozen).run(Frozen())
    assert "Frozen.branch_failures is a frozen field" in str(caught.value)
    assert code_in(caught.value) == ["frozen=True"]

    class Unfrozen(pydantic.BaseModel):  # as it says
        branch_failures: list = []

    given = Unfrozen()
    flow(Unfrozen).run(given)
    assert [failure.item for failure in given.branch_failures] == ["bad"]


def test_a_store_that_does_not_fit_the_instance_says_to_validate_each_write_and_that_works():
    class Counted(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(validate_assignment=True)
        n: int = 0

    class Fails(Node):
        def post(self, shared, prep_res, exec_res):
            raise RuntimeError("later")

    def flow(validate, then=None):
        writes = Write("n", "many", "writes")
        if then is not None:
            writes >> then
        return Flow(start=writes, state=Counted, validate=validate)

    with pytest.raises(StateError) as caught:
        flow(False).run(Counted())
    assert code_in(caught.value) == ["Flow(..., state=Counted, validate=True)"]
    with pytest.raises(RuntimeError) as failed:  # said as a note on the run's own error
        flow(False, Fails()).run(Counted())
    assert code_in(failed.value.__notes__[-1]) == ["Flow(..., state=Counted, validate=True)"]
    given = Counted()
    with pytest.raises(StateError) as caught:  # as it says: refused where it is written
        flow(True).run(given)
    assert caught.value.key == "n"
    assert "writes" in " ".join([str(caught.value), *caught.value.__notes__])
    assert given.n == 0


def test_a_frozen_field_written_says_to_declare_it_without_frozen_and_that_works():
    class Job(pydantic.BaseModel):
        id: str = pydantic.Field("abc", frozen=True)

    with pytest.raises(StateError) as caught:
        Flow(start=Write("id", "xyz", "rename"), state=Job).run(Job())
    assert code_in(caught.value) == ["frozen=True"]
    assert caught.value.node == "rename"

    class Unfrozen(pydantic.BaseModel):  # as it says
        id: str = pydantic.Field("abc")

    given = Unfrozen()
    Flow(start=Write("id", "xyz"), state=Unfrozen).run(given)
    assert given.id == "xyz"


def test_a_frozen_field_the_run_changed_says_to_declare_it_without_frozen_and_that_works():
    class Job(pydantic.BaseModel):
        id: str = pydantic.Field("abc", frozen=True)

    class Loose(pydantic.BaseModel):  # a sub-flow's own state, where id is not frozen
        id: str = "abc"

    given = Job()
    with pytest.raises(StateError, match=r"the run changed Job\.id") as caught:
        Flow(start=Flow(start=Write("id", "xyz"), state=Loose), state=Job).run(given)
    assert code_in(caught.value) == ["frozen=True"]
    assert given.id == "abc"

    class Unfrozen(pydantic.BaseModel):  # as it says
        id: str = "abc"

    given = Unfrozen()
    Flow(start=Flow(start=Write("id", "xyz"), state=Loose), state=Unfrozen).run(given)
    assert given.id == "xyz"


def test_a_key_read_before_it_is_set_says_so_and_to_set_it_or_give_a_default_and_both_work():
    @dataclasses.dataclass
    class Later:
        x: int = 0
        later: int = dataclasses.field(init=False)

    class Read(Node):
        def post(self, shared, prep_res, exec_res):
            shared.x = shared.later

    with pytest.raises(AttributeError) as caught:
        Flow(start=Read(name="read"), state=Later).run(Later())
    said = str(caught.value)
    assert said == (
        "Later.later is not set: it has no default and no node set it yet; set it first "
        "(`shared.later = ...`), or give it a default in Later"
    )
    assert "has no key" not in said  # it is a key of Later

    (assignment,) = code_in(said)  # set it first, as it says
    setting = assignment.replace("...", "7")

    class SetFirst(Node):
        def post(self, shared, prep_res, exec_res):
            exec(setting, {"shared": shared})

    first = SetFirst(name="set")
    first >> Read(name="read")
    state = Later()
    Flow(start=first, state=Later).run(state)
    assert (state.x, state.later) == (7, 7)

    @dataclasses.dataclass
    class Defaulted:  # or give it a default
        x: int = 0
        later: int = dataclasses.field(init=False, default=5)

    state = Defaulted()
    Flow(start=Read(name="read"), state=Defaulted).run(state)
    assert state.x == 5


def test_a_required_key_deleted_says_to_set_a_value_or_declare_it_not_required_and_both_work():
    class Query(TypedDict):
        q: str

    class Delete(Node):
        def post(self, shared, prep_res, exec_res):
            del shared["q"]

    with pytest.raises(StateError) as caught:
        Flow(start=Delete(name="delete"), state=Query, validate=True).run({"q": "x"})
    assert (caught.value.node, caught.value.key) == ("delete", "q")
    assert "set a value of its type (str)" in str(caught.value)
    assert code_in(caught.value) == ["NotRequired[...]"]

    class Emptied(Node):  # a value of its type in place of deleting it
        def post(self, shared, prep_res, exec_res):
            shared["q"] = ""

    shared = {"q": "x"}
    Flow(start=Emptied(), state=Query, validate=True).run(shared)
    assert shared == {"q": ""}

    class Optional(TypedDict):  # or declared NotRequired
        q: NotRequired[str]

    shared = {"q": "x"}
    Flow(start=Delete(), state=Optional, validate=True).run(shared)
    assert shared == {}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_value_changed_in_place_out_of_its_type_says_to_keep_its_type_and_that_works(
    durability,
):
    class Listed(TypedDict):
        items: list[str]

    class Append(Node):
        def __init__(self, item):
            super().__init__(name="append")
            self.item = item

        def post(self, shared, prep_res, exec_res):
            shared["items"].append(self.item)

    store = braidflow.MemoryStore()
    with pytest.raises(StateError) as caught:
        Flow(start=Append(5), state=Listed, validate=True).run(
            {"items": []}, store=store, run_id="r", durability=durability
        )
    assert (caught.value.node, caught.value.key) == ("append", "items")
    assert "change shared['items'] only to values of its type" in str(caught.value)
    # As it says: the item a str, as list[str] has it; the run resumes and completes.
    final = Flow(start=Append("5"), state=Listed, validate=True).resume(
        "r", store=store, durability=durability
    )
    assert final == {"items": ["5"]}


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_flow_s_own_post_changing_a_value_in_place_out_of_its_type_says_to_keep_its_type(
    durability,
):
    class Listed(TypedDict):
        items: list[str]

    class Noted(Node):
        def post(self, shared, prep_res, exec_res):
            shared["items"].append("noted")

    class Appending(Flow):
        item: object = 5

        def post(self, shared, prep_res, exec_res):
            shared["items"].append(self.item)

    store = braidflow.MemoryStore()
    with pytest.raises(StateError) as caught:
        Appending(start=Noted(), state=Listed, validate=True).run(
            {"items": []}, store=store, run_id="r", durability=durability
        )
    assert (caught.value.node, caught.value.key) == ("Appending", "items")
    assert "after the post of flow 'Appending'" in str(caught.value)
    assert "change shared['items'] only to values of its type" in str(caught.value)
    # As it says: the item a str; the run resumes and completes.
    Appending.item = "5"
    final = Appending(start=Noted(), state=Listed, validate=True).resume(
        "r", store=store, durability=durability
    )
    assert final == {"items": ["noted", "5"]}
