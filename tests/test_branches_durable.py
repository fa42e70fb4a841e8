"""What a branch step of a durable run records of its view of ``shared``: a key
it deletes stays deleted when a resume or a fork replays it, and a key it
only reads is not among what it changed."""

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    Flow,
    MemoryStore,
    Node,
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
