"""Hold-and-wait deadlocks among limiters are refused as they form, never reported
when the wait could end, and leave nothing behind.

Orderings are forced with barriers and events (never with time): every holder
takes its slots before any nested request is made."""

import asyncio
import multiprocessing
import threading

import pytest

import braidflow
from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchNode,
    Flow,
    Limiter,
    LimiterDeadlock,
    Node,
    ParallelBatchNode,
    RunError,
    _deadlock,
    thread_limiter,
)
from braidflow.testing import other_tasks


def assert_released(*limiters):
    """No slot held, nobody queued, nothing left registered with the deadlock check."""
    for limiter in limiters:
        statistics = limiter.statistics()
        assert (statistics.in_flight, statistics.waiting) == (0, 0), limiter
    assert thread_limiter().statistics().in_flight == 0
    assert _deadlock._blocked == {}
    assert _deadlock._exposed == {}


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0)


def wait_until_blocking(condition):
    while not condition():
        threading.Event().wait(0.001)


# -- nodes ----------------------------------------------------------------------------


class Call(Node):
    """A sync node that writes "called" to shared["out"]."""

    def exec(self, prep_res):
        return "called"

    def post(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


class AsyncCall(AsyncNode):
    async def exec_async(self, prep_res):
        return "called"

    async def post_async(self, shared, prep_res, exec_res):
        shared["out"] = exec_res


def sync_items(count, inner, meet=None):
    """A ParallelBatchNode of ``count`` items whose exec runs ``Flow(start=inner())``
    once every item holds its slots (``meet``: a threading.Barrier, or None)."""

    class Items(ParallelBatchNode):
        def prep(self, shared):
            return range(count)

        def exec(self, item):
            if meet is not None:
                meet.wait()
            shared = {}
            Flow(start=inner()).run(shared)
            return shared["out"]

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    return Items


def async_items(count, inner, meet=None):
    """The async form of `sync_items`; ``meet``: an asyncio.Barrier, or None."""

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(count)

        async def exec_async(self, item):
            if meet is not None:
                await meet.wait()
            shared = {}
            await AsyncFlow(start=inner()).run_async(shared)
            return shared["out"]

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    return Items


# -- the reproducer: items hold every slot, their nested nodes want one more -----------


@pytest.mark.parametrize("count", [2, 3])
def test_sync_items_holding_every_slot_while_nested_nodes_wait_are_refused(count):
    api = Limiter(count, name="api")
    items = sync_items(count, lambda: Call(limits=[api]), threading.Barrier(count))
    with pytest.raises(LimiterDeadlock, match=r"would wait forever for a slot of .*'api'"):
        items(limits=[api], name="Items").run({})
    assert_released(api)


@pytest.mark.parametrize("count", [2, 3])
async def test_async_items_holding_every_slot_while_nested_nodes_wait_are_refused(count):
    api = Limiter(count, name="api")
    items = async_items(count, lambda: AsyncCall(limits=[api]), asyncio.Barrier(count))
    with pytest.raises(LimiterDeadlock, match=r"would wait forever for a slot of .*'api'"):
        await items(limits=[api], name="Items").run_async({})
    assert other_tasks() == set()
    assert_released(api)


async def test_sync_items_run_from_async_code_are_refused_too():
    api = Limiter(2, name="api")
    items = sync_items(2, lambda: Call(limits=[api]), threading.Barrier(2))
    with pytest.raises(LimiterDeadlock):
        await AsyncFlow(start=items(limits=[api])).run_async({})
    assert other_tasks() == set()
    assert_released(api)


async def test_the_error_names_the_limiter_the_holders_and_the_waiting_node():
    api = Limiter(2, name="api")
    items = async_items(2, lambda: AsyncCall(limits=[api], name="Inner"), asyncio.Barrier(2))
    with pytest.raises(LimiterDeadlock) as caught:
        await items(limits=[api], name="Items").run_async({})
    error = caught.value
    assert isinstance(error, RunError)
    assert braidflow.LimiterDeadlock is LimiterDeadlock
    assert error.limiter is api
    assert error.limiters == (api,)
    assert sorted(error.holders) == [("Items", 0), ("Items", 1)]
    assert error.node == "Inner"
    assert error.item_index is None
    message = str(error)
    first_line = message.splitlines()[0]
    assert first_line.startswith("node 'Inner' (AsyncCall) inside node 'Items' item ")
    assert "would wait forever for a slot of Limiter(name='api', max_concurrent=2)" in first_line
    assert "Limiter(name='api', max_concurrent=2) is held by:" in message
    assert "node 'Items' item 0, in which node 'Inner' (AsyncCall) waits for 'api'" in message
    assert "node 'Items' item 1, in which node 'Inner' (AsyncCall) waits for 'api'" in message
    assert "Raise max_concurrent of 'api'" in message
    assert "max_concurrency" in message
    assert "outer or the inner node only" in message


# -- other shapes of the same deadlock ------------------------------------------------


async def test_a_cycle_across_two_limiters_is_refused():
    # One holds a and needs b inside, the other holds b and needs a inside.
    a, b = Limiter(1, name="a"), Limiter(1, name="b")
    meet = asyncio.Barrier(2)

    class Outer(AsyncNode):
        def __init__(self, inner, **options):
            super().__init__(**options)
            self.inner = inner

        async def exec_async(self, prep_res):
            await meet.wait()
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[self.inner], name="Inner")).run_async(shared)
            return shared["out"]

    results = await asyncio.gather(
        AsyncFlow(start=Outer(b, limits=[a], name="HoldsA")).run_async({}),
        AsyncFlow(start=Outer(a, limits=[b], name="HoldsB")).run_async({}),
        return_exceptions=True,
    )
    errors = [result for result in results if isinstance(result, BaseException)]
    assert len(errors) == 1  # the other one finishes once the refused one gives its slot back
    error = errors[0]
    assert isinstance(error, LimiterDeadlock)
    assert error.limiters == (a, b)
    assert sorted(error.holders) == [("HoldsA", None), ("HoldsB", None)]
    assert "node 'HoldsA' (Outer), in which node 'Inner' (AsyncCall) waits for 'b'" in str(error)
    assert "node 'HoldsB' (Outer), in which node 'Inner' (AsyncCall) waits for 'a'" in str(error)
    assert_released(a, b)


def test_a_cycle_across_limiters_between_threads_is_refused():
    a, b = Limiter(1, name="a"), Limiter(1, name="b")
    meet = threading.Barrier(2)
    outcomes = []

    class Outer(Node):
        def __init__(self, inner, **options):
            super().__init__(**options)
            self.inner = inner

        def exec(self, prep_res):
            meet.wait()
            shared = {}
            Flow(start=Call(limits=[self.inner])).run(shared)
            return shared["out"]

    def run(outer):
        try:
            Flow(start=outer).run({})
            outcomes.append("done")
        except LimiterDeadlock as error:
            outcomes.append(error)

    threads = [
        threading.Thread(target=run, args=(Outer(b, limits=[a]),)),
        threading.Thread(target=run, args=(Outer(a, limits=[b]),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(type, outcomes), key=str) == sorted([str, LimiterDeadlock], key=str)
    assert_released(a, b)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_is_not_refused_for_what_its_parent_waits_for():
    # The parent waits for b while it holds a, as it forks; the child holds b
    # while it waits for a: a cycle, had the parent's wait been the child's too.
    fork = multiprocessing.get_context("fork")
    a, b = Limiter(1, name="a"), Limiter(1, name="b")

    class Outer(Node):
        def __init__(self, inner, **options):
            super().__init__(**options)
            self.inner = inner

        def exec(self, prep_res):
            shared = {}
            Flow(start=Call(limits=[self.inner])).run(shared)
            return shared["out"]

    b.acquire_blocking()  # given back once the child is made
    parent = threading.Thread(target=Flow(start=Outer(b, limits=[a])).run, args=({},))
    parent.start()
    wait_until_blocking(lambda: b.statistics().waiting == 1)
    reports, report = fork.Pipe(duplex=False)

    def child():
        a.acquire_blocking()  # given back once the child's run waits for it
        outcome = []

        def run():
            try:
                Flow(start=Outer(a, limits=[b])).run({})
                outcome.append("done")
            except LimiterDeadlock as error:
                outcome.append(str(error))

        running = threading.Thread(target=run)
        running.start()
        wait_until_blocking(lambda: a.statistics().waiting == 1 or outcome)
        a.release()
        running.join(30)
        report.send(outcome)

    forked = fork.Process(target=child)
    forked.start()
    try:
        assert reports.poll(30)
        assert reports.recv() == ["done"]
    finally:
        forked.join(30)
        b.release()
        parent.join(30)
    assert forked.exitcode == 0
    assert_released(a, b)


async def test_a_cycle_between_a_thread_and_a_task_is_refused():
    a, b = Limiter(1, name="a"), Limiter(1, name="b")
    task_holds = asyncio.Event()
    thread_holds = threading.Event()
    loop = asyncio.get_running_loop()

    class InThread(Node):
        def exec(self, prep_res):
            thread_holds.set()
            asyncio.run_coroutine_threadsafe(task_holds.wait(), loop).result()
            shared = {}
            Flow(start=Call(limits=[b])).run(shared)
            return shared["out"]

    class OnLoop(AsyncNode):
        async def exec_async(self, prep_res):
            task_holds.set()
            await loop.run_in_executor(None, thread_holds.wait)
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[a])).run_async(shared)
            return shared["out"]

    in_thread = loop.run_in_executor(None, Flow(start=InThread(limits=[a])).run, {})
    results = await asyncio.gather(
        in_thread, AsyncFlow(start=OnLoop(limits=[b])).run_async({}), return_exceptions=True
    )
    assert sum(isinstance(result, LimiterDeadlock) for result in results) == 1
    assert sum(result is None for result in results) == 1
    assert other_tasks() == set()
    assert_released(a, b)


async def test_a_deeper_nesting_is_refused():
    # Items hold api; a middle node (holding another limiter) runs the node needing api.
    api, db = Limiter(2, name="api"), Limiter(5, name="db")

    class Middle(AsyncNode):
        async def exec_async(self, prep_res):
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[api], name="Inner")).run_async(shared)
            return shared["out"]

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    items = async_items(2, lambda: Middle(limits=[db], name="Middle"), asyncio.Barrier(2))
    with pytest.raises(LimiterDeadlock) as caught:
        await items(limits=[api], name="Items").run_async({})
    assert caught.value.limiters == (api,)
    assert sorted(caught.value.holders) == [("Items", 0), ("Items", 1)]
    assert "inside node 'Middle' (Middle)" not in str(caught.value)
    assert " inside node 'Middle' would wait forever" in str(caught.value).splitlines()[0]
    assert other_tasks() == set()
    assert_released(api, db)


async def test_a_nested_parallel_batch_is_refused():
    api = Limiter(2, name="api")

    class InnerItems(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(3)

        async def exec_async(self, item):
            return item

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    items = async_items(2, lambda: InnerItems(limits=[api], name="Inner"), asyncio.Barrier(2))
    with pytest.raises(LimiterDeadlock) as caught:
        await items(limits=[api], name="Items").run_async({})
    assert caught.value.node == "Inner"
    assert caught.value.item_index in (0, 1, 2)
    assert other_tasks() == set()
    assert_released(api)


def test_nested_sync_parallel_batches_on_their_own_loops_are_refused():
    # Each outer item (a thread) runs a sync parallel batch on a private event loop.
    api = Limiter(2, name="api")

    class InnerItems(ParallelBatchNode):
        def prep(self, shared):
            return range(2)

        def exec(self, item):
            return item

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    items = sync_items(2, lambda: InnerItems(limits=[api]), threading.Barrier(2))
    with pytest.raises(LimiterDeadlock):
        items(limits=[api]).run({})
    assert_released(api)


async def test_a_waiter_holding_part_of_its_limiters_counts_as_a_holder():
    # First takes a and waits for b; Holder holds b and its nested node wants a.
    a, b = Limiter(1, name="a"), Limiter(1, name="b")
    go = asyncio.Event()

    class Holder(AsyncNode):
        async def exec_async(self, prep_res):
            await go.wait()
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[a], name="Inner")).run_async(shared)
            return shared["out"]

    holder = asyncio.create_task(AsyncFlow(start=Holder(limits=[b])).run_async({}))
    await wait_until(lambda: b.statistics().in_flight == 1)
    both = asyncio.create_task(AsyncFlow(start=AsyncCall(limits=[a, b], name="Both")).run_async({}))
    await wait_until(lambda: b.statistics().waiting == 1)
    assert a.statistics().in_flight == 1  # taken by Both, which now waits for b
    go.set()
    with pytest.raises(LimiterDeadlock) as caught:
        await holder
    assert caught.value.limiters == (a, b)
    assert "node 'Both' (AsyncCall), which waits for 'b'" in str(caught.value)
    await both  # served once the holder gave b back
    assert_released(a, b)


async def test_lowering_a_bound_under_waiting_holders_refuses_one_of_them():
    api = Limiter(3, name="api")
    meet = asyncio.Barrier(2)
    items = async_items(2, lambda: AsyncCall(limits=[api]), meet)
    async with api:  # the third slot, held outside any attempt: it will be given back
        run = asyncio.create_task(items(limits=[api]).run_async({}))
        await wait_until(lambda: api.statistics().waiting == 2)
        api.max_concurrent = 2  # now the two items' slots are all there is
        with pytest.raises(LimiterDeadlock, match="would wait forever"):
            await run
    assert other_tasks() == set()
    assert_released(api)


# -- no false deadlock ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_shape_that_can_finish_finishes(kind):
    # Limiter(3), two items each nesting one call: one nested call at a time fits.
    api = Limiter(3, name="api")
    if kind == "sync":
        items = sync_items(2, lambda: Call(limits=[api]), threading.Barrier(2))
        shared = {}
        await asyncio.to_thread(items(limits=[api]).run, shared)
    else:
        items = async_items(2, lambda: AsyncCall(limits=[api]), asyncio.Barrier(2))
        shared = {}
        await items(limits=[api]).run_async(shared)
    assert shared["results"] == ["called", "called"]
    assert api.statistics().peak_in_flight == 3
    assert_released(api)


async def test_a_holder_that_is_not_waiting_can_still_give_its_slot_back():
    # Item 0's nested node waits while item 1 (not nesting) holds the other slot.
    api = Limiter(2, name="api")
    item_1_may_finish = asyncio.Event()

    class Items(AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return range(2)

        async def exec_async(self, item):
            if item == 1:
                await item_1_may_finish.wait()
                return "plain"
            await wait_until(lambda: api.statistics().in_flight == 2)
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[api])).run_async(shared)
            return shared["out"]

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    run = asyncio.create_task(Items(limits=[api]).run_async(shared))
    await wait_until(lambda: api.statistics().waiting == 1)
    item_1_may_finish.set()
    await run
    assert shared["results"] == ["called", "plain"]
    assert_released(api)


async def test_slots_held_by_your_own_async_with_count_as_given_back():
    api = Limiter(2, name="api")
    items = async_items(1, lambda: AsyncCall(limits=[api]))
    shared = {}
    async with api:  # not an attempt: braidflow does not know what this code waits for
        run = asyncio.create_task(items(limits=[api]).run_async(shared))
        await wait_until(lambda: api.statistics().waiting == 1)
        assert not run.done()
    await run
    assert shared["results"] == ["called"]
    assert_released(api)


async def test_a_nested_request_while_another_limiter_is_merely_busy_waits():
    # The holders of b are busy, not waiting: the request for b must wait, not fail.
    a, b = Limiter(1, name="a"), Limiter(1, name="b")
    release_b = asyncio.Event()

    async def busy():
        async with b:
            await release_b.wait()

    class Holder(AsyncNode):
        async def exec_async(self, prep_res):
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[b])).run_async(shared)
            return shared["out"]

    occupant = asyncio.create_task(busy())
    await wait_until(lambda: b.statistics().in_flight == 1)
    run = asyncio.create_task(AsyncFlow(start=Holder(limits=[a])).run_async({}))
    await wait_until(lambda: b.statistics().waiting == 1)
    release_b.set()
    await asyncio.gather(occupant, run)
    assert_released(a, b)


async def test_the_registry_forgets_a_cancelled_waiter():
    api = Limiter(1, name="api")

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            shared = {}
            await AsyncFlow(start=AsyncCall(limits=[api])).run_async(shared)

    other = Limiter(1, name="other")
    await api.acquire()  # a plain holder: the nested request waits, it is not refused
    run = asyncio.create_task(AsyncFlow(start=Outer(limits=[other])).run_async({}))
    await wait_until(lambda: api.statistics().waiting == 1)
    assert len(_deadlock._blocked) == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    api.release()
    assert_released(api, other)


async def test_a_request_outliving_the_attempt_it_started_in_no_longer_keeps_it_waiting():
    # Outer's exec starts a task it does not wait for, which waits for b; once
    # Outer has returned, neither it nor the attempt around it waits for that task.
    g, a, b = Limiter(1, name="g"), Limiter(1, name="a"), Limiter(1, name="b")
    detached = []
    exposed_after_outer = []

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            flow = AsyncFlow(start=AsyncCall(limits=[b]))
            detached.append(asyncio.create_task(flow.run_async({})))
            await wait_until(lambda: b.statistics().waiting == 1)
            assert set(_deadlock._exposed) == {g, a}  # both count the wait for b

    class Around(AsyncNode):
        async def exec_async(self, prep_res):
            await AsyncFlow(start=Outer(limits=[a])).run_async({})
            exposed_after_outer.extend(_deadlock._exposed)

    await b.acquire()
    await AsyncFlow(start=Around(limits=[g])).run_async({})
    assert exposed_after_outer == []
    assert len(_deadlock._blocked) == 1  # the task still waits, and still registered
    b.release()
    await detached[0]
    assert_released(g, a, b)


# -- weighted limiters: what is held and asked is units ---------------------------------


async def test_a_weighted_request_nested_in_a_holder_of_the_same_units_is_refused():
    # 6 of 10 units held by the outer attempt; its inner node asks for 6 more.
    tpm = Limiter(max_concurrent=10, name="tpm")
    outer = async_items(1, lambda: AsyncCall(limits=[tpm.weighted(6)]))
    with pytest.raises(LimiterDeadlock, match=r"asked for 6 units .* hold 6 of its 10 units"):
        await outer(limits=[tpm.weighted(6)], name="Items").run_async({})
    assert other_tasks() == set()
    assert_released(tpm)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_weighted_holders_whose_nested_requests_cannot_fit_are_refused(kind):
    # Two items hold 5 units each of 10, and each one's nested node asks for 5.
    tpm = Limiter(max_concurrent=10, name="tpm")
    if kind == "sync":
        items = sync_items(2, lambda: Call(limits=[tpm.weighted(5)]), threading.Barrier(2))
        run = asyncio.to_thread(items(limits=[tpm.weighted(5)]).run, {})
    else:
        items = async_items(2, lambda: AsyncCall(limits=[tpm.weighted(5)]), asyncio.Barrier(2))
        run = items(limits=[tpm.weighted(5)]).run_async({})
    with pytest.raises(LimiterDeadlock, match=r"would wait forever for a slot of .*'tpm'"):
        await run
    assert_released(tpm)


async def test_weighted_holders_whose_nested_requests_fit_one_at_a_time_finish():
    # 3 + 3 of 10 units held; a nested 3 fits, the other waits for it: no deadlock.
    tpm = Limiter(max_concurrent=10, name="tpm")
    items = async_items(2, lambda: AsyncCall(limits=[tpm.weighted(3)]), asyncio.Barrier(2))
    shared = {}
    await items(limits=[tpm.weighted(3)]).run_async(shared)
    assert shared["results"] == ["called", "called"]
    assert tpm.statistics().peak_in_flight == 9
    assert_released(tpm)


# -- weighted limiters: a nested request does not queue behind a heavier waiter ------------

# Seconds a shape that must finish is given: a regression fails instead of hanging.
HANG = 10


def in_thread(function):
    """Run ``function()`` in a thread; fail if it is still running after HANG seconds."""
    outcome = []

    def run():
        try:
            outcome.append(function())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def joined(thread, outcome):
    """What `in_thread`'s function returned, once its thread has ended (it must, within HANG)."""
    thread.join(HANG)
    assert not thread.is_alive(), "a wait that can end never ended"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def noting(order, base):
    """A node class that notes its name in ``order`` when its exec runs."""

    if base is AsyncNode:

        class AsyncNoted(AsyncNode):
            async def exec_async(self, prep_res):
                order.append(self.name)

        return AsyncNoted

    class Noted(Node):
        def exec(self, prep_res):
            order.append(self.name)

    return Noted


async def test_a_nested_request_takes_a_free_unit_ahead_of_a_heavier_waiter():
    # Outer holds 1 of 2 units; Heavy (2) waits at the head of the queue for that
    # unit; Outer's inner node asks for the free one: it must not queue behind Heavy.
    api = Limiter(2, name="api")
    order = []
    Noted = noting(order, AsyncNode)
    holding = asyncio.Event()

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            holding.set()
            await wait_until(lambda: api.statistics().waiting == 1)  # Heavy queued
            await Noted(limits=[api.weighted(1)], name="inner").run_async({})
            order.append("outer")

    outer = asyncio.create_task(Outer(limits=[api.weighted(1)]).run_async({}))
    await holding.wait()
    heavy = asyncio.create_task(Noted(limits=[api.weighted(2)], name="heavy").run_async({}))
    await asyncio.wait_for(asyncio.gather(outer, heavy), HANG)
    assert order == ["inner", "outer", "heavy"]
    assert_released(api)


def test_a_nested_request_in_a_thread_takes_a_free_unit_ahead_of_a_heavier_waiter():
    api = Limiter(2, name="api")
    order = []
    Noted = noting(order, Node)
    holding = threading.Event()

    class Outer(Node):
        def exec(self, prep_res):
            holding.set()
            wait_until_blocking(lambda: api.statistics().waiting == 1)  # Heavy queued
            Flow(start=Noted(limits=[api.weighted(1)], name="inner")).run({})
            order.append("outer")

    outer = in_thread(lambda: Flow(start=Outer(limits=[api.weighted(1)])).run({}))
    holding.wait()
    heavy = in_thread(lambda: Flow(start=Noted(limits=[api.weighted(2)], name="heavy")).run({}))
    joined(*outer)
    joined(*heavy)
    assert order == ["inner", "outer", "heavy"]
    assert_released(api)


async def test_a_nested_request_that_must_wait_is_served_ahead_of_a_heavier_waiter():
    # 1 of 3 units held by the test, 1 by Outer; Heavy (3) waits at the head; Outer's
    # inner node asks for 2 and waits too. The test's unit back: the inner node takes it.
    api = Limiter(3, name="api")
    order = []
    Noted = noting(order, AsyncNode)
    holding = asyncio.Event()

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            holding.set()
            await wait_until(lambda: api.statistics().waiting == 1)  # Heavy queued
            await Noted(limits=[api.weighted(2)], name="inner").run_async({})
            order.append("outer")

    async def shape():
        await api.acquire()
        outer = asyncio.create_task(Outer(limits=[api.weighted(1)]).run_async({}))
        await holding.wait()
        heavy = asyncio.create_task(Noted(limits=[api.weighted(3)], name="heavy").run_async({}))
        await wait_until(lambda: api.statistics().waiting == 2)  # the inner node queued
        api.release()
        await asyncio.gather(outer, heavy)

    await asyncio.wait_for(shape(), HANG)
    assert order == ["inner", "outer", "heavy"]
    assert_released(api)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_nested_batches_under_a_heavier_waiting_item_finish(kind):
    # Limiter(5): items of 2 units, each running an inner batch of 1-unit items.
    # Two items hold 4 units, the third waits for 2 at the head of the queue
    # before any inner item asks: the inner items take the free unit in turn.
    api = Limiter(5, name="api")

    def holders_meet_the_waiting_item():
        # The third item has queued (for that item itself: has been served since).
        statistics = api.statistics()
        return statistics.waiting >= 1 or statistics.acquired > 2

    if kind == "sync":

        class SyncInner(ParallelBatchNode):
            def prep(self, shared):
                return [1, 2, 3]

            def exec(self, item):
                return item

        class SyncItems(ParallelBatchNode):
            def prep(self, shared):
                return [0, 1, 2]

            def exec(self, item):
                wait_until_blocking(holders_meet_the_waiting_item)
                return Flow(start=SyncInner(limits=[api.weighted(1)])).run({}) or item

            def post(self, shared, prep_res, exec_res):
                shared["results"] = exec_res

        shared = {}
        joined(*in_thread(lambda: SyncItems(limits=[api.weighted(2)]).run(shared)))
    else:

        class Inner(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return [1, 2, 3]

            async def exec_async(self, item):
                return item

        class Items(AsyncParallelBatchNode):
            async def prep_async(self, shared):
                return [0, 1, 2]

            async def exec_async(self, item):
                await wait_until(holders_meet_the_waiting_item)
                return await Inner(limits=[api.weighted(1)]).run_async({}) or item

            async def post_async(self, shared, prep_res, exec_res):
                shared["results"] = exec_res

        shared = {}
        await asyncio.wait_for(Items(limits=[api.weighted(2)]).run_async(shared), HANG)
    assert shared["results"] == [0, 1, 2]
    assert api.statistics().peak_in_flight == 5
    assert_released(api)


async def test_an_unrelated_request_still_waits_behind_a_heavier_one():
    # Limiter(3): the test holds 1 unit, Outer 1; Heavy (2) waits at the head. Outer's
    # inner node takes the free unit ahead of Heavy and gives it back; then Light, a
    # node inside an attempt that holds another limiter, asks for 1: it must queue
    # behind Heavy, free unit or not, and is served after it.
    api, other = Limiter(3, name="api"), Limiter(1, name="other")
    order = []
    Noted = noting(order, AsyncNode)
    holding, outer_may_end = asyncio.Event(), asyncio.Event()

    class Outer(AsyncNode):
        async def exec_async(self, prep_res):
            holding.set()
            await wait_until(lambda: api.statistics().waiting == 1)  # Heavy queued
            await Noted(limits=[api.weighted(1)], name="inner").run_async({})
            await outer_may_end.wait()
            order.append("outer")

    class Around(AsyncNode):
        async def exec_async(self, prep_res):
            await Noted(limits=[api.weighted(1)], name="light").run_async({})

    async def shape():
        await api.acquire()
        outer = asyncio.create_task(Outer(limits=[api.weighted(1)]).run_async({}))
        await holding.wait()
        heavy = asyncio.create_task(Noted(limits=[api.weighted(2)], name="heavy").run_async({}))
        await wait_until(lambda: order == ["inner"] and api.statistics().in_flight == 2)
        light = asyncio.create_task(Around(limits=[other]).run_async({}))
        # Light queued with 1 unit free (or, wrongly, served).
        await wait_until(lambda: api.statistics().waiting == 2 or "light" in order)
        assert order == ["inner"]
        api.release()
        await asyncio.gather(heavy, light)
        outer_may_end.set()
        await outer

    await asyncio.wait_for(shape(), HANG)
    assert order == ["inner", "heavy", "light", "outer"]
    assert_released(api, other)


# -- a cycle through queue order, across limiters ------------------------------------------


def holding_a_and_b(order, base, a, b, x_asks=None):
    """Nodes Y, X and Heavy (noting their names in ``order``, of ``base``): Y
    holds a, X one unit of b (of 2); Heavy is to wait at the head of b's queue
    for 2 units. Once it does, Y's inner node asks b for 1 (queued behind
    Heavy), then X's asks a (or ``x_asks``): Heavy waits for X's unit, X for
    a, a for Y, and Y for Heavy to go first."""
    Noted = noting(order, base)
    y_inner = Noted(limits=[b.weighted(1)], name="y inner")
    x_inner = Noted(limits=[a if x_asks is None else x_asks], name="x inner")

    def heavy_queued():
        return b.statistics().waiting == 1

    def y_inner_queued():
        return b.statistics().waiting == 2

    if base is AsyncNode:

        class AsyncY(AsyncNode):
            async def exec_async(self, prep_res):
                await wait_until(heavy_queued)
                await y_inner.run_async({})
                order.append("y")

        class AsyncX(AsyncNode):
            async def exec_async(self, prep_res):
                await wait_until(y_inner_queued)
                await x_inner.run_async({})
                order.append("x")

        y, x = AsyncY(limits=[a]), AsyncX(limits=[b.weighted(1)])
    else:

        class Y(Node):
            def exec(self, prep_res):
                wait_until_blocking(heavy_queued)
                Flow(start=y_inner).run({})
                order.append("y")

        class X(Node):
            def exec(self, prep_res):
                wait_until_blocking(y_inner_queued)
                Flow(start=x_inner).run({})
                order.append("x")

        y, x = Y(limits=[a]), X(limits=[b.weighted(1)])
    return y, x, Noted(limits=[b.weighted(2)], name="heavy")


async def test_a_request_goes_ahead_of_a_heavier_waiter_that_waits_for_it_across_limiters():
    a, b = Limiter(1, name="a"), Limiter(2, name="b")
    order = []
    y, x, heavy = holding_a_and_b(order, AsyncNode, a, b)

    async def shape():
        y_run = asyncio.create_task(y.run_async({}))
        x_run = asyncio.create_task(x.run_async({}))
        await wait_until(lambda: (a.statistics().in_flight, b.statistics().in_flight) == (1, 1))
        heavy_run = asyncio.create_task(heavy.run_async({}))
        await asyncio.gather(y_run, x_run, heavy_run)

    await asyncio.wait_for(shape(), HANG)
    assert order == ["y inner", "y", "x inner", "x", "heavy"]
    assert_released(a, b)


def test_in_threads_a_request_goes_ahead_of_a_heavier_waiter_that_waits_for_it():
    a, b = Limiter(1, name="a"), Limiter(2, name="b")
    order = []
    y, x, heavy = holding_a_and_b(order, Node, a, b)
    y_run = in_thread(lambda: y.run({}))
    x_run = in_thread(lambda: x.run({}))
    wait_until_blocking(lambda: (a.statistics().in_flight, b.statistics().in_flight) == (1, 1))
    heavy_run = in_thread(lambda: heavy.run({}))
    for run in (y_run, x_run, heavy_run):
        joined(*run)
    assert order == ["y inner", "y", "x inner", "x", "heavy"]
    assert_released(a, b)


async def test_lowering_a_bound_lets_a_request_ahead_of_a_heavier_waiter_that_waits_for_it():
    # The shape above with b bounded to 3 and 1 unit held by the test: Heavy waits
    # for that unit only, no cycle. Down to 2 it waits for X's unit too: a cycle.
    a, b = Limiter(1, name="a"), Limiter(3, name="b")
    order = []
    y, x, heavy = holding_a_and_b(order, AsyncNode, a, b)

    async def shape():
        await b.acquire()
        y_run = asyncio.create_task(y.run_async({}))
        x_run = asyncio.create_task(x.run_async({}))
        await wait_until(lambda: (a.statistics().in_flight, b.statistics().in_flight) == (1, 2))
        heavy_run = asyncio.create_task(heavy.run_async({}))
        await wait_until(lambda: len(_deadlock._blocked) == 2)  # X's inner node too
        assert order == []
        b.max_concurrent = 2
        b.release()
        await asyncio.gather(y_run, x_run, heavy_run)

    await asyncio.wait_for(shape(), HANG)
    assert order == ["y inner", "y", "x inner", "x", "heavy"]
    assert_released(a, b)


async def test_a_request_keeps_its_place_behind_a_heavier_waiter_that_does_not_wait_for_it():
    # As above, but X's inner node asks for c, which the test holds (and gives
    # back): Heavy waits for X's unit, X for c, and nothing for Y. So Y's inner
    # node waits behind Heavy, though a unit of b is free all along.
    a, b, c = Limiter(1, name="a"), Limiter(2, name="b"), Limiter(1, name="c")
    order = []
    y, x, heavy = holding_a_and_b(order, AsyncNode, a, b, x_asks=c)

    async def shape():
        await c.acquire()
        x_run = asyncio.create_task(x.run_async({}))
        await wait_until(lambda: b.statistics().in_flight == 1)
        heavy_run = asyncio.create_task(heavy.run_async({}))
        y_run = asyncio.create_task(y.run_async({}))
        await wait_until(lambda: c.statistics().waiting == 1)  # X's inner node, last
        assert b.statistics().waiting == 2  # Heavy, and Y's inner node behind it
        c.release()
        await asyncio.gather(y_run, x_run, heavy_run)

    await asyncio.wait_for(shape(), HANG)
    assert order == ["x inner", "x", "heavy", "y inner", "y"]
    assert_released(a, b, c)


async def test_a_cycle_of_heavier_requests_behind_a_lighter_one_is_refused_as_it_forms():
    # tpm (2 units): the test holds 1, A 1; B holds m. Light (nested in S, holding
    # k) waits for 1 unit; B's inner node, for 2, behind it; then A's inner node asks
    # for m. Light can be served (the test's unit), but B's inner node only with
    # A's unit, and A waits for B: refused now, not left hanging once Light is served.
    k, tpm, m = Limiter(1, name="k"), Limiter(2, name="tpm"), Limiter(1, name="m")
    order = []
    Noted = noting(order, AsyncNode)
    go_a, go_b = asyncio.Event(), asyncio.Event()

    class Nesting(AsyncNode):
        def __init__(self, go, inner, **options):
            super().__init__(**options)
            self.go, self.inner = go, inner

        async def exec_async(self, prep_res):
            await self.go.wait()
            await self.inner.run_async({})
            order.append(self.name)

    always = asyncio.Event()
    always.set()
    a_run = Nesting(go_a, Noted(limits=[m], name="a inner"), limits=[tpm.weighted(1)], name="A")
    b_run = Nesting(go_b, Noted(limits=[tpm.weighted(2)], name="b inner"), limits=[m], name="B")
    light = Nesting(always, Noted(limits=[tpm.weighted(1)], name="light"), limits=[k], name="S")

    async def shape():
        await tpm.acquire()
        a_task = asyncio.create_task(a_run.run_async({}))
        b_task = asyncio.create_task(b_run.run_async({}))
        await wait_until(lambda: (tpm.statistics().in_flight, m.statistics().in_flight) == (2, 1))
        s_task = asyncio.create_task(light.run_async({}))
        await wait_until(lambda: tpm.statistics().waiting == 1)
        go_b.set()
        await wait_until(lambda: tpm.statistics().waiting == 2)
        go_a.set()
        with pytest.raises(LimiterDeadlock) as refused:
            await a_task
        tpm.release()
        await asyncio.gather(s_task, b_task)
        return refused.value

    error = await asyncio.wait_for(shape(), HANG)
    assert error.node == "a inner"
    assert error.limiters == (tpm, m)
    assert sorted(error.holders) == [("A", None), ("B", None)]
    assert "node 'B' (Nesting), in which node 'b inner' (AsyncNoted) waits for 'tpm'" in str(error)
    assert order == ["light", "S", "b inner", "B"]
    assert_released(k, tpm, m)
