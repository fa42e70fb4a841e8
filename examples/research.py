"""Research in parallel branches: three sources searched at once, merged by declared rules.

    plan >> [web, papers >> read_abstracts, encyclopedia] >> answer

`plan` picks the keywords of the question. Then three branches run at the
same time, each at its own pace (the papers branch is a chain of two nodes):
each searches its own small corpus (kept in this file, so the example runs
offline; the waits stand for the network), scores what it finds, and writes
to `shared`. Every branch appends to `findings`, adds to `searches` and sets
its own entry of `took`: three branches changing the same keys. Each branch
works on its own view of `shared`, and at the join the changes are merged
by the rules the flow declares (`extend`, `sum`, `update`); without them,
braidflow would raise `MergeConflict` rather than let one branch silently
overwrite another. `answer` then ranks the findings and cites them.

Run it with: python examples/research.py ["your question"]
"""

import asyncio
import re
import sys
import time

from braidflow import AsyncFlow, AsyncNode, Parallel

QUESTION = "Why does async concurrency speed up LLM pipelines that wait on network calls?"

CORPORA = {
    "web": {
        "latency": 0.30,
        "documents": {
            "Async Python for API clients": "While one request waits on the network, the "
            "event loop runs other requests: concurrency hides latency for IO bound calls.",
            "Why your LLM app is slow": "Most time in an LLM pipeline is spent waiting on "
            "network calls to the model; run independent calls concurrently.",
            "Threads versus asyncio": "Threads suit blocking code; asyncio suits many "
            "network connections waiting at once with little memory per task.",
        },
    },
    "papers": {
        "latency": 0.45,
        "documents": {
            "Throughput of concurrent LLM inference requests": "Batching and concurrent "
            "requests raise throughput when latency is dominated by network and queueing.",
            "Rate limits in distributed crawlers": "Bounded concurrency with rate limits "
            "keeps throughput high without overloading servers.",
        },
    },
    "encyclopedia": {
        "latency": 0.20,
        "documents": {
            "Concurrency (computer science)": "Concurrency is the overlapping of tasks in "
            "time; it speeds up programs that wait, such as those doing network IO.",
            "Event loop": "An event loop waits for and dispatches events; asyncio runs "
            "coroutines on one, switching while they wait.",
        },
    },
}
STOP_WORDS = set(
    "a an and are as at be by does do for in is it of on or that the to up why".split()
)


def words(text: str) -> list[str]:
    return [word for word in re.findall(r"[a-z]+", text.lower()) if word not in STOP_WORDS]


class Plan(AsyncNode):
    """Pick the question's keywords."""

    async def prep_async(self, shared):
        return shared.setdefault("question", QUESTION)

    async def exec_async(self, question):
        return sorted(set(words(question)))

    async def post_async(self, shared, prep_result, exec_result):
        shared["keywords"] = exec_result
        shared.update(findings=[], searches=0, took={})


class Search(AsyncNode):
    """Search one source: score its documents by the keywords they contain."""

    def __init__(self, source: str) -> None:
        super().__init__(name=source)
        self.source = source

    async def prep_async(self, shared):
        return shared["keywords"]

    async def exec_async(self, keywords):
        started = time.perf_counter()
        corpus = CORPORA[self.source]
        await asyncio.sleep(corpus["latency"])  # the request to the source
        hits = []
        for title, text in corpus["documents"].items():
            score = len(set(keywords) & set(words(title + " " + text)))
            if score:
                hits.append({"source": self.source, "title": title, "text": text, "score": score})
        return hits, time.perf_counter() - started

    async def post_async(self, shared, prep_result, exec_result):
        hits, took = exec_result
        shared["findings"].extend(hits)  # every branch appends: merged by "extend"
        shared["searches"] += 1  # every branch adds one: merged by "sum"
        shared["took"][self.source] = took  # every branch sets its key: merged by "update"


class ReadAbstracts(AsyncNode):
    """The papers branch goes on: read the abstracts of its best hits (a second call)."""

    async def prep_async(self, shared):
        return [hit for hit in shared["findings"] if hit["source"] == "papers"]

    async def exec_async(self, hits):
        started = time.perf_counter()
        await asyncio.sleep(0.15)  # fetching the abstracts
        return [{**hit, "score": hit["score"] + 1} for hit in hits], time.perf_counter() - started

    async def post_async(self, shared, prep_result, exec_result):
        read, took = exec_result
        # Replace this branch's own findings by the better-scored ones.
        shared["findings"][:] = [h for h in shared["findings"] if h["source"] != "papers"] + read
        shared["took"]["papers"] += took


class Answer(AsyncNode):
    """Rank the findings and write an answer that cites them."""

    async def prep_async(self, shared):
        return shared["findings"]

    async def exec_async(self, findings):
        ranked = sorted(findings, key=lambda hit: (-hit["score"], hit["title"]))[:3]
        lines = [f"- {hit['text']} [{hit['source']}: {hit['title']}]" for hit in ranked]
        return "\n".join(lines)

    async def post_async(self, shared, prep_result, exec_result):
        shared["answer"] = exec_result


def build() -> AsyncFlow:
    plan, answer = Plan(), Answer()
    papers = Search("papers")
    papers >> ReadAbstracts(name="read abstracts")  # a branch can be a chain
    sources = Parallel(
        Search("web"),
        papers,
        Search("encyclopedia"),
        merge={"findings": "extend", "searches": "sum", "took": "update"},
        name="search",
    )
    plan >> sources >> answer
    return AsyncFlow(start=plan, name="research")


flow = build()  # for `braidflow run examples/research.py:flow --shared '{"question": ...}'`


def main() -> int:
    shared = {"question": sys.argv[1] if len(sys.argv) > 1 else QUESTION}
    started = time.perf_counter()
    asyncio.run(flow.run_async(shared))
    wall = time.perf_counter() - started
    print(f"question: {shared['question']}\n")
    print(f"answer:\n{shared['answer']}\n")
    print(f"{shared['searches']} searches, {len(shared['findings'])} findings")
    for source, took in sorted(shared["took"].items()):
        print(f"  {source:<13} {took:.2f} s")
    one_after_another = sum(shared["took"].values())
    print(f"branches in parallel: {wall:.2f} s (one after another: {one_after_another:.2f} s)")
    return 0 if shared["searches"] == 3 else 1


if __name__ == "__main__":
    sys.exit(main())
