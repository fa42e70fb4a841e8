"""Interrupts that let the rest run: a branch or parallel item that asks stops
alone, the run suspends with every open question, and resume answers them by id."""

import asyncio
import threading

import pytest

import braidflow as bf
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    CheckpointError,
    Flow,
    InvalidParameterError,
    MemoryStore,
    Node,
    ParallelBatchNode,
    ResumeError,
    SQLiteStore,
    StoreError,
    Suspended,
    interrupt,
)


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    return SQLiteStore(tmp_path / "runs.db") if request.param == "sqlite" else MemoryStore()


# -- branches ---------------------------------------------------------------------------


def fork_flow(ran, asked):
    """``start >> [ask, slow >> slower] >> join``, sync: ``slow`` finishes only
    once ``ask`` has asked, so a question that stopped everything would stop it."""

    class Start(Node):
        def post(self, shared, prep_res, exec_res):
            ran.append("start")

    class Ask(Node):
        def exec(self, prep_res):
            asked.set()
            return interrupt("ship it?")

        def post(self, shared, prep_res, exec_res):
            shared["answer"] = exec_res

    class Slow(Node):
        def exec(self, prep_res):
            assert asked.wait(10)

        def post(self, shared, prep_res, exec_res):
            ran.append(self.name)
            shared[self.name] = True

    class Join(Node):
        def post(self, shared, prep_res, exec_res):
            ran.append("join")

    start, slow = Start(name="start"), Slow(name="slow")
    slow >> Slow(name="slower")
    start >> [Ask(name="ask"), slow] >> Join(name="join")
    return Flow(start=start)


def test_a_branch_that_asks_lets_its_sibling_run_to_its_end_once(store):
    ran, asked = [], threading.Event()
    flow = fork_flow(ran, asked)
    with pytest.raises(Suspended) as suspended:
        flow.run({}, store=store, run_id="r")
    assert ran == ["start", "slow", "slower"]  # the sibling ran on; the join waits
    (question,) = suspended.value.questions
    assert (question.where, question.item, question.prompt) == (
        "Flow/Parallel/ask/ask",
        None,
        "ship it?",
    )
    done = flow.resume("r", store=store, input="yes")
    assert ran == ["start", "slow", "slower", "join"]  # slow ran exactly once
    assert done == {"answer": "yes", "slow": True, "slower": True}


async def test_an_async_branch_that_asks_lets_its_sibling_run_to_its_end_once(store):
    ran = []
    asked = asyncio.Event()

    class Ask(AsyncNode):
        async def exec_async(self, prep_res):
            asked.set()
            return interrupt("ship it?")

        async def post_async(self, shared, prep_res, exec_res):
            shared["answer"] = exec_res

    class Slow(AsyncNode):
        async def exec_async(self, prep_res):
            await asked.wait()

        async def post_async(self, shared, prep_res, exec_res):
            ran.append(self.name)
            shared[self.name] = True

    class Join(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            ran.append("join")

    start, slow = Slow(name="start"), Slow(name="slow")
    slow >> Slow(name="slower")
    start >> [slow, Ask(name="ask")] >> Join(name="join")
    flow = AsyncFlow(start=start)
    asked.set()  # start itself need not wait
    with pytest.raises(Suspended):
        await flow.run_async({}, store=store, run_id="r")
    assert ran == ["start", "slow", "slower"]
    asked.clear()  # on resume, nothing waits on the question: slow is not run again
    done = await flow.resume_async("r", store=store, input="yes")
    assert ran == ["start", "slow", "slower", "join"]
    assert done["answer"] == "yes"
    assert done["slower"] is True


def test_two_branches_ask_and_one_answer_leaves_the_other_waiting(store):
    class Ask(Node):
        def exec(self, prep_res):
            return interrupt(f"{self.name}?")

        def post(self, shared, prep_res, exec_res):
            shared[self.name] = exec_res

    flow = Flow(start=bf.Parallel(Ask(name="a"), Ask(name="b"), name="both"))
    with pytest.raises(Suspended) as suspended:
        flow.run({}, store=store, run_id="r")
    by_where = {question.where: question for question in suspended.value.questions}
    assert set(by_where) == {"Flow/both/a/a", "Flow/both/b/b"}
    assert {q.prompt for q in store.get("r").questions} == {"a?", "b?"}
    with pytest.raises(Suspended) as again:
        flow.resume("r", store=store, answers={by_where["Flow/both/a/a"].id: "A"})
    assert [q.id for q in again.value.questions] == [by_where["Flow/both/b/b"].id]  # same id
    assert [q.id for q in store.get("r").questions] == [by_where["Flow/both/b/b"].id]
    assert flow.resume("r", store=store, input="B") == {"a": "A", "b": "B"}
    assert store.get("r").questions == ()


# -- parallel batches ----------------------------------------------------------------------


def batch_flow(kind, bound, executed):
    """100 items; items 3 and 70 ask; ``executed`` counts each item's finished execs."""
    lock = threading.Lock()

    def finished(item):
        with lock:
            executed[item] = executed.get(item, 0) + 1

    if kind == "sync":

        class Items(ParallelBatchNode):
            def prep(self, shared):
                return list(range(100))

            def exec(self, item):
                answer = interrupt(f"item {item}?") if item in (3, 70) else item * 2
                finished(item)
                return answer

            def post(self, shared, prep_res, exec_res):
                shared["results"] = exec_res

        return Flow(start=Items(max_concurrency=bound, name="items"))

    class AsyncItems(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(100))

        async def exec_async(self, item):
            await asyncio.sleep(0)  # every item is under way before any asks
            answer = interrupt(f"item {item}?") if item in (3, 70) else item * 2
            finished(item)
            return answer

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    return AsyncFlow(start=AsyncItems(max_concurrency=bound, name="items"))


async def run_or_resume(flow, **options):
    if isinstance(flow, AsyncFlow):
        if "run_id" in options:
            return await flow.run_async({}, **options)
        return await flow.resume_async(options.pop("resuming"), **options)
    if "run_id" in options:
        return await asyncio.to_thread(flow.run, {}, **options)
    return await asyncio.to_thread(flow.resume, options.pop("resuming"), **options)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("observed", [False, True])
@pytest.mark.parametrize("bound", [None, 8])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_items_3_and_70_ask_the_other_98_finish_and_one_resume_answers_both(
    tmp_path, kind, bound, observed, durability
):
    store = SQLiteStore(tmp_path / "runs.db")
    executed = {}
    flow = batch_flow(kind, bound, executed)
    with pytest.raises(Suspended) as suspended:
        await run_or_resume(
            flow, store=store, run_id="r", record_events=observed, durability=durability
        )
    assert sorted(executed) == [item for item in range(100) if item not in (3, 70)]
    # In the store, whatever the durability, before the run says it waits:
    record, _, _, rows = store.read("r")
    assert record.status == "waiting"
    assert sum(row.kind == "ask" for row in rows) == 2
    questions = {question.item: question for question in suspended.value.questions}
    assert list(questions) == [3, 70]  # in the graph's order, however they were asked
    assert questions[70].prompt == "item 70?"
    assert questions[70].where == "Flow/items#70".replace("Flow", type(flow).__name__)
    assert record.questions == suspended.value.questions
    done = await run_or_resume(
        flow,
        store=store,
        resuming="r",
        answers={questions[3].id: "three", questions[70].id: "seventy"},
        durability=durability,
    )
    expected = [item * 2 for item in range(100)]
    expected[3], expected[70] = "three", "seventy"
    assert done["results"] == expected
    assert all(count == 1 for count in executed.values())  # nothing that finished ran again
    assert store.get("r").status == "completed"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_answering_one_of_two_items_leaves_the_run_waiting_on_the_other(store, kind):
    executed = {}
    flow = batch_flow(kind, 8, executed)
    with pytest.raises(Suspended) as suspended:
        await run_or_resume(flow, store=store, run_id="r")
    questions = {question.item: question for question in suspended.value.questions}
    with pytest.raises(Suspended) as again:
        await run_or_resume(flow, store=store, resuming="r", answers={questions[70].id: "70!"})
    assert again.value.questions == (questions[3],)  # the same question, the same id
    assert executed[70] == 1
    assert 3 not in executed
    assert store.get("r").questions == (questions[3],)
    done = await run_or_resume(flow, store=store, resuming="r", input="3!")
    assert done["results"][3] == "3!"
    assert done["results"][70] == "70!"
    assert all(count == 1 for count in executed.values())


async def test_parameter_sets_of_a_parallel_batch_flow_ask_apart(store):
    class Ask(AsyncNode):
        async def exec_async(self, prep_res):
            n = self.params["n"]
            return interrupt(f"n={n}?") if n % 2 else n

        async def post_async(self, shared, prep_res, exec_res):
            shared[f"got {self.params['n']}"] = exec_res

    class Sets(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": n} for n in range(4)]

    flow = AsyncFlow(start=Sets(start=Ask(name="ask"), name="sets"))
    with pytest.raises(Suspended) as suspended:
        await flow.run_async({}, store=store, run_id="r")
    questions = {question.item: question for question in suspended.value.questions}
    assert sorted(questions) == [1, 3]
    done = await flow.resume_async(
        "r", store=store, answers={question.id: f"to {q}" for q, question in questions.items()}
    )
    assert done == {"got 0": 0, "got 1": "to 1", "got 2": 2, "got 3": "to 3"}


async def test_questions_from_a_batch_inside_a_branch_are_listed_with_the_others(store):
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2]

        async def exec_async(self, item):
            return interrupt(f"item {item}?") if item else "zero"

        async def post_async(self, shared, prep_res, exec_res):
            shared["items"] = exec_res

    class Ask(AsyncNode):
        async def exec_async(self, prep_res):
            return interrupt("branch?")

        async def post_async(self, shared, prep_res, exec_res):
            shared["branch"] = exec_res

    flow = AsyncFlow(start=bf.Parallel(Items(name="items"), Ask(name="ask"), name="fork"))
    with pytest.raises(Suspended) as suspended:
        await flow.run_async({}, store=store, run_id="r")
    prompts = {question.prompt: question for question in suspended.value.questions}
    assert list(prompts) == ["item 1?", "item 2?", "branch?"]  # branch by branch, item by item
    first = suspended.value.questions[0]
    assert (suspended.value.node, suspended.value.prompt) == (first.where, "item 1?")
    assert (store.get("r").node, store.get("r").prompt) == (first.where, "item 1?")
    assert "waiting on 3 questions" in str(suspended.value)
    done = await flow.resume_async(
        "r", store=store, answers={question.id: p.upper() for p, question in prompts.items()}
    )
    assert done == {"items": ["zero", "ITEM 1?", "ITEM 2?"], "branch": "BRANCH?"}


async def test_a_sibling_that_fails_fails_the_run_even_while_another_asks(store):
    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1]

        async def exec_async(self, item):
            if item == 0:
                return interrupt("?")
            await asyncio.sleep(0)
            raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await AsyncFlow(start=Items()).run_async({}, store=store, run_id="r")
    assert store.get("r").status == "failed"
    assert store.get("r").questions == ()


# -- bad answers --------------------------------------------------------------------------------


def two_questions(store):
    class Ask(Node):
        def exec(self, prep_res):
            return interrupt(f"{self.name}?")

        def post(self, shared, prep_res, exec_res):
            shared[self.name] = exec_res

    flow = Flow(start=bf.Parallel(Ask(name="a"), Ask(name="b")))
    with pytest.raises(Suspended) as suspended:
        flow.run({}, store=store, run_id="r")
    return flow, suspended.value.questions


def test_input_for_a_run_waiting_on_several_questions_says_answer_by_id(store):
    flow, questions = two_questions(store)
    with pytest.raises(ResumeError, match=r"waits on 2 questions, so input= cannot say") as caught:
        flow.resume("r", store=store, input="yes")
    for question in questions:
        assert repr(question.id) in str(caught.value)
    assert "answers={" in str(caught.value)
    assert "--answer ID=JSON" in str(caught.value)
    assert store.get("r").status == "waiting"  # left as it was
    done = flow.resume("r", store=store, answers={q.id: q.prompt for q in questions})
    assert done == {"a": "a?", "b": "b?"}


def test_an_unknown_question_id_lists_the_open_ones(store):
    flow, questions = two_questions(store)
    with pytest.raises(ResumeError, match=r"has no open question 'nope'") as caught:
        flow.resume("r", store=store, answers={"nope": 1, questions[0].id: 2})
    assert all(repr(question.id) in str(caught.value) for question in questions)
    assert store.get("r").questions == questions  # nothing answered, nothing written
    with pytest.raises(Suspended):
        flow.resume("r", store=store, answers={questions[0].id: "A"})
    with pytest.raises(ResumeError, match=r"no open question .*an answered question"):
        flow.resume("r", store=store, answers={questions[0].id: "again"})


def test_answers_to_a_run_not_waiting_say_resume_without(store):
    class Fails(Node):
        def exec(self, prep_res):
            raise ConnectionError("down")

    flow = Flow(start=Fails())
    with pytest.raises(ConnectionError):
        flow.run({}, store=store, run_id="r")
    with pytest.raises(ResumeError, match=r"is failed, not waiting for input; .* without answers="):
        flow.resume("r", store=store, answers={"abc": 1})
    assert store.get("r").status == "failed"


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"input": 1, "answers": {"a": 1}}, "not both"),
        ({"answers": {}}, "at least one"),
        ({"answers": [("a", 1)]}, "must be a dict"),
        ({"answers": {1: "x"}}, "must be a dict"),
    ],
)
def test_bad_answers_are_refused_before_the_run_is_touched(store, options, said):
    flow, _questions = two_questions(store)
    with pytest.raises(InvalidParameterError, match=said):
        flow.resume("r", store=store, **options)
    assert store.get("r").status == "waiting"


def test_answers_to_a_completed_run_are_a_store_error(store):
    flow, questions = two_questions(store)
    flow.resume("r", store=store, answers={q.id: 0 for q in questions})
    with pytest.raises(StoreError):
        flow.resume("r", store=store, answers={questions[0].id: 0})


@pytest.mark.parametrize("bound", [None, 2])
def test_an_item_asked_again_has_a_new_id_and_a_fork_answers_it_its_own_way(store, bound):
    """Under on_error="collect" too: a failing sibling is collected, the
    question of an item stops only that item."""
    ran = {}

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        async def exec_async(self, item):
            await asyncio.sleep(0)
            if item == 1:
                raise ValueError("bad")
            first = interrupt(f"first {item}?") if item in (2, 4) else item
            second = interrupt(f"second {item}?") if item == 2 else None
            ran[item] = ran.get(item, 0) + 1
            return [first, second]

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    flow = AsyncFlow(start=Items(on_error="collect", max_concurrency=bound))
    with pytest.raises(Suspended) as suspended:
        flow.run({}, store=store, run_id="r")
    assert sorted(ran) == [0, 3, 5]
    first = {question.item: question for question in suspended.value.questions}
    with pytest.raises(Suspended) as again:
        flow.resume("r", store=store, answers={first[2].id: "A2", first[4].id: "A4"})
    (second,) = again.value.questions
    assert (second.item, second.prompt) == (2, "second 2?")
    assert second.id != first[2].id
    assert ran == {0: 1, 3: 1, 5: 1, 4: 1}
    forked = flow.fork("r", store=store, run_id="f", answers={second.id: "F"})
    assert forked["results"][2] == ["A2", "F"]
    done = flow.resume("r", store=store, input="B2")
    assert done["results"][2] == ["A2", "B2"]
    assert done["results"][4] == ["A4", None]
    assert isinstance(done["results"][1], bf.Failure)


def test_a_message_lists_the_first_questions_and_counts_the_rest(store):
    class Items(ParallelBatchNode):
        def prep(self, shared):
            return list(range(8))

        def exec(self, item):
            return interrupt(f"item {item}?")

    flow = Flow(start=Items())
    with pytest.raises(Suspended, match=r"waiting on 8 questions: .*; and 3 more") as suspended:
        flow.run({}, store=store, run_id="r")
    assert len(suspended.value.questions) == 8
    with pytest.raises(ResumeError, match=r"; and 3 more \(Suspended.questions has all\)"):
        flow.resume("r", store=store, input="x")


def test_an_answer_the_store_cannot_keep_names_its_question_and_nothing_is_written(store):
    flow, (a, b) = two_questions(store)
    with pytest.raises(CheckpointError, match=rf"answer to question {b.id} of run 'r'") as caught:
        flow.resume("r", store=store, answers={a.id: "A", b.id: object()})
    assert "is an object that cannot be saved" in str(caught.value)
    assert store.get("r").status == "waiting"
    assert sorted(question.id for question in store.get("r").questions) == sorted([a.id, b.id])
    done = flow.resume("r", store=store, answers={a.id: "A", b.id: "B"})
    assert (done["a"], done["b"]) == ("A", "B")


def test_a_fork_whose_answers_do_not_fit_is_refused_before_it_is_made(store):
    """As a resume refuses them, before anything is written: the fork's run id
    is free for the fork with the right answers."""
    flow, (a, b) = two_questions(store)
    for wrong, refused, said in [
        ({"answers": {"nope": 1}}, ResumeError, "has no open question 'nope'; it waits on"),
        (
            {"input": "yes"},
            ResumeError,
            "waits on 2 questions, so input= cannot say which it answers",
        ),
        ({"at": 0, "input": "yes"}, ResumeError, "after step 0 is not waiting for input"),
        ({"answers": {}}, InvalidParameterError, "must be a dict of question ids"),
        ({"input": "yes", "answers": {a.id: 1}}, InvalidParameterError, "not both"),
        (
            {"answers": {a.id: object()}},
            CheckpointError,
            rf"answer to question {a.id} of a fork of run 'r'.* is an object that cannot",
        ),
    ]:
        with pytest.raises(refused, match=said) as error:
            flow.fork("r", store=store, run_id="f", **wrong)
        assert [record.run_id for record in store.runs()] == ["r"], error.value
    with pytest.raises(ResumeError, match=r"answers=\{") as by_id:
        flow.fork("r", store=store, input="yes")
    assert f"flow.fork('r', store=..., answers={{{a.id!r}: ..., {b.id!r}: ...}})" in str(
        by_id.value
    )
    done = flow.fork("r", store=store, run_id="f", answers={a.id: "A", b.id: "B"})
    assert (done["a"], done["b"]) == ("A", "B")
    assert store.get("r").status == "waiting"  # only read
    with pytest.raises(Suspended):  # one answered, the other asks again
        flow.fork("r", store=store, run_id="g", answers={b.id: "B"})
    assert [question.id for question in store.get("g").questions] == [a.id]


async def test_a_resume_that_cannot_say_which_question_lists_them_in_the_graph_s_order():
    store, b_asked = MemoryStore(), asyncio.Event()

    class First(AsyncNode):  # first in the graph, asks last
        async def exec_async(self, prep_res):
            await b_asked.wait()
            return interrupt("a?")

    class Second(AsyncNode):
        async def exec_async(self, prep_res):
            b_asked.set()
            return interrupt("b?")

    flow = AsyncFlow(start=bf.Parallel(First(name="a"), Second(name="b")))
    with pytest.raises(Suspended) as suspended:
        await flow.run_async({}, store=store, run_id="r")
    a, b = suspended.value.questions  # the graph's order
    assert (a.prompt, b.prompt) == ("a?", "b?")
    with pytest.raises(ResumeError) as refused:
        await flow.resume_async("r", store=store, input="yes")
    said = str(refused.value)
    assert said.index(repr(a.id)) < said.index(repr(b.id))
    assert f"answers={{{a.id!r}: ..., {b.id!r}: ...}}" in said
