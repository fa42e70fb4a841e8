"""One AsyncFlow hosting a sync node, a mixed-form async node and nested flows.

An AsyncNode's phases may be written as ``*_async`` methods or as plain
``prep``/``exec``/``post``, each ``async def`` or ``def``. Sync nodes and
whole sync flows run inside an AsyncFlow unchanged.
"""

import asyncio

from braidflow import AsyncFlow, AsyncNode, Flow, Node


class LoadDocuments(Node):
    """A plain sync node."""

    def exec(self, prep_res):
        return {"a.txt": "braidflow runs graphs", "b.txt": "of small nodes"}

    def post(self, shared, prep_res, exec_res):
        shared["documents"] = exec_res
        shared["log"] = ["loaded"]


class Summarize(AsyncNode):
    """The mixed form: async prep and exec under their plain names, sync post."""

    async def prep(self, shared):
        return shared["documents"]

    async def exec(self, documents):
        await asyncio.sleep(0.05)  # an async LLM call
        return {name: text.upper() for name, text in documents.items()}

    def post(self, shared, prep_res, exec_res):
        shared["summaries"] = exec_res
        shared["log"].append("summarized")


class CountWords(Node):
    def prep(self, shared):
        return shared["summaries"]

    def exec(self, summaries):
        return sum(len(text.split()) for text in summaries.values())

    def post(self, shared, prep_res, exec_res):
        shared["words"] = exec_res
        shared["log"].append("counted (nested sync Flow)")


class Publish(AsyncNode):
    async def exec_async(self, prep_res):
        await asyncio.sleep(0.05)
        return "published"

    async def post_async(self, shared, prep_res, exec_res):
        shared["log"].append(f"{exec_res} (nested AsyncFlow)")
        return "done"


def build_flow() -> AsyncFlow:
    load = LoadDocuments()
    load >> Summarize() >> Flow(start=CountWords()) >> AsyncFlow(start=Publish())
    return AsyncFlow(start=load, name="pipeline")


async def main() -> None:
    shared: dict = {}
    action = await build_flow().run_async(shared)
    print(f"inside an event loop: action={action!r}, words={shared['words']}")
    print("steps: " + " -> ".join(shared["log"]))


def main_sync() -> None:
    shared: dict = {}
    action = build_flow().run(shared)  # plain sync code: run() drives the loop itself
    print(f"from plain sync code with flow.run(): action={action!r}, words={shared['words']}")


if __name__ == "__main__":
    asyncio.run(main())
    main_sync()
