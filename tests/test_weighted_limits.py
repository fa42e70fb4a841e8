"""Weighted limits: a Limiter counting tokens per call, corrected by the usage reported."""

from __future__ import annotations

import asyncio
import threading

import pytest

import braidflow
from braidflow import (
    AsyncNode,
    AsyncParallelBatchNode,
    InvalidParameterError,
    Limiter,
    Node,
    Usage,
    Weighted,
)
from braidflow._weights import Claim
from braidflow.testing import VirtualClock


class Calls(AsyncParallelBatchNode):
    """Each item is (estimate, used): exec reports ``used`` tokens."""

    def __init__(self, limits, gate=None, log=None, **options):
        super().__init__(limits=limits, **options)
        self.gate = gate
        self.log = log if log is not None else []

    async def prep_async(self, shared):
        return shared["items"]

    async def exec_async(self, item):
        self.log.append(("start", item))
        if self.gate is not None:
            await self.gate.wait()
        used = item[1]
        if used is not None:
            self.report_usage(input_tokens=used, output_tokens=0)
        return item


def test_weighted_is_made_by_the_limiter_and_exported():
    limiter = Limiter(rate=100, per=60, name="tpm")
    weighted = limiter.weighted(10)
    assert isinstance(weighted, Weighted)
    assert weighted.limiter is limiter
    assert braidflow.Weighted is Weighted
    assert "tpm" in repr(weighted)


@pytest.mark.parametrize(
    ("weight", "said"),
    [
        (-1, "finite number >= 0"),
        (float("nan"), "finite number >= 0"),
        ("10", "not a number"),
        (True, "not a number"),
        (101, "can ever give at once (100)"),
    ],
)
def test_a_bad_weight_is_refused_when_given(weight, said):
    with pytest.raises(InvalidParameterError, match=said.replace("(", r"\(").replace(")", r"\)")):
        Limiter(rate=100, per=60, name="tpm").weighted(weight)


def test_a_weight_over_max_concurrent_is_refused():
    with pytest.raises(InvalidParameterError, match="wait forever"):
        Limiter(5).weighted(6)


def test_an_unknown_by_is_refused():
    with pytest.raises(InvalidParameterError, match="by='words' must be one of"):
        Limiter(5).weighted(1, by="words")


def test_a_weight_function_giving_too_much_fails_naming_the_node_and_item():
    tpm = Limiter(rate=100, per=60, name="tpm")
    node = Calls([tpm.weighted(lambda item: item[0])])
    with pytest.raises(InvalidParameterError, match=r"Calls.* item 1: the weight 500 .*tpm"):
        node.run({"items": [(10, None), (500, None)]})


def test_the_same_limiter_twice_is_refused_weighted_or_not():
    tpm = Limiter(rate=100, per=60, name="tpm")
    with pytest.raises(InvalidParameterError) as caught:
        Node(limits=[tpm, tpm.weighted(3)])
    # Both forms named as given, not "listed more than once" of the one given once.
    assert str(caught.value) == (
        f"node 'Node': limits gives the same limiter twice, plain and weighted: {tpm!r} "
        f"and {tpm!r}.weighted(3.0); an attempt holds each limiter once, so keep one of "
        "the two (the weighted one takes its weight in units an attempt, the plain one 1)"
    )
    with pytest.raises(InvalidParameterError, match=r"twice, weighted twice: .*\(1\.0\) and"):
        Node(limits=[tpm.weighted(1), tpm.weighted(3)])
    weighted = tpm.weighted(3)
    with pytest.raises(InvalidParameterError, match=r"lists .*weighted\(3\.0\) more than once"):
        Node(limits=[weighted, weighted])


async def test_units_in_flight_are_bounded_by_max_concurrent():
    tokens = Limiter(100, name="tokens")
    gate = asyncio.Event()
    node = Calls([tokens.weighted(lambda item: item[0])], gate=gate)
    run = asyncio.ensure_future(node.run_async({"items": [(60, None), (30, None), (20, None)]}))
    while len(node.log) < 2:
        await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.sleep(0)
    # 60 + 30 fit in 100; the third (20) waits: FIFO and 110 > 100.
    assert [entry[1][0] for entry in node.log] == [60, 30]
    assert tokens.statistics().in_flight == 90
    assert tokens.statistics().waiting == 1
    gate.set()
    await run
    assert tokens.statistics().in_flight == 0
    assert tokens.statistics().peak_in_flight == 90


async def test_a_report_gives_back_an_over_estimate_at_once():
    clock = VirtualClock()
    tpm = Limiter(rate=100, per=60, clock=clock, name="tpm")
    gate = asyncio.Event()
    node = Calls([tpm.weighted(lambda item: item[0])], gate=gate)
    # Two estimates of 60 do not fit in 100 tokens a minute; the first
    # reports 10 used, so the second fits in the same minute.
    first = asyncio.ensure_future(node.run_async({"items": [(60, 10)]}))
    while not node.log:
        await asyncio.sleep(0)
    assert tpm.statistics().in_window == 60
    gate.set()
    await first
    assert tpm.statistics().in_window == 10
    await node.run_async({"items": [(60, 5)]})
    assert tpm.statistics().in_window == 15
    assert clock.now() == 0  # nobody waited for the window


async def test_calls_waiting_for_the_window_go_as_soon_as_an_over_estimate_comes_back():
    # Estimates of 300 in 1,000 a second: three fit. Each uses 100 in fact,
    # so as they report, the calls waiting go in the same second: eight
    # (8 x 100 + ... stays within 1,000) before the clock moves at all.
    clock = VirtualClock()
    tps = Limiter(rate=1000, per=1, clock=clock, name="tps")
    gate = asyncio.Event()
    node = Calls([tps.weighted(300)], gate=gate, max_concurrency=12)
    run = asyncio.ensure_future(node.run_async({"items": [(300, 100)] * 12}))
    for _ in range(50):  # three in, the others waiting for the window
        await asyncio.sleep(0)
    assert len(node.log) == 3
    gate.set()  # they report: 100 each
    for _ in range(200):  # let every call that can go, go
        await asyncio.sleep(0)
    assert len(node.log) == 8
    assert clock.now() == 0
    clock.advance(1)
    await run
    assert len(node.log) == 12


async def test_a_thread_waiting_for_the_window_goes_as_soon_as_units_come_back():
    clock = VirtualClock()
    tps = Limiter(rate=1000, per=1, clock=clock, name="tps")
    first = Claim(tps.weighted(800), 800)
    assert first.try_acquire()
    second = Claim(tps.weighted(500), 500)
    waiting = threading.Thread(target=second._acquire_queued_blocking, args=((), None, None))
    waiting.start()
    while tps.statistics().waiting == 0:
        await asyncio.sleep(0.001)
    first.correct(100)  # 800 estimated, 100 used: 500 more fit now
    waiting.join(timeout=5)
    assert not waiting.is_alive()
    assert clock.now() == 0
    assert tps.statistics().in_window == 600


async def test_an_under_estimate_is_charged_and_later_calls_wait_for_it():
    clock = VirtualClock(autojump=True)
    tpm = Limiter(rate=100, per=60, clock=clock, name="tpm")
    node = Calls([tpm.weighted(10)])
    await node.run_async({"items": [(10, 95)]})
    assert tpm.statistics().in_window == 95
    await node.run_async({"items": [(10, 5)]})  # 95 + 10 > 100: waits for the minute
    assert clock.now() == pytest.approx(60)


async def test_by_none_keeps_the_estimate():
    tpm = Limiter(rate=100, per=60, clock=VirtualClock())
    node = Calls([tpm.weighted(40, by=None)])
    await node.run_async({"items": [(40, 3)]})
    assert tpm.statistics().in_window == 40


async def test_by_a_function_of_the_usage():
    tpm = Limiter(rate=100, per=60, clock=VirtualClock())
    node = Calls([tpm.weighted(40, by=lambda usage: usage.input_tokens * 2)])
    await node.run_async({"items": [(40, 7)]})
    assert tpm.statistics().in_window == 14


@pytest.mark.parametrize("gives", [-1, float("nan"), float("inf"), "5", True])
async def test_by_a_function_that_gives_no_count_is_refused_naming_the_node(gives):
    units = Limiter(max_concurrent=100, name="units")
    node = Calls([units.weighted(60, by=lambda usage: gives)], name="call")
    with pytest.raises(InvalidParameterError, match=r"node 'call'.*by=<function") as caught:
        await node.run_async({"items": [(60, 5)]})
    assert caught.value.node == "call"
    assert "must give a number >= 0 of units used, or None" in str(caught.value)
    assert units.statistics().in_flight == 0  # its units given back all the same


async def test_a_bad_count_reported_names_the_node():
    node = Calls([], name="call")
    with pytest.raises(
        InvalidParameterError, match=r"node 'call' \(Calls\): report_usage\(\): "
    ) as caught:
        await node.run_async({"items": [(1, -5)]})
    assert caught.value.node == "call"


async def test_one_call_takes_one_request_and_its_tokens():
    clock = VirtualClock()
    rpm = Limiter(rate=10, per=60, clock=clock, name="rpm")
    tpm = Limiter(rate=1000, per=60, clock=clock, name="tpm")
    node = Calls([rpm, tpm.weighted(lambda item: item[0])])
    await node.run_async({"items": [(100, 80), (200, 150), (50, 50)]})
    assert rpm.statistics().in_window == 3
    assert tpm.statistics().in_window == 280
    assert rpm.statistics().in_flight == tpm.statistics().in_flight == 0


async def test_a_heavy_call_at_the_head_is_not_overtaken_by_light_ones():
    tokens = Limiter(100, name="tokens")
    gates = {name: asyncio.Event() for name in "abcd"}
    started = []

    class Call(AsyncNode):
        def __init__(self, name, weight):
            super().__init__(limits=[tokens.weighted(weight)])
            self.name = name

        async def exec_async(self, _):
            started.append(self.name)
            await gates[self.name].wait()

    light = asyncio.ensure_future(Call("a", 50).run_async({}))
    while started != ["a"]:
        await asyncio.sleep(0)
    heavy = asyncio.ensure_future(Call("b", 100).run_async({}))
    await asyncio.sleep(0)
    small = asyncio.ensure_future(Call("c", 10).run_async({}))
    for _ in range(10):
        await asyncio.sleep(0)
    assert started == ["a"]  # c (10) would fit, but waits behind b: first come, first served
    gates["a"].set()
    await light
    while started != ["a", "b"]:
        await asyncio.sleep(0)
    gates["b"].set()
    await heavy
    gates["c"].set()
    await small
    assert started == ["a", "b", "c"]


def test_threads_take_weighted_units_too():
    tokens = Limiter(10, name="tokens")
    inside = []
    lock = threading.Lock()

    class Work(braidflow.ParallelBatchNode):
        def prep(self, shared):
            return list(range(6))

        def exec(self, item):
            with lock:
                inside.append(tokens.statistics().in_flight)
            return item

    Work(limits=[tokens.weighted(4)]).run({})
    assert max(inside) <= 8  # two calls of 4 at most: 12 > 10


def test_a_plain_user_of_a_weighted_limiter_takes_one_unit():
    tokens = Limiter(rate=5, per=60, clock=VirtualClock())
    tokens.weighted(3)
    assert tokens.try_acquire()
    assert tokens.statistics().in_window == 1
    tokens.release()


@pytest.mark.parametrize(
    ("rate", "weight", "each_second"),
    [(2.5, 0.5, 5), (1.5, 0.5, 3), (2.5, 1.25, 2), (2.5, 2.2, 1), (3, 0.1, 30), (2.5, 0.1, 25)],
)
def test_weighted_units_use_a_fractional_rate_whole(rate, weight, each_second):
    clock = VirtualClock()
    tokens = Limiter(rate=rate, per=1.0, clock=clock, name="tokens")
    weighted = tokens.weighted(weight)  # 2.2 <= 2.5: not "would wait forever"
    for _ in range(3):
        taken = 0
        while Claim(weighted, weight).try_acquire():
            taken += 1
        # As many as fit in `rate` units, not floor(rate); fractions summed
        # (0.1 thirty times is 3.0000000000000004) still fit.
        assert taken == each_second
        assert tokens.statistics().in_window <= rate + 1e-9
        clock.advance(1.0)


def test_plain_calls_of_a_weighted_fractional_rate_stay_whole():
    tokens = Limiter(rate=2.5, per=1.0, clock=VirtualClock())
    weighted = tokens.weighted(0.5)
    assert tokens.try_acquire()
    assert tokens.try_acquire()
    assert not tokens.try_acquire()  # a third start would make 3 units, more than 2.5
    assert Claim(weighted, 0.5).try_acquire()  # but half a unit is still free
    assert not Claim(weighted, 0.5).try_acquire()


def test_a_weight_over_a_fractional_rate_is_refused_naming_the_rate():
    with pytest.raises(InvalidParameterError, match=r"can ever give at once \(2\.5\)"):
        Limiter(rate=2.5, per=1.0).weighted(2.6)
    assert Limiter(rate=0.5, per=1.0).weighted(1).weight == 1  # one unit per 2 s


async def test_a_report_outside_a_run_counts_nowhere():
    Node().report_usage(input_tokens=3)  # no run: nothing to correct, no error


def test_report_usage_checks_what_it_is_given():
    node = Node()
    with pytest.raises(InvalidParameterError, match="input_tokens=-1 must be an int"):
        node.report_usage(input_tokens=-1)
    with pytest.raises(InvalidParameterError, match=r"takes a braidflow\.Usage"):
        node.report_usage({"input_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="not both"):
        node.report_usage(Usage(1), output_tokens=2)
    with pytest.raises(InvalidParameterError, match=r"cost=-0\.5"):
        Usage(cost=-0.5)


def test_a_constant_weight_over_a_lowered_bound_fails_instead_of_waiting_forever():
    tokens = Limiter(10, name="tokens")
    node = Calls([tokens.weighted(8)])
    tokens.max_concurrent = 5
    with pytest.raises(InvalidParameterError, match=r"the weight 8.* can ever give at once \(5\)"):
        node.run({"items": [(8, None)]})


async def test_a_queued_weight_over_a_bound_lowered_while_it_waits_fails_and_unblocks_the_queue():
    tokens = Limiter(5, name="tokens")

    class Call(AsyncNode):
        async def exec_async(self, prep_res):
            return "called"

    await tokens.acquire()  # 1 unit held: the 5-unit call queues
    run = asyncio.ensure_future(Call(limits=[tokens.weighted(5)], name="call").run_async({}))
    while tokens.statistics().waiting == 0:
        await asyncio.sleep(0)
    tokens.max_concurrent = 3  # it can never be served now
    with pytest.raises(InvalidParameterError, match=r"node 'call'.*the weight 5.* at once \(3\)"):
        await run
    assert tokens.try_acquire()  # the queue is not stuck behind it
    tokens.release()
    tokens.release()
    assert tokens.statistics().waiting == 0


def test_reports_from_many_threads_all_count():
    class Report(braidflow.ParallelBatchNode):
        def prep(self, shared):
            return list(range(200))

        def exec(self, item):
            self.report_usage(input_tokens=1)

    events = []
    store = braidflow.MemoryStore()
    Report(max_concurrency=16).run({}, observers=[events.append], store=store, run_id="r")
    assert sum(e.data["input_tokens"] for e in events if e.kind == "usage") == 200
    assert store.get("r").usage.input_tokens == 200  # the run's total: none lost


async def test_one_call_weighs_differently_on_two_weighted_limiters():
    clock = VirtualClock()
    given = Limiter(rate=1000, per=60, clock=clock, name="input tokens")
    made = Limiter(rate=500, per=60, clock=clock, name="output tokens")

    class Call(AsyncNode):
        async def exec_async(self, _):
            self.report_usage(input_tokens=120, output_tokens=30)

    limits = [given.weighted(200, by="input_tokens"), made.weighted(100, by="output_tokens")]
    await Call(limits=limits).run_async({})
    assert given.statistics().in_window == 120
    assert made.statistics().in_window == 30


def test_fractional_units_in_flight_that_sum_to_the_bound_fit():
    units = Limiter(max_concurrent=3, name="units")
    weighted = units.weighted(0.1)
    claims = [Claim(weighted, 0.1) for _ in range(31)]
    taken = [claim.try_acquire() for claim in claims]
    assert taken == [True] * 30 + [False]  # thirty tenths are 3, despite float sums
