"""Property tests under faults: random mixes of sync and async work, bounds,
shared limiters, timeouts that abandon threads, failures and cancellations.

Whatever the mix, at every instant no bound is exceeded (abandoned threads
included), and once the run has ended nothing more is written to ``shared``.
"""

import asyncio
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    Limiter,
    Node,
    NodeCancelledError,
    NodeTimeoutError,
    ParallelBatchNode,
    thread_limiter,
)
from braidflow.engine import default_thread_count
from braidflow.testing import other_tasks

HANG = 0.02  # seconds a "hanging" sync call blocks: longer than any timeout below
TIMEOUT = 0.002


class Gauge:
    """Exec calls running right now (threads included), and the peak."""

    def __init__(self):
        self.lock = threading.Lock()
        self.now = self.peak = self.started = 0

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.started += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc_info):
        with self.lock:
            self.now -= 1


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 10))
    timed = draw(st.booleans())
    return {
        "kind": draw(st.sampled_from(["async node", "sync node", "sub-flow"])),
        "n": n,
        "bound": draw(st.none() | st.integers(1, 4)),
        "shared_limit": draw(st.none() | st.integers(1, 3)),
        "timed": timed,
        "hangs": draw(st.sets(st.integers(0, n - 1))) if timed else set(),
        "fails": draw(st.sets(st.integers(0, n - 1))),
        "collect": draw(st.booleans()),
        "retries": draw(st.integers(1, 2)),
        "cancel_after": draw(st.none() | st.integers(1, n)),
        "sync_in_flow": draw(st.booleans()),
    }


def build(scenario, gauge):
    """The flow for a scenario; its exec calls are counted by `gauge`."""
    limiter = Limiter(scenario["shared_limit"]) if scenario["shared_limit"] else None
    options = {
        "max_retries": scenario["retries"],
        "limits": [limiter] if limiter else None,
        "timeout": TIMEOUT if scenario["timed"] else None,
    }
    hangs, fails = scenario["hangs"], scenario["fails"]

    def blocking_call(index):
        with gauge:
            if index in hangs:
                threading.Event().wait(HANG)
            if index in fails:
                raise ValueError(index)
        return index

    async def async_call(index):
        with gauge:
            await asyncio.sleep(0)
            if index in fails:
                raise ValueError(index)
        return index

    parallel = {
        "max_concurrency": scenario["bound"],
        "on_error": "collect" if scenario["collect"] else "raise",
    }
    kind = scenario["kind"]
    if kind == "sub-flow":
        sync_step = scenario["sync_in_flow"] or scenario["timed"]

        class Step(Node if sync_step else AsyncNode):
            if sync_step:

                def exec(self, prep_res):
                    return blocking_call(self.params["index"])

                def post(self, shared, prep_res, exec_res):
                    shared["posts"].append(exec_res)

            else:

                async def exec_async(self, prep_res):
                    return await async_call(self.params["index"])

                async def post_async(self, shared, prep_res, exec_res):
                    shared["posts"].append(exec_res)

        class Sets(AsyncParallelBatchFlow):
            async def prep_async(self, shared):
                return [{"index": i} for i in range(scenario["n"])]

            async def post_async(self, shared, prep_res, exec_res):
                shared["done"] = True

        return Sets(start=Step(**options), **parallel), limiter

    base = ParallelBatchNode if kind == "sync node" else AsyncParallelBatchNode
    sync_exec = kind == "sync node" or scenario["timed"]

    class Items(base):
        def prep(self, shared):
            return range(scenario["n"])

        if sync_exec:

            def exec(self, index):
                return blocking_call(index)

        else:

            async def exec(self, index):
                return await async_call(index)

        def post(self, shared, prep_res, exec_res):
            shared["posts"].extend(exec_res)
            shared["done"] = True

    return AsyncFlow(start=Items(**options, **parallel)), limiter


async def run_scenario(scenario):
    gauge = Gauge()
    flow, limiter = build(scenario, gauge)
    shared = {"posts": []}
    run = asyncio.create_task(flow.run_async(shared))
    if scenario["cancel_after"] is not None:
        while not run.done() and gauge.started < scenario["cancel_after"]:
            await asyncio.sleep(0.0005)
        run.cancel()
    try:
        await run
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
    except (ValueError, NodeTimeoutError, NodeCancelledError):
        outcome = "raised"
    assert other_tasks() == set()
    ended = (list(shared["posts"]), shared.get("done"))
    # Let every thread end, abandoned ones included; nothing may land meanwhile.
    threads = thread_limiter()
    while threads.statistics().in_flight or gauge.now:
        await asyncio.sleep(0.001)
    assert (list(shared["posts"]), shared.get("done")) == ended
    return gauge, limiter, outcome


@pytest.mark.slow
@settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_bounds_hold_and_nothing_lands_after_the_run_whatever_the_mix(scenario):
    gauge, limiter, outcome = asyncio.run(run_scenario(scenario))
    bounds = [b for b in (scenario["bound"], scenario["shared_limit"]) if b]
    if scenario["kind"] == "sync node" and scenario["bound"] is None:
        bounds.append(default_thread_count())
    bounds.append(thread_limiter().max_concurrent)
    assert gauge.peak <= min(bounds)
    if limiter is not None:
        assert limiter.statistics().peak_in_flight <= scenario["shared_limit"]
        assert limiter.statistics().in_flight == 0
        assert limiter.statistics().waiting == 0
    if outcome == "ok" and not scenario["collect"]:
        assert not scenario["fails"]
