"""LlamaIndex Workflows (llama-index-workflows): each workload written with events and steps.

Steps are `@step` methods typed by the events they take and return; fan-out is
`ctx.send_event(...)` into a step with `num_workers`, and the join is
`ctx.collect_events(ev, [EventType] * n)`, as the library's concurrent-execution
docs write it. Every workflow is built with `timeout=None` so long runs are not cut.
"""

import asyncio

from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent

LABEL = "LlamaIndex Workflows"
PACKAGE = "llama-index-workflows"


# -- chain ----------------------------------------------------------------------------


class ChainStart(StartEvent):
    steps: int


class Next(Event):
    steps: int
    count: int


class Chain(Workflow):
    # A chain of n distinct steps would need n step methods and n event types; the
    # library's loop idiom is a step that takes the event it returns, so the chain is
    # one step run n times, the state (the count) passed along in the event.
    @step
    async def advance(self, ev: ChainStart | Next) -> Next | StopEvent:
        count = ev.count + 1 if isinstance(ev, Next) else 1
        if count == ev.steps:
            return StopEvent(result=count)
        return Next(steps=ev.steps, count=count)


def chain(n):
    workflow = Chain(timeout=None)

    async def run():
        return await workflow.run(steps=n)

    return run


# -- fanout, items, bounded: scatter with send_event, gather with collect_events ------


class Item(Event):
    index: int
    value: int


class Result(Event):
    index: int
    value: int


class Gather(Workflow):
    """Scatter the start event's source as one Item each, join every Result in order.

    Each workload subclasses it with its own `work` step (and its `num_workers`)."""

    def __init__(self, expected, **kwargs):
        super().__init__(timeout=None, **kwargs)
        self.expected = expected

    @step
    async def scatter(self, ctx: Context, ev: StartEvent) -> Item | None:
        for index, value in enumerate(ev.source):
            ctx.send_event(Item(index=index, value=value))
        return None

    @step
    async def join(self, ctx: Context, ev: Result) -> StopEvent | None:
        results = ctx.collect_events(ev, [Result] * self.expected)
        if results is None:
            return None
        results.sort(key=lambda result: result.index)  # they arrive in completion order
        return StopEvent(result=[result.value for result in results])


def fanout(n):
    class Fanout(Gather):
        @step(num_workers=n)  # every item in flight at once
        async def work(self, ev: Item) -> Result:
            await asyncio.sleep(0.05)
            return Result(index=ev.index, value=ev.value)

    workflow = Fanout(expected=n)

    async def run():
        return len(await workflow.run(source=range(n)))

    return run


def items(n):
    class Items(Gather):
        @step(num_workers=n)
        async def work(self, ev: Item) -> Result:
            return Result(index=ev.index, value=ev.value)

    workflow = Items(expected=n)

    async def run():
        return len(await workflow.run(source=range(n)))

    return run


def bounded(n):
    # The bound is the worker step's num_workers. The scatter step reads the whole
    # generator up front, sending an event per item (events wait in the step's queue
    # until a worker is free): the library has no built-in way to pull from the
    # generator only as workers free up.
    class Bounded(Gather):
        @step(num_workers=1000)
        async def work(self, ev: Item) -> Result:
            await asyncio.sleep(0)
            return Result(index=ev.index, value=ev.value)

    workflow = Bounded(expected=n)

    async def run():
        return len(await workflow.run(source=(i for i in range(n))))

    return run


# -- subflows -------------------------------------------------------------------------


class AStep(Event):
    steps: int


class BStep(Event):
    steps: int


class SubFlow(Workflow):
    @step
    async def a(self, ev: StartEvent) -> AStep:
        return AStep(steps=1)

    @step
    async def b(self, ev: AStep) -> BStep:
        await asyncio.sleep(0.02)
        return BStep(steps=ev.steps + 1)

    @step
    async def c(self, ev: BStep) -> StopEvent:
        return StopEvent(result=ev.steps + 1)


def subflows(n):
    # 2.x has no nested-workflow slot (the old `add_workflows` is gone), so the n runs
    # of the sub-flow are n concurrent `run()` calls on one workflow instance, which
    # allows any number of concurrent runs by default.
    workflow = SubFlow(timeout=None)

    async def run():
        return sum(await asyncio.gather(*(workflow.run() for _ in range(n))))

    return run


# -- fork -----------------------------------------------------------------------------

BRANCHES = 16


class Branch(Event):
    index: int


class BranchDone(Event):
    index: int


class Fork(Workflow):
    # The 16 branches are one step run by 16 workers, each taking one Branch event, as
    # the docs fan out (16 distinct branch steps would need 16 event types).
    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Branch | None:
        for index in range(BRANCHES):
            ctx.send_event(Branch(index=index))
        return None

    @step(num_workers=BRANCHES)
    async def branch(self, ev: Branch) -> BranchDone:
        return BranchDone(index=ev.index)

    @step
    async def join(self, ctx: Context, ev: BranchDone) -> StopEvent | None:
        done = ctx.collect_events(ev, [BranchDone] * BRANCHES)
        if done is None:
            return None
        return StopEvent(result=len(done))


def fork(n):
    workflow = Fork(timeout=None)

    async def run():
        total = 0
        for _ in range(n):
            total += await workflow.run()
        return total

    return run


# -- checkpointed ---------------------------------------------------------------------


def checkpointed(n):
    # The core keeps an in-memory journal and Context.to_dict() snapshots only. The one
    # SQLite store, SqliteWorkflowStore, belongs to the workflow server (a store of run
    # handlers, next to PersistentHandler) in the separate llama-agents-server package,
    # which `workflows.server` merely re-exports and this environment does not install.
    raise NotImplementedError(
        "no SQLite checkpointer (SqliteWorkflowStore is llama-agents-server's handler store)"
    )
