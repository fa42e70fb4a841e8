"""A durable job for the crash tests: run (or resume) one of three flows,
each doing 300 units of work with at most 20 in flight, and log each unit as
it starts and as it ends, so the test can see what ran and how often.

    python durable_job.py KIND STORE LOG run|resume

STORE is a SQLite file's path, or a PostgreSQL DSN (``host=... dbname=...``);
with a DSN, BRAIDFLOW_TEST_LEASE sets the store's lease in seconds, and
BRAIDFLOW_TEST_AHEAD moves the store's clock that many seconds ahead (as if
the job ran later). BRAIDFLOW_TEST_HOST names the machine the job says it
runs on: another machine's process cannot be seen, only its lease.
"""

import asyncio
import os
import socket
import sys
import time

if os.environ.get("BRAIDFLOW_TEST_HOST"):
    socket.gethostname = lambda: os.environ["BRAIDFLOW_TEST_HOST"]

import braidflow as bf

KIND, STORE, LOG, MODE = sys.argv[1:5]
UNITS = 300


def log(line):
    # One write per line, appended: what a killed process logged stays.
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\n").encode())
    os.close(fd)


async def work(unit):
    log(f"start {unit}")
    await asyncio.sleep(0.002 + (unit % 7) * 0.001)
    log(f"end {unit}")
    return unit * unit


class Squares(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return list(range(UNITS))

    async def exec_async(self, unit):
        return await work(unit)

    async def post_async(self, shared, prep_res, exec_res):
        shared["squares"] = exec_res


class One(bf.AsyncNode):
    async def prep_async(self, shared):
        return self.params["unit"]

    async def exec_async(self, unit):
        return await work(unit)

    async def post_async(self, shared, prep_res, exec_res):
        shared[f"square {prep_res}"] = exec_res


class Units(bf.AsyncParallelBatchFlow):
    async def prep_async(self, shared):
        return [{"unit": unit} for unit in range(UNITS)]


class Range(bf.AsyncParallelBatchNode):
    """A branch's share of the work: units from `first`, 60 of them."""

    def __init__(self, first):
        super().__init__(name=f"units {first}", max_concurrency=4)
        self.first = first

    async def prep_async(self, shared):
        return list(range(self.first, self.first + 60))

    async def exec_async(self, unit):
        return await work(unit)

    async def post_async(self, shared, prep_res, exec_res):
        shared[f"squares from {self.first}"] = exec_res


class Done(bf.AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared["done"] = True


def flow():
    if KIND == "batch":
        start = Squares(max_concurrency=20, name="squares")
    elif KIND == "batch flow":
        start = Units(start=One(), max_concurrency=20, name="units", isolate=True)
    elif KIND == "shared batch flow":  # PocketFlow's way: every sub-flow writes to shared
        start = Units(start=One(), max_concurrency=20, name="units")
    else:  # five branches of 60 units, at most 4 in flight each: 20 in all
        start = bf.Parallel(*(Range(first) for first in range(0, UNITS, 60)))
    start >> Done()
    return bf.AsyncFlow(start=start, name="job")


if "dbname=" in STORE:
    from braidflow.stores import PostgresStore

    ahead = float(os.environ.get("BRAIDFLOW_TEST_AHEAD", "0"))
    store = PostgresStore(
        STORE,
        lease=float(os.environ.get("BRAIDFLOW_TEST_LEASE", "30")),
        clock=lambda: time.time() + ahead,
    )
else:
    store = bf.SQLiteStore(STORE)
if MODE == "run":
    shared = {}
    flow().run(shared, store=store, run_id="job")
else:
    shared = flow().resume("job", store=store)
log("result " + repr(sorted(shared.items())))
