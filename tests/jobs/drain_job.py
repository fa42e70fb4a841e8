"""Flows for the drain tests, run by the command (``braidflow run
tests/jobs/drain_job.py:NAME``): each item logs when it starts and ends to
the file $DRAIN_LOG, so the test sees what ran and how often.

- ``batch``: 10,000 items, 50 at a time, 5 ms each.
- ``stuck``: 200 items, 10 at a time; from item 20 on, an item never ends
  by itself (only a drain's grace period, or a kill, stops it).
"""

import asyncio
import os

import braidflow as bf


def log(line):
    fd = os.open(os.environ["DRAIN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


class Units(bf.AsyncParallelBatchNode):
    def __init__(self, count, stuck_from=None, **options):
        super().__init__(name="units", **options)
        self.count, self.stuck_from = count, stuck_from

    async def prep_async(self, shared):
        return list(range(self.count))

    async def exec_async(self, unit):
        log(f"start {unit}")
        if self.stuck_from is not None and unit >= self.stuck_from:
            await asyncio.Event().wait()  # never set
        await asyncio.sleep(0.005)
        log(f"end {unit}")
        return unit

    async def post_async(self, shared, prep_res, exec_res):
        shared["total"] = sum(exec_res)


batch = bf.AsyncFlow(start=Units(10_000, max_concurrency=50), name="batch")
stuck = bf.AsyncFlow(start=Units(200, stuck_from=20, max_concurrency=10), name="stuck")
