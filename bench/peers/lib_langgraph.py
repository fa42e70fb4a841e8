"""LangGraph: each workload as a `StateGraph` with a typed state, compiled and run by `ainvoke`.

Fan-outs follow LangGraph's map-reduce idiom: a conditional edge returns one `Send` per item and
the items' updates are merged by an `operator.add` reducer on a list channel. LangGraph applies
the writes of one superstep sorted by task path (`Send` index, zero-padded), so those lists come
back in item order.
"""

import asyncio
import operator
import tempfile
import uuid
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

LABEL = "LangGraph"
PACKAGE = "langgraph"

FORK_BRANCHES = 16
BOUND = 1000


class ChainState(TypedDict):
    steps: int


async def _step(state: ChainState) -> dict:
    return {"steps": state["steps"] + 1}


def _chain_builder(n: int) -> StateGraph:
    builder = StateGraph(ChainState)
    builder.add_sequence([(f"step_{i}", _step) for i in range(n)])
    builder.add_edge(START, "step_0")
    builder.add_edge(f"step_{n - 1}", END)
    return builder


def _chain_config(n: int, **configurable: str) -> dict:
    # One superstep per node: the default recursion_limit (25) would stop a longer chain.
    return {"recursion_limit": n + 1, "configurable": configurable}


def chain(n):
    graph = _chain_builder(n).compile()
    config = _chain_config(n)

    async def run():
        return (await graph.ainvoke({"steps": 0}, config))["steps"]

    return run


class ItemsState(TypedDict):
    values: list[int]
    results: Annotated[list[int], operator.add]


class ItemState(TypedDict):
    value: int


def _send_each(state: ItemsState) -> list[Send]:
    return [Send("item", {"value": value}) for value in state["values"]]


def _map_graph(item) -> CompiledStateGraph:
    builder = StateGraph(ItemsState)
    builder.add_node("item", item)
    builder.add_conditional_edges(START, _send_each, ["item"])
    builder.add_edge("item", END)
    return builder.compile()


def fanout(n):
    async def item(state: ItemState) -> dict:
        await asyncio.sleep(0.05)
        return {"results": [state["value"]]}

    graph = _map_graph(item)

    async def run():
        return len((await graph.ainvoke({"values": list(range(n)), "results": []}))["results"])

    return run


def items(n):
    # An async node even though it awaits nothing: a sync node would be run in a thread pool.
    async def item(state: ItemState) -> dict:
        return {"results": [state["value"]]}

    graph = _map_graph(item)

    async def run():
        return len((await graph.ainvoke({"values": list(range(n)), "results": []}))["results"])

    return run


class SubflowState(TypedDict):
    steps: Annotated[list[str], operator.add]


def subflows(n):
    async def a(state: SubflowState) -> dict:
        return {"steps": ["a"]}

    async def b(state: SubflowState) -> dict:
        await asyncio.sleep(0.02)
        return {"steps": ["b"]}

    async def c(state: SubflowState) -> dict:
        return {"steps": ["c"]}

    sub = StateGraph(SubflowState)
    sub.add_sequence([a, b, c])
    sub.add_edge(START, "a")
    sub.add_edge("c", END)

    def send_subflows(state: SubflowState) -> list[Send]:
        return [Send("subflow", {"steps": []}) for _ in range(n)]

    # The compiled sub-graph is the node; each Send runs it once, its steps merged by the reducer.
    builder = StateGraph(SubflowState)
    builder.add_node("subflow", sub.compile())
    builder.add_conditional_edges(START, send_subflows, ["subflow"])
    builder.add_edge("subflow", END)
    graph = builder.compile()

    async def run():
        return len((await graph.ainvoke({"steps": []}))["steps"])

    return run


class BoundedState(TypedDict):
    results: Annotated[list[int], operator.add]


def bounded(n):
    def values():
        yield from range(n)

    # LangGraph has no streaming input: a conditional edge returns the whole list of Sends for
    # the superstep, so the generator is read to the end here (n tasks are planned up front).
    # The bound is LangGraph's own: config["max_concurrency"] gates every task of the superstep
    # on one semaphore (pregel/_executor.py, AsyncBackgroundExecutor), so at most BOUND run.
    def send_each(state: BoundedState) -> list[Send]:
        return [Send("item", {"value": value}) for value in values()]

    async def item(state: ItemState) -> dict:
        await asyncio.sleep(0)
        return {"results": [state["value"]]}

    builder = StateGraph(BoundedState)
    builder.add_node("item", item)
    builder.add_conditional_edges(START, send_each, ["item"])
    builder.add_edge("item", END)
    graph = builder.compile()
    config = {"max_concurrency": BOUND}

    async def run():
        return len((await graph.ainvoke({"results": []}, config))["results"])

    return run


class ForkState(TypedDict):
    started: bool
    branches: Annotated[list[int], operator.add]
    joined: int


def fork(n):
    async def first(state: ForkState) -> dict:
        return {"started": True}

    def branch(index):
        async def run_branch(state: ForkState) -> dict:
            return {"branches": [index]}

        return run_branch

    async def join(state: ForkState) -> dict:
        return {"joined": len(state["branches"])}

    names = [f"branch_{i}" for i in range(FORK_BRANCHES)]
    builder = StateGraph(ForkState)
    builder.add_node("first", first)
    for index, name in enumerate(names):
        builder.add_node(name, branch(index))
        builder.add_edge("first", name)
    builder.add_node("join", join)
    builder.add_edge(START, "first")
    builder.add_edge(names, "join")  # waits for all 16 branches
    builder.add_edge("join", END)
    graph = builder.compile()

    async def run():
        count = 0
        for _ in range(n):
            state = await graph.ainvoke({"started": False, "branches": [], "joined": 0})
            count += state["joined"]
        return count

    return run


def checkpointed(n):
    builder = _chain_builder(n)
    path = Path(tempfile.mkdtemp(prefix="bench-langgraph-")) / "checkpoints.sqlite"

    async def run():
        # AsyncSqliteSaver binds to the running event loop when created, so it is opened (and the
        # graph compiled with it) inside the run; a new thread_id per run starts a fresh history.
        # LangGraph's default durability ("async") writes every step's checkpoint, each one
        # while the next step runs.
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            graph = builder.compile(checkpointer=saver)
            config = _chain_config(n, thread_id=uuid.uuid4().hex)
            return (await graph.ainvoke({"steps": 0}, config))["steps"]

    return run
