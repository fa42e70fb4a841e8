"""Every option is checked where it is given and where it is read at run time,
with an InvalidParameterError naming the node and the option."""

import math

import pytest

from braidflow import (
    AsyncBatchNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchFlow,
    BatchNode,
    Failure,
    Flow,
    InvalidParameterError,
    Limiter,
    Node,
    Parallel,
    ParallelBatchNode,
    Retry,
)


class Items(AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return [1, 2, 3]

    async def exec_async(self, item):
        return item

    async def post_async(self, shared, prep_res, exec_res):
        return exec_res


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
async def test_max_concurrency_set_in_init_is_checked_when_the_batch_runs(bad):
    class SetLate(Items):
        def __init__(self):
            super().__init__(name="late")
            self.max_concurrency = bad

    with pytest.raises(InvalidParameterError, match=r"'late'.*max_concurrency"):
        await SetLate().run_async({})


@pytest.mark.parametrize("base", [BatchNode, AsyncBatchNode, BatchFlow, Node])
def test_max_concurrency_class_attribute_on_a_non_parallel_kind_is_refused(base):
    class Bounded(base):
        max_concurrency = 4

    with pytest.raises(InvalidParameterError, match=r"'Bounded'.*max_concurrency.*parallel"):
        Bounded()


def test_max_concurrency_set_later_on_a_sequential_batch_is_refused_when_it_runs():
    class Late(BatchNode):
        def __init__(self):
            super().__init__(name="late")
            self.max_concurrency = 4

        def prep(self, shared):
            return [1]

    with pytest.raises(InvalidParameterError, match=r"'late'.*one at a time"):
        Late().run({})


class Fails(AsyncParallelBatchNode):
    """Items 1 and 2; item 2 fails. Its post keeps the results in shared["results"]."""

    async def prep_async(self, shared):
        return [1, 2]

    async def exec_async(self, item):
        if item == 2:
            raise ValueError("two")
        return item

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


def test_on_error_set_in_init_is_read_when_the_batch_runs():
    class Collects(Fails):
        def __init__(self):
            super().__init__()
            self.on_error = "collect"

    shared = {}
    Collects().run(shared)
    assert shared["results"][0] == 1
    assert isinstance(shared["results"][1], Failure)

    class RaisesAgain(Fails):  # the later attribute wins over the constructor's option
        def __init__(self):
            super().__init__(on_error="collect")
            self.on_error = "raise"

    with pytest.raises(ValueError, match="two"):
        RaisesAgain().run({})


@pytest.mark.parametrize("bad", ["bogus", None, 1])
def test_on_error_set_in_init_is_checked_when_the_batch_runs(bad):
    class SetLate(Fails):
        def __init__(self):
            super().__init__(name="late")
            self.on_error = bad

    with pytest.raises(InvalidParameterError, match=r"'late'.*on_error=.*'raise', 'collect'"):
        SetLate().run({})


def test_on_error_set_later_on_a_parallel_flow_and_a_fork_is_read():
    class Sub(Node):
        def exec(self, prep_res):
            if self.params["i"] == 2:
                raise ValueError("two")

    class Sets(AsyncParallelBatchFlow):
        def __init__(self):
            super().__init__(start=Sub())
            self.on_error = "collect"

        async def prep_async(self, shared):
            return [{"i": 1}, {"i": 2}]

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    Sets().run(shared)
    assert [type(result) for result in shared["results"]] == [type(None), Failure]

    class Broken(Node):
        def exec(self, prep_res):
            raise ValueError("broken")

    fork = Parallel(Node(name="ok"), Broken(name="bad"))
    fork.on_error = "collect"
    shared = {}
    Flow(start=fork).run(shared)
    assert [failure.item for failure in shared["branch_failures"]] == ["bad"]


def test_on_error_collect_set_later_on_a_sequential_batch_is_refused_when_it_runs():
    class Late(BatchNode):
        def __init__(self):
            super().__init__(name="late")
            self.on_error = "collect"

        def prep(self, shared):
            return [1]

    with pytest.raises(InvalidParameterError, match=r"'late'.*on_error='collect'.*one at a time"):
        Late().run({})


def test_an_on_error_hook_method_is_no_policy():
    class Swallows(Node):
        def on_error(self, shared, error):
            return True

        def exec(self, prep_res):
            raise ValueError("swallowed")

    assert Swallows().run({}) is None


@pytest.mark.parametrize("bad", [0, -1, "3", 1.5, None])
def test_max_retries_set_after_the_constructor_is_checked_when_exec_runs(bad):
    class Late(Node):
        def __init__(self):
            super().__init__(name="late")
            self.max_retries = bad

    with pytest.raises(InvalidParameterError, match=r"'late'.*max_retries"):
        Late().run({})


@pytest.mark.parametrize("bad", [-1, "1", math.nan, math.inf])
def test_wait_set_after_the_constructor_is_checked_when_exec_runs(bad):
    class Late(Node):
        def __init__(self):
            super().__init__(max_retries=2, name="late")
            self.wait = bad

    with pytest.raises(InvalidParameterError, match=r"'late'.*wait"):
        Late().run({})


@pytest.mark.parametrize("bad", [math.nan, -math.inf, 0, "1", True])
def test_bad_timeouts_are_refused_naming_the_node(bad):
    with pytest.raises(InvalidParameterError, match=r"'slow'.*timeout"):
        Node(timeout=bad, name="slow")


@pytest.mark.parametrize("huge", [math.inf, 1e10, 1e300])
def test_infinite_or_huge_timeouts_mean_no_practical_limit(huge):
    class Quick(Node):
        def exec(self, prep_res):
            return "ok"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Quick(timeout=huge).run({}) == "ok"


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1"])
def test_bad_wait_is_refused_naming_the_node(bad):
    with pytest.raises(InvalidParameterError, match=r"'slow'.*wait"):
        Node(max_retries=2, wait=bad, name="slow")


def test_wait_none_is_no_wait_as_pocketflow_runs_it():
    # PocketFlow keeps wait=None and fails only if a retry comes (None > 0);
    # braidflow takes it as no wait.
    attempts = []

    class Flaky(Node):
        def exec(self, prep_res):
            attempts.append(self.cur_retry)
            if len(attempts) == 1:
                raise ValueError("once")
            return "ok"

        def post(self, shared, prep_res, exec_res):
            return exec_res

    node = Flaky(max_retries=2, wait=None)
    assert node.wait == 0
    assert node.run({}) == "ok"
    assert attempts == [0, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": "1"},
        {"delay": math.nan},
        {"delay": math.inf},
        {"backoff": "2"},
        {"backoff": math.nan},
        {"max_delay": "5"},
        {"jitter": "0.5"},
        {"jitter": math.nan},
        {"attempts": "3"},
    ],
)
def test_retry_options_of_the_wrong_type_are_invalid_parameters(kwargs):
    option = next(iter(kwargs))
    with pytest.raises(InvalidParameterError, match=rf"Retry\({option}="):
        Retry(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"rate": "5"}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"rate": math.inf}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": 1, "per": "1"}, "per"),
        ({"rate": 1, "per": math.nan}, "per"),
        ({"max_concurrent": "2"}, "max_concurrent"),
        ({"name": ""}, "name"),
    ],
)
def test_limiter_options_of_the_wrong_type_are_invalid_parameters(kwargs, option):
    with pytest.raises(InvalidParameterError, match=option):
        Limiter(**kwargs)


@pytest.mark.parametrize("kind", [AsyncParallelBatchNode, ParallelBatchNode])
def test_on_error_is_checked_on_parallel_kinds(kind):
    with pytest.raises(InvalidParameterError, match=r"on_error='ignore'"):
        kind(on_error="ignore")


def test_parallel_flow_options_are_checked_when_given():
    with pytest.raises(InvalidParameterError, match="max_concurrency"):
        AsyncParallelBatchFlow(max_concurrency=0)
