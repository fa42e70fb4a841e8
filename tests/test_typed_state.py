"""Typed shared state: a flow's state type, checked when the run starts, its
merge rules used by every join inside, validated writes, views by attribute."""

import asyncio
import dataclasses
import gc
import re
import weakref
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pydantic
import pytest

import braidflow
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    Flow,
    InvalidParameterError,
    MergeConflict,
    Node,
    Parallel,
    StateError,
    merge,
)

# -- the state types ---------------------------------------------------------------------


class Research(TypedDict):
    question: str
    notes: Annotated[list[str], merge.extend]
    searches: Annotated[int, merge.add]
    sources: NotRequired[dict[str, int]]


def longest(before: Any, values: list[str]) -> str:
    return max(values, key=len)


class Picked(TypedDict):
    best: Annotated[str, merge.rule(longest)]
    seen: Annotated[dict[str, int], merge.update]


@dataclass
class Draft:
    topic: str
    paragraphs: Annotated[list[str], merge.extend] = field(default_factory=list)
    words: Annotated[int, merge.add] = 0
    status: Literal["draft", "done"] = "draft"

    def summary(self) -> str:
        return f"{self.topic}: {len(self.paragraphs)} paragraphs"


class Order(pydantic.BaseModel):
    sku: str
    quantity: int = 1
    lines: Annotated[list[str], merge.extend] = []


# -- nodes -------------------------------------------------------------------------------


class Note(Node[str, str, Research]):
    def prep(self, shared: Research) -> str:
        return shared["question"]

    def exec(self, prep_res: str) -> str:
        return f"{self.name}: {prep_res}"

    def post(self, shared: Research, prep_res: str, exec_res: str) -> str | None:
        shared["notes"].append(exec_res)
        shared["searches"] += 1
        return None


class Write(AsyncNode[str, str, Draft]):
    async def prep_async(self, shared: Draft) -> str:
        return shared.topic

    async def exec_async(self, prep_res: str) -> str:
        return f"{self.name} on {prep_res}"

    async def post_async(self, shared: Draft, prep_res: str, exec_res: str) -> str | None:
        shared.paragraphs.append(exec_res)
        shared.words += len(exec_res.split())
        return None


class Setter(Node):
    """Writes what it is given to one key (by key, or by attribute)."""

    def __init__(self, key: str, value: Any, *, attribute: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.key, self.value, self.attribute = key, value, attribute

    def post(self, shared, prep_res, exec_res):
        if self.attribute:
            setattr(shared, self.key, self.value)
        else:
            shared[self.key] = self.value


def research(**overrides: Any) -> dict[str, Any]:
    return {"question": "why", "notes": [], "searches": 0, **overrides}


# -- merge rules declared once ------------------------------------------------------------


def test_a_fork_uses_the_rules_declared_on_the_state_type():
    flow = Flow(start=Parallel(Note(name="a"), Note(name="b"), Note(name="c")), state=Research)
    shared = research(notes=["first"], searches=2)
    flow.run(shared)
    assert shared["notes"] == ["first", "a: why", "b: why", "c: why"]
    assert shared["searches"] == 5


def test_a_rule_given_to_the_parallel_wins_over_the_state_type_s():
    fork = Parallel(Note(name="a"), Note(name="b"), merge={"notes": "last"})
    shared = research()
    Flow(start=fork, state=Research).run(shared)
    assert shared["notes"] == ["b: why"]  # the last branch's list, not both extended
    assert shared["searches"] == 2  # the type's rule still holds for the other keys


def test_function_and_update_rules_on_the_type():
    flow = Flow(
        start=Parallel(
            Setter("best", "short", name="a"),
            Setter("best", "the longest one", name="b"),
            Setter("seen", {"x": 1}, name="c"),
            Setter("seen", {"x": 1, "y": 2}, name="d"),
        ),
        state=Picked,
    )
    shared = {"best": "", "seen": {"x": 1}}
    flow.run(shared)
    assert shared == {"best": "the longest one", "seen": {"x": 1, "y": 2}}


def test_the_rules_of_a_dataclass_state_hold_in_an_async_flow_s_fork():
    draft = Draft("rivers")
    asyncio.run(
        AsyncFlow(start=Parallel(Write(name="a"), Write(name="b")), state=Draft).run_async(draft)
    )
    assert draft.paragraphs == ["a on rivers", "b on rivers"]
    assert draft.words == 6


def test_isolated_sub_flows_of_a_typed_flow_merge_by_the_type_s_rules():
    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"who": who} for who in ("x", "y", "z")]

    class Record(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["notes"].append(self.params["who"])
            shared["searches"] += 1

    shared = research()
    inner = Each(start=Record(), isolate=True)
    asyncio.run(AsyncFlow(start=inner, state=Research).run_async(shared))
    assert shared["notes"] == ["x", "y", "z"]
    assert shared["searches"] == 3


def test_a_conflict_on_a_key_of_the_type_says_to_declare_the_rule_on_the_type():
    class Free(TypedDict):
        answer: str

    fork = Parallel(Setter("answer", "x"), Setter("answer", "y", name="other"))
    flow = Flow(start=fork, state=Free)
    with pytest.raises(MergeConflict) as caught:
        flow.run({"answer": ""})
    message = str(caught.value)
    assert (
        "declare how to combine them: once on the state type (`answer: Annotated[str, "
        "braidflow.merge.last]` in Free), or at this join: `Parallel(..., merge=" in message
    )


def test_merge_rules_are_values_for_merge_too():
    fork = Parallel(Setter("n", 2), Setter("n", 3, name="b"), merge={"n": merge.add})
    shared = {"n": 1}
    Flow(start=fork).run(shared)
    assert shared["n"] == 4
    assert repr(merge.add) == "braidflow.merge.add"
    assert repr(merge.rule(longest)) == "braidflow.merge.rule(longest)"
    assert merge.rule(longest) == merge.rule(longest)


def test_merge_rule_refuses_what_is_not_a_function():
    with pytest.raises(TypeError, match=r"give a function \(value before the fork"):
        merge.rule("extend")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        merge.rule(merge.extend)  # type: ignore[arg-type]


# -- checked when the run starts ------------------------------------------------------------


def test_shared_is_checked_when_the_run_starts_naming_each_key():
    flow = Flow(start=Note(), state=Research)
    with pytest.raises(StateError) as caught:
        flow.run({"question": 3, "notes": [], "searchs": 0})
    error = caught.value
    assert isinstance(error, TypeError)
    assert isinstance(error, ValueError)
    assert error.key == "searches"  # the first problem: a required key missing
    message = str(error)
    assert message.startswith("flow 'Flow': shared does not fit its state type Research:")
    assert "shared has no key 'searches' (int)" in message
    assert "shared['question'] should be str, got 3 (int)" in message
    assert "shared['searchs'] is not a key of Research" in message


def test_values_inside_containers_are_checked():
    flow = Flow(start=Note(), state=Research)
    with pytest.raises(StateError, match=r"shared\['notes'\]\[1\] should be str, got 2 \(int\)"):
        flow.run(research(notes=["a", 2]))
    with pytest.raises(StateError, match=r"shared\['sources'\]\['x'\] should be int"):
        flow.run(research(sources={"x": "1"}))
    with pytest.raises(StateError, match=r"shared\['status'\] should be 'draft' \| 'done'"):
        Flow(start=Setter("topic", "t"), state=Draft).run({"topic": "t", "status": "gone"})


class Inner(TypedDict):
    a: int


class MaybeInner(TypedDict):
    o: Inner | None


def test_a_typeddict_in_a_union_is_checked_as_a_mapping_of_its_keys():
    with pytest.raises(StateError, match=r"shared\['o'\]\['a'\] should be int, got '1'") as caught:
        Flow(start=Node(), state=MaybeInner).run({"o": {"a": "1"}})
    assert "MaybeInner's keys" not in str(caught.value)  # no key is unknown
    with pytest.raises(StateError, match=r"shared\['o'\] should be Inner \| None, got 5"):
        Flow(start=Setter("o", 5), state=MaybeInner, validate=True).run({"o": None})
    for fits in ({"o": None}, {"o": {"a": 1}}):
        Flow(start=Node(), state=MaybeInner).run(fits)
    with pytest.raises(StateError, match=r"is not a key of MaybeInner \(MaybeInner's keys: 'o'\)"):
        Flow(start=Node(), state=MaybeInner).run({"o": None, "other": 1})


def test_nothing_runs_when_the_check_fails():
    ran = []

    class Mark(Node):
        def prep(self, shared):
            ran.append(1)

    with pytest.raises(StateError):
        Flow(start=Mark(), state=Research).run({})
    assert ran == []


def test_a_typed_flow_inside_an_untyped_one_checks_shared_when_it_starts():
    inner = Flow(start=Note(), state=Research)
    first = Setter("question", 42)
    first >> inner
    with pytest.raises(StateError, match=r"flow 'Flow': .*shared\['question'\] should be str"):
        Flow(start=first).run(research())


def test_a_dataclass_state_s_defaults_fill_the_keys_shared_lacks():
    shared: dict[str, Any] = {"topic": "t"}
    Flow(start=Setter("status", "done"), state=Draft).run(shared)
    assert shared == {"topic": "t", "paragraphs": [], "words": 0, "status": "done"}


def test_what_is_not_a_dict_or_the_state_is_refused():
    told = r"shared is a list, and this flow's state is Draft; give a Draft, or a dict of its keys"
    with pytest.raises(StateError, match=told):
        Flow(start=Setter("topic", "t"), state=Draft).run([])


# -- views: by attribute for a dataclass or a model ------------------------------------------


def test_nodes_read_and_write_a_dataclass_state_by_attribute_and_the_instance_gets_it():
    seen = []

    class Look(Node[None, None, Draft]):
        def prep(self, shared: Draft) -> None:
            seen.append((shared.topic, shared.summary(), shared["topic"], "topic" in shared))
            seen.append((shared.get("words"), shared.get("topik", "none")))

        def post(self, shared: Draft, prep_res: None, exec_res: None) -> str | None:
            shared.status = "done"
            shared["words"] = 7
            return None

    draft = Draft("seas", ["one"])
    Flow(start=Look(), state=Draft).run(draft)
    assert seen == [("seas", "seas: 1 paragraphs", "seas", True), (0, "none")]
    assert draft == Draft("seas", ["one"], 7, "done")


def test_a_view_refuses_a_key_its_type_does_not_have():
    with pytest.raises(AttributeError, match=r"Draft has no key 'topik' to set \(its keys: "):
        Flow(start=Setter("topik", "x", attribute=True), state=Draft).run(Draft("t"))

    class Read(Node):
        def prep(self, shared):
            return shared.nothing

    with pytest.raises(AttributeError, match=r"Draft has no key or attribute 'nothing'"):
        Flow(start=Read(), state=Draft).run(Draft("t"))

    class Delete(Node):
        def prep(self, shared):
            del shared.topic

    with pytest.raises(AttributeError, match=r"cannot be deleted"):
        Flow(start=Delete(), state=Draft).run(Draft("t"))

    class DeleteByKey(Node):  # as a node written for a dict does
        def prep(self, shared):
            del shared["topic"]

    with pytest.raises(AttributeError, match=r"the keys of a Draft state cannot be deleted"):
        Flow(start=DeleteByKey(), state=Draft).run(Draft("t"))


def test_an_untyped_flow_hands_nodes_the_very_dict_it_was_given():
    seen = []

    class Look(Node):
        def prep(self, shared):
            seen.append(shared)

    shared: dict[str, Any] = {}
    Flow(start=Look()).run(shared)
    Flow(start=Look(), state=Research).run(research())
    assert seen[0] is shared
    assert type(seen[1]) is dict  # a TypedDict not validated: the dict itself too


# -- validation on write ------------------------------------------------------------------------


def test_a_model_state_validates_each_write_when_asked():
    order = Order(sku="a")
    Flow(start=Setter("quantity", "3", attribute=True), state=Order, validate=True).run(order)
    assert order.quantity == 3  # pydantic's value: the string made an int
    with pytest.raises(StateError) as caught:
        Flow(start=Setter("quantity", "many", attribute=True), state=Order, validate=True).run(
            Order(sku="a")
        )
    assert caught.value.key == "quantity"
    assert str(caught.value).startswith("shared['quantity'] should be int (Order.quantity): ")


def test_without_validate_a_write_is_not_checked():
    order = Order(sku="a")
    Flow(start=Setter("quantity", "many", attribute=True), state=Order).run(order)
    assert order.quantity == "many"


def test_a_typeddict_state_validates_writes_by_key_when_asked():
    flow = Flow(start=Setter("searches", "two", name="count"), state=Research, validate=True)
    with pytest.raises(
        StateError, match=r"shared\['searches'\] should be int, got 'two'"
    ) as caught:
        flow.run(research())
    assert (caught.value.node, caught.value.key) == ("count", "searches")  # the node that wrote
    flow = Flow(start=Setter("answer", "x"), state=Research, validate=True)
    with pytest.raises(StateError, match=r"shared\['answer'\] is not a key of Research"):
        flow.run(research())


def test_a_model_s_initial_values_are_validated_at_the_start_when_asked():
    shared = {"sku": "a", "quantity": "4"}
    Flow(start=Setter("lines", ["x"]), state=Order, validate=True).run(shared)
    assert shared == {"sku": "a", "quantity": 4, "lines": ["x"]}
    with pytest.raises(StateError, match=r"shared\['quantity'\] should be int"):
        Flow(start=Setter("lines", []), state=Order, validate=True).run(
            {"sku": "a", "quantity": "x"}
        )


class Account(pydantic.BaseModel):
    """Field validators: one that changes the value, one that refuses it, one
    that reads another field (``info.data``); and config (stripped strings)."""

    model_config = pydantic.ConfigDict(str_strip_whitespace=True)
    name: str = ""
    age: int = 18
    password: str = ""
    confirm: str = ""

    @pydantic.field_validator("name")
    @classmethod
    def capitalized(cls, value: str) -> str:
        return value.capitalize()

    @pydantic.field_validator("age")
    @classmethod
    def adult(cls, value: int) -> int:
        if value < 18:
            raise ValueError(f"{value} is under 18")
        return value

    @pydantic.field_validator("confirm")
    @classmethod
    def same(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if value != info.data["password"]:
            raise ValueError("is not the password")
        return value


@pytest.mark.parametrize("attribute", [False, True])
def test_a_validated_write_runs_the_model_s_field_validators(attribute):
    def sets(*writes):
        first, *rest = [Setter(key, value, attribute=attribute, name=key) for key, value in writes]
        last = first
        for node in rest:
            last = last >> node
        return Flow(start=first, state=Account, validate=True)

    given = Account()
    sets(("name", "  ada "), ("age", "30"), ("password", "s3"), ("confirm", "s3")).run(given)
    assert given == Account(name="Ada", age=30, password="s3", confirm="s3")
    with pytest.raises(StateError) as caught:
        sets(("name", "bo"), ("age", 17)).run(Account())
    assert str(caught.value).splitlines()[0] == (
        "shared['age'] should be int (Account.age): Value error, 17 is under 18"
    )
    assert (caught.value.node, caught.value.key) == ("age", "age")
    with pytest.raises(StateError, match=r"Account\.confirm\): Value error, is not the password"):
        sets(("password", "s3"), ("confirm", "s4")).run(Account())


async def test_a_validated_write_in_an_async_branch_runs_the_field_validators_on_its_values():
    class SignUp(AsyncNode):
        def __init__(self, confirm: str, name: str):
            super().__init__(name=name)
            self.confirm = confirm

        async def post_async(self, shared, prep_res, exec_res):
            shared.password = "s3"  # the branch's own value: the one info.data holds
            shared["confirm"] = self.confirm

    shared: dict[str, Any] = {}  # the password at the fork: ""
    fork = Parallel(SignUp("s3", name="signup"), Setter("name", " ada ", attribute=True))
    await AsyncFlow(start=fork, state=Account, validate=True).run_async(shared)
    assert shared == {"name": "Ada", "age": 18, "password": "s3", "confirm": "s3"}
    fork = Parallel(SignUp("", name="signup"), Setter("name", "ada"))
    with pytest.raises(StateError, match=r"is not the password") as caught:
        await AsyncFlow(start=fork, state=Account, validate=True).run_async({})
    assert (caught.value.node, caught.value.key) == ("signup", "confirm")


def test_a_model_s_initial_values_go_through_its_field_validators_when_asked():
    shared = {"name": " ada ", "password": "s3", "confirm": "s3"}
    Flow(start=Setter("age", 40), state=Account, validate=True).run(shared)
    assert shared == {"name": "Ada", "age": 40, "password": "s3", "confirm": "s3"}
    with pytest.raises(StateError) as caught:
        Flow(start=Setter("age", 40), state=Account, validate=True).run(
            {"age": 3, "password": "s3", "confirm": "s4"}
        )
    said = str(caught.value)
    assert "shared['age'] should be int (Account.age): Value error, 3 is under 18" in said
    assert "(Account.confirm): Value error, is not the password" in said


class Range(pydantic.BaseModel):
    """A model validator, which a validated write leaves to the model whole."""

    lo: int = 0
    hi: int = 1

    @pydantic.model_validator(mode="after")
    def ordered(self) -> "Range":
        if self.lo >= self.hi:
            raise ValueError(f"lo {self.lo} >= hi {self.hi}")
        return self


def test_a_validated_write_leaves_model_validators_to_the_model_whole():
    first = Setter("lo", "5", attribute=True, name="lo")
    first >> Setter("hi", "10", attribute=True, name="hi")
    given = Range()
    Flow(start=first, state=Range, validate=True).run(given)  # lo=5 with hi=1 not refused
    assert (given.lo, given.hi) == (5, 10)  # each write validated by its field
    assert Range.model_validate(given.model_dump()) == given  # the model whole: its own call


# -- declaring the type: mistakes said at build time ---------------------------------------------


def test_what_cannot_be_a_state_type_is_refused_when_the_flow_is_made():
    with pytest.raises(InvalidParameterError, match=r"state=dict must be the class of the shared"):
        Flow(state=dict)
    with pytest.raises(InvalidParameterError, match=r"validate= checks .* give the type too"):
        Flow(validate=True)
    with pytest.raises(InvalidParameterError, match=r"validate='yes' must be True or False"):
        Flow(state=Research, validate="yes")  # type: ignore[arg-type]

    @dataclass(frozen=True)
    class Frozen:
        x: int

    with pytest.raises(InvalidParameterError, match=r"frozen dataclass, and nodes write"):
        Flow(state=Frozen)

    class FrozenModel(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        x: int

    with pytest.raises(InvalidParameterError, match=r"frozen pydantic model"):
        Flow(state=FrozenModel)


def test_a_reducer_written_for_langgraph_is_refused_with_the_rule_to_use():
    import operator

    class Lang(TypedDict):
        notes: Annotated[list[str], operator.add]

    told = r"operator.add takes \(current, update\): for a list, use braidflow.merge.extend"
    with pytest.raises(InvalidParameterError, match=told):
        Flow(state=Lang)

    class Two(TypedDict):
        notes: Annotated[list[str], merge.extend, merge.last]

    with pytest.raises(InvalidParameterError, match=r"key 'notes' has 2 merge rules"):
        Flow(state=Two)


def test_annotations_that_cannot_be_read_are_said_at_build_time():
    @dataclass
    class Broken:
        x: "Unknown"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(InvalidParameterError, match=r"its annotations cannot be read"):
        Flow(state=Broken)


def test_node_kinds_may_leave_the_state_type_out_at_run_time():
    assert Node[str, str].__args__[-1] is Any  # type: ignore[attr-defined]
    assert Node[str, str, Research].__args__[-1] is Research  # type: ignore[attr-defined]
    assert braidflow.AsyncParallelBatchNode[str, int].__args__[-1] is Any  # type: ignore[attr-defined]
    assert dataclasses.is_dataclass(Draft)


def test_a_node_typed_against_another_state_is_refused_when_the_run_starts():
    class Other(Node[str, str, Draft]):
        pass

    first = Note(name="first")
    first >> Parallel(Note(name="ok"), Other(name="stray"))
    flow = Flow(start=first, state=Research)
    with pytest.raises(braidflow.WiringError) as caught:
        flow.run(research())
    message = str(caught.value)
    assert message == (
        "node 'stray' (Other) is typed against Draft, and it runs in a flow whose state is "
        "Research, which its prep and post get: derive Other from `Node[str, str, Research]`"
    )
    (base,) = re.findall(r"`([^`]+)`", message)  # done as it says: the flow runs
    fixed = eval(base, {"Node": Node, "Research": Research})

    class Retyped(fixed):  # type: ignore[misc, valid-type]
        pass

    first = Note(name="first")
    first >> Parallel(Note(name="ok"), Retyped(name="stray"))
    shared = research()
    Flow(start=first, state=Research).run(shared)
    assert shared["searches"] == 2


def test_nodes_are_checked_once_per_wiring():
    flow = Flow(start=Note(), state=Research)
    flow.run(research())

    class Stray(Node[str, str, Draft]):
        pass

    flow.start_node >> Stray()  # wiring changed: checked again
    with pytest.raises(braidflow.WiringError, match=r"node 'Stray' \(Stray\) is typed against"):
        flow.run(research())


def test_typed_sub_flows_as_branches_fill_their_defaults_without_writing_them():
    # Only one branch writes the key with a default; the other only reads
    # another: filling the default in is no write of either at the join.
    @dataclass
    class Logged:
        a: int
        log: list[str] = field(default_factory=list)

    class Append(Node[None, None, Logged]):
        def post(self, shared, prep_res, exec_res):
            shared.log.append(self.name)

    class Reads(Node[None, None, Logged]):
        def post(self, shared, prep_res, exec_res):
            shared.log_seen = shared.a

    class ReadOnly(Node[None, None, Logged]):
        def post(self, shared, prep_res, exec_res):
            assert shared.log == []  # the default, there to read

    shared = {"a": 1}
    Flow(
        start=Parallel(
            Flow(start=Append(name="w1"), state=Logged, name="sub1"),
            Flow(start=ReadOnly(name="r2"), state=Logged, name="sub2"),
        )
    ).run(shared)
    assert shared == {"a": 1, "log": ["w1"]}
    only_read = {"a": 1}
    Flow(start=Parallel(Flow(start=ReadOnly(name="r"), state=Logged, name="sub"))).run(only_read)
    assert only_read == {"a": 1}  # a default only read does not reach the store


@dataclass
class Tagged:
    tags: Annotated[list[str], merge.extend] = field(default_factory=lambda: ["default"])
    count: Annotated[int, merge.add] = 100


class AddTag(Node[None, None, Tagged]):
    def post(self, shared, prep_res, exec_res):
        shared.tags.append(str(self.params.get("tag", self.name)))
        shared.count += 1


def tagging(name):
    return Flow(start=AddTag(name=name), state=Tagged, name=f"sub {name}")


TAG_RULES = {"tags": "extend", "count": "sum"}


def test_a_join_starts_from_the_default_its_typed_branches_filled_in_once():
    # As with no fork: the default, then each branch's change, in branch order.
    alone = {}
    Flow(start=tagging("a")).run(alone)
    assert alone == {"tags": ["default", "a"], "count": 101}
    one = {}
    Flow(start=Parallel(tagging("a"), Node(name="idle"), merge=TAG_RULES)).run(one)
    assert one == alone
    two = {}
    Flow(start=Parallel(tagging("a"), tagging("b"), merge=TAG_RULES)).run(two)
    assert two == {"tags": ["default", "a", "b"], "count": 102}


def test_a_default_filled_in_a_fork_inside_a_branch_counts_once_at_every_join():
    inner = Parallel(tagging("a"), tagging("b"), merge=TAG_RULES, name="inner")
    shared = {}
    Flow(start=Parallel(inner, tagging("c"), merge=TAG_RULES)).run(shared)
    assert shared == {"tags": ["default", "a", "b", "c"], "count": 103}
    alone_inside = {}
    inner = Parallel(tagging("a"), name="inner")  # one branch, no rule: its value as it is
    Flow(start=Parallel(inner, tagging("c"), merge=TAG_RULES)).run(alone_inside)
    assert alone_inside == {"tags": ["default", "a", "c"], "count": 102}


def test_isolated_typed_sub_flows_start_from_the_default_they_filled_in():
    class Each(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"tag": "0"}, {"tag": "1"}]

    shared = {}
    Each(start=tagging("t"), isolate=True, merge=TAG_RULES).run(shared)
    assert shared == {"tags": ["default", "0", "1"], "count": 102}


def test_a_resumed_join_counts_the_default_of_a_branch_finished_before_once():
    # The branch finished before the stop is known by its recorded changes
    # only, which hold the default it filled in: the join does not add it again.
    class Asks(AddTag):
        def exec(self, prep_res):
            return braidflow.interrupt("go on?")

    def flow():
        asking = Flow(start=Asks(name="b"), state=Tagged, name="sub b")
        return Flow(start=Parallel(tagging("a"), asking, merge=TAG_RULES))

    store = braidflow.MemoryStore()
    with pytest.raises(braidflow.Suspended):
        flow().run({}, store=store, run_id="tags")
    resumed = flow().resume("tags", store=store, input="yes")
    assert resumed == {"tags": ["default", "a", "b"], "count": 102}


def test_a_model_that_validates_assignments_is_left_whole_when_the_store_does_not_fit():
    class Counted(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(validate_assignment=True)
        a: int = 0
        b: int = 0

    class Writes(Node[None, None, Counted]):
        def post(self, shared, prep_res, exec_res):
            shared.a = 5
            shared.b = "many"  # not checked here: the flow does not validate

    given = Counted()
    with pytest.raises(StateError, match=r"flow 'job'.* left as it was.*validate=True") as caught:
        Flow(start=Writes(name="writes"), state=Counted, name="job").run(given)
    assert caught.value.node == "job"
    assert (given.a, given.b) == (0, 0)  # not half written back


# -- the instance a run was given, brought up to date when it ends ---------------------------


class Checked(pydantic.BaseModel):
    """A model that validates each assignment: a run given one writes its values back."""

    model_config = pydantic.ConfigDict(validate_assignment=True)
    n: int = 0
    answer: str = ""


class WritesNonsense(Node):
    """Writes a str to the int key n (not checked: the flows here do not validate)."""

    def post(self, shared, prep_res, exec_res):
        shared.n = "many"


class Fails(Node):
    def post(self, shared, prep_res, exec_res):
        raise RuntimeError("the node's own error")


def test_a_failed_run_raises_its_error_though_the_instance_cannot_be_written_back():
    writes = WritesNonsense(name="writes")
    writes >> Fails(name="fails")
    given = Checked()
    with pytest.raises(RuntimeError, match="the node's own error") as caught:
        Flow(start=writes, state=Checked, name="job").run(given)
    notes = caught.value.__notes__
    assert any("flow 'job'" in note and "left as it was" in note for note in notes)
    assert given.n == 0


def test_a_run_stopped_at_a_question_is_suspended_though_the_instance_cannot_be_written_back():
    class Asks(Node):
        def exec(self, prep_res):
            return braidflow.interrupt("approve?")

        def post(self, shared, prep_res, exec_res):
            shared.answer = exec_res

    writes = WritesNonsense(name="writes")
    writes >> Asks(name="asks")
    store = braidflow.MemoryStore()
    given = Checked()
    with pytest.raises(braidflow.Suspended) as caught:
        Flow(start=writes, state=Checked).run(given, store=store, run_id="r")
    assert any("left as it was" in note for note in caught.value.__notes__)
    assert store.get("r").status == "waiting"
    assert given.n == 0


async def test_a_cancelled_run_ends_cancelled_though_the_instance_cannot_be_written_back():
    waiting = asyncio.Event()

    class Waits(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            waiting.set()
            await asyncio.Event().wait()

    writes = WritesNonsense(name="writes")
    writes >> Waits(name="waits")
    given = Checked()
    task = asyncio.create_task(AsyncFlow(start=writes, state=Checked).run_async(given))
    await waiting.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert any("left as it was" in note for note in caught.value.__notes__)
    assert given.n == 0


class Ordered(pydantic.BaseModel):
    """A model whose validator reads two fields: only the run's values together fit it."""

    model_config = pydantic.ConfigDict(validate_assignment=True)
    lo: int = 0
    hi: int = 1

    @pydantic.model_validator(mode="after")
    def ordered(self) -> "Ordered":
        if self.lo >= self.hi:
            raise ValueError(f"lo {self.lo} >= hi {self.hi}")
        return self


def test_a_model_is_validated_whole_with_the_run_s_values_and_written_back_whole():
    def widen(lo, hi):
        first = Setter("lo", lo, attribute=True, name="lo")
        first >> Setter("hi", hi, attribute=True, name="hi")
        return Flow(start=first, state=Ordered, name="widen")

    given = Ordered()
    widen(5, "10").run(given)  # lo=5 with hi=1 would not fit; the run's values do
    assert (given.lo, given.hi) == (5, 10)  # pydantic's value: an int
    assert given.model_fields_set == {"lo", "hi"}
    given = Ordered()
    with pytest.raises(StateError, match=r"flow 'widen'.*left as it was.*lo 5 >= hi 3"):
        widen(5, 3).run(given)
    assert (given.lo, given.hi) == (0, 1)  # not half written back


def test_a_frozen_field_the_run_left_alone_is_not_written_back():
    class Job(pydantic.BaseModel):
        id: str = pydantic.Field("abc", frozen=True)
        n: int = 0
        done: bool = False

    class Work(Node):
        def post(self, shared, prep_res, exec_res):
            shared.n += 1
            shared.done = True

    given = Job()
    Flow(start=Work(name="work"), state=Job).run(given)
    assert (given.id, given.n, given.done) == ("abc", 1, True)
    durable = Job()
    Flow(start=Work(name="work"), state=Job).run(durable, store=braidflow.MemoryStore())
    assert (durable.id, durable.n, durable.done) == ("abc", 1, True)


# -- a model's frozen fields: a write refused where it is made ---------------------------------


class Job(pydantic.BaseModel):
    n: int = 0
    id: str = pydantic.Field("abc", frozen=True)
    tag: Annotated[str, pydantic.Field(frozen=True)] = "t"


def frozen_said(key: str) -> str:
    return (
        f"Job.{key} is a frozen field: nodes cannot write it (it keeps the value the run "
        f"started with); leave {key} as it is, or declare it without `frozen=True`"
    )


@pytest.mark.parametrize("key", ["id", "tag"])
@pytest.mark.parametrize("attribute", [False, True])
@pytest.mark.parametrize("validate", [False, True])
def test_a_node_writing_a_frozen_field_is_refused_at_the_write(key, attribute, validate):
    seen = []

    class After(Node):
        def prep(self, shared):
            seen.append(shared[key])

    first = Setter("n", 1, attribute=True, name="count")
    first >> Setter(key, "xyz", attribute=attribute, name="rename") >> After(name="after")
    given = Job()
    with pytest.raises(StateError) as caught:
        Flow(start=first, state=Job, validate=validate, name="job").run(given)
    assert str(caught.value).splitlines()[0] == frozen_said(key)
    assert (caught.value.node, caught.value.key) == ("rename", key)  # the node that wrote
    assert seen == []  # no node ran on a value the instance would refuse
    assert (given.n, given.id, given.tag) == (1, "abc", "t")  # the run's other writes kept
    shared = {"n": 0}  # a dict of its keys: the field is frozen all the same
    with pytest.raises(StateError, match=re.escape(frozen_said(key))):
        Flow(start=Setter(key, "xyz", attribute=attribute), state=Job).run(shared)
    assert shared[key] == Job.model_fields[key].default


@pytest.mark.parametrize("attribute", [False, True])
async def test_a_frozen_field_written_in_an_async_branch_is_refused_at_the_write(attribute):
    class Rename(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            if attribute:
                shared.id = "xyz"
            else:
                shared["id"] = "xyz"

    given = Job()
    fork = Parallel(Setter("n", 1, name="count"), Rename(name="rename"))
    with pytest.raises(StateError) as caught:
        await AsyncFlow(start=fork, state=Job, validate=True).run_async(given)
    assert str(caught.value).splitlines()[0] == frozen_said("id")
    assert (caught.value.node, caught.value.key) == ("rename", "id")
    assert given.id == "abc"


class Aliased(pydantic.BaseModel):
    """Fields read by their aliases only (no populate_by_name), as JSON gives them."""

    model_config = pydantic.ConfigDict(validate_assignment=True)
    user_id: int = pydantic.Field(alias="userId")
    label: str = pydantic.Field("", validation_alias=pydantic.AliasChoices("label", "tag"))
    shown: str = pydantic.Field("", serialization_alias="Shown", repr=False)


class AliasedByName(Aliased):
    model_config = pydantic.ConfigDict(validate_assignment=True, populate_by_name=True)


@pytest.mark.parametrize("model", [Aliased, AliasedByName])
@pytest.mark.parametrize("validate", [False, True])
def test_a_model_with_aliased_fields_is_written_back_by_field_name(model, validate):
    class Count(Node):
        def post(self, shared, prep_res, exec_res):
            shared.user_id += 1
            shared.label = "counted"
            shared.shown = "yes"

    given = model(userId=1)
    Flow(start=Count(name="count"), state=model, validate=validate).run(given)  # no warning
    assert (given.user_id, given.label, given.shown) == (2, "counted", "yes")
    shared = {"user_id": 1}  # a dict of its keys: by field name, as a node writes them
    Flow(start=Count(name="count"), state=model, validate=validate).run(shared)
    assert shared == {"user_id": 2, "label": "counted", "shown": "yes"}


def test_validating_writes_to_a_field_with_model_only_attributes_warns_of_nothing():
    class Tagged(pydantic.BaseModel):
        id: str = pydantic.Field("a", frozen=True, repr=False, alias="ID")
        n: int = pydantic.Field(0, ge=0, validate_default=True)

    flow = Flow(start=Setter("n", "3", attribute=True, name="set"), state=Tagged, validate=True)
    given = Tagged()
    flow.run(given)  # (warnings are errors in the tests)
    assert given.n == 3
    with pytest.raises(StateError, match=r"greater than or equal to 0"):
        Flow(start=Setter("n", -1, name="set"), state=Tagged, validate=True).run(Tagged())


# -- a state class made per request is freed with its flow --------------------------------


def typeddict_state() -> tuple[type, ...]:
    class State(TypedDict, total=False):
        count: Annotated[int, merge.add]

    return (State,)


def dataclass_state() -> tuple[type, ...]:
    @dataclass
    class Item:  # a value class: a durable run's checkpoints may hold one
        name: str = ""

    @dataclass
    class State:
        count: Annotated[int, merge.add] = 0
        item: Item | None = None

    return State, Item


def model_state() -> tuple[type, ...]:
    item = pydantic.create_model("Item", name=(str, ""))
    state = pydantic.create_model(
        "State", count=(Annotated[int, merge.add], 0), item=(item | None, None)
    )
    return state, item


@pytest.mark.parametrize("validate", [False, True])
@pytest.mark.parametrize("make_state", [typeddict_state, dataclass_state, model_state])
def test_a_state_class_made_per_request_is_freed_after_its_run(make_state, validate):
    class Count(Node):
        def post(self, shared, prep_result, exec_result):
            shared["count"] = 1

    def handle_request() -> list[weakref.ref]:
        classes = make_state()
        start = Count()
        start >> Parallel(Count(), Count()) >> Count()
        Flow(start=start, state=classes[0], validate=validate).run({})
        return [weakref.ref(cls) for cls in classes]

    freed = handle_request()
    gc.collect()
    assert [cls() for cls in freed] == [None] * len(freed)


def test_every_public_class_s_type_hints_resolve_so_a_state_can_declare_them():
    # Public classes report the module braidflow; their string annotations
    # were looked up there and failed (a state with list[Failure] could not
    # be built by pydantic).
    import typing

    for name in braidflow.__all__:
        public = getattr(braidflow, name)
        if isinstance(public, type):
            typing.get_type_hints(public)  # raises NameError if one does not resolve

    class Ok(braidflow.Node):
        def post(self, shared, prep_res, exec_res):
            shared.n += 1

    class Bad(braidflow.Node):
        def exec(self, prep_res):
            raise RuntimeError("bad")

    class S(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        n: int = 0
        branch_failures: list[braidflow.Failure] = []

    state = S()
    branches = braidflow.Parallel(Ok(name="ok"), Bad(name="bad"), on_error="collect")
    braidflow.Flow(start=branches, state=S).run(state)
    assert state.n == 1
    assert [failure.item for failure in state.branch_failures] == ["bad"]


def test_a_sub_flow_whose_state_lacks_keys_of_the_flow_around_is_refused_before_anything_runs():
    class Outer(TypedDict):
        a: int
        log: list[str]

    class Narrow(TypedDict):
        a: int

    class First(Node):
        def post(self, shared, prep_res, exec_res):
            shared["log"].append("first ran")

    class Inc(Node):
        def post(self, shared, prep_res, exec_res):
            shared["a"] += 1

    def flow(sub_state):
        first = First(name="first")
        first >> Flow(start=Inc(name="inc"), state=sub_state, name="sub")
        return Flow(start=first, state=Outer)

    shared = {"a": 1, "log": []}
    with pytest.raises(
        braidflow.WiringError,
        match=r"flow 'sub' \(Flow\) runs on the state type Narrow, and the flow around it on "
        r"Outer, whose keys 'log' Narrow lacks .*: declare them in Narrow, or give the "
        r"sub-flow state=Outer",
    ):
        flow(Narrow).run(shared)
    assert shared == {"a": 1, "log": []}  # nothing ran
    flow(Outer).run(shared)  # as it says
    assert shared == {"a": 2, "log": ["first ran"]}
