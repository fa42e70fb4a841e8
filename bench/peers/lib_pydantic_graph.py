"""pydantic-graph: each workload with the `GraphBuilder` API (steps, `.map()`, broadcasts, joins).

In pydantic-graph 2.68 the builder is the way graphs are built and run (`BaseNode` classes only
join a builder graph through `GraphBuilder.node`), so every workload here is a builder graph:
steps are `@g.step` functions, parallel work is a mapping edge (`edge_from(...).map()`) or a
broadcast (`edge_from(...).to(a, b, ...)`), and results come back through a `g.join` with a
reducer. A join collects results in the order they finish, so where order matters the graph
sorts them after the join (as the library's own examples do with `sorted(result)`).
"""

import asyncio
import itertools
from collections.abc import Awaitable, Callable

from pydantic_graph import GraphBuilder, StepContext, reduce_list_append

LABEL = "pydantic-graph"
PACKAGE = "pydantic-graph"


def chain(n: int) -> Callable[[], Awaitable[int]]:
    # `n` distinct steps, each passing the running count on to the next one.
    g = GraphBuilder(name="chain", input_type=int, output_type=int)

    async def advance(ctx: StepContext[None, None, int]) -> int:
        return ctx.inputs + 1

    steps = [g.step(advance, node_id=f"step_{i}") for i in range(n)]
    g.add_edge(g.start_node, steps[0])
    for left, right in itertools.pairwise(steps):
        g.add_edge(left, right)
    g.add_edge(steps[-1], g.end_node)
    graph = g.build()

    async def run() -> int:
        return await graph.run(inputs=0)

    return run


def fanout(n: int) -> Callable[[], Awaitable[int]]:
    g = GraphBuilder(name="fanout", input_type=int, output_type=list[int])

    @g.step
    async def make_items(ctx: StepContext[None, None, int]) -> list[int]:
        return list(range(ctx.inputs))

    @g.step
    async def work(ctx: StepContext[None, None, int]) -> int:
        await asyncio.sleep(0.05)
        return ctx.inputs

    collect = g.join(reduce_list_append, initial_factory=list[int])

    @g.step
    async def in_order(ctx: StepContext[None, None, list[int]]) -> list[int]:
        return sorted(ctx.inputs)  # the join holds results in the order they finished

    g.add(
        g.edge_from(g.start_node).to(make_items),
        g.edge_from(make_items).map().to(work),
        g.edge_from(work).to(collect),
        g.edge_from(collect).to(in_order),
        g.edge_from(in_order).to(g.end_node),
    )
    graph = g.build()

    async def run() -> int:
        return len(await graph.run(inputs=n))

    return run


def items(n: int) -> Callable[[], Awaitable[int]]:
    g = GraphBuilder(name="items", input_type=int, output_type=list[int])

    @g.step
    async def make_items(ctx: StepContext[None, None, int]) -> list[int]:
        return list(range(ctx.inputs))

    @g.step
    async def work(ctx: StepContext[None, None, int]) -> int:
        return ctx.inputs

    collect = g.join(reduce_list_append, initial_factory=list[int])

    g.add(
        g.edge_from(g.start_node).to(make_items),
        g.edge_from(make_items).map().to(work),
        g.edge_from(work).to(collect),
        g.edge_from(collect).to(g.end_node),
    )
    graph = g.build()

    async def run() -> int:
        return len(await graph.run(inputs=n))

    return run


def subflows(n: int) -> Callable[[], Awaitable[int]]:
    # The builder cannot nest one graph in another as a node (its source has a TODO for
    # sub-graphs), so each sub-flow is the mapped path a -> b -> c: one run of it per item.
    # Each step adds its name to the item's trail; the count is the length of all the trails.
    g = GraphBuilder(name="subflows", input_type=int, output_type=list[tuple[str, ...]])

    @g.step
    async def make_items(ctx: StepContext[None, None, int]) -> list[int]:
        return list(range(ctx.inputs))

    @g.step
    async def a(ctx: StepContext[None, None, int]) -> tuple[str, ...]:
        return ("a",)

    @g.step
    async def b(ctx: StepContext[None, None, tuple[str, ...]]) -> tuple[str, ...]:
        await asyncio.sleep(0.02)
        return (*ctx.inputs, "b")

    @g.step
    async def c(ctx: StepContext[None, None, tuple[str, ...]]) -> tuple[str, ...]:
        return (*ctx.inputs, "c")

    collect = g.join(reduce_list_append, initial_factory=list[tuple[str, ...]])

    g.add(
        g.edge_from(g.start_node).to(make_items),
        g.edge_from(make_items).map().to(a),
        g.edge_from(a).to(b),
        g.edge_from(b).to(c),
        g.edge_from(c).to(collect),
        g.edge_from(collect).to(g.end_node),
    )
    graph = g.build()

    async def run() -> int:
        return sum(len(trail) for trail in await graph.run(inputs=n))

    return run


def bounded(n: int) -> Callable[[], Awaitable[int]]:
    raise NotImplementedError(
        "pydantic-graph's map starts a task per item at once; it has no bound on mapped tasks"
    )


def fork(n: int) -> Callable[[], Awaitable[int]]:
    # first -> broadcast to 16 branches -> join (reduce_list_append) -> counted; n graph runs.
    g = GraphBuilder(name="fork", output_type=int)

    @g.step
    async def first(ctx: StepContext[None, None, None]) -> int:
        return 0

    async def branch(ctx: StepContext[None, None, int]) -> int:
        return ctx.inputs

    branches = [g.step(branch, node_id=f"branch_{i}") for i in range(16)]
    collect = g.join(reduce_list_append, initial_factory=list[int])

    @g.step
    async def counted(ctx: StepContext[None, None, list[int]]) -> int:
        return len(ctx.inputs)

    g.add(
        g.edge_from(g.start_node).to(first),
        g.edge_from(first).to(*branches),
        g.edge_from(*branches).to(collect),
        g.edge_from(collect).to(counted),
        g.edge_from(counted).to(g.end_node),
    )
    graph = g.build()

    async def run() -> int:
        count = 0
        for _ in range(n):
            count += await graph.run()
        return count

    return run


def checkpointed(n: int) -> Callable[[], Awaitable[int]]:
    raise NotImplementedError(
        "pydantic-graph 2.68 has no persistence at all (no SQLite, file or in-memory checkpoints)"
    )
