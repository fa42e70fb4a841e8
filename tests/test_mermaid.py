"""flow.to_mermaid(): the graph as a mermaid flowchart."""

from braidflow import (
    AsyncFlow,
    AsyncNode,
    AsyncParallelBatchFlow,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    Node,
)


class Decide(Node):
    pass


class Work(AsyncParallelBatchNode):
    pass


def test_actions_label_edges_and_a_loop_is_drawn_once():
    load, decide = AsyncNode(name="load"), Decide(name="decide")
    load >> decide
    decide - "again" >> load
    decide - "done" >> None
    chart = AsyncFlow(start=load, name="agent").to_mermaid()
    lines = chart.splitlines()
    assert lines[0] == "flowchart TD"
    assert sum('"load<br/>' in line for line in lines) == 1
    assert sum('"decide<br/>' in line for line in lines) == 1
    assert any('-->|"again"|' in line for line in lines)
    assert any('-->|"done"| end' in line for line in lines)
    assert any(line.strip().startswith("end") and '(["end"])' in line for line in lines)


def test_nested_flows_are_subgraphs_and_kinds_are_marked():
    inner = AsyncFlow(start=Work(name="work"), name="inner")

    class Sets(AsyncParallelBatchFlow):
        pass

    inner >> Sets(start=Flow(start=BatchNode(name="rows"), name="per-set"), name="sets")
    chart = AsyncFlow(start=inner, name="main").to_mermaid()
    assert chart.count("subgraph ") == 4  # main, inner, sets, per-set
    assert "work<br/><small>async parallel batch node</small>" in chart
    assert "sets<br/><small>async parallel batch flow</small>" in chart
    assert '[["rows<br/><small>batch node</small>"]]' in chart
    opened = sum(1 for line in chart.splitlines() if line.strip().startswith("subgraph "))
    closed = sum(1 for line in chart.splitlines() if line.strip() == "end")
    assert opened == closed


def test_same_named_nodes_get_the_suffixes_events_use():
    first, second = Decide(), Decide()
    first >> second
    chart = Flow(start=first).to_mermaid()
    assert '"Decide<br/>' in chart
    assert '"Decide#2<br/>' in chart


def test_labels_are_escaped():
    chart = Node(name='say "hi" <b>').to_mermaid()
    assert "say &quot;hi&quot; &lt;b&gt;" in chart
    assert '"hi"' not in chart


def test_a_flow_that_contains_itself_does_not_recurse_forever():
    flow = Flow(name="loop")
    step = Node(name="step")
    flow.start(step)
    step >> flow  # the flow is a successor of its own step
    chart = flow.to_mermaid()
    assert chart.count('"loop<br/>') >= 1
