"""A durable job for the durability-mode crash tests: a chain of 200 steps,
then a batch of 200 items (20 at a time), run (or resumed) with the
durability given; each step and item logs when it starts, so the test sees
what ran and how often.

    python modes_job.py DURABILITY STORE LOG run|resume
"""

import asyncio
import itertools
import json
import os
import sys

import braidflow as bf

DURABILITY, STORE, LOG, MODE = sys.argv[1:5]
STEPS = ITEMS = 200


def log(line):
    # One write per line, appended: what a killed process logged stays.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


class Step(bf.AsyncNode):
    def __init__(self, number):
        super().__init__(name=f"step {number}")
        self.number = number

    async def exec_async(self, prep_res):
        log(f"start step {self.number}")
        await asyncio.sleep(0.001)

    async def post_async(self, shared, prep_res, exec_res):
        shared["total"] += self.number
        shared["seen"].append(self.number)  # a value changed in place, step by step


class Squares(bf.AsyncParallelBatchNode):
    def __init__(self):
        super().__init__(name="squares", max_concurrency=20)

    async def prep_async(self, shared):
        return list(range(ITEMS))

    async def exec_async(self, unit):
        log(f"start item {unit}")
        await asyncio.sleep(0.002 + (unit % 5) * 0.001)
        return unit * unit

    async def post_async(self, shared, prep_res, exec_res):
        shared["squares"] = sum(exec_res)


def flow():
    steps = [Step(number) for number in range(STEPS)]
    for left, right in itertools.pairwise(steps):
        left >> right
    steps[-1] >> Squares()
    return bf.AsyncFlow(start=steps[0])


async def main():
    store = bf.SQLiteStore(STORE)
    if MODE == "run":
        shared = {"total": 0, "seen": []}
        await flow().run_async(shared, store=store, run_id="job", durability=DURABILITY)
    else:
        shared = await flow().resume_async("job", store=store, durability=DURABILITY)
    log("result " + json.dumps(shared, sort_keys=True))


asyncio.run(main())
