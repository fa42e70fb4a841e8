"""Parallel branches: a >> [b, c] >> d, isolated views of shared, merges at the join."""

import asyncio
import threading

import pytest

from braidflow import (
    MISSING,
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    Failure,
    Flow,
    InvalidParameterError,
    Limiter,
    MergeConflict,
    Node,
    Parallel,
    SharedView,
    WiringError,
)
from braidflow.testing import other_tasks


class Write(AsyncNode):
    """Sets shared[key] = value, after waiting for `after` (an event) if given."""

    def __init__(self, key, value, *, after=None, then=None, name=None):
        super().__init__(name=name or f"write {key}")
        self.key, self.value, self.after, self.then = key, value, after, then

    async def exec_async(self, prep_res):
        if self.after is not None:
            await self.after.wait()

    async def post_async(self, shared, prep_res, exec_res):
        shared[self.key] = self.value
        if self.then is not None:
            self.then.set()


class Log(Node):
    """Marks shared[f"ran {name}"]: each node writes its own key."""

    def post(self, shared, prep_res, exec_res):
        shared[f"ran {self.name}"] = True


async def test_a_fan_out_runs_its_branches_at_the_same_time_then_the_join_once():
    b_started = asyncio.Event()
    c_done = asyncio.Event()

    class B(AsyncNode):
        async def exec_async(self, prep_res):
            b_started.set()
            await c_done.wait()  # only returns if c runs meanwhile

        async def post_async(self, shared, prep_res, exec_res):
            shared["b"] = True

    class C(AsyncNode):
        async def exec_async(self, prep_res):
            await b_started.wait()
            c_done.set()

        async def post_async(self, shared, prep_res, exec_res):
            shared["c"] = True

    runs = []

    class D(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            runs.append((shared["b"], shared["c"]))

    a = Log(name="a")
    a >> [B(), C()] >> D()
    shared = {}
    await AsyncFlow(start=a).run_async(shared)
    assert runs == [(True, True)]
    assert other_tasks() == set()


async def test_branches_are_not_in_lock_step():
    fast_second_step_ran = asyncio.Event()

    class Slow(AsyncNode):
        async def exec_async(self, prep_res):
            await fast_second_step_ran.wait()  # waits on the fast branch's *second* node

    class FastEnd(AsyncNode):
        async def exec_async(self, prep_res):
            fast_second_step_ran.set()

    fast = Log(name="fast")
    fast >> FastEnd()
    await AsyncFlow(start=Parallel(Slow(), fast)).run_async({})


async def test_a_fan_out_on_an_action_and_the_explicit_and_start_forms():
    class Route(Node):
        def post(self, shared, prep_res, exec_res):
            return "both"

    route = Route()
    join = route - "both" >> [Log(name="x"), Log(name="y")]
    assert isinstance(join, Parallel)
    join >> Log(name="after")
    shared = {}
    Flow(start=route).run(shared)
    assert shared == {"ran x": True, "ran y": True, "ran after": True}
    shared = {}
    await AsyncFlow(start=[Write("p", 1), Write("q", 2)]).run_async(shared)
    assert shared == {"p": 1, "q": 2}


async def test_a_branch_may_be_a_chain_or_a_whole_flow():
    first = Write("chain1", 1)
    first >> Write("chain2", 2)
    whole = AsyncFlow(start=Write("flow", 3))
    shared = {}
    await AsyncFlow(start=Parallel(first, whole)).run_async(shared)
    assert shared == {"chain1": 1, "chain2": 2, "flow": 3}


# -- isolation ------------------------------------------------------------------------


async def test_a_branch_sees_the_store_as_it_was_at_the_fork_and_its_own_writes():
    b_wrote = asyncio.Event()
    seen = {}

    class Reader(AsyncNode):
        async def prep_async(self, shared):
            await b_wrote.wait()
            seen["x"] = shared["x"]
            shared["y"] = "from c"
            seen["own"] = shared["y"]

    shared = {"x": "before"}
    await AsyncFlow(start=Parallel(Write("x", "from b", then=b_wrote), Reader())).run_async(shared)
    assert seen == {"x": "before", "own": "from c"}  # never the sibling's write
    assert shared == {"x": "from b", "y": "from c"}  # both, merged at the join


async def test_in_place_changes_are_isolated_and_merged():
    class Append(AsyncNode):
        def __init__(self, item):
            super().__init__(name=f"append {item}")
            self.item = item

        async def post_async(self, shared, prep_res, exec_res):
            shared["items"].append(self.item)
            shared["nested"]["by"][self.item] = True
            shared.setdefault("seen_items", {})[self.item] = list(shared["items"])

    shared = {"items": [0], "nested": {"by": {}}}
    parallel = Parallel(
        Append(1), Append(2), merge={"items": "extend", "nested": "update", "seen_items": "update"}
    )
    with pytest.raises(MergeConflict, match="'nested'"):
        # "update" merges keys of the dict itself; both changed shared["nested"]["by"].
        await AsyncFlow(start=parallel).run_async(shared)
    assert shared == {"items": [0], "nested": {"by": {}}}  # nothing merged on a conflict

    parallel = Parallel(
        Append(1),
        Append(2),
        merge={
            "items": "extend",
            "nested": lambda before, values: {
                "by": {k: v for value in values for k, v in value["by"].items()}
            },
            "seen_items": "update",
        },
    )
    await AsyncFlow(start=parallel).run_async(shared)
    assert shared["items"] == [0, 1, 2]
    assert shared["nested"] == {"by": {1: True, 2: True}}
    assert shared["seen_items"] == {1: [0, 1], 2: [0, 2]}  # each saw only its own append


def test_a_value_no_branch_touches_is_never_copied():
    copies = []

    class Huge(dict):
        def __copy__(self):
            copies.append(self)
            return Huge(self)

    huge = Huge({"payload": list(range(1000))})
    shared = {"huge": huge, "small": [1]}
    Flow(start=Parallel(Log(name="a"), Log(name="b"))).run(shared)
    assert copies == []
    assert shared["huge"] is huge
    view = SharedView({"huge": huge})
    view["huge"]["payload"].append(-1)  # touched: copied once, then changed in the copy
    assert len(copies) == 1
    assert huge["payload"][-1] == 999


def test_objects_that_are_not_plain_data_are_shared_not_copied():
    client = threading.Lock()  # a client, a model, a lock: cannot or should not be copied
    view = SharedView({"client": client, "config": {"client": client}})
    assert view["client"] is client
    assert view["config"]["client"] is client
    assert view.changes() == {}


def test_a_view_behaves_as_a_mutable_mapping():
    base = {"a": 1, "b": [1]}
    view = SharedView(base)
    view["c"] = 3
    del view["a"]
    assert "a" not in view
    assert "c" in view
    assert sorted(view) == ["b", "c"]
    assert len(view) == 2
    assert dict(view) == {"b": [1], "c": 3}
    assert view.get("a", "gone") == "gone"
    with pytest.raises(KeyError):
        del view["a"]
    assert view.changes() == {"c": 3, "a": MISSING}
    assert base == {"a": 1, "b": [1]}


# -- merging -----------------------------------------------------------------------------


async def test_a_key_written_by_two_branches_without_a_rule_is_a_conflict_naming_both():
    shared = {"x": 0}
    with pytest.raises(MergeConflict) as caught:
        await AsyncFlow(
            start=Parallel(Write("x", 1, name="one"), Write("x", 2, name="two"))
        ).run_async(shared)
    assert caught.value.key == "x"
    assert caught.value.branches == ["one", "two"]
    assert "merge=" in str(caught.value)
    assert shared == {"x": 0}


@pytest.mark.parametrize(
    ("rule", "before", "values", "expected"),
    [
        ("extend", [1], [[1, 2], [1, 3, 4]], [1, 2, 3, 4]),
        ("extend", MISSING, [[2], [3]], [2, 3]),
        ("sum", 10, [11, 15], 16),
        ("sum", MISSING, [1, 2], 3),
        ("update", {"k": 0}, [{"k": 0, "a": 1}, {"k": 0, "b": 2}], {"k": 0, "a": 1, "b": 2}),
        ("update", {"k": 0, "gone": 1}, [{"k": 0}, {"k": 0, "gone": 1, "b": 2}], {"k": 0, "b": 2}),
        ("last", 0, [1, 2], 2),
        ("last", 0, [1, MISSING], MISSING),
    ],
)
def test_merge_rules(rule, before, values, expected):
    from braidflow._merge import merge

    base = {} if before is MISSING else {"key": before}
    changes = [(f"b{i}", {"key": value}) for i, value in enumerate(values)]
    assert merge(base, changes, {"key": rule}) == {"key": expected}


@pytest.mark.parametrize(
    ("rule", "before", "values"),
    [
        ("extend", [1, 2], [[1, 2, 3], [9, 2, 4]]),  # one branch changed an existing item
        ("update", {}, [{"a": 1}, {"a": 2}]),  # one inner key set by both
        ("sum", 1, [2, MISSING]),  # a deletion cannot be summed
    ],
)
def test_changes_a_rule_cannot_combine_are_conflicts(rule, before, values):
    from braidflow._merge import merge

    changes = [(f"b{i}", {"key": value}) for i, value in enumerate(values)]
    with pytest.raises(MergeConflict):
        merge({"key": before}, changes, {"key": rule})


async def test_a_function_rule_gets_the_value_before_and_the_branches_values_in_order():
    calls = []

    def combine(before, values):
        calls.append((before, values))
        return max(values)

    shared = {"best": 1}
    parallel = Parallel(
        Write("best", 5), Write("best", 3), Write("other", 1), merge={"best": combine}
    )
    await AsyncFlow(start=parallel).run_async(shared)
    assert calls == [(1, [5, 3])]
    assert shared == {"best": 5, "other": 1}


class Sets(Node):
    """Sets the keys and values it is given."""

    def __init__(self, name, **values):
        super().__init__(name=name)
        self.values = values

    def post(self, shared, prep_res, exec_res):
        shared.update(self.values)


def test_an_error_a_rule_raises_is_noted_with_the_key_the_rule_and_the_branches():
    def pick(before, values):
        raise ValueError("cannot combine")

    fork = Parallel(
        Sets("a", title="x", n=1), Sets("b", title="y", n=2), merge={"title": pick, "n": "sum"}
    )
    with pytest.raises(ValueError, match="cannot combine") as caught:
        Flow(start=fork).run({"title": "", "n": 0})
    assert str(caught.value) == "cannot combine"  # the function's own error, noted
    assert caught.value.__notes__[:2] == [
        "braidflow: merge rule pick() failed on key 'title', combining the values of "
        "branches 'a', 'b'",
        "braidflow: while joining the branches of node 'Parallel'",
    ]
    fork = Parallel(Sets("a", n=1), Sets("b", n="2"), Sets("c"), merge={"n": "sum"})
    with pytest.raises(TypeError, match="unsupported operand") as caught:
        Flow(start=fork).run({"n": 0})
    assert caught.value.__notes__[0] == (
        "braidflow: merge rule 'sum' failed on key 'n', combining the values of branches 'a', 'b'"
    )


async def test_deleting_a_key_is_a_write():
    class Delete(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            del shared["x"]

    shared = {"x": 1}
    await AsyncFlow(start=Parallel(Delete(), Log(name="other"))).run_async(shared)
    assert "x" not in shared
    with pytest.raises(MergeConflict, match="'x'"):
        await AsyncFlow(start=Parallel(Delete(), Write("x", 2))).run_async({"x": 1})


# -- failures, limits, bounds --------------------------------------------------------------


async def test_a_failing_branch_cancels_its_siblings_and_nothing_is_merged():
    cancelled = []

    class Hangs(AsyncNode):
        async def exec_async(self, prep_res):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    class Fails(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["half"] = "written"
            raise ValueError("branch failed")

    shared = {}
    with pytest.raises(ValueError, match="branch failed") as caught:
        await AsyncFlow(start=Parallel(Hangs(), Fails(name="fails"))).run_async(shared)
    assert cancelled == [True]
    assert shared == {}
    assert any("branch 'fails'" in note for note in caught.value.__notes__)
    assert other_tasks() == set()


@pytest.mark.parametrize("chained", [False, True], ids=["single node", "chain"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failing_branch_is_noted_as_the_branch_not_as_a_flow_of_braidflow(mode, chained):
    # Each branch runs in a flow braidflow makes; the notes name only what
    # the program has: the node, its branch, the Parallel, the user's flow.
    class Bad(Node):
        def exec(self, prep_res):
            raise ValueError("down")

    class AsyncBad(AsyncNode):
        async def exec_async(self, prep_res):
            raise ValueError("down")

    bad = Bad(name="b") if mode == "sync" else AsyncBad(name="b")
    head = Log(name="a") if chained else bad
    if chained:
        head >> bad
    flow_class = Flow if mode == "sync" else AsyncFlow
    flow = flow_class(start=Parallel(Log(name="ok"), head, name="par"), name="main")
    with pytest.raises(ValueError, match="down") as caught:
        flow.run({})
    kind = type(bad).__name__
    assert caught.value.__notes__ == [
        f"braidflow: node 'b' ({kind}) failed in branch '{head.name}' of node 'par' (Parallel)",
        f"braidflow: node 'par' (Parallel) failed in flow 'main' ({flow_class.__name__})",
    ]


def test_a_flow_as_a_branch_is_noted_as_itself_then_as_the_branch():
    class Bad(Node):
        def exec(self, prep_res):
            raise ValueError("down")

    inner = Flow(start=Bad(name="b"), name="inner")
    with pytest.raises(ValueError, match="down") as caught:
        Flow(start=Parallel(Log(name="ok"), inner), name="main").run({})
    assert caught.value.__notes__ == [
        "braidflow: node 'b' (Bad) failed in flow 'inner' (Flow)",
        "braidflow: flow 'inner' (Flow) failed in branch 'inner' of node 'Parallel'",
        "braidflow: node 'Parallel' failed in flow 'main' (Flow)",
    ]


async def test_collect_merges_the_branches_that_succeeded_and_reports_the_failures():
    class Fails(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            shared["lost"] = True
            raise ValueError("nope")

    handled = []

    class Handle(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            handled.append([(f.item, type(f.error).__name__) for f in shared["branch_failures"]])

    parallel = Parallel(Write("ok", 1), Fails(name="bad"), on_error="collect")
    parallel - "failed" >> Handle()
    shared = {}
    await AsyncFlow(start=parallel).run_async(shared)
    assert shared["ok"] == 1
    assert "lost" not in shared
    assert handled == [[("bad", "ValueError")]]
    assert isinstance(shared["branch_failures"][0], Failure)


class Works(Node):
    """Marks shared[name] = "ok", or fails if told to."""

    def __init__(self, name, fails=False):
        super().__init__(name=name)
        self.fails = fails

    def post(self, shared, prep_res, exec_res):
        if self.fails:
            raise RuntimeError(f"{self.name} failed")
        shared[self.name] = "ok"


def test_failures_collected_by_a_fork_inside_a_branch_are_kept_in_branch_order():
    inner = Parallel(Works("c"), Works("d", fails=True), on_error="collect", name="inner")
    outer = Parallel(Works("a"), inner, Works("b", fails=True), on_error="collect")
    shared = {}
    Flow(start=outer).run(shared)
    assert [failure.item for failure in shared["branch_failures"]] == ["d", "b"]
    assert [str(failure.error) for failure in shared["branch_failures"]] == [
        "d failed",
        "b failed",
    ]
    assert (shared["a"], shared["c"]) == ("ok", "ok")


def test_failures_of_forks_in_two_branches_are_combined_not_a_conflict():
    def inner(name, failing):
        return Parallel(Works(f"{name} ok"), Works(failing, fails=True), on_error="collect")

    outer = Parallel(inner("one", "x"), inner("two", "y"), on_error="collect")
    outer - "failed" >> Works("handled")  # only for a failure of the outer fork's own branches
    outer >> Works("went on")
    shared = {"branch_failures": ["from before the fork"]}
    Flow(start=outer).run(shared)
    assert [failure.item for failure in shared["branch_failures"]] == ["x", "y"]
    assert "went on" in shared
    assert "handled" not in shared


async def test_limiters_inside_branches_and_max_concurrency_bound_them():
    limiter = Limiter(1)
    now = [0, 0]  # in flight, peak

    class Limited(AsyncNode):
        async def exec_async(self, prep_res):
            now[0] += 1
            now[1] = max(now[1], now[0])
            await asyncio.sleep(0)
            now[0] -= 1

    await AsyncFlow(start=Parallel(*(Limited(limits=[limiter]) for _ in range(4)))).run_async({})
    assert now[1] == 1
    now[1] = 0
    await AsyncFlow(start=Parallel(*(Limited() for _ in range(6)), max_concurrency=2)).run_async({})
    assert now[1] == 2


def test_a_sync_flow_runs_its_branches_in_threads_with_the_same_isolation():
    both_in = threading.Barrier(2, timeout=5)
    where = []

    class Meet(Node):
        def exec(self, prep_res):
            where.append(threading.current_thread().name)
            both_in.wait()  # only passes if the two branches run at the same time

        def post(self, shared, prep_res, exec_res):
            shared.setdefault("met", []).append(self.name)

    shared = {"met": []}
    Flow(start=Parallel(Meet(name="a"), Meet(name="b"), merge={"met": "extend"})).run(shared)
    assert shared["met"] == ["a", "b"]
    assert all(name.startswith("braidflow-worker") for name in where)


# -- isolated parallel batch flows ---------------------------------------------------------


async def test_isolate_removes_the_race_of_parallel_sub_flows():
    class ReadAwaitWrite(AsyncNode):
        async def prep_async(self, shared):
            return shared["count"]

        async def exec_async(self, count):
            await asyncio.sleep(0)  # every sub-flow reads before any writes
            return count + 1

        async def post_async(self, shared, prep_res, exec_res):
            shared["count"] = exec_res

    class Ten(AsyncParallelBatchFlow):
        async def prep_async(self, shared):
            return [{"n": n} for n in range(10)]

    shared = {"count": 0}
    await Ten(start=ReadAwaitWrite()).run_async(shared)
    assert shared["count"] == 1  # PocketFlow's shared dict: nine increments lost
    shared = {"count": 0}
    await Ten(start=ReadAwaitWrite(), isolate=True, merge={"count": "sum"}).run_async(shared)
    assert shared["count"] == 10
    with pytest.raises(MergeConflict, match="param set 0"):
        await Ten(start=ReadAwaitWrite(), isolate=True).run_async({"count": 0})


def test_isolate_and_merge_are_refused_where_they_mean_nothing():
    with pytest.raises(InvalidParameterError, match="isolate"):
        Flow(isolate=True)
    with pytest.raises(InvalidParameterError, match="isolate=True"):
        AsyncParallelBatchFlow(merge={"x": "sum"})


# -- bad input at wiring time ---------------------------------------------------------------


def test_bad_fan_outs_are_wiring_errors():
    a, b = Log(), Log()
    with pytest.raises(WiringError, match="empty"):
        a >> []
    with pytest.raises(WiringError, match="not a node"):
        a >> [b, "c"]
    with pytest.raises(WiringError, match="twice"):
        a >> [b, b]
    with pytest.raises(InvalidParameterError, match="'concat' for key 'x'"):
        Parallel(b, merge={"x": "concat"})
    with pytest.raises(InvalidParameterError, match="string keys"):
        Parallel(b, merge={1: "sum"})
    with pytest.raises(InvalidParameterError, match="on_error"):
        Parallel(b, on_error="ignore")


# -- seeing branches --------------------------------------------------------------------------


async def test_branches_emit_their_events_and_are_drawn():
    events = []
    a = Log(name="a")
    a >> [Log(name="b"), Log(name="c")] >> Log(name="d")
    flow = AsyncFlow(start=a, name="main")
    await flow.run_async({}, observers=[events.append])
    branch_events = [(e.kind, e.node, e.path) for e in events if e.kind.startswith("branch")]
    assert ("branch_start", "b", ("main", "Parallel", "b")) in branch_events
    assert ("branch_end", "c", ("main", "Parallel", "c")) in branch_events
    inner = [e.path for e in events if e.kind == "node_start" and e.node == "b"]
    assert inner == [("main", "Parallel", "b", "b")]
    chart = flow.to_mermaid()
    assert "((fork))" in chart
    assert "((join))" in chart
    assert "2 parallel branches, joined" in chart


async def test_branches_nest():
    inner = Parallel(Write("x", 1), Write("y", 2))
    shared = {}
    await AsyncFlow(start=Parallel(inner, Write("z", 3))).run_async(shared)
    assert shared == {"x": 1, "y": 2, "z": 3}
