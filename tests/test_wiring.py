"""Wiring operators, their warnings, and wiring mistakes reported early."""

import itertools

import pytest

import braidflow
from braidflow import AsyncNode, Flow, Node, Parallel, WiringError


def test_rshift_returns_the_right_node_so_chains_read_left_to_right():
    a, b, c = Node(), Node(), Node()
    assert (a >> b) is b
    b >> c
    assert a.successors == {"default": b}
    assert b.successors == {"default": c}


def test_minus_action_wires_a_named_action():
    a, b = Node(), Node()
    assert (a - "retry" >> b) is b
    assert a.successors == {"retry": b}


def test_non_string_action_is_a_type_error():
    a = Node()
    with pytest.raises(TypeError, match="Action must be a string"):
        a - 1
    with pytest.raises(WiringError):
        a.next(Node(), action=3)  # type: ignore[arg-type]


def test_rewiring_an_action_warns():
    a = Node()
    a >> Node()
    with pytest.warns(UserWarning, match="Overwriting successor for action 'default'"):
        a >> Node()


def test_successor_must_be_a_node():
    a = Node(name="source")
    with pytest.raises(WiringError, match="source"):
        a >> "not a node"  # type: ignore[operator]


def test_none_successor_is_an_explicit_end_without_warning(recwarn):
    class Decide(Node):
        def post(self, shared, prep_res, exec_res):
            return "stop"

    decide = Decide()
    decide - "stop" >> None
    decide - "go" >> Node()
    assert Flow(start=decide).run({}) == "stop"
    assert not [w for w in recwarn if "Flow ends" in str(w.message)]


def test_unknown_action_ends_the_flow_with_a_warning():
    class Decide(Node):
        def post(self, shared, prep_res, exec_res):
            return "typo"

    decide = Decide()
    decide - "expected" >> Node()
    with pytest.warns(UserWarning, match="Flow ends: 'typo' not found"):
        assert Flow(start=decide).run({}) == "typo"


def test_a_misspelled_action_warns_where_the_only_action_wired_ends_the_flow():
    class Review(Node):
        def post(self, shared, prep_res, exec_res):
            return "aprove"

    review = Review()
    review - "approve" >> None  # approving ends the flow
    with pytest.warns(UserWarning, match=r"Flow ends: 'aprove' not found in \['approve'\]"):
        assert Flow(start=review).run({}) == "aprove"


def test_the_flow_ends_hint_for_an_action_that_is_not_a_string_can_be_followed():
    class Scored(Node):
        def post(self, shared, prep_res, exec_res):
            return 1

    scored = Scored()
    scored >> Node()
    with pytest.warns(UserWarning, match="wire it with node - '1' >> next_node and return '1'"):
        Flow(start=scored).run({})
    scored - "1" >> Node()  # as the hint says (an int cannot be wired)


def test_the_flow_ends_warning_points_at_the_code_that_ran_the_flow():
    import asyncio
    import inspect

    class Decide(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            return "typo"

    decide = Decide()
    decide - "expected" >> Node()
    line = inspect.currentframe().f_lineno + 2
    with pytest.warns(UserWarning, match="Flow ends") as sync_run:
        braidflow.AsyncFlow(start=decide).run({})
    assert (sync_run[0].filename, sync_run[0].lineno) == (__file__, line)

    async def main():
        await braidflow.AsyncFlow(start=decide).run_async({})

    with pytest.warns(UserWarning, match="Flow ends") as async_run:
        asyncio.run(main())
    assert async_run[0].filename == __file__
    assert async_run[0].lineno == main.__code__.co_firstlineno + 1


def test_unknown_action_without_successors_ends_silently(recwarn):
    class Last(Node):
        def post(self, shared, prep_res, exec_res):
            return "anything"

    assert Flow(start=Last()).run({}) == "anything"
    assert len(recwarn) == 0


def test_flow_start_returns_the_node_for_further_wiring():
    flow = Flow()
    a, b = Node(), Node()
    assert flow.start(a) is a
    a >> b
    assert flow.start_node is a


def test_running_a_flow_without_start_node_is_a_clear_error():
    with pytest.raises(WiringError, match="no start node"):
        Flow(name="empty").run({})


def test_start_must_be_a_node():
    with pytest.raises(WiringError):
        Flow(start=42)  # type: ignore[arg-type]


def test_running_a_lone_node_with_successors_warns():
    a = Node()
    a >> Node()
    with pytest.warns(UserWarning, match="Node won't run successors. Use Flow."):
        a.run({})


async def test_running_a_lone_async_node_with_successors_warns():
    a = AsyncNode()
    a >> Node()
    with pytest.warns(UserWarning, match="Use AsyncFlow"):
        await a.run_async({})


def test_post_returning_an_unhashable_action_names_the_node():
    class Bad(Node):
        def post(self, shared, prep_res, exec_res):
            return ["a", "list"]

    bad = Bad(name="bad-router")
    bad >> Node()
    with pytest.raises(WiringError, match="bad-router"):
        Flow(start=bad).run({})


class Mark(Node):
    """Sets shared[its name] = True."""

    def post(self, shared, prep_res, exec_res):
        shared[self.name] = True


def test_flow_start_with_a_list_fans_out_like_the_start_argument():
    by_argument = {}
    Flow(start=[Mark(name="b"), Mark(name="c")]).run(by_argument)
    flow = Flow()
    fan_out = flow.start([Mark(name="b"), Mark(name="c")])
    assert isinstance(fan_out, Parallel)
    assert flow.start_node is fan_out
    fan_out >> Mark(name="d")
    shared = {}
    flow.run(shared)
    assert by_argument == {"b": True, "c": True}
    assert shared == {"b": True, "c": True, "d": True}


def test_flow_start_checks_its_node():
    with pytest.raises(WiringError, match="start"):
        Flow().start(42)  # type: ignore[call-overload]


def test_successors_set_directly_are_seen_by_cached_names_and_drawings():
    a, b, c = Node(name="a"), Node(name="b"), Node(name="c")
    a >> b
    flow = Flow(start=a)
    assert '"c<br/>' not in flow.to_mermaid()  # the graph's names are cached now
    a.successors["x"] = c  # PocketFlow style, past the >> operator
    chart = flow.to_mermaid()
    assert '"c<br/>' in chart
    assert '-->|"x"|' in chart
    del a.successors["x"]
    assert '"c<br/>' not in flow.to_mermaid()
    a.successors.update(x=c)
    assert '"c<br/>' in flow.to_mermaid()
    a.successors.pop("x")
    assert '"c<br/>' not in flow.to_mermaid()


def test_start_node_assigned_directly_is_seen_by_cached_names():
    flow = Flow(start=Node(name="first"))
    assert '"first<br/>' in flow.to_mermaid()
    flow.start_node = Node(name="second")
    chart = flow.to_mermaid()
    assert '"second<br/>' in chart
    assert '"first<br/>' not in chart


def test_successors_read_as_a_plain_dict():
    a, b = Node(), Node()
    a >> b
    assert a.successors == {"default": b}
    assert a.successors.get("missing") is None
    assert isinstance(a.successors, dict)


# -- a chain wired inside the fan-out that needed its first node -------------------------


def named(*names):
    return [Mark(name=name) for name in names]


def test_a_branch_wired_inside_the_fan_out_expression_is_refused_with_what_to_write():
    plan, p, a, web = named("plan", "p", "a", "web")
    with pytest.raises(WiringError) as caught:
        plan >> [p >> a, web]
    message = str(caught.value)
    assert "branch 'a' comes from `p >> a` in this same expression" in message
    assert "'p' would never run" in message
    assert message.endswith(
        "Wire the chain first, on a line of its own: `p >> a`, then `plan >> [p, web]`"
    )
    assert plan.successors == {}  # refused before plan was wired
    # What it says to write, run as written: both branches run, p then a.
    p.successors.clear()  # the refused expression had wired p >> a already
    for statement in advice_statements(message):
        exec(statement)
    shared = {}
    Flow(start=plan).run(shared)
    assert shared == {"plan": True, "p": True, "a": True, "web": True}


def advice_statements(message):
    """The statements a message says to write, from its last "first: ..." part."""
    import re

    return re.findall(r"`([^`]+)`", message.rsplit("first, on ", 1)[1])


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda plan, p, a, web: plan - "go" >> [p >> a, web], id="action"),
        pytest.param(lambda plan, p, a, web: plan >> (web, p - "ok" >> a), id="tuple"),
        pytest.param(lambda plan, p, a, web: plan >> [p.next(a), web], id="next"),
        pytest.param(lambda plan, p, a, web: Parallel(p >> a, web), id="Parallel"),
        pytest.param(lambda plan, p, a, web: Flow(start=[p >> a, web]), id="start"),
        pytest.param(lambda plan, p, a, web: Flow().start([p >> a, web]), id="start()"),
        pytest.param(lambda plan, p, a, web: plan >> [web, Flow(start=p) >> a], id="a flow"),
        pytest.param(lambda plan, p, a, web: plan >> [web, Parallel(p, Mark()) >> a], id="fork"),
    ],
)
def test_every_way_of_making_that_fan_out_is_refused(build):
    plan, p, a, web = named("plan", "p", "a", "web")
    with pytest.raises(WiringError, match=r"branch 'a' comes from `.*` in this same expression"):
        build(plan, p, a, web)


def test_a_left_side_that_makes_a_new_node_is_named_once_in_the_advice():
    plan, a, web = named("plan", "a", "web")
    with pytest.raises(WiringError) as caught:
        plan >> [Mark(name="p") >> a, web]
    message = str(caught.value)
    statements = advice_statements(message)
    assert statements == ['first = Mark(name="p")', "first >> a", "plan >> [first, web]"]
    a2, plan2, web2 = named("a", "plan", "web")
    namespace = {"Mark": Mark, "a": a2, "plan": plan2, "web": web2}
    for statement in statements:
        exec(statement, namespace)
    shared = {}
    Flow(start=plan2).run(shared)
    assert shared == {"plan": True, "p": True, "a": True, "web": True}


def test_the_mistake_over_several_lines_or_without_source_is_still_refused():
    plan, p, a, web = named("plan", "p", "a", "web")
    with pytest.raises(WiringError, match="Wire the chain first, in a statement of its own"):
        plan >> [
            p >> a,
            web,
        ]
    namespace = dict(zip(("plan", "p", "a", "web"), named("plan", "p", "a", "web"), strict=True))
    with pytest.raises(WiringError, match="wiring 'p' to it in this same expression"):
        exec("plan >> [p >> a, web]", namespace)  # no file to read the expression from


def build_branch(first, then):
    first >> then
    return first


def chain_of(*nodes):
    for before, after in itertools.pairwise(nodes):
        before >> after
    return nodes[0]


def test_branches_wired_anywhere_else_are_never_refused(recwarn):
    plan, p, a, web, join = named("plan", "p", "a", "web", "join")
    p >> a
    plan >> [p, web] >> join  # the usual way: the chain first, then its first node
    x, y, z = named("x", "y", "z")
    one_line = {"plan": plan, "x": x, "y": y, "z": z}
    exec('x >> y; plan - "other" >> [x, z]', one_line)  # two statements on one line
    # A helper that wires in its own frame, in the same expression:
    q, r, s = named("q", "r", "s")
    plan - "helper" >> [build_branch(q, r), chain_of(s, *named("t", "u"))]
    # Loops, comprehensions, and wiring whose result is not a branch:
    heads = [Mark(name=f"h{n}") for n in range(3)]
    for head in heads:
        head >> Mark(name="tail")
    plan - "loop" >> heads
    plan - "comprehension" >> [n >> Mark(name="after") and n for n in named("c1", "c2")]
    start, b, c, d, e, f = named("start", "b", "c", "d", "e", "f")
    start >> b >> [c, d] >> e >> [f, Mark(name="g")]  # chains through fan-outs
    Flow(start=[Mark(name="m"), Mark(name="n")]) >> Mark(name="o")
    shared = {}
    Flow(start=start).run(shared)
    assert set(shared) == {"start", "b", "c", "d", "e", "f", "g"}
    assert not recwarn.list


def test_wiring_a_chain_as_a_flows_start_warns_and_runs_as_pocketflow_does():
    p, a = named("p", "a")
    with pytest.warns(braidflow.WiringWarning) as caught:
        flow = Flow(start=p >> a)
    (warning,) = caught.list
    assert warning.filename == __file__  # where the mistake is
    message = str(warning.message)
    assert "its start, 'a', comes from `p >> a` in this same expression" in message
    assert message.endswith(
        "Wire the chain first, on a line of its own: `p >> a`, then `Flow(start=p)`"
    )
    shared = {}
    flow.run(shared)
    assert shared == {"a": True}  # PocketFlow starts at a too
    with pytest.warns(braidflow.WiringWarning, match="its start, 'a'"):
        Flow().start(p - "x" >> a)
    p2, a2 = named("p", "a")
    namespace = {"p": p2, "a": a2, "Flow": Flow}
    for statement in advice_statements(message):
        exec(statement, namespace)
    shared = {}
    Flow(start=p2).run(shared)
    assert shared == {"p": True, "a": True}


def test_a_flow_started_after_its_wiring_does_not_warn(recwarn):
    p, a = named("p", "a")
    p >> a
    flow = Flow(start=p)
    Flow().start(a) >> Mark(name="q")  # start() returns its node, to wire on from
    loop = Mark(name="loop")
    loop - "again" >> loop
    Flow(start=loop)
    assert flow.start_node is p
    assert not recwarn.list


# -- an action never completed with >> ------------------------------------------------------


def test_an_action_never_completed_warns_where_it_was_written():
    review = Mark(name="review")
    with pytest.warns(braidflow.WiringWarning) as caught:
        review - "approve"  # the `>> next_node` forgotten
    (warning,) = caught.list
    assert warning.filename == __file__
    assert str(warning.message) == (
        "`review - 'approve'` was never completed with `>> node`, so no successor was wired "
        "for action 'approve'; write `node - 'approve' >> next_node` (or `>> None` to end the "
        "flow there)"
    )
    assert review.successors == {}


def test_an_action_completed_later_or_refused_does_not_warn(recwarn):
    review = Mark(name="review")
    pending = review - "approve"
    pending >> Mark(name="approved")
    review - "reject" >> None
    with pytest.raises(WiringError):
        review - "other" >> "not a node"
    assert list(review.successors) == ["approve", "reject"]
    assert not recwarn.list
