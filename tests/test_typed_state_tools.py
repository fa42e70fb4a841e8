"""Typed shared state in durable runs (typed values come back as themselves)
and in the tools (the graph's table of state keys, `braidflow graph`)."""

import textwrap
from dataclasses import dataclass, field
from typing import Annotated, NotRequired, TypedDict

import pydantic
import pytest

from braidflow import (
    AsyncFlow,
    CheckpointError,
    Flow,
    MemoryStore,
    Node,
    Parallel,
    ResumeError,
    SQLiteStore,
    StateError,
    Suspended,
    interrupt,
    merge,
)
from braidflow import _state as state_module
from braidflow.cli import main

# -- durable runs ------------------------------------------------------------------------


@dataclass
class Page:
    url: str
    words: list[str]


class Source(pydantic.BaseModel):
    title: str
    year: int


@dataclass
class Crawl:
    start: str
    page: Page | None = None
    sources: list[Source] = field(default_factory=list)
    answers: Annotated[list[str], merge.extend] = field(default_factory=list)


class Fetch(Node[None, None, Crawl]):
    def post(self, shared: Crawl, prep_res: None, exec_res: None) -> str | None:
        shared.page = Page(shared.start, ["a", "b"])
        shared.sources.append(Source(title="t", year=2020))
        return None


class Ask(Node[None, str, Crawl]):
    def exec(self, prep_res: None) -> str:
        answer: str = interrupt("go on?")
        return answer

    def post(self, shared: Crawl, prep_res: None, exec_res: str) -> str | None:
        shared.answers.append(exec_res)
        return None


def crawl() -> Flow:
    fetch = Fetch()
    fetch >> Ask()
    return Flow(start=fetch, state=Crawl)


@pytest.fixture(params=["memory-json", "sqlite-json", "sqlite-pickle"])
def store(request, tmp_path):
    kind, serializer = request.param.split("-")
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "runs.db", serializer=serializer)
    return MemoryStore(serializer=serializer)


def test_dataclasses_and_models_in_the_state_come_back_as_themselves_on_resume(store):
    with pytest.raises(Suspended):
        crawl().run({"start": "https://x"}, store=store, run_id="r")
    final = crawl().resume("r", store=store, input="yes")
    assert final["page"] == Page("https://x", ["a", "b"])
    assert type(final["page"]) is Page
    assert final["sources"] == [Source(title="t", year=2020)]
    assert type(final["sources"][0]) is Source
    assert final["answers"] == ["yes"]


def test_a_run_given_the_state_instance_is_durable_and_the_instance_gets_the_result(store):
    flow = Flow(start=Fetch(), state=Crawl)
    given = Crawl("https://y")
    flow.run(given, store=store, run_id="r")
    assert given.page == Page("https://y", ["a", "b"])


class Author(pydantic.BaseModel):
    user_id: int = pydantic.Field(alias="userId")


class Cited(pydantic.BaseModel):
    title: str = pydantic.Field(validation_alias="Title", serialization_alias="TITLE")
    author: Author
    model_config = pydantic.ConfigDict(populate_by_name=True)


@dataclass
class Citing:
    cited: Cited | None = None
    author: Author | None = None


def test_models_with_aliased_fields_come_back_on_resume(store):
    class Make(Node):
        def post(self, shared, prep_res, exec_res):
            shared.author = Author(userId=7)
            shared.cited = Cited(Title="t", author=Author(userId=8))

    class Asks(Node):
        def exec(self, prep_res):
            return interrupt("go on?")

    def flow():
        make = Make(name="make")
        make >> Asks(name="asks")
        return Flow(start=make, state=Citing)

    with pytest.raises(Suspended):
        flow().run({}, store=store, run_id="r")
    final = flow().resume("r", store=store, input="yes")
    assert final["author"] == Author(userId=7)
    assert final["cited"] == Cited(Title="t", author=Author(userId=8))


def test_a_checkpoint_naming_a_class_no_state_type_declares_is_not_rebuilt(monkeypatch):
    store = MemoryStore()
    with pytest.raises(Suspended):
        crawl().run({"start": "s"}, store=store, run_id="r")
    name = f"{Page.__module__}.{Page.__qualname__}"
    monkeypatch.delitem(state_module.VALUE_CLASSES, name)
    monkeypatch.setattr(state_module, "_note_value_classes", lambda annotation: None)
    with pytest.raises(ResumeError, match=rf"holds a {name}, a class no state type declares"):
        crawl().resume("r", store=store, input="yes")


def test_a_dataclass_field_json_would_change_is_refused_where_it_is():
    @dataclass
    class Span:
        bounds: tuple[int, int]

    @dataclass
    class Holder:
        span: Span | None = None

    class Put(Node):
        def post(self, shared, prep_res, exec_res):
            shared.span = Span((1, 2))

    with pytest.raises(CheckpointError, match=r"the tuple at .*Span\.\['bounds'\] would come back"):
        Flow(start=Put(), state=Holder).run({}, store=MemoryStore())


# -- the graph's table ------------------------------------------------------------------------


class Research(TypedDict):
    question: str
    notes: Annotated[list[str], merge.extend]
    searches: Annotated[int, merge.add]
    answer: str


class Search(Node[str, str, Research]):
    def prep(self, shared: Research) -> str:
        return shared["question"]

    def post(self, shared: Research, prep_res: str, exec_res: str) -> str | None:
        shared["notes"].append(exec_res)
        shared["searches"] += 1
        return None


class Answer(Node[list[str], str, Research]):
    def prep(self, shared: Research) -> list[str]:
        return shared.get("notes", [])

    def post(self, shared: Research, prep_res: list[str], exec_res: str) -> str | None:
        shared["answer"] = exec_res
        return None


def research_flow(**options) -> Flow:
    first = Search(name="plan")
    first >> Parallel(Search(name="web"), Search(name="papers")) >> Answer()
    return Flow(start=first, **options)


TABLE = [
    "| key | type | merge | read by | written by |",
    "|---|---|---|---|---|",
    "| question | str |  | plan, web, papers |  |",
    "| notes | list[str] | extend | plan, web, papers, Answer | plan, web, papers |",
    "| searches | int | add | plan, web, papers | plan, web, papers |",
    "| answer | str |  |  | Answer |",
]


@pytest.mark.parametrize("declared", ["nodes", "flow"])
def test_the_mermaid_drawing_ends_with_the_table_of_state_keys(declared):
    flow = research_flow() if declared == "nodes" else research_flow(state=Research)
    text = flow.to_mermaid()
    drawing, _, table = text.partition("%% state Research:")
    assert "flowchart TD" in drawing
    assert "%%" not in drawing
    assert [line.removeprefix("%% ") for line in table.splitlines()[2:]] == TABLE


def test_untyped_flows_are_drawn_without_a_table():
    class Plain(Node):
        def post(self, shared, prep_res, exec_res):
            shared["x"] = 1

    assert "%%" not in Flow(start=Plain()).to_mermaid()


def test_braidflow_graph_prints_the_table_in_markdown(tmp_path, capsys):
    module = tmp_path / "typed_flow.py"
    module.write_text(
        textwrap.dedent(
            """
            from typing import TypedDict
            from braidflow import Flow, Node

            class State(TypedDict):
                topic: str
                text: str

            class Draft(Node[str, str, State]):
                def prep(self, shared: State) -> str:
                    return shared["topic"]

                def post(self, shared: State, prep_res: str, exec_res: str) -> str | None:
                    shared["text"] = exec_res
                    return None

            flow = Flow(start=Draft(), state=State)
            """
        )
    )
    assert main(["graph", f"{module}:flow", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("```mermaid\nflowchart TD\n")
    assert "```\n\nstate State: each key" in out
    assert "| topic | str |  | Draft |  |\n| text | str |  |  | Draft |\n" in out
    assert main(["graph", f"{module}:flow"]) == 0
    assert "%% | text | str |  |  | Draft |" in capsys.readouterr().out


def test_a_stored_run_adds_what_each_step_changed_even_in_an_untyped_flow(tmp_path, capsys):
    class Plan(Node):
        def prep(self, shared):
            return shared["question"]

        def post(self, shared, prep_res, exec_res):
            shared["plan"] = "outline"

    class Dynamic(Node):  # a key its code does not name: only the run shows it
        def post(self, shared, prep_res, exec_res):
            for key in ("draft",):
                shared[key] = 1

    plan = Plan()
    plan >> Dynamic()
    flow = Flow(start=plan)
    store = SQLiteStore(tmp_path / "runs.db")
    flow.run({"question": "q"}, store=store, run_id="seen")
    assert "%%" not in flow.to_mermaid()
    text = flow.to_mermaid(observed=flow.history("seen", store=store))
    assert [line.removeprefix("%% ") for line in text.splitlines() if line.startswith("%% |")] == [
        "| key | read by | written by |",
        "|---|---|---|",
        "| question | Plan |  |",
        "| plan |  | Plan |",
        "| draft |  | Dynamic |",
    ]
    module = tmp_path / "untyped_flow.py"
    module.write_text(
        "from braidflow import Flow, Node\n\n\nclass Dynamic(Node):\n"
        "    def post(self, shared, prep_res, exec_res):\n"
        "        for key in ('draft',):\n            shared[key] = 1\n\n\n"
        "flow = Flow(start=Dynamic())\n"
    )
    flow_from_file = Flow(start=Dynamic())
    flow_from_file.run({}, store=store, run_id="file")
    target = f"{module}:flow"
    assert main(["graph", target, "--run", "file", "--store", str(tmp_path / "runs.db")]) == 0
    assert "%% | draft |  | Dynamic |" in capsys.readouterr().out


def test_braidflow_graph_names_an_unknown_run(tmp_path, capsys):
    module = tmp_path / "one.py"
    module.write_text("from braidflow import Flow, Node\n\nflow = Flow(start=Node())\n")
    store = tmp_path / "runs.db"
    SQLiteStore(store)
    code = main(["graph", f"{module}:flow", "--run", "nope", "--store", str(store)])
    assert code == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_braidflow_graph_refuses_a_run_of_another_flow(tmp_path, capsys):
    module = tmp_path / "two.py"
    module.write_text(
        "from braidflow import Flow, Node\n\n\nclass Write(Node):\n    pass\n\n\n"
        "class Square(Node):\n    pass\n\n\n"
        "writes = Flow(start=Write())\nsquares = Flow(start=Square())\n"
    )
    store = tmp_path / "runs.db"
    assert main(["run", f"{module}:writes", "--store", str(store), "--run-id", "w"]) == 0
    capsys.readouterr()
    assert main(["graph", f"{module}:squares", "--run", "w", "--store", str(store)]) == 2
    said = capsys.readouterr()
    assert said.out == ""  # no table of another flow's steps
    assert "run 'w' was recorded with another graph" in said.err
    assert main(["graph", f"{module}:writes", "--run", "w", "--store", str(store)]) == 0


@dataclass
class Note:
    who: str
    text: str


@dataclass
class Notes:
    notes: Annotated[list[Note], merge.extend] = field(default_factory=list)
    count: Annotated[int, merge.add] = 0


def test_a_durable_typed_fork_resumes_with_the_type_s_rules_and_values(store):
    class Quick(Node[None, None, Notes]):
        def post(self, shared: Notes, prep_res: None, exec_res: None) -> str | None:
            shared.notes.append(Note(self.name, "quick"))
            shared.count += 1
            return None

    class Slow(Node[None, str, Notes]):
        def exec(self, prep_res: None) -> str:
            answer: str = interrupt("?")
            return answer

        def post(self, shared: Notes, prep_res: None, exec_res: str) -> str | None:
            shared.notes.append(Note(self.name, exec_res))
            shared.count += 10
            return None

    def flow() -> Flow:
        return Flow(start=Parallel(Quick(name="q"), Slow(name="s")), state=Notes)

    given = Notes()
    with pytest.raises(Suspended):
        flow().run(given, store=store, run_id="f")
    final = flow().resume("f", store=store, input="yes")
    assert final == {"notes": [Note("q", "quick"), Note("s", "yes")], "count": 11}


def test_a_node_whose_code_cannot_be_read_is_named_under_the_table():
    namespace: dict = {}
    exec(  # a class with no source file, as in a notebook cell run by exec
        "from braidflow import Node\n"
        "class Hidden(Node):\n"
        "    def post(self, shared, prep_res, exec_res):\n"
        "        shared['answer'] = 'x'\n",
        namespace,
    )
    first = Search(name="plan")
    first >> namespace["Hidden"]()
    text = Flow(start=first, state=Research).to_mermaid()
    assert "%% (the code of Hidden could not be read)" in text
    assert "%% | answer | str |  |  |  |" in text


def test_nodes_typed_against_a_plain_dict_type_give_no_table():
    class Loose(Node[str, str, dict[str, int]]):
        def prep(self, shared: dict[str, int]) -> str:
            return str(shared["n"])

    assert "%%" not in Flow(start=Loose()).to_mermaid()


def test_a_resume_whose_migrate_breaks_the_state_type_is_refused_and_the_run_waits(store):
    with pytest.raises(Suspended):
        crawl().run({"start": "https://x"}, store=store, run_id="r")

    def breaks(shared):
        shared["start"] = 42  # Crawl.start is a str
        shared["extra"] = True  # and Crawl has no such key

    with pytest.raises(StateError, match="shared does not fit its state type Crawl") as caught:
        crawl().resume("r", store=store, input="yes", migrate=breaks)
    assert "'extra'" in str(caught.value)
    assert store.get("r").status == "waiting"  # left as it was: resumed as it should be
    final = crawl().resume("r", store=store, input="yes")
    assert final["answers"] == ["yes"]


def test_a_resume_refused_for_its_migrate_writes_no_answer(store):
    with pytest.raises(Suspended):
        crawl().run({"start": "https://x"}, store=store, run_id="r")
    with pytest.raises(ResumeError, match="migrate= returned a int"):
        crawl().resume("r", store=store, input="first", migrate=lambda shared: 5)
    final = crawl().resume("r", store=store, input="second")  # the question still open
    assert final["answers"] == ["second"]


def test_a_fork_whose_update_breaks_the_state_type_is_refused_before_it_is_made(store):
    with pytest.raises(Suspended):
        crawl().run({"start": "https://x"}, store=store, run_id="r")
    for update in ({"start": 42}, {"extra": True}):
        with pytest.raises(StateError, match="shared does not fit its state type Crawl"):
            crawl().fork("r", store=store, at=0, update=update, run_id="f")
    assert [run.run_id for run in store.runs()] == ["r"]  # its run id is free
    with pytest.raises(Suspended):
        crawl().fork("r", store=store, at=0, update={"start": "https://y"}, run_id="f")


def test_a_resume_gives_a_field_added_since_the_run_began_its_default(store):
    with pytest.raises(Suspended):
        crawl().run({"start": "https://x"}, store=store, run_id="r")

    @dataclass
    class CrawlWithNotes(Crawl):
        notes: list[str] = field(default_factory=list)

    class AskAndNote(Node[None, str, CrawlWithNotes]):  # the code changed, not the wiring
        def exec(self, prep_res: None) -> str:
            answer: str = interrupt("go on?")
            return answer

        def post(self, shared, prep_res, exec_res):
            shared.notes.append(exec_res)

    fetch = Fetch()
    fetch >> AskAndNote(name="Ask")
    final = Flow(start=fetch, state=CrawlWithNotes).resume("r", store=store, input="yes")
    assert final["notes"] == ["yes"]


def test_an_instance_given_to_a_run_that_stops_at_a_question_is_brought_up_to_date(store):
    given = Crawl(start="https://x")
    with pytest.raises(Suspended):
        crawl().run(given, store=store, run_id="r")
    assert given.page == Page("https://x", ["a", "b"])  # what the run did before it asked
    assert given.sources == [Source(title="t", year=2020)]


# -- validate=True: what a durable run records is what its resume takes ------------------


class Limits(pydantic.BaseModel):
    most: int


class Counted(pydantic.BaseModel):
    n: int = 0
    limits: Limits | None = None
    out: str = ""


class Plan(Node[None, None, Counted]):
    def post(self, shared: Counted, prep_res: None, exec_res: None) -> str | None:
        shared.n = 5
        return None


class Use(Node[None, None, Counted]):
    crash = False

    def post(self, shared: Counted, prep_res: None, exec_res: None) -> str | None:
        if Use.crash:
            raise RuntimeError("crash")
        shared.out = f"n={shared.n!r} limits={shared.limits!r}"
        return None


def counted() -> Flow:
    plan = Plan(name="plan")
    plan >> Use(name="use")
    return Flow(start=plan, state=Counted, validate=True)


def assert_update_recorded_as_used(store, run_id):
    steps = counted().history(run_id, store=store)
    update = next(step for step in steps if step.kind == "update")
    state = counted().state(run_id, store=store, at=update.number)
    assert state["n"] == 7
    assert state["limits"] == Limits(most=3)  # the model, not the dict given
    following = steps[update.number]  # the step after it: no change of what it only read
    assert following.path == "use"
    assert not {"n", "limits"} & set(following.changed)  # (under async or exit: none listed)
    final = counted().state(run_id, store=store)
    assert final["out"] == "n=7 limits=Limits(most=3)"


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_fork_records_its_update_as_the_validated_run_uses_it(store, durability):
    counted().run({}, store=store, run_id="r")  # (a state after each step: sync)
    update = {"n": "7", "limits": {"most": "3"}}
    counted().fork("r", store=store, at=1, update=update, run_id="f", durability=durability)
    assert_update_recorded_as_used(store, "f")


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_migration_is_recorded_as_the_validated_run_uses_it(store, durability, monkeypatch):
    monkeypatch.setattr(Use, "crash", True)
    with pytest.raises(RuntimeError, match="crash"):
        counted().run({}, store=store, run_id="r", durability=durability)
    monkeypatch.setattr(Use, "crash", False)

    def migrate(shared):
        shared["n"] = "7"
        shared["limits"] = {"most": "3"}

    counted().resume("r", store=store, migrate=migrate, durability=durability)
    assert_update_recorded_as_used(store, "r")


class Listed(TypedDict):
    items: list[str]
    q: str


class Append(Node[None, None, Listed]):
    def __init__(self, item: object, name: str) -> None:
        super().__init__(name=name)
        self.item = item

    def post(self, shared: Listed, prep_res: None, exec_res: None) -> str | None:
        shared["items"].append(self.item)  # type: ignore[arg-type]
        return None


class Crash(Node[None, None, Listed]):
    crash = True

    def post(self, shared: Listed, prep_res: None, exec_res: None) -> str | None:
        if Crash.crash:
            raise RuntimeError("crash")
        return None


@pytest.mark.parametrize("in_branch", [False, True])
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_step_that_changes_a_value_in_place_out_of_its_type_is_not_recorded(
    store, durability, in_branch, monkeypatch
):
    monkeypatch.setattr(Crash, "crash", False)

    def flow(item: object) -> Flow:
        first = Append("a", "first")
        append = Append(item, "append")
        (
            first
            >> (Parallel(append, Crash(name="other")) if in_branch else append)
            >> Crash(name="crash")
        )
        return Flow(start=first, state=Listed, validate=True)

    with pytest.raises(StateError, match=r"shared\['items'\]\[1\] should be str, got 5") as caught:
        flow(5).run({"items": [], "q": "x"}, store=store, run_id="r", durability=durability)
    assert caught.value.node == "append"
    assert caught.value.key == "items"
    assert [step.path for step in flow(5).history("r", store=store) if step.kind == "step"][:1] == [
        "first"
    ]
    assert flow(5).state("r", store=store)["items"] == ["a"]  # what the resume takes
    monkeypatch.setattr(Crash, "crash", True)
    with pytest.raises(RuntimeError, match="crash"):  # its code fixed, the run goes on
        flow("b").resume("r", store=store, durability=durability)
    monkeypatch.setattr(Crash, "crash", False)
    assert flow("b").resume("r", store=store, durability=durability)["items"] == ["a", "b"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_model_value_changed_in_place_out_of_its_type_is_not_recorded(store, durability):
    class Totals(pydantic.BaseModel):
        counts: list[int] = []

    class Add(Node[None, None, Totals]):
        def post(self, shared: Totals, prep_res: None, exec_res: None) -> str | None:
            shared.counts.append("many")  # type: ignore[arg-type]
            return None

    flow = Flow(start=Add(name="add"), state=Totals, validate=True)
    with pytest.raises(StateError, match=r"shared\['counts'\] should be list\[int\]") as caught:
        flow.run({}, store=store, run_id="r", durability=durability)
    assert (caught.value.node, caught.value.key) == ("add", "counts")
    assert flow.state("r", store=store)["counts"] == []


@pytest.mark.parametrize("durability", [None, "sync", "async", "exit"])
def test_deleting_a_required_key_of_a_validated_typeddict_is_refused_at_the_del(store, durability):
    class Maybe(TypedDict):
        q: str
        hint: NotRequired[str]

    class Delete(Node[None, None, Maybe]):
        def __init__(self, key: str) -> None:
            super().__init__(name="delete")
            self.key = key

        def post(self, shared: Maybe, prep_res: None, exec_res: None) -> str | None:
            del shared[self.key]  # type: ignore[misc]
            return None

    options = {} if durability is None else {"store": store, "durability": durability}
    shared = {"q": "x", "hint": "h"}
    with pytest.raises(StateError, match="shared\\['q'\\] is a required key of Maybe") as caught:
        Flow(start=Delete("q"), state=Maybe, validate=True).run(shared, **options)
    assert (caught.value.node, caught.value.key) == ("delete", "q")
    assert shared["q"] == "x"
    Flow(start=Delete("hint"), state=Maybe, validate=True).run(shared, **options)
    assert "hint" not in shared  # a key it does not require may go


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_flow_s_own_prep_that_changes_a_value_in_place_out_of_its_type_is_not_kept(
    store, durability
):
    class Prepared(Flow):
        def prep(self, shared):
            shared["items"].append(5)

    flow = Prepared(start=Crash(name="crash"), state=Listed, validate=True)
    with pytest.raises(
        StateError, match=r"shared\['items'\]\[0\] should be str, got 5 .* after the prep of flow"
    ) as caught:
        flow.run({"items": [], "q": "x"}, store=store, run_id="r", durability=durability)
    assert (caught.value.node, caught.value.key) == ("Prepared", "items")
    assert flow.state("r", store=store)["items"] == []


class Appended(Flow):
    """A flow whose own post appends ``item`` to ``shared["items"]``."""

    item: object = "b"

    def post(self, shared, prep_res, exec_res):
        shared["items"].append(Appended.item)


class AsyncAppended(AsyncFlow):
    async def post_async(self, shared, prep_res, exec_res):
        shared["items"].append(Appended.item)


@pytest.mark.parametrize("kind", [Appended, AsyncAppended])
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_flow_s_own_post_that_changes_a_value_in_place_out_of_its_type_is_not_recorded(
    store, durability, kind, monkeypatch
):
    monkeypatch.setattr(Crash, "crash", False)

    def flow() -> Flow:
        return kind(start=Append("a", "first"), state=Listed, validate=True)

    monkeypatch.setattr(Appended, "item", 5)
    shared = {"items": [], "q": "x"}
    with pytest.raises(
        StateError,
        match=r"shared\['items'\]\[1\] should be str, got 5 .* after the post of flow "
        f"'{kind.__name__}'; what it changed is not recorded",
    ) as caught:
        flow().run(shared, store=store, run_id="r", durability=durability)
    assert (caught.value.node, caught.value.key) == (kind.__name__, "items")
    assert shared["items"] == ["a", 5]  # the caller's dict has what the run did, as on a failure
    assert flow().state("r", store=store)["items"] == ["a"]  # its step, not the post
    monkeypatch.setattr(Appended, "item", "b")  # its code fixed, the run resumes and completes
    assert flow().resume("r", store=store, durability=durability)["items"] == ["a", "b"]
    assert flow().state("r", store=store)["items"] == ["a", "b"]


@pytest.mark.parametrize("kind", [Appended, AsyncAppended])
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_sub_flow_s_own_post_out_of_its_type_is_its_step_s_and_not_recorded(
    store, durability, kind, monkeypatch
):
    # A sub-flow is a step of the walk around it: what its post leaves is
    # checked with that step, before it is recorded.
    def flow() -> Flow:
        sub = kind(start=Append("a", "inner"), name="sub")
        sub >> Append("c", "after")
        outer = Flow if kind is Appended else AsyncFlow
        return outer(start=sub, state=Listed, validate=True)

    monkeypatch.setattr(Appended, "item", 5)
    with pytest.raises(StateError, match=r"shared\['items'\]\[1\] should be str, got 5") as caught:
        flow().run({"items": [], "q": "x"}, store=store, run_id="r", durability=durability)
    assert (caught.value.node, caught.value.key) == ("sub", "items")
    assert flow().state("r", store=store)["items"] == ["a"]
    monkeypatch.setattr(Appended, "item", "b")
    assert flow().resume("r", store=store, durability=durability)["items"] == ["a", "b", "c"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_a_step_that_only_reads_a_frozen_field_is_recorded(durability):
    # A step's touched keys are checked before it is recorded; a frozen
    # field, which no write can change, is not (pydantic refuses any
    # assignment to it, the check's too).
    class Tenant(pydantic.BaseModel):
        tenant: str = pydantic.Field(frozen=True)
        n: int = 0
        names: list[str] = []

    class Read(Node):
        def post(self, shared, prep_res, exec_res):
            shared.n = len(shared.tenant)
            shared.names.append(shared.tenant)  # in place, and of its type

    state = Tenant(tenant="acme")
    Flow(start=Read(name="read"), state=Tenant, validate=True).run(
        state, store=MemoryStore(), durability=durability
    )
    assert (state.n, state.names) == (4, ["acme"])
