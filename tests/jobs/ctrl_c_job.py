"""A Ctrl-C ``DELAY`` seconds into a sync ``ParallelBatchNode`` (``sync``), or
an ``AsyncFlow`` holding one run from sync code (``async``), under a SIGINT
handler of the program's own that raises ``KeyboardInterrupt``:

    python ctrl_c_job.py DELAY sync|async

Prints ``interrupted`` (or ``finished``, if the run ended first) once the
run has ended with no limiter slot left taken and the handler put back; a
run that has not ended 10 s on prints where it is stuck and exits 1.
"""

import faulthandler
import os
import signal
import sys
import threading
import time

import braidflow as bf

faulthandler.dump_traceback_later(10, exit=True)


def handler(signum, frame):
    raise KeyboardInterrupt


class Items(bf.ParallelBatchNode):
    def prep(self, shared):
        return range(80)

    def exec(self, item):
        time.sleep(0.004)


delay, shape = float(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGINT, handler)
limiter = bf.Limiter(3)
node = Items(max_concurrency=6, limits=[limiter], timeout=1.0)
flow = bf.AsyncFlow(start=node) if shape == "async" else node
try:
    threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
    flow.run({})
    outcome = "finished"
except KeyboardInterrupt:
    outcome = "interrupted"
assert signal.getsignal(signal.SIGINT) is handler
assert limiter.statistics().in_flight == 0, limiter.statistics()
assert bf.thread_limiter().statistics().in_flight == 0, bf.thread_limiter().statistics()
print(outcome)
