"""What a branch step of a durable run records of its view of ``shared``: a key
it deletes stays deleted when a resume or a fork replays it, a key it only
reads is not among what it changed, and a fork nested in it resumes as its
join left it."""

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    Flow,
    MemoryStore,
    Node,
    Parallel,
    SQLiteStore,
)

MODES = ["sync", "async", "exit"]


class Stop:
    """Whether the step after the deletion fails: set per test."""

    failing = False


class Delete(Node):
    def post(self, shared, prep_res, exec_res):
        del shared["tmp"]


class Look(Node):
    def post(self, shared, prep_res, exec_res):
        if Stop.failing:
            raise RuntimeError("stopped after the deletion")
        shared["after"] = "tmp" in shared


class AsyncDelete(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared.pop("tmp")


class AsyncLook(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        if Stop.failing:
            raise RuntimeError("stopped after the deletion")
        shared["after"] = "tmp" in shared


class Other(Node):
    def post(self, shared, prep_res, exec_res):
        shared["other"] = 1


def branches(asynchronous=False):
    """A branch deletes "tmp", then looks for it; another branch beside it."""
    if asynchronous:
        delete, look = AsyncDelete(name="d"), AsyncLook(name="a")
    else:
        delete, look = Delete(name="d"), Look(name="a")
    delete >> look
    return (AsyncFlow if asynchronous else Flow)(start=[delete, Other(name="o")], name="f")


@pytest.fixture(params=["memory", "json", "pickle"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        made = SQLiteStore(tmp_path / "runs.db", serializer=request.param)
        yield made
        made.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["Flow", "AsyncFlow"])
@pytest.mark.parametrize("durability", MODES)
async def test_a_key_a_branch_step_deleted_stays_deleted_on_resume(store, durability, asynchronous):
    async def run(resume):
        flow, options = branches(asynchronous), {"store": store, "durability": durability}
        if asynchronous:
            return await (
                flow.resume_async("r", **options)
                if resume
                else flow.run_async({"tmp": 0}, run_id="r", **options)
            )
        return (
            flow.resume("r", **options) if resume else flow.run({"tmp": 0}, run_id="r", **options)
        )

    Stop.failing = True
    with pytest.raises(RuntimeError, match="stopped after the deletion"):
        await run(resume=False)
    Stop.failing = False
    shared = await run(resume=True)
    assert shared == {"after": False, "other": 1}


@pytest.mark.parametrize("durability", MODES)
def test_a_fork_at_a_branch_step_that_deleted_a_key_keeps_it_deleted(store, durability):
    Stop.failing = False
    shared = {"tmp": 0}
    branches().run(shared, store=store, run_id="r", durability=durability)
    assert shared == {"after": False, "other": 1}
    steps = branches().history("r", store=store)
    deleting = next(step for step in steps if step.path.endswith("/d/d"))
    assert deleting.kind == "branch step"
    assert deleting.changed == ("tmp",)
    # The run's shared is as it was before the branches joined...
    assert branches().state("r", store=store, at=deleting.number) == {"tmp": 0}
    # ...and the branch the fork runs on from has the key deleted.
    forked = branches().fork("r", store=store, at=deleting.number, run_id="f")
    assert forked == {"after": False, "other": 1}


class Sets(AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"k": "a"}, {"k": "b"}]


class DeleteInA(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        if self.params["k"] == "a":
            del shared["tmp"]


class LookInA(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        if Stop.failing and self.params["k"] == "a":
            raise RuntimeError("stopped after the deletion")
        shared["after_" + self.params["k"]] = "tmp" in shared


@pytest.mark.parametrize("durability", MODES)
async def test_an_isolated_parameter_set_s_deletion_stays_deleted_on_resume(durability):
    def sets():
        delete, look = DeleteInA(name="d"), LookInA(name="a")
        delete >> look
        return Sets(start=delete, isolate=True, name="sets")

    store = MemoryStore()
    Stop.failing = True
    with pytest.raises(RuntimeError, match="stopped after the deletion"):
        await sets().run_async({"tmp": 0}, store=store, run_id="r", durability=durability)
    Stop.failing = False
    shared = await sets().resume_async("r", store=store, durability=durability)
    assert shared == {"after_a": False, "after_b": True}


class Start(Node):
    def post(self, shared, prep_res, exec_res):
        shared["items"] = ["x"]
        shared["count"] = 1


class Reader(Node):
    def post(self, shared, prep_res, exec_res):
        assert shared["items"] == ["x"]
        assert shared["count"] == 1
        assert shared["config"] == {"a": 1}
        shared[self.name] = 1


@pytest.mark.parametrize("durability", MODES)
def test_a_branch_step_s_changed_leaves_out_the_keys_it_only_read(store, durability):
    def readers():
        start = Start(name="s")
        start >> [Reader(name="r1"), Reader(name="r2")]
        return Flow(start=start, name="f")

    readers().run({"config": {"a": 1}}, store=store, run_id="r", durability=durability)
    changed = {
        step.path: step.changed
        for step in readers().history("r", store=store)
        if step.kind == "branch step"
    }
    assert changed == {"Parallel/r1/r1": ("r1",), "Parallel/r2/r2": ("r2",)}


# -- a fork nested in a branch ---------------------------------------------------------
# A resume replays a finished step of a branch with what the views nested in
# it saved (the nested fork's branches, isolated parameter sets), then with
# the step's own changes: those must be made against the same values, or a
# join whose merged value is back at the value at the fork loses it.


class Fails:
    """The nodes that fail in the part of the run at hand: set per part."""

    names: frozenset[str] = frozenset()


class Change(Node):
    """Applies ``change`` to shared in its post; fails if named in `Fails`."""

    def __init__(self, name, change=None):
        super().__init__(name=name)
        self.change = change

    def post(self, shared, prep_res, exec_res):
        if self.name in Fails.names:
            raise RuntimeError(f"{self.name} fails")
        if self.change is not None:
            self.change(shared)


class AsyncChange(AsyncNode):
    def __init__(self, name, change=None):
        super().__init__(name=name)
        self.change = change

    async def post_async(self, shared, prep_res, exec_res):
        if self.name in Fails.names:
            raise RuntimeError(f"{self.name} fails")
        if self.change is not None:
            self.change(shared)


def add(key, amount):
    def change(shared):
        shared[key] = shared.get(key, 0) + amount

    return change


def fail(shared):
    raise ValueError("a branch fails")


def saw(shared):
    shared["tail_saw"] = shared["i"]


async def run_part(flow, part, shared, asynchronous, options):
    """Part ``part`` of run "r" of ``flow`` (the run itself, then resumes):
    the shared it ends with."""
    if part:
        return (
            await flow.resume_async("r", **options) if asynchronous else flow.resume("r", **options)
        )
    shared = dict(shared)
    ran = {"run_id": "r", **options} if options else {}
    await flow.run_async(shared, **ran) if asynchronous else flow.run(shared, **ran)
    return shared


async def resumed_to_the_end(build, shared, asynchronous, durability, *failing):
    """Run the flow ``build(asynchronous)`` makes, durably, in parts: one per
    entry of ``failing`` (the nodes that fail in that part), then one to its
    end; that end's shared, and the shared an uninterrupted run ends with."""
    Fails.names = frozenset()
    whole = await run_part(build(asynchronous), 0, shared, asynchronous, {})
    options = {"store": MemoryStore(), "durability": durability}
    for part, names in enumerate(failing):
        Fails.names = frozenset(names)
        with pytest.raises(RuntimeError, match=f"^({'|'.join(names)}) fails"):
            await run_part(build(asynchronous), part, shared, asynchronous, options)
    Fails.names = frozenset()
    return await run_part(build(asynchronous), len(failing), shared, asynchronous, options), whole


def nested(asynchronous, rule, changes, tail="tail"):
    """An outer fork whose branch is a fork (``rule`` for "i", a branch per
    change) followed by ``tail``; a sibling branch beside it."""
    make = AsyncChange if asynchronous else Change
    branches = [make(f"b{index}", change) for index, change in enumerate(changes)]
    inner = Parallel(*branches, merge={"i": rule}, name="inner")
    inner >> make(tail, saw)
    outer = Parallel(make("sibling", add("s", 1)), inner, merge={"i": "sum"}, name="outer")
    return (AsyncFlow if asynchronous else Flow)(start=outer, name="f")


ASYNC = pytest.mark.parametrize("asynchronous", [False, True], ids=["Flow", "AsyncFlow"])


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_nested_join_back_at_the_value_at_the_fork_keeps_it_on_resume(
    durability, asynchronous
):
    def build(asynchronous):
        return nested(asynchronous, "sum", [add("i", 2), add("i", -2)])

    result, whole = await resumed_to_the_end(build, {"i": 2}, asynchronous, durability, ["tail"])
    assert result == whole == {"i": 2, "s": 1, "tail_saw": 2}


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_nested_join_s_function_rule_giving_the_value_at_the_fork_keeps_it_on_resume(
    durability, asynchronous
):
    def build(asynchronous):
        return nested(asynchronous, lambda before, values: before, [add("i", 3), add("i", 5)])

    result, whole = await resumed_to_the_end(build, {"i": 2}, asynchronous, durability, ["tail"])
    assert result == whole == {"i": 2, "s": 1, "tail_saw": 2}


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_nested_join_keeps_what_branches_finished_in_an_earlier_part_saved(
    durability, asynchronous
):
    # b0 and b1 finish in the first part (one branch at a time), b2 fails
    # there; the second part joins them and stops at the tail; the third
    # replays the join, whose value is the one at the fork, though the
    # branches of the first part saved others.
    def build(asynchronous):
        flow = nested(asynchronous, "sum", [add("i", 3), add("i", -3), add("j", 1)])
        flow.start_node.branches[1].max_concurrency = 1
        return flow

    result, whole = await resumed_to_the_end(
        build, {"i": 2}, asynchronous, durability, ["b2"], ["tail"]
    )
    assert result == whole == {"i": 2, "j": 1, "s": 1, "tail_saw": 2}


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_fork_nested_three_deep_keeps_its_joins_on_resume(durability, asynchronous):
    # outer: [sibling, middle >> t2]; middle: [inner >> t1, other]; inner: [+2, -2].
    def build(asynchronous):
        make = AsyncChange if asynchronous else Change
        inner = Parallel(make("b0", add("i", 2)), make("b1", add("i", -2)), merge={"i": "sum"})
        inner >> make("t1", saw)
        middle = Parallel(inner, make("other", add("o", 1)), merge={"i": "sum"}, name="middle")
        middle >> make("t2", add("t", 1))
        outer = Parallel(make("sibling", add("s", 1)), middle, merge={"i": "sum"}, name="outer")
        return (AsyncFlow if asynchronous else Flow)(start=outer, name="f")

    result, whole = await resumed_to_the_end(
        build, {"i": 2}, asynchronous, durability, ["t1"], ["t2"]
    )
    assert result == whole == {"i": 2, "o": 1, "s": 1, "t": 1, "tail_saw": 2}


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_nested_fork_s_failed_branch_changes_nothing_on_resume(durability, asynchronous):
    # A branch that failed (collected) saved a change before it failed: it
    # is not merged, and a resume that replays the join does not apply it.
    def build(asynchronous):
        make = AsyncChange if asynchronous else Change
        first, failing = make("b0", add("i", 5)), make("never", fail)
        first >> failing
        inner = Parallel(first, make("b1"), on_error="collect", name="inner")
        inner - "failed" >> make("tail", saw)
        outer = Parallel(make("sibling", add("s", 1)), inner, name="outer")
        return (AsyncFlow if asynchronous else Flow)(start=outer, name="f")

    result, whole = await resumed_to_the_end(build, {"i": 2}, asynchronous, durability, ["tail"])
    assert (result["i"], result["tail_saw"]) == (whole["i"], whole["tail_saw"]) == (2, 2)


class AddSets(AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"n": 2}, {"n": -2}]


class AddN(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared["i"] += self.params["n"]


@pytest.mark.parametrize("durability", MODES)
async def test_isolated_sets_in_a_branch_keep_their_merge_on_resume(durability):
    def build(asynchronous):
        sets = AddSets(start=AddN(name="add"), isolate=True, merge={"i": "sum"}, name="sets")
        sets >> AsyncChange("tail", saw)
        outer = Parallel(AsyncChange("sibling", add("s", 1)), sets, merge={"i": "sum"})
        return AsyncFlow(start=outer, name="f")

    result, whole = await resumed_to_the_end(build, {"i": 2}, True, durability, ["tail"])
    assert result == whole == {"i": 2, "s": 1, "tail_saw": 2}


class KeySets(AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"key": "i", "n": 3}, {"key": "i", "n": -3}, {"key": "j", "n": 1}]


class AddToKey(AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        key = self.params["key"]
        if key in Fails.names:
            raise RuntimeError(f"{key} fails")
        shared[key] = shared.get(key, 0) + self.params["n"]


@pytest.mark.parametrize("durability", MODES)
async def test_isolated_sets_in_a_branch_keep_what_sets_of_an_earlier_part_saved(durability):
    # The sets on "i" finish in the first part (one at a time), the one on
    # "j" fails there; the second part merges them and stops at the tail.
    def build(asynchronous):
        sets = KeySets(
            start=AddToKey(name="add"),
            isolate=True,
            merge={"i": "sum"},
            max_concurrency=1,
            name="sets",
        )
        sets >> AsyncChange("tail", saw)
        outer = Parallel(AsyncChange("sibling", add("s", 1)), sets, merge={"i": "sum"})
        return AsyncFlow(start=outer, name="f")

    result, whole = await resumed_to_the_end(build, {"i": 2}, True, durability, ["j"], ["tail"])
    assert result == whole == {"i": 2, "j": 1, "s": 1, "tail_saw": 2}


@ASYNC
@pytest.mark.parametrize("durability", MODES)
async def test_a_join_back_at_the_value_at_the_fork_keeps_it_on_resume_outside_branches(
    durability, asynchronous
):
    def build(asynchronous):
        make = AsyncChange if asynchronous else Change
        inner = Parallel(make("b0", add("i", 2)), make("b1", add("i", -2)), merge={"i": "sum"})
        inner >> make("tail", saw)
        return (AsyncFlow if asynchronous else Flow)(start=inner, name="f")

    result, whole = await resumed_to_the_end(build, {"i": 2}, asynchronous, durability, ["tail"])
    assert result == whole == {"i": 2, "tail_saw": 2}
