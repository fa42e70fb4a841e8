"""A driver of the Ray tests on PostgreSQL: a durable run whose 40 items run on
the Ray cluster at ADDRESS, checkpoints in the database of DSN, each item a call
to the server at PORT holding a slot of the store's shared limiter "api" (2 at
once, across every driver); each item logs "end ITEM MODE" once done.

    python ray_driver.py ADDRESS DSN LOG PORT RUN_ID run|resume
"""

import socket
import sys

import ray

import braidflow as bf
from braidflow.executors import RayExecutor
from braidflow.stores import PostgresStore

ADDRESS, DSN, LOG, PORT, RUN_ID, MODE = sys.argv[1:7]
ITEMS = 40


class Call(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return list(range(ITEMS))

    def exec(self, item):  # on a Ray worker
        with socket.create_connection(("127.0.0.1", int(PORT))) as server:
            server.sendall(b"call\n")
            server.makefile().readline()
        with open(LOG, "a") as log:
            log.write(f"end {item} {MODE}\n")
        return item * item

    async def post_async(self, shared, prep_result, exec_result):
        shared["squares"] = exec_result


# The tests' head listens on 127.0.0.1: the driver joins it there (RayExecutor
# uses a Ray this process has joined already).
ray.init(address=ADDRESS, _node_ip_address="127.0.0.1", log_to_driver=False)
store = PostgresStore(DSN)
with RayExecutor(ADDRESS) as cluster:
    api = store.limiter("api", max_concurrent=2)
    flow = bf.AsyncFlow(start=Call(executor=cluster, limits=[api], max_concurrency=4, name="calls"))
    if MODE == "run":
        shared = {}
        flow.run(shared, store=store, run_id=RUN_ID)
    else:
        shared = flow.resume(RUN_ID, store=store)
print("result", shared["squares"] == [n * n for n in range(ITEMS)], flush=True)
store.close()
