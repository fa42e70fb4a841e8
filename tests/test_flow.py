"""Synchronous flows: steps, copies, params, routing, nesting, batch flows, errors."""

import pytest

from braidflow import BatchFlow, BatchItemsError, BatchNode, Flow, Node


class Add(Node):
    def __init__(self, amount, **kwargs):
        super().__init__(**kwargs)
        self.amount = amount

    def prep(self, shared):
        return shared["value"]

    def exec(self, prep_res):
        return prep_res + self.amount

    def post(self, shared, prep_res, exec_res):
        shared["value"] = exec_res


def test_chain_runs_in_order_and_returns_last_action():
    a, b, c = Add(1), Add(10), Add(100)
    a >> b >> c
    shared = {"value": 0}
    assert Flow(start=a).run(shared) is None
    assert shared["value"] == 111


def test_each_step_runs_a_fresh_copy_of_the_node():
    seen = []

    class Record(Node):
        def exec(self, prep_res):
            seen.append(self)
            self.mark = "touched"

    template = Record()
    flow = Flow(start=template)
    flow.run({})
    flow.run({})
    assert len(seen) == 2
    assert seen[0] is not template
    assert seen[1] is not template
    assert seen[0] is not seen[1]
    assert not hasattr(template, "mark")


def test_loops_revisit_nodes_until_the_action_changes():
    class Count(Node):
        def prep(self, shared):
            shared["n"] += 1
            return shared["n"]

        def post(self, shared, prep_res, exec_res):
            return "again" if prep_res < 5 else "done"

    count = Count()
    count - "again" >> count
    count - "done" >> None
    shared = {"n": 0}
    assert Flow(start=count).run(shared) == "done"
    assert shared["n"] == 5


def test_flow_sets_one_params_dict_on_every_node():
    seen = []

    class Read(Node):
        def prep(self, shared):
            seen.append(self.params)

    a, b = Read(), Read()
    a >> b
    flow = Flow(start=a)
    flow.set_params({"user": "ada"})
    flow.run({})
    assert seen == [{"user": "ada"}, {"user": "ada"}]
    assert seen[0] is seen[1]
    assert seen[0] is not flow.params


def test_action_routing_and_default():
    class Decide(Node):
        def prep(self, shared):
            return shared["x"]

        def post(self, shared, prep_res, exec_res):
            return "big" if prep_res > 10 else None

    class Mark(Node):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def post(self, shared, prep_res, exec_res):
            shared["path"] = self.label

    decide = Decide()
    decide - "big" >> Mark("big")
    decide >> Mark("small")
    for x, expected in ((50, "big"), (3, "small")):
        shared = {"x": x}
        Flow(start=decide).run(shared)
        assert shared["path"] == expected


def test_empty_string_action_means_default():
    class Empty(Node):
        def post(self, shared, prep_res, exec_res):
            return ""

    empty = Empty()
    empty >> Add(1)
    shared = {"value": 1}
    Flow(start=empty).run(shared)
    assert shared["value"] == 2


def test_nested_flow_routes_the_parent_by_its_last_inner_action():
    class Decide(Node):
        def post(self, shared, prep_res, exec_res):
            return "escalate"

    class Mark(Node):
        def post(self, shared, prep_res, exec_res):
            shared["escalated"] = True

    inner = Flow(start=Decide())
    outer_next = Mark()
    inner - "escalate" >> outer_next
    shared = {}
    Flow(start=inner).run(shared)
    assert shared == {"escalated": True}


def test_flow_post_can_override_the_action():
    class Inner(Flow):
        def post(self, shared, prep_res, exec_res):
            return f"wrapped-{exec_res}"

    class Emit(Node):
        def post(self, shared, prep_res, exec_res):
            return "x"

    assert Inner(start=Emit()).run({}) == "wrapped-x"


def test_batch_node_runs_exec_per_item_in_order():
    class Double(BatchNode):
        def prep(self, shared):
            return shared["items"]

        def exec(self, prep_res):
            return prep_res * 2

        def post(self, shared, prep_res, exec_res):
            shared["out"] = exec_res

    shared = {"items": [1, 2, 3]}
    Double().run(shared)
    assert shared["out"] == [2, 4, 6]


def test_batch_node_reads_generators_lazily():
    pulled = []

    def numbers():
        for i in range(3):
            pulled.append(i)
            yield i

    class Check(BatchNode):
        def prep(self, shared):
            return numbers()

        def exec(self, prep_res):
            # Only the items handed out so far have been read.
            assert pulled[-1] == prep_res
            return prep_res

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Check().run({}) == [0, 1, 2]


@pytest.mark.parametrize("prep_value", [None, []])
def test_batch_node_with_no_items_gives_an_empty_list(prep_value):
    class Empty(BatchNode):
        def prep(self, shared):
            return prep_value

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Empty().run({}) == []


def test_batch_node_rejects_non_iterable_prep_naming_the_node():
    class Wrong(BatchNode):
        def prep(self, shared):
            return 42

    with pytest.raises(BatchItemsError, match=r"Wrong.*not iterable"):
        Wrong().run({})


def test_batch_flow_merges_flow_params_with_each_param_set():
    seen = []

    class Read(Node):
        def prep(self, shared):
            seen.append(dict(self.params))

    class Each(BatchFlow):
        def prep(self, shared):
            return [{"file": "a"}, {"file": "b", "mode": "override"}]

        def post(self, shared, prep_res, exec_res):
            shared["post"] = (prep_res, exec_res)
            return "finished"

    flow = Each(start=Read())
    flow.set_params({"mode": "base", "user": "u"})
    shared = {}
    assert flow.run(shared) == "finished"
    assert seen == [
        {"mode": "base", "user": "u", "file": "a"},
        {"mode": "override", "user": "u", "file": "b"},
    ]
    assert shared["post"] == ([{"file": "a"}, {"file": "b", "mode": "override"}], None)


def test_batch_flow_with_none_prep_runs_nothing():
    ran = []

    class Read(Node):
        def prep(self, shared):
            ran.append(1)

    assert BatchFlow(start=Read()).run({}) is None
    assert ran == []


def test_batch_flow_item_must_be_a_mapping():
    class Each(BatchFlow):
        def prep(self, shared):
            return ["not-a-dict"]

    with pytest.raises(BatchItemsError, match="dict of params") as caught:
        Each(start=Node()).run({})
    assert caught.value.item_index == 0


def test_nested_batch_flows_see_all_params():
    seen = []

    class Read(Node):
        def prep(self, shared):
            seen.append((self.params["outer"], self.params["inner"]))

    class InnerBatch(BatchFlow):
        def prep(self, shared):
            return [{"inner": i} for i in range(2)]

    class OuterBatch(BatchFlow):
        def prep(self, shared):
            return [{"outer": o} for o in "ab"]

    OuterBatch(start=InnerBatch(start=Read())).run({})
    assert seen == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_errors_name_the_failing_node_and_its_flow_path():
    class Explode(Node):
        def exec(self, prep_res):
            raise KeyError("missing")

    inner = Flow(start=Explode(name="explode"), name="inner")
    outer = Flow(start=inner, name="outer")
    with pytest.raises(KeyError) as caught:
        outer.run({})
    notes = caught.value.__notes__
    assert any("'explode'" in note and "'inner'" in note for note in notes)
    assert any("'inner'" in note and "'outer'" in note for note in notes)


def test_a_lone_node_error_names_the_node():
    class Explode(Node):
        def prep(self, shared):
            raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input") as caught:
        Explode(name="parse").run({})
    assert any("parse" in note for note in caught.value.__notes__)


def test_node_names_default_to_the_class_name():
    class Summarize(Node):
        pass

    assert Summarize().name == "Summarize"
    assert Summarize(name="sum-1").name == "sum-1"
    assert Flow(name="main").name == "main"
    assert "sum-1" in repr(Summarize(name="sum-1"))


def test_custom_copy_hooks_are_respected():
    class WithCopy(Node):
        copies = 0

        def __copy__(self):
            type(self).copies += 1
            new = WithCopy()
            new.__dict__.update(self.__dict__)
            return new

    Flow(start=WithCopy()).run({})
    assert WithCopy.copies == 1


def test_run_accepts_the_early_shared_storage_keyword():
    shared = {"value": 1}
    Flow(start=Add(2)).run(shared_storage=shared)
    assert shared["value"] == 3
    assert Add(1).run(shared={"value": 0}) is None
    with pytest.raises(TypeError, match="unexpected keyword"):
        Flow(start=Add(2)).run(storage={})
    with pytest.raises(TypeError, match="needs the shared store"):
        Flow(start=Add(2)).run()


def test_an_instance_level_post_override_is_used_on_the_copies():
    class Emit(Node):
        def post(self, shared, prep_res, exec_res):
            return "specific"

    emit = Emit()
    emit - "specific" >> Add(1)
    emit.post = lambda shared, prep_res, exec_res: None
    with pytest.warns(UserWarning, match=r"Flow ends: 'None' not found in \['specific'\]"):
        assert Flow(start=emit).run({"value": 0}) is None


def test_user_attributes_named_like_options_do_not_change_how_nodes_run():
    import threading

    class Client(Node):
        def __init__(self):
            super().__init__()
            self.timeout = 30  # for the user's own HTTP client
            self.limits = {"tokens": 1000}
            self.retry = True
            self.offload = "yes"

        def exec(self, prep_res):
            return threading.current_thread() is threading.main_thread()

        def post(self, shared, prep_res, exec_res):
            return "on main thread" if exec_res else "moved to a thread"

    assert Flow(start=Client()).run({}) == "on main thread"


def test_slotted_mixins_keep_their_slot_values_in_step_copies():
    class Slotted:
        __slots__ = ("token",)

    class WithSlots(Slotted, Node):
        def __init__(self):
            super().__init__()
            self.token = "secret"

        def exec(self, prep_res):
            return self.token

        def post(self, shared, prep_res, exec_res):
            return exec_res

    assert Flow(start=WithSlots()).run({}) == "secret"
