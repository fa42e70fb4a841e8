"""Random programs of parallel branches joined by merge rules, with a reference
model of the final ``shared``, checked plain, durable and resumed after failures.

A program is a chain of nodes, sub-flows, ``Parallel`` forks (nested two
deep) and, if asked for, batch flows, drawn from a seed. Its nodes write a few keys of ``shared``
in the ways nodes do (set, delete, add, append, change in place, read and
remember), so that branches collide on keys whose merge rules (``"sum"``,
``"extend"``, ``"update"``, ``"last"``, a function, or none) decide the
outcome. `expected_outcome` computes that outcome from the documented merge
semantics alone (docs/branches.md, "Merging at the join"): each branch runs on
a copy of ``shared`` at the fork; a key changed by one branch takes its
value; by several, its rule combines them or the join raises
``MergeConflict``. `check_seed` runs the program as braidflow flows and
compares: plainly, durably on a `SQLiteStore` under each durability mode, and
with one-time failures injected in ``exec`` or halfway through ``post``, then
resumed until it completes; a resumed run must end in the same ``shared`` and
never run again a node that finished.

Run as a script to check more seeds than the tests do (braidflow importable,
e.g. ``PYTHONPATH=src``): ``python tests/_branch_programs.py 20000 20400``
(``--batches`` for programs with batch flows).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braidflow
from braidflow import MISSING, MergeConflict

INT_KEYS = ["i0", "i1", "i2"]
LIST_KEYS = ["l0", "l1", "l2"]
DICT_KEYS = ["d0", "d1"]
# Keys absent at the start, that nodes create (as some delete the others).
NEW_KEYS = ["n0", "n1"]
DURABILITY_MODES = ("sync", "async", "exit")

# An operation is a tuple: its kind, then the key it writes, then its arguments.
Operation = tuple[Any, ...]


# ----------------------------------------------------------------- programs


@dataclass
class Step:
    """A node: its ``post`` applies ``operations`` to ``shared`` in turn."""

    name: str
    operations: list[Operation]


@dataclass
class SubFlow:
    """A flow nested in its parent's chain, running ``items`` in turn."""

    name: str
    items: list[Item]


@dataclass
class Batch:
    """A batch flow running ``items`` once per value of ``p`` in ``values``:
    one set after the other on the one ``shared``, or (``isolated``, in an
    async program only) at once, each on its own view, joined by ``merge``."""

    name: str
    isolated: bool
    values: list[int]
    items: list[Item]
    merge: dict[str, str]


@dataclass
class Fork:
    """A ``Parallel`` of ``branches`` joined by ``merge``; with no rules and no
    limit, written as PocketFlow's list fan-out (``a >> [b, c]``)."""

    name: str
    branches: list[list[Item]]
    merge: dict[str, str]
    max_concurrency: int | None


Item = Step | SubFlow | Batch | Fork


@dataclass
class Program:
    """What `draw_program` makes of a seed: the flow, sync or async, and the
    ``shared`` it starts from."""

    seed: int
    is_async: bool
    items: list[Item]
    initial: dict[str, Any]
    rng: random.Random = field(repr=False)  # what is left of the seed's draws


def function_rule(before: Any, values: list[Any]) -> Any:
    """The merge rule given as a function: a result that depends on the value
    at the fork, on every branch's value, on their order and on which deleted
    the key (so that replaying the join with other inputs shows)."""
    present = [value for value in values if value is not MISSING]
    if not present:
        return 0 if before is MISSING else before
    if all(isinstance(value, int) for value in present):
        return sum(present) * 10 + (before if isinstance(before, int) else 0) + len(values)
    if all(isinstance(value, list) for value in present):
        merged_list: list[Any] = ["fn", len(values)]
        for value in reversed(present):
            merged_list += value
        return merged_list
    if all(isinstance(value, dict) for value in present):
        merged_dict: dict[str, Any] = {"fn": len(values)}
        for value in reversed(present):
            merged_dict.update(value)
        return merged_dict
    return present[-1]


class _Drawer:
    """Draws a program's parts from ``rng``, naming nodes in the order drawn.
    The order of the draws fixes what each seed means: keep it."""

    def __init__(self, rng: random.Random, *, batches: bool, is_async: bool) -> None:
        self.rng = rng
        self.batches = batches
        self.is_async = is_async
        self.count = 0
        self.max_depth = 2

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def program(self) -> list[Item]:
        items: list[Item] = [self.step()] if self.rng.random() < 0.8 else []
        items += [self.fork(1), self.step()]
        if self.rng.random() < 0.3:
            items += [self.fork(1), self.step()]
        return items

    def step(self) -> Step:
        name = self.name("n")
        count = self.rng.randint(1, 3)
        return Step(name, [self.operation(name, index) for index in range(count)])

    def operation(self, node: str, index: int) -> Operation:
        """One write of node ``node``: mostly on the keys the branches share,
        sometimes on keys of its own (``own_<node>``, ``seen_<node>``: what it
        read), which never conflict."""
        rng = self.rng
        draw = rng.random()
        if draw < 0.2:
            return ("add", rng.choice(INT_KEYS), rng.randint(1, 5))
        if draw < 0.4:
            return ("append", rng.choice(LIST_KEYS), f"{node}.{index}")
        if draw < 0.55:
            key = rng.choice(DICT_KEYS)  # mostly an inner key of the node's own
            own = f"z_{node}"
            return ("put", key, rng.choice(["x0", "y0", own, own, own]), index)
        if draw < 0.6:
            return ("remove", rng.choice(DICT_KEYS), rng.choice(["x0", "x1", "y0"]))
        if draw < 0.68:
            return ("set", rng.choice(NEW_KEYS + INT_KEYS), rng.randint(0, 3))
        if draw < 0.70:
            return ("delete", rng.choice(NEW_KEYS + INT_KEYS + LIST_KEYS))
        if draw < 0.71:
            return ("change_first", rng.choice(LIST_KEYS))
        if draw < 0.84:
            return ("own", f"own_{node}", index)
        if draw < 0.88:
            return ("list_keys", f"seen_{node}")
        if draw < 0.91:
            return ("update", rng.choice(NEW_KEYS + INT_KEYS), rng.randint(0, 3))
        if draw < 0.93:
            return ("setdefault", rng.choice(NEW_KEYS + LIST_KEYS), [index])
        if draw < 0.95:
            return ("change_and_undo", rng.choice(LIST_KEYS + DICT_KEYS))
        return ("read", rng.choice(INT_KEYS + LIST_KEYS + DICT_KEYS + NEW_KEYS), f"seen_{node}")

    def sequence(self, depth: int, length: int) -> list[Item]:
        items: list[Item] = []
        for _ in range(length):
            draw = self.rng.random()
            if depth < self.max_depth and draw < 0.25:
                items.append(self.fork(depth + 1))
            elif depth < self.max_depth and draw < 0.33 and self.batches:
                items.append(self.batch(depth + 1))
            elif draw < 0.40:
                name = self.name("f")
                items.append(SubFlow(name, self.sequence(depth, self.rng.randint(1, 2))))
            else:
                items.append(self.step())
        return items

    def rules(self) -> dict[str, str]:
        """A rule for most keys, one that fits its values or not ("last", a
        function); a key without one conflicts when two branches change it."""
        rng = self.rng
        merge = {}
        for keys, rules, chance in (
            (INT_KEYS, ["sum", "sum", "last", "fn"], 0.97),
            (LIST_KEYS, ["extend", "extend", "last", "fn"], 0.97),
            (DICT_KEYS, ["update", "update", "last", "fn"], 0.97),
            (NEW_KEYS, ["last", "fn"], 0.9),
        ):
            for key in keys:
                if rng.random() < chance:
                    merge[key] = rng.choice(rules)
        return merge

    def batch(self, depth: int) -> Batch:
        # A sync program has no isolated batch flow (AsyncParallelBatchFlow is
        # async): it runs the sets one after the other.
        isolated = self.rng.choice([False, True]) and self.is_async
        count = self.rng.randint(1, 3)
        name = self.name("b")
        items = self.sequence(depth, self.rng.randint(1, 2))
        return Batch(name, isolated, list(range(count)), items, self.rules())

    def fork(self, depth: int) -> Fork:
        count = self.rng.randint(2, 4)
        branches = [self.sequence(depth, self.rng.randint(1, 3)) for _ in range(count)]
        merge = self.rules()
        max_concurrency = self.rng.choice([None, None, 1, 2])
        if self.rng.random() < 0.05:
            merge = {}
        return Fork(self.name("p"), branches, merge, max_concurrency)


def draw_program(seed: int, *, batches: bool = False) -> Program:
    """The program of ``seed``: with ``batches``, batch flows among its items."""
    rng = random.Random(seed)
    is_async = rng.random() < 0.5
    items = _Drawer(rng, batches=batches, is_async=is_async).program()
    initial: dict[str, Any] = {key: rng.randint(0, 5) for key in INT_KEYS}
    for key in LIST_KEYS:
        initial[key] = [rng.randint(0, 9) for _ in range(rng.randint(0, 2))]
    for key in DICT_KEYS:
        initial[key] = {f"x{index}": index for index in range(rng.randint(0, 2))}
    return Program(seed, is_async, items, initial, rng)


def step_runs(items: list[Item], times: int = 1) -> Iterator[tuple[str, int]]:
    """Each node's name and how many times a run of ``items`` finishes it."""
    for item in items:
        if isinstance(item, Step):
            yield item.name, times
        elif isinstance(item, SubFlow):
            yield from step_runs(item.items, times)
        elif isinstance(item, Batch):
            yield from step_runs(item.items, times * len(item.values))
        else:
            for branch in item.branches:
                yield from step_runs(branch, times)


# ------------------------------------------------------------ operations


def apply_operation(shared: dict[str, Any], operation: Operation, p: int | None) -> None:
    """Apply ``operation`` to ``shared``, as a node's ``post`` (with its batch
    parameter ``p``) and as the model."""
    if p is not None:
        operation = _with_parameter(operation, p)
    kind, key, *arguments = operation
    if kind == "add":
        shared[key] = shared.get(key, 0) + arguments[0]
    elif kind == "append":
        if not isinstance(shared.get(key), list):
            shared[key] = []
        shared[key].append(arguments[0])
    elif kind == "put":
        if not isinstance(shared.get(key), dict):
            shared[key] = {}
        shared[key][arguments[0]] = arguments[1]
    elif kind == "remove":
        if isinstance(shared.get(key), dict):
            shared[key].pop(arguments[0], None)
    elif kind in ("set", "own"):
        shared[key] = arguments[0]
    elif kind == "delete":
        shared.pop(key, None)
    elif kind == "change_first":
        if isinstance(shared.get(key), list) and shared[key]:
            shared[key][0] = "changed"
    elif kind == "list_keys":
        # The keys this branch sees, and their number as len() gives it.
        names = sorted(name for name in shared if not name.startswith(("seen_", "own_")))
        size = len(shared) - sum(1 for name in shared if name.startswith(("seen_", "own_")))
        shared.setdefault(key, []).append([names, size])
    elif kind == "update":
        shared.update({key: arguments[0]})
    elif kind == "setdefault":
        value = shared.setdefault(key, list(arguments[0]))
        if isinstance(value, list):
            value.append("default")
    elif kind == "change_and_undo":
        value = shared.get(key)
        if isinstance(value, list):
            value.append("undone")
            value.pop()
        elif isinstance(value, dict):
            value["undone"] = 1
            del value["undone"]
    elif kind == "read":
        shared.setdefault(arguments[0], []).append(copy.deepcopy(shared.get(key, "<absent>")))
    else:
        raise ValueError(f"unknown operation {operation!r}")


def _with_parameter(operation: Operation, p: int) -> Operation:
    """``operation`` as the batch set of parameter ``p`` runs it: each set
    adds, appends and writes values and keys of its own."""
    kind = operation[0]
    if kind == "add":
        return (kind, operation[1], operation[2] + p)
    if kind == "append":
        return (kind, operation[1], f"{operation[2]}p{p}")
    if kind == "put":
        inner = operation[2] + (f"p{p}" if operation[2].startswith("z_") else "")
        return (kind, operation[1], inner, operation[3] + p)
    if kind in ("own", "list_keys"):
        return (kind, f"{operation[1]}_p{p}", *operation[2:])
    if kind == "read":
        return (kind, operation[1], f"{operation[2]}_p{p}")
    return operation


# ------------------------------------------------------------------ model


class ExpectedConflict(Exception):
    """The model's join found ``key`` changed by several branches, with no
    rule for it or a rule that cannot combine their values."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def expected_outcome(program: Program) -> tuple[str, Any]:
    """``("ok", final shared)``, or ``("conflict", key)`` if a join raises
    `MergeConflict` (``key``: one of the keys in conflict at the first)."""
    shared = copy.deepcopy(program.initial)
    try:
        _model_items(shared, program.items, None)
    except ExpectedConflict as conflict:
        return ("conflict", conflict.key)
    return ("ok", shared)


def _model_items(shared: dict[str, Any], items: list[Item], p: int | None) -> None:
    for item in items:
        if isinstance(item, Step):
            for operation in item.operations:
                apply_operation(shared, operation, p)
        elif isinstance(item, SubFlow):
            _model_items(shared, item.items, p)
        elif isinstance(item, Batch) and not item.isolated:
            for value in item.values:
                _model_items(shared, item.items, value)
        elif isinstance(item, Batch):
            views = [copy.deepcopy(shared) for _ in item.values]
            for view, value in zip(views, item.values, strict=True):
                _model_items(view, item.items, value)
            _model_join(shared, views, item.merge)
        else:
            views = [copy.deepcopy(shared) for _ in item.branches]
            for view, branch in zip(views, item.branches, strict=True):
                _model_items(view, branch, p)
            _model_join(shared, views, item.merge)


def _changed(fork: dict[str, Any], view: dict[str, Any], key: str) -> bool:
    if (key in fork) != (key in view):
        return True
    return key in fork and fork[key] != view[key]


def _model_join(shared: dict[str, Any], views: list[dict[str, Any]], rules: dict[str, str]) -> None:
    """Merge the branches' ``views`` of ``shared`` (its value at the fork)
    into it by ``rules``, as docs/branches.md says a join does."""
    keys: dict[str, None] = {}  # every key at the fork or in a view, in a fixed order
    for view in views:
        keys.update(dict.fromkeys([*shared, *view]))
    merged: dict[str, Any] = {}
    for key in keys:
        changers = [view for view in views if _changed(shared, view, key)]
        if not changers:
            continue
        values = [view.get(key, MISSING) for view in changers]
        if len(changers) == 1:
            merged[key] = values[0]
            continue
        before = shared.get(key, MISSING)
        rule = rules.get(key)
        if rule is None:
            raise ExpectedConflict(key)
        if rule == "sum":
            if any(value is MISSING for value in values):  # deleted: no number to add
                raise ExpectedConflict(key)
            start = 0 if before is MISSING else before
            merged[key] = start + sum(value - start for value in values)
        elif rule == "extend":
            merged[key] = _extended([] if before is MISSING else before, values, key)
        elif rule == "update":
            merged[key] = _updated({} if before is MISSING else before, values, key)
        elif rule == "last":
            merged[key] = values[-1]
        else:
            merged[key] = function_rule(before, values)
    for key, value in merged.items():
        if value is MISSING:
            shared.pop(key, None)
        else:
            shared[key] = copy.deepcopy(value)


def _extended(start: list[Any], values: list[Any], key: str) -> list[Any]:
    """``start`` and what each value appended to it, in order."""
    merged = list(start)
    for value in values:
        if not isinstance(value, list) or value[: len(start)] != start:
            raise ExpectedConflict(key)  # not a list, or existing items changed
        merged += value[len(start) :]
    return merged


def _updated(start: dict[str, Any], values: list[Any], key: str) -> dict[str, Any]:
    """``start`` with the inner keys each value set or removed."""
    merged = dict(start)
    changed_by_one: set[str] = set()
    for value in values:
        if not isinstance(value, dict):
            raise ExpectedConflict(key)
        touched = [inner for inner in value if inner not in start or start[inner] != value[inner]]
        touched += [inner for inner in start if inner not in value]
        for inner in touched:
            if inner in changed_by_one:
                raise ExpectedConflict(key)  # one inner key changed by two values
            changed_by_one.add(inner)
            if inner in value:
                merged[inner] = value[inner]
            else:
                merged.pop(inner, None)
    return merged


# ------------------------------------------------------------ the flows


class InjectedFailure(RuntimeError):
    """A failure `Probe` injects once, in a node's ``exec`` or its ``post``."""


class Probe:
    """What the nodes of one run report: how many times each started and
    finished; and the failures still to inject, by node name (``"exec"``, or
    ``"post"``: halfway through its operations, after writing some)."""

    def __init__(self, failures: dict[str, str] | None = None) -> None:
        self.failures = dict(failures or {})
        self.started: dict[str, int] = {}
        self.finished: dict[str, int] = {}
        self._lock = threading.Lock()  # a sync Parallel's branches run in threads

    def start(self, name: str) -> None:
        with self._lock:
            self.started[name] = self.started.get(name, 0) + 1

    def exec(self, name: str) -> None:
        if self._take_failure(name, "exec"):
            raise InjectedFailure(f"injected failure in exec of {name}")

    def post(self, step: Step, shared: dict[str, Any], p: int | None) -> None:
        stop = len(step.operations) // 2 if self._take_failure(step.name, "post") else None
        for index, operation in enumerate(step.operations):
            if index == stop:
                raise InjectedFailure(f"injected failure in post of {step.name}")
            apply_operation(shared, operation, p)
        with self._lock:
            self.finished[step.name] = self.finished.get(step.name, 0) + 1

    def _take_failure(self, name: str, where: str) -> bool:
        with self._lock:
            if self.failures.get(name) != where:
                return False
            del self.failures[name]
            return True


class _SyncStep(braidflow.Node[None, None, dict[str, Any]]):
    """The node of ``step``: reports to ``probe``, and fails where it says."""

    def __init__(self, step: Step, probe: Probe) -> None:
        super().__init__(name=step.name)
        self.step, self.probe = step, probe

    def prep(self, shared: dict[str, Any]) -> None:
        self.probe.start(self.step.name)

    def exec(self, prep_result: None) -> None:
        self.probe.exec(self.step.name)

    def post(self, shared: dict[str, Any], prep_result: None, exec_result: None) -> None:
        self.probe.post(self.step, shared, self.params.get("p"))


class _AsyncStep(braidflow.AsyncNode[None, None, dict[str, Any]]):
    """As `_SyncStep`, yielding to the loop between phases so that branches
    interleave."""

    def __init__(self, step: Step, probe: Probe) -> None:
        super().__init__(name=step.name)
        self.step, self.probe = step, probe

    async def prep_async(self, shared: dict[str, Any]) -> None:
        self.probe.start(self.step.name)
        await asyncio.sleep(0)

    async def exec_async(self, prep_result: None) -> None:
        await asyncio.sleep(0)
        self.probe.exec(self.step.name)

    async def post_async(
        self, shared: dict[str, Any], prep_result: None, exec_result: None
    ) -> None:
        self.probe.post(self.step, shared, self.params.get("p"))


def _batch_flow(batch: Batch, start: Any, is_async: bool) -> Any:
    """The flow of ``batch``, running ``start``'s chain once per parameter set."""

    def parameter_sets() -> list[dict[str, int]]:
        return [{"p": value} for value in batch.values]

    if batch.isolated:

        class Isolated(braidflow.AsyncParallelBatchFlow):
            async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, int]]:
                return parameter_sets()

        merge = _merge_rules(batch.merge)
        return Isolated(start=start, name=batch.name, isolate=True, merge=merge)
    if is_async:

        class AsyncSets(braidflow.AsyncBatchFlow):
            async def prep_async(self, shared: dict[str, Any]) -> list[dict[str, int]]:
                return parameter_sets()

        return AsyncSets(start=start, name=batch.name)

    class Sets(braidflow.BatchFlow):
        def prep(self, shared: dict[str, Any]) -> list[dict[str, int]]:
            return parameter_sets()

    return Sets(start=start, name=batch.name)


def _merge_rules(merge: dict[str, str]) -> dict[str, Any]:
    return {key: function_rule if rule == "fn" else rule for key, rule in merge.items()}


def build_flow(program: Program, probe: Probe) -> Any:
    """``program`` as a braidflow flow whose nodes report to ``probe``."""
    flow_class = braidflow.AsyncFlow if program.is_async else braidflow.Flow
    step_class = _AsyncStep if program.is_async else _SyncStep

    def chain(items: list[Item]) -> Any:
        """The items wired one after the other; the first of them."""
        nodes: list[Any] = []
        for item in items:
            if isinstance(item, Step):
                nodes.append(step_class(item, probe))
            elif isinstance(item, SubFlow):
                nodes.append(flow_class(start=chain(item.items), name=item.name))
            elif isinstance(item, Batch):
                nodes.append(_batch_flow(item, chain(item.items), program.is_async))
            elif item.merge or item.max_concurrency:
                heads = [chain(branch) for branch in item.branches]
                merge = _merge_rules(item.merge)
                limit = item.max_concurrency
                nodes.append(
                    braidflow.Parallel(*heads, merge=merge, name=item.name, max_concurrency=limit)
                )
            elif nodes:
                nodes.append([chain(branch) for branch in item.branches])
            else:  # a list cannot start a chain (nothing to put `>>` on)
                heads = [chain(branch) for branch in item.branches]
                nodes.append(braidflow.Parallel(*heads, name=item.name))
        current = nodes[0]
        for node in nodes[1:]:
            current = current >> node
        return nodes[0]

    return flow_class(start=chain(program.items), name="main")


# ---------------------------------------------------------------- checks


def _run(program: Program, **options: Any) -> dict[str, Any]:
    """Run ``program`` from its initial ``shared`` (``options`` for ``run``)."""
    shared = copy.deepcopy(program.initial)
    build_flow(program, Probe()).run(shared, **options)
    return shared


def _outcome(program: Program, **options: Any) -> tuple[str, Any]:
    """``("ok", final shared)``, ``("conflict", key)`` or ``("error", what)``."""
    try:
        return ("ok", _run(program, **options))
    except MergeConflict as conflict:
        return ("conflict", conflict.key)
    except Exception as error:
        return ("error", f"{type(error).__name__}: {error}")


def _differences(expected: dict[str, Any], got: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {
        key: (expected.get(key, "<absent>"), got.get(key, "<absent>"))
        for key in sorted(expected.keys() | got.keys())
        if expected.get(key, "<absent>") != got.get(key, "<absent>")
    }


def check_seed(seed: int, directory: Path, *, batches: bool = False) -> list[str]:
    """Run the program of ``seed`` (see `draw_program`) plain, then durable on
    a `SQLiteStore` in ``directory`` under each durability mode, then, if it
    completes, under each mode again with one to three failures injected and
    resumed until it completes. Return what went wrong, one line a problem:
    an outcome other than `expected_outcome`'s, a finished node that ran
    again, a node that did not finish as many times as the program runs it."""
    program = draw_program(seed, batches=batches)
    expected = expected_outcome(program)
    where = f"seed {seed} ({'async' if program.is_async else 'sync'} flow)"

    def outcome_problems(label: str, got: tuple[str, Any]) -> list[str]:
        # Of several keys in conflict, which one MergeConflict names is not
        # checked: the first the join finds, which the docs leave open.
        if got[0] == expected[0] and (got[0] == "conflict" or got[1] == expected[1]):
            return []
        if got[0] == expected[0] == "ok":
            differences = _differences(expected[1], got[1])
            return [f"{where} {label}: differs (expected, got): {differences}"]
        return [f"{where} {label}: expected {expected}, got {got}"]

    problems = outcome_problems("plain run", _outcome(program))
    if problems:
        return problems
    for durability in DURABILITY_MODES:
        store = braidflow.SQLiteStore(directory / f"{seed}-{durability}.db")
        try:
            got = _outcome(program, store=store, run_id="r", durability=durability)
        finally:
            store.close()
        problems += outcome_problems(f"durable run, durability {durability!r}", got)
    if expected[0] != "ok":
        return problems
    for durability in DURABILITY_MODES:
        problems += _check_resumed(program, expected[1], directory, durability, where)
    return problems


def _check_resumed(
    program: Program, expected: dict[str, Any], directory: Path, durability: str, where: str
) -> list[str]:
    """Run ``program`` durably with failures injected once each, resuming
    after each failure; check the final ``shared`` and how often nodes ran."""
    runs = dict(step_runs(program.items))
    rng = program.rng
    failures = {}
    for _ in range(rng.choice([1, 1, 2, 3])):
        failures[rng.choice(list(runs))] = rng.choice(["exec", "post"])
    where = f"{where} durable run, durability {durability!r}, failures {failures}"
    problems = []
    finished: dict[str, int] = {}
    shared = copy.deepcopy(program.initial)
    final = None
    store = braidflow.SQLiteStore(directory / f"{program.seed}-{durability}-failures.db")
    try:
        for attempt in range(len(failures) + 2):
            probe = Probe(failures)
            flow = build_flow(program, probe)
            try:
                if attempt == 0:
                    flow.run(shared, store=store, run_id="r", durability=durability)
                    final = shared
                else:
                    final = dict(flow.resume("r", store=store, durability=durability))
            except InjectedFailure:
                pass  # resumed at the next attempt
            except Exception as error:
                problems.append(
                    f"{where}: attempt {attempt} raised {type(error).__name__}: {error}"
                )
                return problems
            failures = probe.failures
            again = {
                name: started
                for name, started in probe.started.items()
                if started > runs[name] - finished.get(name, 0)
            }
            if again:
                problems.append(f"{where}: attempt {attempt} ran finished nodes again: {again}")
            for name, count in probe.finished.items():
                finished[name] = finished.get(name, 0) + count
            if final is not None:
                break
        else:
            problems.append(f"{where}: never completed")
            return problems
    finally:
        store.close()
    if final != expected:
        problems.append(f"{where}: differs (expected, got): {_differences(expected, final)}")
    miscounted = {
        name: (finished.get(name, 0), count)
        for name, count in runs.items()
        if finished.get(name, 0) != count
    }
    if miscounted:
        problems.append(f"{where}: nodes finished (times, expected times): {miscounted}")
    return problems


def main(arguments: list[str]) -> int:
    """Check the seeds the command line gives, print each problem; exit
    status 1 if there were any."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=int, help="the first seed to check")
    parser.add_argument("last", type=int, nargs="?", help="the last seed + 1 (default first + 1)")
    parser.add_argument("--batches", action="store_true", help="programs with batch flows")
    options = parser.parse_args(arguments)
    seeds = range(options.first, options.last or options.first + 1)
    failed = 0
    with tempfile.TemporaryDirectory() as directory:
        for seed in seeds:
            problems = check_seed(seed, Path(directory), batches=options.batches)
            for problem in problems:
                print(problem, flush=True)
            failed += bool(problems)
    print(f"{len(seeds)} seeds from {seeds.start}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
