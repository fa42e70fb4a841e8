"""Questions that let the rest run: a parallel batch asks a person about two items.

100 invoices are checked at once; those over the limit (3 and 70) need a
person's approval, asked with `interrupt()`. The other 98 are checked and
recorded while those two wait; the run then suspends with both questions,
each with its own id. Answering one lets invoice 70 go on while invoice 3
keeps waiting; answering the last completes the run, and no invoice checked
before is checked again.

From the command line:

    braidflow run examples/invoices.py:flow --store invoices.db --run-id march
    # exit code 3: waiting on 2 questions, each listed with its id
    braidflow resume march --store invoices.db --answer ID=JSON --answer ID=JSON

`python examples/invoices.py` plays it from Python, with a store in memory.
"""

import asyncio

from braidflow import AsyncFlow, AsyncParallelBatchNode, MemoryStore, Suspended, interrupt

LIMIT = 900


def amount_of(invoice: int) -> int:
    return 1000 if invoice in (3, 70) else 5 * invoice


class Check(AsyncParallelBatchNode):
    """Approve each invoice under the limit; ask a person about the others."""

    checked = 0  # how many invoices were checked without a question, in this process

    async def prep_async(self, shared):
        return list(range(100))

    async def exec_async(self, invoice):
        amount = amount_of(invoice)
        if amount > LIMIT:
            return interrupt(f"approve invoice {invoice} for {amount} EUR?")
        await asyncio.sleep(0.001)  # the check itself
        Check.checked += 1
        return "approved"

    async def post_async(self, shared, prep_result, exec_result):
        shared["verdicts"] = exec_result


flow = AsyncFlow(start=Check(max_concurrency=10, name="check"), name="review")


def main() -> None:
    store = MemoryStore()
    try:
        flow.run({}, store=store, run_id="march")
    except Suspended as waiting:
        print(f"{Check.checked} invoices checked; waiting on {len(waiting.questions)} questions:")
        for question in waiting.questions:
            print(f"  {question.id} at {question.where}: {question.prompt}")
        by_item = {question.item: question for question in waiting.questions}
    try:
        flow.resume("march", store=store, answers={by_item[70].id: "approved"})
    except Suspended as waiting:
        print(f"answered invoice 70; still waiting on {[q.item for q in waiting.questions]}")
    shared = flow.resume("march", store=store, input="rejected")
    verdicts = shared["verdicts"]
    print(f"invoice 3: {verdicts[3]}, invoice 70: {verdicts[70]}")
    print(f"{verdicts.count('approved')} approved; {Check.checked} checks in all (none redone)")


if __name__ == "__main__":
    main()
