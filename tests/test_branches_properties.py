"""Property: branches writing at random, interleaved, under random merge rules,
end in the same ``shared`` as running each branch alone on a copy and merging
by the rules (a small reference model); an undeclared conflict always raises."""

import asyncio
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from braidflow import AsyncFlow, AsyncNode, MergeConflict, Parallel

KEYS = ["a", "b", "lst", "num", "dct"]


@st.composite
def operations(draw):
    kind = draw(st.sampled_from(["set", "delete", "append", "add", "put"]))
    if kind == "set":
        return ("set", draw(st.sampled_from(["a", "b"])), draw(st.integers(0, 9)))
    if kind == "delete":
        return ("delete", draw(st.sampled_from(["a", "b"])), None)
    if kind == "append":
        return ("append", "lst", draw(st.integers(0, 9)))
    if kind == "add":
        return ("add", "num", draw(st.integers(1, 5)))
    return ("put", "dct", (draw(st.sampled_from(["x", "y", "z"])), draw(st.integers(0, 9))))


@st.composite
def scenarios(draw):
    base = {}
    for key in ("a", "b"):
        if draw(st.booleans()):
            base[key] = draw(st.integers(0, 9))
    base["lst"] = draw(st.lists(st.integers(0, 9), max_size=3))
    base["num"] = draw(st.integers(0, 9))
    base["dct"] = draw(
        st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 9), max_size=2)
    )
    branches = draw(st.lists(st.lists(operations(), max_size=4), min_size=1, max_size=4))
    rules = {}
    for key, options in (
        ("a", ["last"]),
        ("b", ["last"]),
        ("lst", ["extend", "last"]),
        ("num", ["sum", "last"]),
        ("dct", ["update", "last"]),
    ):
        if draw(st.booleans()):
            rules[key] = draw(st.sampled_from(options))
    yields = draw(st.lists(st.integers(0, 3), min_size=1, max_size=8))
    return base, branches, rules, yields


def apply(store, ops):
    """One branch's operations on a plain dict (the model, and the node's body)."""
    for kind, key, value in ops:
        if kind == "set":
            store[key] = value
        elif kind == "delete":
            store.pop(key, None)
        elif kind == "append":
            store[key].append(value)
        elif kind == "add":
            store[key] = store[key] + value
        else:
            store[key][value[0]] = value[1]


def reference(base, branches, rules):
    """Run each branch alone on a copy, then merge by the rules: the expected store."""
    missing = object()
    outcomes = []
    for ops in branches:
        store = copy.deepcopy(base)
        apply(store, ops)
        changed = {}
        for key in set(base) | set(store):
            now, before = store.get(key, missing), base.get(key, missing)
            if (now is missing and before is not missing) or (
                now is not missing and (before is missing or now != before)
            ):
                changed[key] = now
        outcomes.append(changed)
    result = copy.deepcopy(base)
    for key in KEYS:
        writers = [changed[key] for changed in outcomes if key in changed]
        if not writers:
            continue
        if len(writers) == 1:
            value = writers[0]
        else:
            rule = rules.get(key)
            before = base.get(key, missing)
            if rule is None:
                return "conflict"
            if rule == "last":
                value = writers[-1]
            elif rule == "extend":
                if any(w[: len(before)] != before for w in writers):
                    return "conflict"
                value = list(before) + [x for w in writers for x in w[len(before) :]]
            elif rule == "sum":
                value = before + sum(w - before for w in writers)
            else:
                value, owners = dict(before), {}
                for w in writers:
                    for inner in set(w) | set(before):
                        if w.get(inner, missing) != before.get(inner, missing):
                            if inner in owners:
                                return "conflict"
                            owners[inner] = True
                            if inner in w:
                                value[inner] = w[inner]
                            else:
                                value.pop(inner, None)
        if value is missing:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def branch_node(ops, yields, index):
    class Branch(AsyncNode):
        async def post_async(self, shared, prep_res, exec_res):
            for step, op in enumerate(ops):
                for _ in range(yields[(index + step) % len(yields)]):
                    await asyncio.sleep(0)  # interleave with the other branches
                apply(shared, [op])

    return Branch(name=f"branch{index}")


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_concurrent_branches_merge_like_the_reference_model(scenario):
    base, branches, rules, yields = scenario
    expected = reference(base, branches, rules)
    shared = copy.deepcopy(base)
    heads = [branch_node(ops, yields, index) for index, ops in enumerate(branches)]
    flow = AsyncFlow(start=Parallel(*heads, merge=rules))
    try:
        asyncio.run(flow.run_async(shared))
    except MergeConflict:
        assert expected == "conflict"
        assert shared == base  # nothing merged
        return
    assert expected != "conflict"
    assert shared == expected
