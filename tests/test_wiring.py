"""Wiring operators, their warnings, and wiring mistakes reported early."""

import pytest

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
