"""A subclass's __init__ that forgets super().__init__() is named when the node is made."""

import inspect

import pytest

from braidflow import (
    AsyncFlow,
    AsyncNode,
    BatchFlow,
    Flow,
    Node,
    NodeDefinitionError,
    ParallelBatchNode,
)


def test_an_init_that_forgets_super_is_named_when_the_node_is_made():
    class Summarize(Node):
        def __init__(self, model):
            self.model = model

    with pytest.raises(NodeDefinitionError) as caught:
        Summarize("small")
    message = str(caught.value)
    assert message.startswith(
        "test_an_init_that_forgets_super_is_named_when_the_node_is_made.<locals>.Summarize"
        ".__init__ returned without calling super().__init__()"
    )
    assert "call super().__init__() in " in message
    assert isinstance(caught.value, TypeError)

    class Summarize(Node):  # as it says
        def __init__(self, model):
            super().__init__()
            self.model = model

    node = Summarize("small")
    node >> Node()
    assert Flow(start=node).run({}) is None


@pytest.mark.parametrize("base", [Node, AsyncNode, ParallelBatchNode, Flow, AsyncFlow, BatchFlow])
def test_every_kind_is_checked_flows_included(base):
    class Forgetful(base):
        def __init__(self):
            self.ready = True

    with pytest.raises(NodeDefinitionError, match=r"Forgetful\.__init__ returned without"):
        Forgetful()


def test_super_called_late_deep_hierarchies_and_options_pass():
    class Late(Node):
        def __init__(self, label, **options):
            self.label = label  # before super().__init__: fine
            super().__init__(**options)

    class Deeper(Late):
        def __init__(self):
            super().__init__("deep", max_retries=3, name="deeper")

    class Deepest(Deeper):  # no __init__ of its own
        pass

    node = Deepest()
    assert (node.label, node.max_retries, node.name) == ("deep", 3, "deeper")
    assert list(inspect.signature(Late).parameters) == ["label", "options"]

    class Forgot(Deeper):
        def __init__(self):
            self.label = "lost"

    with pytest.raises(NodeDefinitionError, match=r"Forgot\.__init__ returned"):
        Forgot()

    class Broken(Node):  # a parent that forgets is named, not its child
        def __init__(self):
            pass

    class Child(Broken):
        def __init__(self):
            super().__init__()

    with pytest.raises(NodeDefinitionError, match=r"Broken\.__init__ returned"):
        Child()


def test_a_mixins_init_that_does_not_pass_on_is_named():
    class Configured:
        def __init__(self, *args, **kwargs):
            self.config = {}

    class Fetch(Configured, Node):
        pass

    with pytest.raises(NodeDefinitionError, match=r"Configured\.__init__ \(the __init__ of "):
        Fetch()

    class Cooperative:
        def __init__(self, *args, **kwargs):
            self.config = {}
            super().__init__(*args, **kwargs)

    class Fetch(Cooperative, Node):
        pass

    assert Fetch(max_retries=2).max_retries == 2


def test_an_error_in_init_itself_comes_out_unchanged():
    class Fails(Node):
        def __init__(self):
            raise ValueError("bad model")

    with pytest.raises(ValueError, match="bad model"):
        Fails()


def test_copies_and_pickles_do_not_run_init_again():
    import copy
    import pickle

    node = Counted(3)
    assert Counted.made == 1
    assert copy.copy(node).amount == 3
    assert pickle.loads(pickle.dumps(node)).amount == 3
    shared = {}
    Flow(start=node).run(shared)
    assert shared == {"total": 3}
    assert Counted.made == 1


class Counted(Node):
    made = 0

    def __init__(self, amount):
        super().__init__()
        self.amount = amount
        Counted.made += 1

    def post(self, shared, prep_res, exec_res):
        shared["total"] = self.amount
