"""A process of the shared-limiter tests: ITEMS calls to the server at PORT, each
holding a slot of the store's limiter "api" (4 at once, in all processes).

    python limited_job.py STORE PORT ITEMS run    # the calls, then exit
    python limited_job.py STORE PORT ITEMS hold   # take 4 slots, say "held", wait

STORE is a SQLite file's path or a PostgreSQL DSN (``host=... dbname=...``);
the limiter's lease is BRAIDFLOW_TEST_LEASE seconds (default 30).
"""

import asyncio
import os
import sys
import time

import braidflow as bf

STORE, PORT, ITEMS, MODE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
LEASE = float(os.environ.get("BRAIDFLOW_TEST_LEASE", "30"))

if "dbname=" in STORE:
    from braidflow.stores import PostgresStore

    store = PostgresStore(STORE)
else:
    store = bf.SQLiteStore(STORE)
api = store.limiter("api", max_concurrent=4, lease=LEASE)


class Call(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return list(range(ITEMS))

    async def exec_async(self, item):
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(b"call\n")
        await writer.drain()
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return answer


if MODE == "run":
    shared = {}
    bf.AsyncFlow(start=Call(limits=[api], max_concurrency=ITEMS)).run(shared)
    print("done", flush=True)
else:
    for _ in range(4):
        api.acquire_blocking()
    print("held", flush=True)
    time.sleep(3600)
