"""Retries, wait, fallbacks, cur_retry, the Retry policy and option validation."""

import asyncio
import math

import pytest

from braidflow import (
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    InvalidParameterError,
    Node,
    ParallelBatchNode,
    Retry,
)
from braidflow.testing import VirtualClock


class Flaky(Node):
    """Fails until its attempt number reaches ``succeed_on``."""

    def __init__(self, succeed_on, **kwargs):
        super().__init__(**kwargs)
        self.succeed_on = succeed_on
        self.attempts = []

    def exec(self, prep_res):
        self.attempts.append(self.cur_retry)
        if self.cur_retry < self.succeed_on:
            raise ConnectionError(f"attempt {self.cur_retry}")
        return f"ok on {self.cur_retry}"

    def post(self, shared, prep_res, exec_res):
        return exec_res


def test_exec_is_retried_up_to_max_retries_with_cur_retry_counting_from_zero():
    node = Flaky(succeed_on=2, max_retries=3)
    assert node.run({}) == "ok on 2"
    assert node.attempts == [0, 1, 2]
    assert node.cur_retry == 2


def test_last_failure_goes_to_exec_fallback():
    class WithFallback(Flaky):
        def exec_fallback(self, prep_res, exc):
            return f"fallback after {exc}"

    node = WithFallback(succeed_on=99, max_retries=2)
    assert node.run({}) == "fallback after attempt 1"
    assert node.attempts == [0, 1]


def test_default_fallback_reraises_with_a_note_naming_node_and_attempts():
    node = Flaky(succeed_on=99, max_retries=3, name="fetch")
    with pytest.raises(ConnectionError, match="attempt 2") as caught:
        node.run({})
    assert any("fetch" in n and "attempt 3 of 3" in n for n in caught.value.__notes__)


def test_wait_sleeps_between_attempts():
    clock = VirtualClock(autojump=True)  # the run's clock: its sleeps take no real time
    Flaky(succeed_on=2, max_retries=3, wait=0.25).run({}, clock=clock)
    sleeps = clock.slept
    assert sleeps == [0.25, 0.25]


async def test_async_wait_sleeps_between_attempts():
    clock = VirtualClock(autojump=True)
    sleeps = clock.slept

    class AsyncFlaky(AsyncNode):
        async def exec_async(self, prep_res):
            if self.cur_retry < 2:
                raise ConnectionError
            return self.cur_retry

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await AsyncFlaky(max_retries=3, wait=0.5).run_async({}, clock=clock) == 2
    assert sleeps == [0.5, 0.5]


async def test_async_fallback_async_receives_the_error():
    class Fails(AsyncNode):
        async def exec_async(self, prep_res):
            raise ValueError(prep_res)

        async def exec_fallback_async(self, prep_res, exc):
            return f"handled {exc} on attempt {self.cur_retry}"

        async def prep_async(self, shared):
            return "input"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Fails(max_retries=2).run_async({}) == "handled input on attempt 1"


def test_process_after_fail_is_the_older_fallback_name():
    class Old(Node):
        def exec(self, prep_res):
            raise RuntimeError("down")

        def process_after_fail(self, shared, prep_res, exc):
            shared["seen"] = str(exc)
            return "fallback"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    shared = {}
    assert Old(max_retries=2).run(shared) == "fallback"
    assert shared == {"seen": "down"}


async def test_process_after_fail_on_async_node_with_modern_signature():
    class Old(AsyncNode):
        async def exec_async(self, prep_res):
            raise RuntimeError("down")

        def process_after_fail(self, prep_res, exc):
            return "fallback"

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await Old().run_async({}) == "fallback"


@pytest.mark.parametrize("cls", [Node, AsyncNode])
@pytest.mark.parametrize("bad", [0, -1, -100])
def test_max_retries_below_one_is_a_value_error_naming_the_node(cls, bad):
    with pytest.raises(ValueError, match="max_retries") as caught:
        cls(max_retries=bad, name="fetcher")
    assert "fetcher" in str(caught.value)
    assert isinstance(caught.value, InvalidParameterError)


@pytest.mark.parametrize("cls", [Node, AsyncNode])
def test_negative_wait_is_a_value_error_naming_the_node(cls):
    with pytest.raises(ValueError, match="wait") as caught:
        cls(wait=-1)
    assert cls.__name__ in str(caught.value)


def test_defaults_match_pocketflow():
    node = Node()
    assert node.max_retries == 1
    assert node.wait == 0
    assert node.cur_retry == 0


def test_retry_policy_backoff_cap_and_jitter():
    policy = Retry(attempts=5, delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.wait_after(n) for n in range(4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = Retry(attempts=5, delay=4.0, backoff=1.0, jitter=0.5, _random=lambda: 1.0)
    assert jittered.wait_after(0) == 2.0
    full = Retry(attempts=5, delay=4.0, jitter=1.0)
    assert all(0.0 <= full.wait_after(0) <= 4.0 for _ in range(50))


def test_retry_policy_is_used_by_nodes():
    clock = VirtualClock(autojump=True)
    sleeps = clock.slept
    node = Flaky(succeed_on=3, retry=Retry(attempts=4, delay=0.1, backoff=3.0))
    assert node.run({}, clock=clock) == "ok on 3"
    assert sleeps == pytest.approx([0.1, 0.3, 0.9])


class WaitsForTheOthers(AsyncParallelBatchNode):
    """Item 0 waits (under the node's timeout) for items 1-3, which each fail
    once and wait for their retry at the same time."""

    async def prep_async(self, shared):
        shared["others_done"], shared["finished"] = asyncio.Event(), []
        self.shared = shared
        return [0, 1, 2, 3]

    async def exec_async(self, item):
        if item == 0:
            await self.shared["others_done"].wait()
            return "waited"
        if self.cur_retry == 0:
            raise ConnectionError("503")
        self.shared["finished"].append(item)
        if len(self.shared["finished"]) == 3:
            self.shared["others_done"].set()
        return item

    async def exec_fallback_async(self, item, exc):
        return type(exc).__name__

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


@pytest.mark.parametrize(("seconds", "first"), [(25, "waited"), (5, "NodeTimeoutError")])
async def test_overlapping_retry_waits_move_an_autojump_clock_by_the_longest_only(seconds, first):
    clock = VirtualClock(autojump=True)
    shared = {}
    retry = Retry(attempts=2, delay=10, retry_on=ConnectionError)
    node = WaitsForTheOthers(retry=retry, timeout=seconds)
    await node.run_async(shared, clock=clock)
    # Three 10 s waits at once take 10 s: a 25 s timeout does not fire, a 5 s one does.
    assert shared["results"] == [first, 1, 2, 3]
    assert clock.slept == [10, 10, 10]
    assert clock.now() == 10


def test_overlapping_retry_waits_of_sync_items_move_an_autojump_clock_by_the_longest_only():
    class Items(ParallelBatchNode):
        def prep(self, shared):
            return [0, 1, 2]

        def exec(self, item):
            if self.cur_retry < 2:
                raise ConnectionError("503")
            return item

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    clock = VirtualClock(autojump=True)
    shared = {}
    Items(retry=Retry(attempts=3, delay=10, backoff=2), timeout=35).run(shared, clock=clock)
    assert shared["results"] == [0, 1, 2]
    assert clock.slept == [10, 10, 10, 20, 20, 20]
    assert clock.now() == 30


def test_retry_on_filters_which_errors_are_retried():
    class Strict(Node):
        calls = 0

        def exec(self, prep_res):
            type(self).calls += 1
            raise PermissionError("no")

        def exec_fallback(self, prep_res, exc):
            return f"gave up after {type(self).calls}"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    node = Strict(retry=Retry(attempts=5, retry_on=ConnectionError))
    assert node.run({}) == "gave up after 1"
    predicate = Strict(retry=Retry(attempts=3, retry_on=lambda e: isinstance(e, PermissionError)))
    Strict.calls = 0
    assert predicate.run({}) == "gave up after 3"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"delay": -1},
        {"backoff": 0.5},
        {"max_delay": -1},
        {"jitter": 1.5},
        {"retry_on": 42},
    ],
)
def test_bad_retry_policies_are_value_errors(kwargs):
    with pytest.raises(ValueError, match="Retry"):
        Retry(**kwargs)


def test_retry_and_max_retries_together_are_rejected():
    with pytest.raises(ValueError, match="either"):
        Node(max_retries=3, retry=Retry())


def test_retries_happen_inside_flows_on_the_step_copy():
    node = Flaky(succeed_on=1, max_retries=2)
    assert Flow(start=node).run({}) == "ok on 1"
    assert node.attempts == [0, 1]  # the copy shares the list, as copy.copy does


def test_fallback_errors_propagate_unchanged():
    class Strict(Node):
        def exec(self, prep_res):
            raise ValueError("first")

        def exec_fallback(self, prep_res, exc):
            raise LookupError("from fallback") from exc

    with pytest.raises(LookupError, match="from fallback"):
        Strict().run({})


async def test_async_run_to_completion_keeps_cur_retry_per_item_under_parallelism():
    from braidflow import AsyncParallelBatchNode

    started = asyncio.Event()
    gate = asyncio.Event()
    seen = {}

    class PerItem(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["slow", "fast"]

        async def exec_async(self, item):
            if item == "slow":
                if self.cur_retry == 0:
                    started.set()
                    await gate.wait()
                    raise ConnectionError
                seen["slow"] = self.cur_retry
                return item
            await started.wait()
            # The slow item is on attempt 0 and waiting; this one is on its own attempt.
            seen.setdefault("fast-first", self.cur_retry)
            if self.cur_retry < 2:
                raise ConnectionError
            seen["fast"] = self.cur_retry
            gate.set()
            return item

        async def post_async(self, shared, prep_res, exec_res):
            return exec_res

    assert await PerItem(max_retries=3).run_async({}) == ["slow", "fast"]
    assert seen == {"fast-first": 0, "fast": 2, "slow": 1}


def test_capped_exponential_backoff_never_overflows_and_reaches_the_fallback():

    class Always(Node):
        def exec(self, prep_res):
            raise ConnectionError("down")

        def exec_fallback(self, prep_res, exc):
            return f"fallback after attempt {self.cur_retry + 1}"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    policy = Retry(attempts=2000, delay=0.0, backoff=2.0, max_delay=0.0)
    clock = VirtualClock(autojump=True)
    assert Always(retry=policy).run({}, clock=clock) == "fallback after attempt 2000"
    assert Retry(attempts=5, delay=1.0, backoff=2.0, max_delay=30.0).wait_after(5000) == 30.0
    uncapped = Retry(attempts=5, delay=1.0, backoff=2.0).wait_after(5000)
    assert 0 < uncapped < math.inf  # the longest wait a thread can sleep, not an error


def test_fallback_raising_its_own_error_keeps_the_item_and_attempt_in_its_note():
    class Items(BatchNode):
        def prep(self, shared):
            return ["a", "b"]

        def exec(self, item):
            if item == "b":
                raise ConnectionError("down")
            return item

        def exec_fallback(self, item, exc):
            raise LookupError(f"no fallback for {item}")

    with pytest.raises(LookupError) as caught:
        Flow(start=Items(max_retries=2, name="items")).run({})
    notes = "\n".join(caught.value.__notes__)
    assert "fallback of node 'items'" in notes
    assert "item 1" in notes
    assert "attempt 2 of 2" in notes
    assert "ConnectionError('down')" in notes


def test_a_retry_on_that_raises_names_the_node_and_item_and_keeps_the_items_error():
    def retry_on(error):
        raise RuntimeError("predicate broke")

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "b", "c"]

        async def exec_async(self, item):
            if item == "b":
                raise ValueError("item b failed")
            return item

    with pytest.raises(RuntimeError, match="predicate broke") as caught:
        Items(retry=Retry(attempts=3, retry_on=retry_on), name="items").run({})
    assert repr(caught.value.__cause__) == "ValueError('item b failed')"
    assert any(
        "node 'items' (Items) item 1: raised by its Retry's retry_on" in note
        for note in caught.value.__notes__
    )


def test_an_abandoned_thread_does_not_slow_every_later_jump_of_an_autojump_clock():
    # A thread abandoned at its timeout stays at work (it keeps its slot):
    # the clock waits a grace for it once, not at each of the 40 retries after.
    import threading
    import time

    release = threading.Event()
    clock = VirtualClock(autojump=True)

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["hang", "retry"]

        def exec(self, item):
            if item == "hang":
                release.wait(30)  # abandoned at its timeout, let go below
                return "late"
            if self.cur_retry < 40:
                raise ConnectionError("again")
            return "ok"

        def exec_fallback(self, prep_res, exc):
            return type(exc).__name__

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    began = time.monotonic()
    try:
        retry = Retry(attempts=41, delay=2, backoff=1, retry_on=ConnectionError)
        Items(timeout=1, retry=retry).run(shared, clock=clock)
    finally:
        release.set()
    assert shared["results"] == ["NodeTimeoutError", "ok"]
    assert time.monotonic() - began < 2.5  # 40 graces of 0.1 s would be 4 s at least
