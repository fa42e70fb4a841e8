"""One AsyncFlow that hosts every kind of step.

The flow runs, in order:

1. a plain sync ``Node`` that loads the documents;
2. an ``AsyncNode`` written in the mixed form: ``async def prep``,
   ``async def exec`` and a plain ``def post`` (each phase may be ``async def``
   or ``def``, under its plain name or its ``*_async`` name);
3. a nested sync ``Flow`` of two sync nodes;
4. a nested ``AsyncFlow``.

The same flow object is then run three ways: with ``await flow.run_async(shared)``
and with ``await flow.run(shared)`` inside an event loop (there ``run`` returns
an awaitable, as in a notebook), and with ``flow.run(shared)`` from plain sync
code, which starts an event loop of its own and runs the flow to completion.

Run it with: python examples/mixed_flow.py
"""

import asyncio

from braidflow import AsyncFlow, AsyncNode, Flow, Node

DOCUMENTS = {
    "intro.txt": "braidflow runs graphs of small nodes",
    "limits.txt": "a limiter shared by many nodes is one limit",
}


class LoadDocuments(Node):
    """A plain sync node: no changes needed to run it inside an AsyncFlow."""

    def exec(self, prep_result):
        return dict(DOCUMENTS)

    def post(self, shared, prep_result, exec_result):
        shared["documents"] = exec_result
        shared["log"] = ["loaded (sync Node)"]


class Summarize(AsyncNode):
    """The mixed form: coroutines under the plain names, and a sync post."""

    async def prep(self, shared):
        return shared["documents"]

    async def exec(self, documents):
        await asyncio.sleep(0.05)  # an async model call
        return {name: " ".join(text.split()[:3]) + " ..." for name, text in documents.items()}

    def post(self, shared, prep_result, exec_result):
        shared["summaries"] = exec_result
        shared["log"].append("summarized (mixed AsyncNode)")


class CountWords(Node):
    def prep(self, shared):
        return shared["documents"]

    def exec(self, documents):
        return {name: len(text.split()) for name, text in documents.items()}

    def post(self, shared, prep_result, exec_result):
        shared["word_counts"] = exec_result


class TotalWords(Node):
    def prep(self, shared):
        return shared["word_counts"]

    def exec(self, word_counts):
        return sum(word_counts.values())

    def post(self, shared, prep_result, exec_result):
        shared["total_words"] = exec_result
        shared["log"].append("counted (nested sync Flow)")


class Publish(AsyncNode):
    async def prep_async(self, shared):
        return shared["summaries"]

    async def exec_async(self, summaries):
        await asyncio.sleep(0.05)  # an async upload
        return len(summaries)

    async def post_async(self, shared, prep_result, exec_result):
        shared["published"] = exec_result
        shared["log"].append("published (nested AsyncFlow)")
        return "done"


def build_flow() -> AsyncFlow:
    """Wire the four steps; the nested flows are steps like any node."""
    count_words = CountWords()
    count_words >> TotalWords()
    counting = Flow(start=count_words, name="counting")
    publishing = AsyncFlow(start=Publish(), name="publishing")

    load = LoadDocuments()
    load >> Summarize() >> counting >> publishing
    return AsyncFlow(start=load, name="pipeline")


def show(title: str, action: str, shared: dict) -> None:
    print(title)
    print(f"  steps: {' -> '.join(shared['log'])}")
    print(f"  summaries: {shared['summaries']}")
    print(f"  total words: {shared['total_words']}, published: {shared['published']}")
    print(f"  last action: {action!r}")


async def run_inside_event_loop(flow: AsyncFlow) -> None:
    shared: dict = {}
    action = await flow.run_async(shared)
    show("await flow.run_async(shared), inside an event loop:", action, shared)

    shared = {}
    action = await flow.run(shared)  # inside a loop, run() gives an awaitable
    show("await flow.run(shared), inside an event loop:", action, shared)


def run_from_sync_code(flow: AsyncFlow) -> None:
    shared: dict = {}
    action = flow.run(shared)  # no event loop here: run() starts one and waits
    show("flow.run(shared), from plain sync code:", action, shared)


def main() -> None:
    flow = build_flow()
    asyncio.run(run_inside_event_loop(flow))
    print()
    run_from_sync_code(flow)


if __name__ == "__main__":
    main()
