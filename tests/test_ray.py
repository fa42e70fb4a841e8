"""RayExecutor against a real local Ray instance (2 CPUs), started here.

Skip them with ``-m 'not ray'``; they are skipped when ray is not installed,
unless BRAIDFLOW_REQUIRE_RAY is set (CI sets it, so they always run there).
"""

import ast
import asyncio
import importlib
import inspect
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import braidflow as bf
from _support import run_python_blocks, uses_ray
from braidflow import executors
from braidflow.executors import InProcessExecutor

pytestmark = [pytest.mark.ray, pytest.mark.timeout(120)]

DRIVER = os.getpid()


@pytest.fixture(scope="module", autouse=True)
def ray_installed():
    """Ray, imported here, not as the file is collected: make test collects it in an
    environment without Ray (and leaves its tests to make test-rest)."""
    if not os.environ.get("BRAIDFLOW_REQUIRE_RAY"):
        pytest.importorskip("ray")
    from ray import cloudpickle

    # The workers cannot import this test module: its classes travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_cluster():
    with executors.RayExecutor(num_cpus=2) as executor:
        yield executor


def wait_for(path: Path) -> None:
    """Until a worker has written ``path`` (event-driven; the deadline only
    keeps a broken test from hanging)."""
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)


class Where(bf.AsyncParallelBatchNode):
    """exec reports the process it ran in; sync or async by `kind`."""

    async def prep_async(self, shared):
        return list(range(shared.get("items", 8)))

    def exec(self, item):
        return item * 10, os.getpid()

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


class WhereAsync(Where):
    async def exec_async(self, item):
        await asyncio.sleep(0)
        return item * 10, os.getpid()


@pytest.mark.parametrize("kind", [Where, WhereAsync], ids=["sync exec", "async exec"])
def test_items_run_in_ray_workers_and_come_back_in_order(ray_cluster, kind):
    shared = {}
    bf.AsyncFlow(start=kind(executor=ray_cluster, max_concurrency=3)).run(shared)
    assert [value for value, _ in shared["results"]] == [i * 10 for i in range(8)]
    assert {pid for _, pid in shared["results"]} - {DRIVER}  # not here
    assert DRIVER not in {pid for _, pid in shared["results"]}


def test_sequential_and_threaded_batches_in_sync_flows_run_remotely(ray_cluster):
    class Sequential(bf.BatchNode):
        def prep(self, shared):
            return [1, 2, 3]

        def exec(self, item):
            return item, os.getpid()

        def post(self, shared, prep_res, exec_res):
            shared["sequential"] = exec_res

    class Threaded(bf.ParallelBatchNode):
        def prep(self, shared):
            return [4, 5, 6]

        def exec(self, item):
            return item, os.getpid()

        def post(self, shared, prep_res, exec_res):
            shared["threaded"] = exec_res

    first = Sequential(executor=ray_cluster)
    first >> Threaded(executor=ray_cluster, max_concurrency=2)
    shared = {}
    bf.Flow(start=first).run(shared)
    for key, items in (("sequential", [1, 2, 3]), ("threaded", [4, 5, 6])):
        assert [item for item, _ in shared[key]] == items
        assert DRIVER not in {pid for _, pid in shared[key]}


class Picky(bf.AsyncParallelBatchNode):
    async def prep_async(self, shared):
        return [1, 2, 3, 4]

    def exec(self, item):
        if item == 3:
            raise KeyError(f"no {item}")
        return item


def test_an_error_raised_remotely_keeps_its_type_and_message(ray_cluster):
    with pytest.raises(KeyError, match="no 3") as caught:
        bf.AsyncFlow(start=Picky(executor=ray_cluster)).run({})
    notes = "\n".join(caught.value.__notes__)
    assert "raised in a Ray task on" in notes
    assert "failed on item 2" in notes


def test_collected_failures_are_the_original_exceptions(ray_cluster):
    class Collect(Picky):
        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    bf.AsyncFlow(start=Collect(executor=ray_cluster, on_error="collect")).run(shared)
    failure = shared["results"][2]
    assert isinstance(failure, bf.Failure)
    assert type(failure.error) is KeyError
    assert shared["results"][:2] == [1, 2]


class Refused(Exception):
    """As openai's errors: keyword-only arguments, which unpickling (``cls(*args)``) lacks."""

    def __init__(self, message, *, status):
        super().__init__(message)
        self.status = status


class Pair(Exception):
    """Two required arguments, one message: ``cls(*args)`` gets one."""

    def __init__(self, first, second):
        super().__init__(f"{first} and {second}")


class Raises(bf.AsyncParallelBatchNode):
    """exec raises what its item makes, on its first attempt only."""

    async def prep_async(self, shared):
        return shared["makers"]

    def exec(self, make):
        if self.cur_retry == 0:
            raise make()
        return "second attempt"

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


def refused():
    try:
        raise ConnectionError("the socket closed")
    except ConnectionError as error:
        raise Refused("over quota", status=429) from error


def test_an_error_whose_init_unpickling_cannot_call_comes_back_as_itself(ray_cluster):
    shared = {"makers": [refused, lambda: Pair("a", "b"), lambda: ValueError(threading.Lock())]}
    bf.AsyncFlow(start=Raises(executor=ray_cluster, on_error="collect")).run(shared)
    first, second, third = (result.error for result in shared["results"])
    assert type(first) is Refused
    assert (str(first), first.status) == ("over quota", 429)
    assert "raised in a Ray task on" in "\n".join(first.__notes__)
    assert type(first.__cause__) is ConnectionError  # its cause too
    assert str(first.__cause__) == "the socket closed"
    assert type(second) is Pair
    assert str(second) == "a and b"
    # An error that cannot travel even so (its argument cannot be pickled) is
    # a stand-in that says what it was.
    assert type(third).__name__ == "ValueError"
    assert isinstance(third, RuntimeError)
    assert "its ValueError could not be pickled" in str(third)


def test_retry_on_an_error_whose_init_unpickling_cannot_call_retries_it(ray_cluster):
    shared = {"makers": [refused, lambda: Pair("a", "b")]}
    node = Raises(executor=ray_cluster, retry=bf.Retry(attempts=2, retry_on=(Refused, Pair)))
    bf.AsyncFlow(start=node).run(shared)
    assert shared["results"] == ["second attempt", "second attempt"]


@pytest.mark.slow  # openai is imported in the workers
def test_an_openai_rate_limit_error_raised_remotely_is_retried_by_retry_on(ray_cluster):
    openai = pytest.importorskip("openai")
    httpx = pytest.importorskip("httpx")

    def rate_limited():
        request = httpx.Request("POST", "https://api.openai.com/v1/chat/completions")
        response = httpx.Response(429, request=request)
        return openai.RateLimitError("Rate limit reached", response=response, body=None)

    shared = {"makers": [rate_limited]}
    retry = bf.Retry(attempts=2, retry_on=(openai.RateLimitError,))
    bf.AsyncFlow(start=Raises(executor=ray_cluster, retry=retry)).run(shared)
    assert shared["results"] == ["second attempt"]
    with pytest.raises(openai.RateLimitError, match="Rate limit reached") as caught:
        bf.AsyncFlow(start=Raises(executor=ray_cluster)).run({"makers": [rate_limited]})
    assert caught.value.status_code == 429


def test_retries_run_remotely_and_fallback_runs_here(ray_cluster):
    class Flaky(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "b"]

        def exec(self, item):
            if item == "a" and self.cur_retry < 2:  # the attempt number reaches the worker
                raise ConnectionError(f"attempt {self.cur_retry}")
            if item == "b":
                raise ValueError("never")
            return f"{item} on attempt {self.cur_retry}"

        def exec_fallback(self, prep_res, exc):
            return f"fallback for {prep_res} in {'driver' if os.getpid() == DRIVER else 'worker'}"

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    node = Flaky(executor=ray_cluster, max_retries=3, wait=0)
    bf.AsyncFlow(start=node).run(shared)
    assert shared["results"] == ["a on attempt 2", "fallback for b in driver"]


def test_a_worker_that_dies_runs_the_exec_once_per_attempt_of_the_node(ray_cluster, tmp_path):
    # Ray alone would run a task whose worker died 3 times more.
    class Dies(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0]

        def exec(self, item):
            with (tmp_path / "runs").open("a") as runs:
                runs.write("ran\n")
            if self.cur_retry == 0:
                os._exit(1)  # as a segfault or the OOM killer would end it
            return "second attempt"

        async def post_async(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    shared = {}
    bf.AsyncFlow(start=Dies(executor=ray_cluster, max_retries=2, wait=0)).run(shared)
    assert shared["out"] == ["second attempt"]
    assert (tmp_path / "runs").read_text().splitlines() == ["ran", "ran"]  # one run an attempt


def test_usage_reported_in_a_worker_counts_in_the_run(ray_cluster):
    class Calls(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0, 1, 2, 3]

        def exec(self, item):
            self.report_usage(input_tokens=100, output_tokens=10)
            return item

    store = bf.MemoryStore()
    with pytest.raises(bf.BudgetExceeded, match=r"220 tokens spent"):
        bf.AsyncFlow(start=Calls(executor=ray_cluster, max_concurrency=1)).run(
            {}, store=store, run_id="r", budget=bf.Budget(tokens=150)
        )
    assert store.get("r").usage.input_tokens == 200  # the two calls made, as at home


def test_a_question_in_a_worker_says_to_ask_where_the_run_is(ray_cluster):
    class Approve(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [0]

        def exec(self, item):
            return bf.interrupt("approve?")

    with pytest.raises(bf.NotDurableError, match=r"in an exec that runs in a Ray task on .*prep"):
        bf.AsyncFlow(start=Approve(executor=ray_cluster)).run({}, store=bf.MemoryStore())


def test_an_idempotency_key_in_a_worker_says_to_read_it_in_prep_and_that_works(ray_cluster):
    class Mail(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a@example.com", "b@example.com"]

        def exec(self, address):
            return bf.idempotency_key()

    with pytest.raises(bf.NotDurableError) as caught:
        bf.AsyncFlow(start=Mail(executor=ray_cluster)).run({}, store=bf.MemoryStore())
    message = str(caught.value)
    assert "idempotency_key() was called in an exec that runs in a Ray task on " in message
    assert "read it in prep (which runs where the run does) and hand it over with the" in message

    class HandedOver(Mail):  # as it says: key = ...; return [(f'{key}-{n}', item) ...]
        async def prep_async(self, shared):
            items = await super().prep_async(shared)
            key = bf.idempotency_key()
            return [(f"{key}-{n}", item) for n, item in enumerate(items)]

        def exec(self, keyed):
            return keyed[0]

        async def post_async(self, shared, prep_res, exec_res):
            shared["keys"] = exec_res

    shared = {}
    bf.AsyncFlow(start=HandedOver(executor=ray_cluster)).run(shared, store=bf.MemoryStore())
    assert len(set(shared["keys"])) == 2
    assert all(key.startswith("bf-") for key in shared["keys"])


def test_data_emitted_in_a_worker_reaches_the_observers_in_order_after_its_attempt(
    ray_cluster,
):
    class Stream(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return ["a", "b"]

        def exec(self, item):
            self.emit(f"{item} 1")
            self.report_usage(input_tokens=1, output_tokens=1)
            self.emit({"token": f"{item} 2"})
            return item

    events = []
    bf.AsyncFlow(start=Stream(executor=ray_cluster)).run({}, observers=[events.append])
    for index, item in enumerate("ab"):
        seen = [
            (event.kind, event.data)
            for event in events
            if event.item == index and event.kind in ("emit", "usage", "item_end")
        ]
        usage = {"input_tokens": 1, "output_tokens": 1, "cost": None, "model": None, "calls": 1}
        assert seen == [
            ("emit", f"{item} 1"),
            ("usage", usage),
            ("emit", {"token": f"{item} 2"}),
            ("item_end", None),
        ]

    class Holds(Stream):
        def exec(self, item):
            self.emit(threading.Lock())

    with pytest.raises(bf.InvalidParameterError) as caught:
        bf.AsyncFlow(start=Holds(executor=ray_cluster)).run({}, observers=[events.append])
    message = str(caught.value)
    assert "emit() was given data that cannot be sent back from a Ray task on " in message
    assert "emit plain data (text, numbers, lists, dicts)" in message


def test_a_result_that_cannot_be_sent_back_says_so_and_plain_data_can(ray_cluster):
    class Locks(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1]

        def exec(self, item):
            return threading.Lock()

    with pytest.raises(bf.InvalidParameterError) as caught:
        bf.AsyncFlow(start=Locks(executor=ray_cluster, name="locks")).run({})
    message = str(caught.value)
    assert "node 'locks' (Locks): its exec's result cannot be sent back from Ray" in message
    assert "cannot pickle '_thread.lock' object" in message
    assert "return plain data (text, numbers, lists, dicts, dataclasses)" in message
    with pytest.raises(bf.InvalidParameterError, match="the result of its item 0 cannot be"):
        bf.AsyncFlow(start=Locks(executor=ray_cluster)).run({}, observers=[lambda event: None])

    class Plain(Locks):
        def exec(self, item):
            with threading.Lock():
                return {"item": item}

        async def post_async(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    shared = {}
    bf.AsyncFlow(start=Plain(executor=ray_cluster)).run(shared)
    assert shared["results"] == [{"item": 1}]


@pytest.mark.slow  # it starts a second Ray instance, as the advice has it
def test_a_node_the_workers_cannot_import_says_how_to_ship_it_and_that_works(
    ray_cluster, tmp_path, monkeypatch
):
    (tmp_path / "only_here.py").write_text(
        "import braidflow as bf\n"
        "class Remote(bf.AsyncParallelBatchNode):\n"
        "    async def prep_async(self, shared):\n"
        "        return [1, 2]\n"
        "    def exec(self, item):\n"
        "        return item + 1\n"
        "    async def post_async(self, shared, prep_res, exec_res):\n"
        "        shared['results'] = exec_res\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # here only: the workers do not see it
    only_here = importlib.import_module("only_here")
    with pytest.raises(ModuleNotFoundError) as caught:
        bf.AsyncFlow(start=only_here.Remote(executor=ray_cluster)).run({})
    message = str(caught.value)
    assert "node 'Remote': a Ray worker cannot load the node or its item to run its exec" in (
        message
    )
    assert "No module named 'only_here'" in message
    assert "or runtime_env={'working_dir': '.'}: your project's directory" in message
    # As it says: an executor that starts Ray with the module it names.
    suggested = re.search(r"RayExecutor\(runtime_env=(\{.*?\]\})\)", message).group(1)
    assert ast.literal_eval(suggested) == {"py_modules": [only_here.__file__]}
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "import braidflow as bf\n"
        "from braidflow.executors import RayExecutor\n"
        "from only_here import Remote\n"
        f"with RayExecutor(num_cpus=1, runtime_env={suggested}) as cluster:\n"
        "    shared = {}\n"
        "    bf.AsyncFlow(start=Remote(executor=cluster)).run(shared)\n"
        "print(shared['results'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.split("\n")[-2:] == ["[2, 3]", ""], done.stderr


def test_limiters_are_held_in_the_driver_around_each_remote_item(ray_cluster):
    limiter = bf.Limiter(max_concurrent=2, name="cluster budget")
    node = Where(executor=ray_cluster, limits=[limiter])
    shared = {"items": 10}
    bf.AsyncFlow(start=node).run(shared)
    statistics = limiter.statistics()
    assert statistics.acquired == 10
    assert statistics.peak_in_flight == 2
    assert len(shared["results"]) == 10


def test_a_timeout_cancels_the_ray_task(ray_cluster, tmp_path):
    marker = tmp_path / "cancelled"

    class Slow(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [str(marker)]

        async def exec_async(self, path):
            try:
                await asyncio.sleep(300)
            except BaseException:
                Path(path).write_text("yes")  # noqa: ASYNC240 - the worker saw the cancellation
                raise

    with pytest.raises(bf.NodeTimeoutError, match=r"timed out after 0\.5 s"):
        bf.AsyncFlow(start=Slow(executor=ray_cluster, timeout=0.5)).run({})
    wait_for(marker)


def test_a_timeout_in_a_sync_flow_cancels_the_ray_task_too(ray_cluster, tmp_path):
    marker = tmp_path / "cancelled"

    class Stuck(bf.BatchNode):
        def prep(self, shared):
            return [str(marker)]

        def exec(self, path):
            try:
                while True:
                    time.sleep(0.01)
            except BaseException:
                Path(path).write_text("yes")
                raise

    with pytest.raises(bf.NodeTimeoutError, match=r"timed out after 0\.5 s"):
        bf.Flow(start=Stuck(executor=ray_cluster, timeout=0.5)).run({})
    wait_for(marker)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_late_task_blocked_in_a_call_keeps_its_slot_and_counts_its_usage_when_it_ends(
    ray_cluster, tmp_path, kind
):
    # Ray stops a cancelled task at its next Python code: one blocked in a
    # sleep (a socket read, say) runs on, and keeps the Limiter's one slot;
    # what it reported counts once it ends, as an attempt left running at home.
    api = bf.Limiter(1, name="api")

    def exec(self, item):
        if item == 0:
            self.report_usage(input_tokens=100, output_tokens=0)  # the call was paid for
            self.emit("answer")
            try:
                time.sleep(2)  # one call: not stopped by the cancel
            finally:
                (tmp_path / "0 ended").write_text("yes")
            return "never"
        return (tmp_path / "0 ended").exists()  # item 1 began: item 0's task had ended

    def fallback(self, prep_res, exc):
        return "late"

    base = bf.AsyncParallelBatchNode if kind == "async" else bf.ParallelBatchNode
    Items = type(
        "Items",
        (base,),
        {
            "prep": lambda self, shared: [0, 1],
            "exec": exec,
            "exec_fallback": fallback,
            "post": lambda self, shared, prep_res, exec_res: shared.update(out=exec_res),
        },
    )
    shared = {}
    node = Items(executor=ray_cluster, timeout=0.5, limits=[api], max_concurrency=2)
    flow = bf.AsyncFlow(start=node) if kind == "async" else bf.Flow(start=node)
    store, events = bf.MemoryStore(), []
    flow.run(shared, store=store, run_id="r", observers=[events.append])
    assert shared["out"] == ["late", True]
    statistics = api.statistics()
    assert (statistics.in_flight, statistics.peak_in_flight) == (0, 1)
    # Counted before its slot came back, so before item 1 began.
    assert store.get("r").usage.input_tokens == 100
    assert [(event.kind, event.item) for event in events if event.kind in ("usage", "emit")] == [
        ("usage", 0),
        ("emit", 0),
    ]


def test_cancelling_the_run_cancels_its_ray_tasks(ray_cluster, tmp_path):
    class Busy(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [str(tmp_path / f"item{n}") for n in range(2)]

        def exec(self, path):
            Path(f"{path}.started").write_text("yes")
            try:
                while True:  # sync code: Ray interrupts it
                    time.sleep(0.01)
            except BaseException:
                Path(f"{path}.cancelled").write_text("yes")
                raise

    async def main():
        run = asyncio.create_task(bf.AsyncFlow(start=Busy(executor=ray_cluster)).run_async({}))
        for n in range(2):
            while not (tmp_path / f"item{n}.started").exists():
                await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(main())
    for n in range(2):
        wait_for(tmp_path / f"item{n}.cancelled")


def test_a_node_that_cannot_be_pickled_is_refused_before_anything_runs(ray_cluster, tmp_path):
    class Holds(bf.AsyncParallelBatchNode):
        def __init__(self, **options):
            super().__init__(**options)
            self.lock = threading.Lock()

        async def prep_async(self, shared):
            return [1]

        def exec(self, item):
            (tmp_path / "ran").write_text("yes")

    with pytest.raises(bf.InvalidParameterError) as caught:
        bf.AsyncFlow(start=Holds(executor=ray_cluster, name="holds")).run({})
    message = str(caught.value)
    assert "node 'holds' (Holds) cannot be sent to Ray" in message
    assert "its attribute 'lock' (lock)" in message
    assert not (tmp_path / "ran").exists()
    # What it says to do, both ways: make such objects inside exec ...
    assert "make such objects inside exec (or in a module-level cache there), or run this " in (
        message
    )

    class Makes(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return [1]

        def exec(self, item):
            with threading.Lock():  # made inside exec, on the worker
                return item + 1

        async def post_async(self, shared, prep_res, exec_res):
            shared["done"] = exec_res

    shared = {}
    bf.AsyncFlow(start=Makes(executor=ray_cluster)).run(shared)
    assert shared == {"done": [2]}
    # ... or run this node in this process.
    bf.AsyncFlow(start=Holds(executor=InProcessExecutor(), name="holds")).run({})
    assert (tmp_path / "ran").read_text() == "yes"


def test_everything_braidflow_keeps_on_a_node_stays_in_the_driver(ray_cluster, tmp_path):
    # Every option a batch node takes, each holding what cannot be pickled
    # where it can (limiters, a weighted claim, a cache's store): none of it
    # is sent; an option added later must be added here.
    tokens = bf.Limiter(rate=100_000, per=60, name="tokens")
    options = {
        "max_retries": 1,
        "wait": 0,
        "name": "summarize",
        "retry": bf.Retry(attempts=2, retry_on=lambda error: isinstance(error, ConnectionError)),
        "timeout": 60,
        "limits": [tokens.weighted(100), bf.Limiter(4, name="calls")],
        "offload": True,
        "max_concurrency": 2,
        "on_error": "collect",
        "executor": ray_cluster,
        "durability": "sync",
        "cache": bf.Cache(store=bf.SQLiteStore(tmp_path / "cache.db")),
    }
    taken = inspect.signature(bf.ParallelBatchNode.__init__).parameters
    assert set(options) == set(taken) - {"self"}

    class Summarize(bf.ParallelBatchNode):
        def prep(self, shared):
            return ["a b c", "d e"]

        def exec(self, text):
            self.report_usage(input_tokens=len(text.split()), output_tokens=10)
            return [text[:1], self.name, os.getpid()]

        def post(self, shared, prep_res, exec_res):
            shared["results"] = exec_res

    from braidflow.executors import _ray

    node = Summarize(**options)
    shipped = vars(_ray._remote_copy(node))
    assert {name for name in shipped if name.startswith("_bf_")} <= {"_bf_name", "_bf_display"}
    shared = {}
    bf.AsyncFlow(start=node).run(shared, store=bf.SQLiteStore(tmp_path / "runs.db"))
    assert [(first, name) for first, name, _ in shared["results"]] == [
        ("a", "summarize"),
        ("d", "summarize"),
    ]
    assert DRIVER not in {pid for _, _, pid in shared["results"]}
    assert tokens.statistics().in_window == 13 + 12  # each claim of 100, corrected to its usage


def test_a_flow_gives_its_executor_to_its_batch_nodes_and_one_can_stay_home(ray_cluster):
    class Home(Where):
        async def post_async(self, shared, prep_res, exec_res):
            shared["home"] = exec_res

    away = Where()
    away >> Home(executor=InProcessExecutor())
    shared = {"items": 3}
    bf.AsyncFlow(start=away, executor=ray_cluster).run(shared)
    assert DRIVER not in {pid for _, pid in shared["results"]}
    assert {pid for _, pid in shared["home"]} == {DRIVER}


def test_durable_runs_record_remote_items_and_resume_only_the_missing(ray_cluster, tmp_path):
    class Once(bf.AsyncParallelBatchNode):
        async def prep_async(self, shared):
            return list(range(6))

        def exec(self, item):
            if item == 4 and not (tmp_path / "fixed").exists():
                raise RuntimeError("item 4 is not ready")
            (tmp_path / f"ran{item}-{len(list(tmp_path.glob(f'ran{item}-*')))}").write_text("")
            return item * item

        async def post_async(self, shared, prep_res, exec_res):
            shared["squares"] = exec_res

    store = bf.SQLiteStore(tmp_path / "runs.db")
    flow = bf.AsyncFlow(start=Once(executor=ray_cluster, max_concurrency=1, name="once"))
    with pytest.raises(RuntimeError, match="not ready"):
        flow.run({}, store=store, run_id="r")
    (tmp_path / "fixed").write_text("")
    assert flow.resume("r", store=store)["squares"] == [n * n for n in range(6)]
    ran = sorted(path.name for path in tmp_path.glob("ran*"))
    assert ran == [f"ran{n}-0" for n in range(6)]  # each item once, across both runs


def test_bad_executors_are_refused_where_they_are_given(ray_cluster):
    with pytest.raises(bf.InvalidParameterError, match="is not an executor"):
        Where(executor=object())
    with pytest.raises(bf.InvalidParameterError, match="Node has no items"):
        bf.Node(executor=ray_cluster)
    with pytest.raises(bf.InvalidParameterError, match="num_cpus=0"):
        executors.RayExecutor(num_cpus=0)

    class Legacy(bf.BatchNode):
        def prep(self, shared):
            return [1]

        def exec(self, shared, item):  # the old form: exec(shared, item)
            return item

    with pytest.raises(bf.InvalidParameterError, match="exec takes shared"):
        bf.Flow(start=Legacy(executor=ray_cluster)).run({})


DOCS = Path(__file__).parent.parent / "docs"


@pytest.mark.parametrize(
    "page", [p for p in sorted(DOCS.glob("*.md")) if uses_ray(p)], ids=lambda p: p.name
)
def test_the_docs_blocks_that_use_ray_run(ray_cluster, page, capsys):
    """test_docs.py leaves these pages here: their ``RayExecutor()`` joins the
    instance this module started (as documented) instead of starting another."""
    run_python_blocks(page)
    capsys.readouterr()


def test_import_braidflow_does_not_import_ray():
    check = (
        "import sys, braidflow, braidflow.executors; "
        "print('ray' in sys.modules, 'braidflow.executors._ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "False"]
