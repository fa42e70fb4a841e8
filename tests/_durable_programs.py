"""Random durable programs, and the check that every durability mode runs them alike.

`write_program(seed)` writes a small random braidflow program; `check_program`
runs it without a store and durably under "sync", "async" and "exit", fails it
once (sometimes twice) and resumes it, and says what differed.

What a program is made of, and why:

- Nodes and async nodes; batch nodes of every kind (items in threads, on the
  loop, bounded); flows and batch flows nested two deep, and isolated
  parallel batch flows (`isolate=True`, last-wins merge rules); switches and
  loops that count their turns in `shared`: the places a run records and a
  resume goes back to.
- `prep` and `post` read and change `shared` the ways code does: ints and
  strings set, lists and dicts changed in place, keys deleted and popped,
  `update` and `|=`, iteration over keys, items and a copy, values that a lax
  comparison or encoding would mix up (1, True, 1.0, -0.0, 2**53 + 1). A
  lax step records only the keys it touched; these are the changes that such
  a record can miss.
- A node's `prep` may return a list held in `shared` that its `post` appends
  to; a flow's `prep` may too (taken with `setdefault`, and no step inside
  the flow replaces it: a resume re-runs that `prep` on `shared` as the run
  left it, docs/durable.md, so a missing key or a replaced list would be a
  documented difference, not a bug).
- Some nodes ask for `durability="sync"` or retry; under "async" the rows
  are written at every step (a batch period of 0) or only at the end.

What the check compares, per program:

- Run to the end under each mode: `shared` and the work done (node posts,
  batch items and flow posts, counted by the harness) are the run without a
  store's; the stored state is that `shared`, the status "completed"; the
  modes record the same history (a parallel flow's steps in any order),
  and wherever "async" or "exit" keeps a state of a step
  (stored_state(at=N)) it is sync's.
- Failed at a point of the run without a store (a phase of a node, an item,
  a flow's prep or post), picked by the seed: the caller's `shared` is as
  without a store, the status "failed", the stored state and history as
  sync's. Resumed: `shared` is the uninterrupted run's, the work of the run
  and its resume together is the uninterrupted run's (nothing finished runs
  twice), the stored state is the result. For half the seeds the resume
  fails too, at a point of its own, and is resumed again.

Values are compared strictly (1, True and 1.0 differ) and dicts without
their key order: a resumed run keeps every key of `shared`, not their order
(docs/durable.md, "Key order"). The harness tells points apart by node,
phase, batch parameters and item, so a failure lands at the same point in
every mode whatever order threads finish in. A program sleeps only for turns
of the event loop and runs no threads inside a parallel flow: a seed gives
the same result on every run.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import braidflow as bf
from braidflow.durable import _writer

MODES = ("sync", "async", "exit")

INT_KEYS = ("i0", "i1", "i2")
STR_KEYS = ("s0", "s1")
LIST_KEYS = ("l0", "l1")
DICT_KEYS = ("d0", "d1")
DATA_KEYS = INT_KEYS + STR_KEYS + LIST_KEYS + DICT_KEYS
MIXED_KEYS = ("v0", "v1")  # keys that hold any of TRICKY_VALUES
# Values of one key that a comparison by == (or a type-blind encoding) could mix up.
TRICKY_VALUES = (
    "1",
    "True",
    "1.0",
    "0",
    "False",
    "0.0",
    "-0.0",
    "None",
    "'1'",
    "''",
    "[]",
    "{}",
    "[1]",
    "[True]",
    "[1.0]",
    "{'a': 1}",
    "{'a': True}",
    "2 ** 53 + 1",
    "'\\u00e9'",
    "[[]]",
    "[None]",
    "1e300",
)
MAX_NODES = 12  # past this many nodes, a program only adds plain nodes, to stay small


@dataclass(frozen=True)
class Program:
    """One generated program: its seed, its source, and what the check must allow for."""

    seed: int
    source: str
    # It has an isolated parallel batch flow: its sub-flows' steps are recorded
    # in the order they finish, which the modes need not share.
    parallel: bool
    # How long "async" keeps rows before writing them: 0 writes a batch at
    # every step, a long period only when the run stops.
    batch_period: float


class _ProgramWriter:
    """Writes one program's source, drawing every choice from the seed's generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.classes: list[str] = []  # class definitions
        self.wiring: list[str] = []  # the lines of build()
        self.names = 0
        self.nodes = 0
        self.parallel = False
        # Inside an isolated parallel batch flow, shared is a view (a
        # MutableMapping without copy() and |=) and items run on the loop.
        self.isolated = 0
        # Lists that an enclosing flow's prep returned: no step inside replaces them.
        self.kept_lists: frozenset[str] = frozenset()

    def new_name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    # -- changes of shared ---------------------------------------------------

    def change(self) -> list[str]:
        """The lines of one random read or change of `shared`."""
        rng = self.rng
        i, s, d = rng.choice(INT_KEYS), rng.choice(STR_KEYS), rng.choice(DICT_KEYS)
        lst = rng.choice(LIST_KEYS)
        v = rng.randint(0, 9)
        value, mixed = rng.choice(TRICKY_VALUES), rng.choice(MIXED_KEYS)
        # Keys whose list a step may replace (set anew, delete, pop).
        free = [k for k in DATA_KEYS if k not in self.kept_lists]
        free_lists = [k for k in LIST_KEYS if k not in self.kept_lists]
        gone, replaced = rng.choice(free), rng.choice(free_lists) if free_lists else None
        choices: list[tuple[int, list[str]]] = [
            (3, [f'shared["{i}"] = (shared.get("{i}", 0) + {v + 1}) % 1000']),
            (1, [f'shared.setdefault("{i}", 0)', f'shared["{i}"] += {v}']),
            (2, [f'shared["{s}"] = (shared.get("{s}", "") + "{"abcxyz"[v % 6]}")[-5:]']),
            (3, [f'shared.setdefault("{lst}", []).append({v})']),
            (
                2,
                [
                    f'_x = shared.get("{lst}")',
                    "if type(_x) is list and len(_x) < 12:",
                    f"    _x.append({v})",
                ],
            ),
            (1, [f'if shared.get("{lst}"):', f'    shared["{lst}"].pop(0)']),
            (1, [f'if "{lst}" in shared:', f'    shared["{lst}"] += [{v}]']),
            (2, [f'shared.setdefault("{d}", {{}})["k{v}"] = {v}']),
            (2, [f'shared.setdefault("{d}", {{}}).setdefault("sub", []).append({v})']),
            (1, [f'_x = shared.get("{d}")', "if _x:", "    _x.pop(sorted(_x)[0])"]),
            (2, [f'if "{gone}" in shared:', f'    del shared["{gone}"]']),
            (2, [f'shared.pop("{gone}", None)']),
            (1, [f'shared.update({{"{i}": {v}, "{s}": "u{v}"}})']),
            (1, [f"shared.update({i}={v})"]),
            (1, ['shared["ks"] = sorted(k for k in shared if k != "ks")[:4]']),
            (
                1,
                ['shared["tot"] = sum(v for v in dict(shared).values() if type(v) is int) % 10007'],
            ),
            (
                1,
                [
                    "for _k, _v in shared.items():",
                    "    if type(_v) is list and len(_v) < 8:",
                    "        _v.append(len(_k))",
                ],
            ),
            (
                1,
                [
                    "for _v in dict(shared).values():",
                    "    if type(_v) is dict:",
                    '        _v["n"] = _v.get("n", 0) + 1',
                ],
            ),
            (
                1,
                [
                    "for _k in list(shared):",
                    '    if _k.startswith("s"):',
                    "        shared[_k] = shared[_k][:2]",
                ],
            ),
            (1, ['shared["n"] = len(shared)']),
            (1, [f'shared.setdefault("{lst}", []).append(self.params.get("k", -1))']),
            (2, [f'shared["{mixed}"] = {value}']),
            (
                1,
                [
                    f'_x = shared.setdefault("{lst}", [])',
                    "if _x:",
                    f"    _x[0] = {value}",
                    "else:",
                    f"    _x.append({value})",
                ],
            ),
            (1, [f'shared.setdefault("{d}", {{}})["t"] = {value}']),
        ]
        if replaced is not None:
            choices.append((1, [f'shared["{replaced}"] = shared.get("{replaced}", [])[-3:]']))
        if not self.isolated:
            if replaced is not None:
                choices.append((1, [f'shared |= {{"{replaced}": [{v}], "{d}": {{"z": {v}}}}}']))
            choices += [
                (
                    1,
                    [
                        "_c = shared.copy()",
                        f'if type(_c.get("{lst}")) is list:',
                        f'    _c["{lst}"].append({v})',
                    ],
                ),
                (
                    1,
                    [
                        "_c = shared | {}",
                        f'if type(_c.get("{d}")) is dict:',
                        f'    _c["{d}"]["c"] = {v}',
                    ],
                ),
            ]
        weights = [weight for weight, _ in choices]
        return rng.choices([lines for _, lines in choices], weights)[0]

    def changes(self, most: int) -> list[str]:
        lines: list[str] = []
        for _ in range(self.rng.randint(0, most)):
            lines += self.change()
        return lines

    # -- nodes ----------------------------------------------------------------

    @staticmethod
    def body(*parts: list[str]) -> str:
        """A method's body: the lines of `parts`, one after the other."""
        return "".join(f"        {line}\n" for lines in parts for line in lines)

    def yield_to_loop(self, is_async: bool) -> list[str]:
        """Sometimes a turn of the event loop, where other tasks and the writer run."""
        return ["await asyncio.sleep(0)"] if is_async and self.rng.random() < 0.5 else []

    def plain_node(self, is_async: bool, action: list[str] | None = None) -> str:
        """A Node or AsyncNode whose post returns `action` (None if not given)."""
        rng = self.rng
        name = self.new_name("n")
        self.nodes += 1
        run_async, suffix = ("async ", "_async") if is_async else ("", "")
        returns_list = rng.random() < 0.25
        if returns_list:
            prep_result = f'shared.get("{rng.choice(LIST_KEYS)}")'
        else:
            prep_result = rng.choice(
                ['shared.get("i0", 0)', 'shared.get("s0", "")', "len(shared)", "None"]
            )
        post = self.changes(3)
        if returns_list and rng.random() < 0.7:  # changes a list of shared in place
            post += [
                "if type(exec_res) is list and len(exec_res) < 12:",
                f"    exec_res.append({rng.randint(10, 19)})",
            ]
        if rng.random() < 0.3:
            post.append(
                f'shared["r_{name}"] = exec_res if type(exec_res) is not list else len(exec_res)'
            )
        self.classes.append(
            f"class {name.upper()}(bf.{'AsyncNode' if is_async else 'Node'}):\n"
            f"    {run_async}def prep{suffix}(self, shared):\n"
            + self.body(
                self.yield_to_loop(is_async),
                [f'H.hit("{name}", "prep", self.params)'],
                self.changes(2),
                [f"return {prep_result}"],
            )
            + f"    {run_async}def exec{suffix}(self, prep_res):\n"
            + self.body(
                [f'H.hit("{name}", "exec", self.params)'],
                self.yield_to_loop(is_async),
                ["return prep_res"],
            )
            + f"    {run_async}def post{suffix}(self, shared, prep_res, exec_res):\n"
            + self.body(
                [f'H.hit("{name}", "post", self.params)'],
                self.yield_to_loop(is_async),
                post,
                [f'H.hit("{name}", "postend", self.params)', f'H.done("{name}", "post")'],
                action or ["return None"],
            )
        )
        options = [f'name="{name}"']
        if rng.random() < 0.15:
            options.append("max_retries=2")
        if rng.random() < 0.1:
            options.append('durability="sync"')
        self.wiring.append(f"{name} = {name.upper()}({', '.join(options)})")
        return name

    def batch_node(self, is_async: bool) -> str:
        rng = self.rng
        name = self.new_name("b")
        self.nodes += 1
        if is_async:
            kind = rng.choice(
                ["AsyncBatchNode", "AsyncParallelBatchNode", "AsyncParallelBatchNode"]
            )
        else:
            kind = "BatchNode"
            # Threads finish in any order: in a parallel flow that would
            # change which sub-flow finishes first from one run to the next.
            if not self.isolated and rng.random() < 0.2:
                kind = "ParallelBatchNode"
        run_async, suffix = ("async ", "_async") if is_async else ("", "")
        count = rng.randint(0, 4)
        if rng.random() < 0.5:
            items = f'[[_i, (shared.get("i0", 0) + _i) % 7] for _i in range({count})]'
        else:
            items = f'[[_i, "{rng.choice("pqr")}" * (_i + 1)] for _i in range({count})]'
        turns = rng.randint(1, 3)
        post = rng.choice(
            [
                [f'shared["r_{name}"] = exec_res'],
                [f'shared.setdefault("{rng.choice(LIST_KEYS)}", []).extend(exec_res)'],
                [
                    f'shared["{rng.choice(INT_KEYS)}"] = (shared.get("i1", 0)'
                    " + sum(x for x in exec_res if type(x) is int)) % 1000"
                ],
                [
                    f'shared["{rng.choice(STR_KEYS)}"]'
                    ' = "".join(x for x in exec_res if type(x) is str)[-6:]'
                ],
            ]
        )
        # Async items take different numbers of turns of the loop, so they finish out of order.
        item_turns = [f"for _ in range((item[0] * {turns}) % 3):", "    await asyncio.sleep(0)"]
        self.classes.append(
            f"class {name.upper()}(bf.{kind}):\n"
            f"    {run_async}def prep{suffix}(self, shared):\n"
            + self.body(
                [f'H.hit("{name}", "prep", self.params)'],
                self.changes(2),
                self.yield_to_loop(is_async),
                [f"return {items}"],
            )
            + f"    {run_async}def exec{suffix}(self, item):\n"
            + self.body(
                item_turns if is_async else [],
                [f'H.hit("{name}", "item", self.params, item[0])'],
                self.yield_to_loop(is_async),
                [
                    "result = item[1] * 2 if type(item[1]) is int else item[1] + '!'",
                    f'H.done("{name}", "item")',
                    "return result",
                ],
            )
            + f"    {run_async}def post{suffix}(self, shared, prep_res, exec_res):\n"
            + self.body(
                [f'H.hit("{name}", "post", self.params)'],
                self.changes(2),
                post,
                [
                    f'H.hit("{name}", "postend", self.params)',
                    f'H.done("{name}", "post")',
                    "return None",
                ],
            )
        )
        options = [f'name="{name}"']
        if "Parallel" in kind and rng.random() < 0.5:
            options.append(f"max_concurrency={rng.randint(1, 3)}")
        if rng.random() < 0.1:
            options.append('durability="sync"')
        self.wiring.append(f"{name} = {name.upper()}({', '.join(options)})")
        return name

    def switch_node(self, is_async: bool) -> str:
        """A node whose post takes action "a" or "b" by an int of shared."""
        key = self.rng.choice(INT_KEYS)
        return self.plain_node(is_async, [f'return "a" if shared.get("{key}", 0) % 2 else "b"'])

    def loop_node(self, is_async: bool, turns: int) -> str:
        """A node whose post takes action "again" until it has run `turns` times."""
        counter = self.new_name("_c")
        return self.plain_node(
            is_async,
            [
                f'_n = shared.get("{counter}", 0) + 1',
                f'shared["{counter}"] = _n',
                f'return "again" if _n < {turns} else None',
            ],
        )

    def flow(self, parent_async: bool, depth: int) -> str:
        """A sub-flow: Flow, BatchFlow, their async kinds, or an isolated
        AsyncParallelBatchFlow, around a random segment of its own."""
        rng = self.rng
        name = self.new_name("f")
        is_async = parent_async and rng.random() < 0.6
        if is_async:
            kind = rng.choice(["AsyncFlow", "AsyncBatchFlow", "AsyncParallelBatchFlow"])
        else:
            kind = rng.choice(["Flow", "BatchFlow"])
        parallel = kind == "AsyncParallelBatchFlow"
        self.parallel |= parallel
        kept_list = None
        if "Batch" in kind:
            # Each set names its flow too: the sets of nested batch flows stay told apart.
            prep_result = f'[{{"k": _j, "{name}": _j}} for _j in range({rng.randint(0, 3)})]'
        elif rng.random() < 0.3:
            kept_list = rng.choice(LIST_KEYS)
            prep_result = f'shared.setdefault("{kept_list}", [])'
        else:
            prep_result = "None"
        outer_isolated, outer_kept = self.isolated, self.kept_lists
        self.isolated += parallel
        if kept_list is not None:
            self.kept_lists |= {kept_list}
        entry, _ = self.segment(is_async, depth + 1, rng.randint(1, 3))
        self.isolated, self.kept_lists = outer_isolated, outer_kept
        prep = [*self.changes(2), f'H.hit("{name}", "fprep", self.params)', f"return {prep_result}"]
        post = self.changes(2)
        if kept_list is not None:  # changes the list of shared that prep returned, in place
            post += ["if len(prep_res) < 12:", "    prep_res.append(77)"]
        post += [
            f'H.hit("{name}", "fpost", self.params)',
            f'H.done("{name}", "fpost")',
            "return None",
        ]
        run_async, suffix = ("async ", "_async") if is_async else ("", "")
        self.classes.append(
            f"class {name.upper()}(bf.{kind}):\n"
            f"    {run_async}def prep{suffix}(self, shared):\n"
            + self.body(prep)
            + f"    {run_async}def post{suffix}(self, shared, prep_res, exec_res):\n"
            + self.body(post)
        )
        options = [f"start={entry}", f'name="{name}"']
        if parallel:
            options += ["isolate=True", 'merge=dict.fromkeys(MERGED_KEYS, "last")']
        self.wiring.append(f"{name} = {name.upper()}({', '.join(options)})")
        return name

    # -- the graph --------------------------------------------------------------

    def wire(self, exits: list[tuple[str, str | None]], target: str) -> None:
        for node, action in exits:
            if action is None:
                self.wiring.append(f"{node} >> {target}")
            else:
                self.wiring.append(f'{node} - "{action}" >> {target}')

    def unit(self, is_async: bool, depth: int) -> tuple[str, list[tuple[str, str | None]]]:
        """One node, sub-flow, switch with two branches, or loop; its entry
        and its exits (node, action)."""
        rng = self.rng
        pick = rng.random() if self.nodes <= MAX_NODES else 0.0
        node_async = is_async and rng.random() < 0.6
        if pick < 0.35:
            node = self.plain_node(node_async)
            return node, [(node, None)]
        if pick < 0.55:
            node = self.batch_node(node_async)
            return node, [(node, None)]
        if pick < 0.72 and depth < 2:
            node = self.flow(is_async, depth)
            return node, [(node, None)]
        if pick < 0.86 and depth < 3:
            switch = self.switch_node(node_async)
            entry_a, exits_a = self.segment(is_async, depth + 1, rng.randint(1, 2))
            entry_b, exits_b = self.segment(is_async, depth + 1, rng.randint(1, 2))
            self.wire([(switch, "a")], entry_a)
            self.wire([(switch, "b")], entry_b)
            return switch, exits_a + exits_b
        if depth < 3:
            entry, exits = self.segment(is_async, depth + 1, rng.randint(1, 2))
            loop = self.loop_node(node_async, rng.randint(1, 3))
            self.wire(exits, loop)
            self.wire([(loop, "again")], entry)
            return entry, [(loop, None)]
        node = self.plain_node(node_async)
        return node, [(node, None)]

    def segment(
        self, is_async: bool, depth: int, length: int
    ) -> tuple[str, list[tuple[str, str | None]]]:
        """`length` units one after the other."""
        entry, exits = self.unit(is_async, depth)
        for _ in range(length - 1):
            next_entry, next_exits = self.unit(is_async, depth)
            self.wire(exits, next_entry)
            exits = next_exits
        return entry, exits

    def program(self, seed: int) -> Program:
        rng = self.rng
        is_async = rng.random() < 0.55
        top_kind = rng.choice(["Flow", "Flow", "Flow", "BatchFlow"])
        if is_async:
            top_kind = "Async" + top_kind
        entry, _ = self.segment(is_async, 0, rng.randint(1, 4))
        top_sets = f'[{{"k": _j, "top": _j}} for _j in range({rng.randint(1, 3)})]'
        run_async, suffix = ("async ", "_async") if is_async else ("", "")
        self.classes.append(
            f"class TOP(bf.{top_kind}):\n"
            f"    {run_async}def prep{suffix}(self, shared):\n"
            + self.body(self.changes(2), [f"return {top_sets if 'Batch' in top_kind else None}"])
            + f"    {run_async}def post{suffix}(self, shared, prep_res, exec_res):\n"
            + self.body(self.changes(2), ['H.hit("top", "fpost", self.params)', "return None"])
        )
        init: dict[str, Any] = {"i0": rng.randint(0, 5), "s0": "a", "l0": [1, 2], "d0": {"x": 1}}
        for key in rng.sample(["i1", "s1", "l1", "d1"], rng.randint(0, 3)):
            init[key] = {"i": 3, "s": "bb", "l": [5], "d": {"y": [1]}}[key[0]]
        entry_point = rng.choice(["run", "run_async"]) if is_async else "run"
        batch_period = rng.choice([0.0, 3600.0])
        count = self.names + 1
        merged = [*DATA_KEYS, "ks", "tot", "n", *MIXED_KEYS]
        merged += [f"{prefix}{j}" for prefix in ("r_n", "r_b", "_c") for j in range(count)]
        source = (
            "import asyncio\n\nimport braidflow as bf\n\n"
            "# H, the harness: H.hit(node, phase, params, item=None) raises the failure\n"
            "# injected there, if any; H.done(node, phase) counts finished work.\n\n"
            + (
                "# What an isolated flow's sub-flows write, merged: the last to finish wins.\n"
                f"MERGED_KEYS = {merged!r}\n\n\n"
                if self.parallel
                else "\n"
            )
            + "\n\n".join(self.classes)
            + "\n\ndef build():\n"
            + "".join(f"    {line}\n" for line in self.wiring)
            + f'    return TOP(start={entry}, name="top")\n\n\n'
            + f"INIT = {init!r}\nENTRY = {entry_point!r}\n"
            + f'BATCH_PERIOD = {batch_period!r}  # how long "async" keeps rows unwritten\n'
        )
        return Program(seed, source, self.parallel, batch_period)


def write_program(seed: int) -> Program:
    """The program of `seed`: the same source every time."""
    return _ProgramWriter(seed).program(seed)


# ----------------------------------------------------------------------------
# Running a program
# ----------------------------------------------------------------------------


class Injected(Exception):
    """The failure the harness raises at its chosen point."""


class Point(NamedTuple):
    """A point of a run: a node's phase, in one parameter set and item, at one visit."""

    node: str
    phase: str
    params: tuple[tuple[str, Any], ...]
    item: int | None
    visit: int

    def __str__(self) -> str:
        params = ",".join(f"{key}={value}" for key, value in self.params)
        where = f"[{params}]" if params else ""
        item = "" if self.item is None else f" item {self.item}"
        return f"{self.node}.{self.phase}{where}{item}#{self.visit}"


class Harness:
    """What a program reports as it runs: the points it passes (`hit`) and
    the work it finishes (`done`). Items in threads call it at once, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self, fail_at: Point | None = None, *, trace: bool = False) -> None:
        self.fail_at = fail_at
        self.fired = False
        self.visits: dict[tuple[Any, ...], int] = {}
        self.counts: dict[str, int] = {}
        self.trace: list[Point] | None = [] if trace else None

    def hit(self, node: str, phase: str, params: dict[str, Any], item: int | None = None) -> None:
        """Raise `Injected` if this is the point to fail at."""
        where = (node, phase, tuple(sorted(params.items())), item)
        with self._lock:
            visit = self.visits[where] = self.visits.get(where, 0) + 1
            point = Point(*where, visit)
            if self.trace is not None:
                self.trace.append(point)
            if self.fired or point != self.fail_at:
                return
            self.fired = True
        raise Injected(f"injected at {point}")

    def done(self, node: str, phase: str) -> None:
        """Count a finished piece of work: a post, a batch item."""
        with self._lock:
            key = f"{node}.{phase}"
            self.counts[key] = self.counts.get(key, 0) + 1


@dataclass
class Outcome:
    """How a run (or resume) ended: `shared` as it left it (a resume's result)."""

    shared: dict[str, Any] | None
    error: Exception | None
    counts: dict[str, int]
    failed_as_asked: bool  # the harness raised the failure it was given
    trace: list[Point]  # the points passed, when asked for


def injected_in(error: BaseException | None) -> bool:
    """`error` is, or groups, the injected failure."""
    if isinstance(error, Injected):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(injected_in(inner) for inner in error.exceptions)
    return False


def brief(error: BaseException | None) -> str:
    """An error's type and the first line of its message."""
    if error is None:
        return "nothing"
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0][:150] if lines else ''}"


# ----------------------------------------------------------------------------
# Comparing
# ----------------------------------------------------------------------------


def _strict(value: Any) -> tuple[str, Any]:
    """A form of `value` that tells 1, 1.0 and True apart, without dict key order."""
    if isinstance(value, dict):
        return ("dict", sorted((repr(key), _strict(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_strict(item) for item in value])
    return (type(value).__name__, repr(value))


def differ(a: Any, b: Any) -> bool:
    """`a` and `b` differ in a value or a type, anywhere."""
    return _strict(a) != _strict(b)


def diff(got: Any, want: Any) -> str:
    """The keys where two `shared` dicts differ, with both values."""
    if not isinstance(got, dict) or not isinstance(want, dict):
        return f"{got!r} != {want!r}"[:300]
    parts = [
        f"{key}: {got.get(key, '<absent>')!r} vs {want.get(key, '<absent>')!r}"
        for key in sorted(set(got) | set(want))
        if differ(got.get(key, "<absent>"), want.get(key, "<absent>"))
    ]
    return "; ".join(parts)[:300]


def add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in set(a) | set(b)}


def counts_diff(got: dict[str, int], want: dict[str, int]) -> str:
    return ", ".join(
        f"{key} {got.get(key, 0)} (want {want.get(key, 0)})"
        for key in sorted(set(got) | set(want))
        if got.get(key, 0) != want.get(key, 0)
    )[:300]


# ----------------------------------------------------------------------------
# The check
# ----------------------------------------------------------------------------


class _Check:
    """Runs one program every way and collects what differed."""

    reference: Outcome  # the run without a store, with its trace

    def __init__(self, program: Program, directory: Path) -> None:
        self.program = program
        self.directory = directory
        self.harness = Harness()
        # Run from a file, as user code is: braidflow reads a node's source in
        # places (the keys its prep and post use, where a message points).
        path = directory / f"program_{program.seed}.py"
        path.write_text(program.source)
        self.namespace: dict[str, Any] = {"H": self.harness, "__name__": f"program_{program.seed}"}
        exec(compile(program.source, str(path), "exec"), self.namespace)
        self.stores: list[bf.SQLiteStore] = []
        self.mismatches: list[str] = []

    def report(self, what: str) -> None:
        self.mismatches.append(what if len(what) <= 400 else what[:397] + "...")

    def new_store(self) -> bf.SQLiteStore:
        store = bf.SQLiteStore(self.directory / f"runs{len(self.stores)}.db")
        self.stores.append(store)
        return store

    def _drive(self, start: Callable[[Any], Any]) -> tuple[Any, Exception | None]:
        """Build the program's flow and call `start(flow)`, on a new event loop if
        it gives a coroutine: its result, or the error it raised."""
        flow = self.namespace["build"]()
        try:
            result = start(flow)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        except Exception as error:  # the run's failure is what is compared
            return None, error
        return result, None

    def run(
        self,
        durability: str | None,
        store: bf.SQLiteStore | None = None,
        run_id: str = "run",
        fail_at: Point | None = None,
        *,
        trace: bool = False,
    ) -> Outcome:
        """Run the program from its INIT (without a store if `durability` is None)."""
        self.harness.reset(fail_at, trace=trace)
        shared = copy.deepcopy(self.namespace["INIT"])
        options: dict[str, Any] = {}
        if durability is not None:
            options = {"store": store, "run_id": run_id, "durability": durability}
        entry = self.namespace["ENTRY"]
        _, error = self._drive(lambda flow: getattr(flow, entry)(shared, **options))
        return self._outcome(shared, error)

    def resume(
        self,
        durability: str,
        store: bf.SQLiteStore,
        run_id: str,
        fail_at: Point | None = None,
        *,
        trace: bool = False,
    ) -> Outcome:
        self.harness.reset(fail_at, trace=trace)
        method = "resume_async" if self.namespace["ENTRY"] == "run_async" else "resume"
        shared, error = self._drive(
            lambda flow: getattr(flow, method)(run_id, store=store, durability=durability)
        )
        return self._outcome(shared, error)

    def _outcome(self, shared: dict[str, Any] | None, error: Exception | None) -> Outcome:
        harness = self.harness
        return Outcome(shared, error, dict(harness.counts), harness.fired, harness.trace or [])

    def history(self, store: bf.SQLiteStore, run_id: str) -> list[tuple[Any, ...]]:
        return [(s.path, s.kind, s.action, s.status) for s in bf.history(run_id, store=store)]

    def same_paths(self, a: list[Any], b: list[Any]) -> bool:
        return a == b if not self.program.parallel else sorted(a) == sorted(b)

    def compare_states(
        self, store: bf.SQLiteStore, sync_store: bf.SQLiteStore, run_id: str, label: str
    ) -> None:
        """Wherever a lax mode's run (in `store`) has a state, sync's run of
        the same steps has the same state (stored_state(at=N))."""
        for at in range(len(bf.history(run_id, store=store)) + 1):
            try:
                state = bf.stored_state(run_id, store=store, at=at)
            except bf.ResumeError:
                continue  # a lax mode keeps no state at this step
            try:
                want = bf.stored_state(run_id, store=sync_store, at=at)
            except bf.ResumeError:
                self.report(f"{label}: stored_state(at={at}), sync has none there")
                return
            if differ(state, want):
                self.report(f"{label}: stored_state(at={at}) != sync's: {diff(state, want)}")
                return

    def check_stored_end(
        self, store: bf.SQLiteStore, run_id: str, shared: Any, status: str, label: str
    ) -> bool:
        """The store's last state is `shared` and the run's status `status`."""
        try:
            state = bf.stored_state(run_id, store=store)
            stored_status = store.get(run_id).status
        except Exception as error:  # reported, and the rest of the check goes on
            self.report(f"{label}: reading the stored run raised {brief(error)}")
            return False
        if differ(state, shared):
            self.report(f"{label}: stored_state != the run's shared: {diff(state, shared)}")
        if stored_status != status:
            self.report(f"{label}: status {stored_status}, not {status}")
        return True

    def check(self) -> list[str]:
        try:
            self.reference = self.run(None, trace=True)
            if self.reference.error is not None:
                self.report(f"the run without a store raised {brief(self.reference.error)}")
                return self.mismatches
            self.check_uninterrupted()
            self.check_failure()
        except Exception:  # a run that cannot be read, say: reported with the program
            self.mismatches.append(f"the check stopped:\n{traceback.format_exc()}")
        finally:
            for store in self.stores:
                store.close()
        return self.mismatches

    def check_uninterrupted(self) -> None:
        """Each mode ends as the run without a store, and records the same steps."""
        reference = self.reference
        histories, stores = {}, {}
        for mode in MODES:
            store = self.new_store()
            outcome = self.run(mode, store)
            if outcome.error is not None:
                self.report(f"[{mode}] the run raised {brief(outcome.error)}")
                continue
            if differ(outcome.shared, reference.shared):
                self.report(
                    f"[{mode}] shared != the run without a store's: "
                    f"{diff(outcome.shared, reference.shared)}"
                )
            if outcome.counts != reference.counts:
                self.report(
                    f"[{mode}] work done != the run without a store's: "
                    f"{counts_diff(outcome.counts, reference.counts)}"
                )
            if self.check_stored_end(store, "run", outcome.shared, "completed", f"[{mode}] run"):
                histories[mode], stores[mode] = self.history(store, "run"), store
        if len(histories) < len(MODES):
            return
        paths = {mode: [step[0] for step in histories[mode]] for mode in MODES}
        if not all(self.same_paths(paths[mode], paths["sync"]) for mode in MODES):
            self.report(f"history paths differ: {paths}")
        elif not self.program.parallel:
            if not all(histories[mode] == histories["sync"] for mode in MODES):
                self.report(f"history kinds, actions or statuses differ: {histories}")
            else:
                for mode in ("async", "exit"):
                    self.compare_states(stores[mode], stores["sync"], "run", f"[{mode}] run")

    def check_failure(self) -> None:
        """A failure at a point of the run (and for half the seeds another in
        its resume): each mode leaves what sync leaves, and the resume ends as
        an uninterrupted run without redoing finished work."""
        chooser = random.Random(f"{self.program.seed} fail at")
        fail_at = chooser.choice(self.reference.trace)
        fail_in_resume = chooser.random() < 0.5
        unstored = self.run(None, fail_at=fail_at)
        if not unstored.failed_as_asked:
            return
        label = f"failure at {fail_at}"
        failed: dict[str, tuple[bf.SQLiteStore, Outcome]] = {}
        for mode in MODES:
            store = self.new_store()
            outcome = self.run(mode, store, "failed", fail_at)
            if self.check_failed_run(mode, store, outcome, unstored, label):
                failed[mode] = store, outcome
        if len(failed) == len(MODES):  # before their resumes write on
            self.compare_failed_runs({mode: store for mode, (store, _) in failed.items()}, label)
        resumed_paths = {}
        for mode, (store, outcome) in failed.items():
            paths = self.check_resume(mode, store, "failed", label, outcome.counts)
            if paths is not None:
                resumed_paths[mode] = paths
            if fail_in_resume:
                self.check_failure_in_resume(mode, fail_at, label)
        if len(resumed_paths) == len(MODES):
            for mode in ("async", "exit"):
                if not self.same_paths(resumed_paths[mode], resumed_paths["sync"]):
                    self.report(
                        f"[{mode}] {label}: resumed history paths != sync's: "
                        f"{resumed_paths[mode]} vs {resumed_paths['sync']}"
                    )

    def check_failed_run(
        self, mode: str, store: bf.SQLiteStore, failed: Outcome, unstored: Outcome, label: str
    ) -> bool:
        """The run failed as the run without a store did, and is stored as
        failed: whether it is one to resume."""
        if not failed.failed_as_asked:
            self.report(f"[{mode}] {label} not reached (the run without a store reached it)")
            return False
        if (failed.error is None) != (unstored.error is None):
            self.report(
                f"[{mode}] {label}: the run raised {brief(failed.error)}, "
                f"without a store {brief(unstored.error)}"
            )
            return False
        if differ(failed.shared, unstored.shared):
            self.report(
                f"[{mode}] {label}: the caller's shared != without a store: "
                f"{diff(failed.shared, unstored.shared)}"
            )
        if failed.error is None:  # retried away: a completed run
            if failed.counts != self.reference.counts:
                self.report(
                    f"[{mode}] {label} retried: work done != uninterrupted: "
                    f"{counts_diff(failed.counts, self.reference.counts)}"
                )
            return False
        if not injected_in(failed.error):
            self.report(f"[{mode}] {label}: the run raised {brief(failed.error)}")
        try:
            status = store.get("failed").status
        except Exception as error:  # reported, and the rest of the check goes on
            self.report(f"[{mode}] {label}: reading the stored run raised {brief(error)}")
            return False
        if status != "failed":
            self.report(f"[{mode}] {label}: status {status}")
        return True

    def compare_failed_runs(self, stores: dict[str, bf.SQLiteStore], label: str) -> None:
        """The lax modes' failed runs store sync's state and history."""
        states = {mode: bf.stored_state("failed", store=stores[mode]) for mode in MODES}
        histories = {
            mode: [(step[0], step[3]) for step in self.history(stores[mode], "failed")]
            for mode in MODES
        }
        for mode in ("async", "exit"):
            if differ(states[mode], states["sync"]):
                self.report(
                    f"[{mode}] {label}: stored_state != sync's: "
                    f"{diff(states[mode], states['sync'])}"
                )
            if self.program.parallel:
                continue
            if histories[mode] != histories["sync"]:
                self.report(
                    f"[{mode}] {label}: history != sync's: {histories[mode]} vs {histories['sync']}"
                )
            else:
                label_run = f"[{mode}] run with {label}"
                self.compare_states(stores[mode], stores["sync"], "failed", label_run)

    def check_resume(
        self, mode: str, store: bf.SQLiteStore, run_id: str, label: str, counts: dict[str, int]
    ) -> list[Any] | None:
        """Resume a failed run (whose runs did `counts` of work): it ends as
        the uninterrupted run, and no finished work runs again. Its history paths."""
        resumed = self.resume(mode, store, run_id)
        if resumed.error is not None:
            self.report(f"[{mode}] resuming after {label} raised {brief(resumed.error)}")
            return None
        if differ(resumed.shared, self.reference.shared):
            self.report(
                f"[{mode}] {label}: resumed shared != uninterrupted: "
                f"{diff(resumed.shared, self.reference.shared)}"
            )
        total = add_counts(counts, resumed.counts)
        if total != self.reference.counts:
            self.report(
                f"[{mode}] {label}: work done by the run and its resume != uninterrupted: "
                f"{counts_diff(total, self.reference.counts)}"
            )
        label = f"[{mode}] resumed after {label}"
        if not self.check_stored_end(store, run_id, resumed.shared, "completed", label):
            return None
        return [step[0] for step in self.history(store, run_id)]

    def check_failure_in_resume(self, mode: str, fail_at: Point, label: str) -> None:
        """Fail the run at `fail_at`, then its resume at one of the resume's
        own points (found by resuming a twin run), then resume again."""
        twin = self.new_store()
        self.run(mode, twin, "twin", fail_at)
        points = self.resume(mode, twin, "twin", trace=True).trace
        if not points:
            return
        chooser = random.Random(f"{self.program.seed} {mode} fail again at")
        fail_again_at = chooser.choice(points)
        store = self.new_store()
        failed = self.run(mode, store, "again", fail_at)
        resumed = self.resume(mode, store, "again", fail_again_at)
        if not resumed.failed_as_asked or resumed.error is None:
            return  # not reached, or retried away
        label = f"{label}, then at {fail_again_at} in the resume"
        if not injected_in(resumed.error):
            self.report(f"[{mode}] resume with {label} raised {brief(resumed.error)}")
            return
        self.check_resume(mode, store, "again", label, add_counts(failed.counts, resumed.counts))


def check_program(program: Program, directory: Path) -> list[str]:
    """Run `program` without a store and under every durability mode, with
    failures and resumes, its stores in `directory`; what differed, one line each."""
    with mock.patch.object(_writer, "PERIOD", program.batch_period):
        return _Check(program, directory).check()
