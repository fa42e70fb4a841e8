"""A durable job that keeps its events, for the timeline of a resumed run:
1,000 items, at most 20 in flight, through SQLiteStore with
record_events=True.

    python recorded_job.py STORE run|resume

``run`` finishes items 0-499 and then hangs on the items from 500 on, so
the test can kill it at a known point (every item it can finish is
checkpointed) however slow the machine is; ``resume`` runs the rest.
"""

import asyncio
import sys

import braidflow as bf

STORE, MODE = sys.argv[1:3]
ITEMS, HANG_FROM = 1000, 500


class Work(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return list(range(ITEMS))

    async def exec_async(self, item):
        if MODE == "run" and item >= HANG_FROM:
            await asyncio.Event().wait()  # until the test kills the process
        await asyncio.sleep(0.001)
        return item * 2

    async def post_async(self, shared, prep_res, exec_res):
        shared["doubled"] = len(exec_res)


flow = bf.AsyncFlow(start=Work(name="work", max_concurrency=20), name="job")
store = bf.SQLiteStore(STORE)
if MODE == "run":
    flow.run({}, store=store, run_id="job", record_events=True)
else:
    flow.resume("job", store=store, record_events=True)
