"""Looking into a stored run: its steps in order, and ``shared`` after any of them.

Everything here reads what the store already keeps (`Store.read`) and
changes nothing, so it works on a run that is going on in another process,
on one killed by SIGKILL, and on one that ended. A run's steps are its
checkpoint rows in the order they were written (a sub-flow's steps come
before the step of the sub-flow itself, which ends after them); a run that
has not completed ends with the step it is at (or stopped at), found by
following the recorded graph from the last finished step of each walk.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .._errors import ResumeError
from ..stores._base import Checkpoint, RunRecord, Store, row_path, step_path
from ._codec import Codec
from ._graph import Walks, walks_of
from ._lax import expand
from ._recorded import POST, PREP, folded
from ._run_codec import SERIALIZER_KEY, run_codec, undecodable

__all__ = [
    "FORKED_KEY",
    "RENAMED_KEY",
    "BUDGET_KEY",
    "EVENTS_KEY",
    "RESUMED_KEY",
    "SERIALIZER_KEY",
    "USAGE_KEY",
    "StepRecord",
    "StoredRun",
    "renamed_key",
    "step_key",
]

# The keys of a run's metadata where braidflow keeps its history's facts.
BUDGET_KEY = "braidflow.waits_for_budget"  # True while its budget keeps the run waiting
USAGE_KEY = "braidflow.usage"  # what the run's calls used (a Usage.as_dict()), kept at its end
RESUMED_KEY = "braidflow.resumed"  # when each resume of the run began
FORKED_KEY = "braidflow.forked_from"  # {"run", "step", "rows"}: what a fork copied
RENAMED_KEY = "braidflow.renamed"  # {old: new}: nodes renamed when resuming
EVENTS_KEY = "braidflow.record_events"  # True: its events are kept, resumes keep them too
# (and SERIALIZER_KEY, "braidflow.serializer": "pickle" for a run written with pickle)

_KINDS = {"step": "step", "view_step": "branch step", "branch": "branch", "update": "update"}


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step of a stored run, as `Flow.history` gives it.

    Attributes:
        number: Its place in the run's history, from 1: what ``at=`` takes
            (``at=0`` is the state the run started with).
        path: Where it ran, as names, inside the run's flow: ``job/review``.
        key: Where it ran, exactly: ``/0:job/2:review`` (each name after its
            place in its walk).
        kind: ``step`` (a node of a walk), ``branch step`` (a node inside
            a branch, working on the branch's view of ``shared``),
            ``branch`` (a branch that finished) or ``update`` (``shared``
            changed between steps: a fork's update, a resume's migration).
        node: The node's name.
        node_class: Its class's name, as recorded (``""`` if unknown).
        status: ``finished``; for the step a run has not finished,
            ``running`` (its process runs it), ``interrupted`` (the process
            is gone: killed, or stopped), ``failed``, ``waiting`` (at
            an ``interrupt``, for input) or ``drained`` (stopped there on
            purpose, by `braidflow.drain`).
        action: The action it returned (a finished step).
        started: When it began (seconds since the epoch), if known.
        ended: When it ended, if it did and that is known.
        changed: The keys of ``shared`` (of the branch's view, for a branch
            step) it changed.
        items_done: For a batch: how many of its items had finished.
        items_total: For a batch: how many items it has, if known.
        run_id: The run it ran in: the run's own id, or for the steps a
            fork copied, the id of the run it was forked from.
        part: Which part of the run it ran in: 0 the first, 1 the first
            resume, and so on.
        error: For a failed step: the error, as the store keeps it.
    """

    number: int
    path: str
    key: str
    kind: str
    node: str
    node_class: str
    status: str
    action: Any = None
    started: float | None = None
    ended: float | None = None
    changed: tuple[Any, ...] = ()
    items_done: int | None = None
    items_total: int | None = None
    run_id: str = ""
    part: int = 0
    error: str | None = None


def step_key(row: Checkpoint) -> str:
    """The key of the step (or branch) a checkpoint row records."""
    if row.kind == "branch":
        return f"{row.frame}/b{row.position}:{row.node}"
    if row.kind == "update":
        return row.frame
    if not row.frame:  # the step of a node run alone: the run's own key, 0:name
        return f"{row.position}:{row.node}"
    return f"{row.frame}/{row.position}:{row.node}"


class StoredRun:
    """One run as a store keeps it, read once: its record, graph, initial
    state and checkpoint rows, with its history and its state at any step."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        read = getattr(store, "read", None)
        if not callable(read):
            raise ResumeError(
                f"{store!r} cannot show a run without taking it over: it has no read() method; "
                "add one (see 'Writing a store' in the durable runs docs)"
            )
        record, graph, initial, rows = read(run_id)
        rows = expand(rows)
        self.record: RunRecord = record
        self.graph: str = graph
        self.initial: bytes = initial
        self.rows: list[Checkpoint] = rows
        metadata = record.metadata
        self._resumes = sorted(float(at) for at in metadata.get(RESUMED_KEY, ()))
        forked = metadata.get(FORKED_KEY)
        self._forked = forked if isinstance(forked, dict) else None
        self._inherited = int(forked["rows"]) if self._forked is not None else 0
        # One pass over the rows, decoding no payload: the rows of the steps
        # (by number - 1), each walk's finished steps, each batch's items.
        self._rows_of: list[int] = []
        self._finished: dict[str, list[Checkpoint]] = {}
        self._items: dict[str, list[Any]] = {}  # by the batch's step key: [done, total]
        self._branches: set[str] = set()  # the keys of the branches that finished
        for index, row in enumerate(rows):
            kind = row.kind
            if kind == "items":
                counts = self._items.setdefault(row.frame, [0, None])
                counts[0] += row.position
                if row.action is not None:
                    counts[1] = int(row.action)  # JSON of a count: its digits
            elif kind in _KINDS:
                self._rows_of.append(index)
                if kind == "step" or kind == "view_step":
                    self._finished.setdefault(row.frame, []).append(row)
                elif kind == "branch":
                    self._branches.add(step_key(row))
        self._state_rows = _state_rows(rows)
        self._steps: list[StepRecord] | None = None
        self._unfinished: list[StepRecord] | None = None
        self._at: StepRecord | None = None
        self._frames: set[str] | None = None  # the rows' frames, when a fork needs them
        # Resumed with nodes renamed: a batch's items under each of its names
        # count together, under its name now (its done and total, by key).
        self._renamed = _kept_renames(metadata.get(RENAMED_KEY), graph, rows)
        self._counts = self._items
        if self._renamed is not None:
            self._counts = {}
            for key, (done, total) in self._items.items():
                counts = self._counts.setdefault(self._now(key), [0, None])
                counts[0] += done
                counts[1] = counts[1] if total is None else total

    @cached_property
    def codec(self) -> Codec:
        """The codec the run was written with (its own, whatever the store
        object's ``serializer``), looked up when first needed: where a run
        is needs none.

        Raises:
            StoreError: If the run's data cannot be read (see `run_codec`).
        """
        return run_codec(self.store, self.run_id, self.record.metadata, self.initial)

    def _unpack(self, payload: bytes) -> list[tuple[Any, Any]]:
        """A payload of the run, decoded.

        Raises:
            StoreError: If it cannot be decoded with the run's codec.
        """
        codec = self.codec
        try:
            return codec.unpack(payload)
        except Exception as error:
            damaged = undecodable(error, self.run_id, codec)
            if damaged is None:
                raise
            raise damaged from error

    def _now(self, key: str) -> str:
        """A step key under its nodes' names now (after the run's renames)."""
        if self._renamed is None:
            return key
        renamed, keep_root = self._renamed
        return renamed_key(key, renamed, keep_root)

    def _items_of(self, key: str) -> tuple[int | None, int | None]:
        """A batch step's items: how many were done, of how many."""
        done, total = self._counts.get(self._now(key), (None, None))
        return done, total

    # -- history -----------------------------------------------------------------------

    def history(self) -> list[StepRecord]:
        """The run's steps in the order they finished, then the step it is at.

        Raises:
            StoreError: If the run's data cannot be decoded (see `codec`).
        """
        if self._steps is None:
            self._steps = [
                self._finished_step(number, index) for number, index in enumerate(self._rows_of, 1)
            ] + self.unfinished()
        return self._steps

    def finished_steps(self) -> int:
        """How many steps of walks (not branches, not updates) finished."""
        return sum(len(steps) for steps in self._finished.values())

    def _finished_step(self, number: int, index: int) -> StepRecord:
        row = self.rows[index]
        kind = row.kind
        key = step_key(row)
        done, total = self._items_of(key)
        inherited = index < self._inherited
        when = row.started if row.started is not None else row.ended
        return StepRecord(
            number=number,
            path=self._path(row_path(kind, row.frame, row.node)),
            key=key,
            kind=_KINDS[kind],
            node=row.node,
            node_class=row.node_class,
            status="finished",
            action=None if row.action is None else json.loads(row.action),
            started=row.started,
            ended=row.ended,
            changed=tuple(key for key, _ in self._unpack(row.payload)) if row.payload else (),
            items_done=done,
            items_total=total,
            run_id=self._parent() if inherited else self.run_id,
            part=_part(self._resumes, when, inherited, self._forked is not None),
        )

    def _path(self, path: str) -> str:
        """A path as people read it: inside the run's own flow, without its name."""
        path = path.lstrip("/")
        own = f"{self.record.flow}/"
        return path[len(own) :] if path.startswith(own) else path

    def _parent(self) -> str:
        return "" if self._forked is None else str(self._forked.get("run", ""))

    def unfinished(self) -> list[StepRecord]:
        """The steps the run is in (or stopped in), outermost first: found by
        following the recorded graph from each walk's last finished step,
        into each branch of a fork at work that recorded something and did
        not finish (in branch order); none for a completed run. Decodes no
        payload."""
        if self._unfinished is not None:
            return self._unfinished
        record = self.record
        if record.status == "completed":
            self._unfinished = []
            return self._unfinished
        count = len(self._rows_of)
        part = max(len(self._resumes) - (self._forked is not None), 0)
        status = record.status
        chain = _current_steps(walks_of(self.graph), self._finished, self._items, self._at_work)
        if not chain:  # the graph cannot say: where the store says it is
            if record.node is None:
                self._unfinished = []
                return self._unfinished
            chain = [(record.node, record.node.rsplit("/", 1)[-1], False)]
        if len(chain) > 1:
            chain = chain[1:]  # the run's own flow: the run itself, not one of its steps
        paths = [self._path(step_path(key)) for key, _, _ in chain]
        here = _here(paths, self._path(record.node or ""))
        unfinished = []
        for depth, ((key, name, in_branch), path) in enumerate(zip(chain, paths, strict=True)):
            done, total = self._items_of(key)
            at = depth == here  # where it asked or failed: its end and error
            unfinished.append(
                StepRecord(
                    number=count + depth + 1,
                    path=path,
                    key=key,
                    kind="branch step" if in_branch else "step",
                    node=name,
                    node_class="",
                    status=status,
                    ended=record.ended if at and status in ("failed", "waiting") else None,
                    items_done=done,
                    items_total=total,
                    run_id=self.run_id,
                    part=part,
                    error=record.error if at else None,
                )
            )
        self._unfinished = unfinished
        self._at = unfinished[here] if unfinished else None
        return unfinished

    def here(self) -> StepRecord | None:
        """The step the run is at (or stopped at), of `unfinished`: with
        branches at work, the one the store says the run is at (where it
        asked or failed) if it is one of them, else the last; ``None`` for a
        completed run."""
        self.unfinished()
        return self._at

    def _at_work(self, branch: str) -> bool:
        """Whether the branch of key ``branch`` did not finish and recorded
        something: one that recorded nothing may not have begun (held back
        by its fork's bound, or cut off by a sibling's failure)."""
        if branch in self._branches:
            return False
        if self._frames is None:
            self._frames = {row.frame for row in self.rows}
        inside = f"{branch}/"
        return any(frame == branch or frame.startswith(inside) for frame in self._frames)

    # -- state ---------------------------------------------------------------------------

    def row_of(self, at: int | None) -> int:
        """The index of the row of finished step ``at`` (a number of `history`);
        the last row for ``None``; -1 for ``0`` (the state the run started with).

        Raises:
            ResumeError: If there is no such step, or it did not finish.
        """
        if at is None:
            return len(self.rows) - 1
        if isinstance(at, bool) or not isinstance(at, int):
            raise ResumeError(
                f"at={at!r}: give the number of a step of run {self.run_id!r}, as its history "
                "shows it (0 for the state it started with)"
            )
        if at == 0:
            return -1
        steps = self.history()
        if not 0 < at <= len(steps):
            raise ResumeError(
                f"run {self.run_id!r} has no step {at}: its steps are numbered 1 to "
                f"{len(steps)} (0 is the state it started with)"
            )
        if at > len(self._rows_of):
            raise ResumeError(
                f"step {at} of run {self.run_id!r} ({steps[at - 1].path}) did not finish: "
                f"there is no state after it; the last finished step is {len(self._rows_of)}"
            )
        index = self._rows_of[at - 1]
        if self._state_rows.get(index, index) is None:
            raise ResumeError(
                f"run {self.run_id!r} did not store the state after step {at} "
                f"({steps[at - 1].path}): it ran with durability='async' or 'exit', which "
                "store shared with the next batch of checkpoints (async) or when the run "
                f"stops (exit), not after every step; {self._stored_near(at)}; to look "
                "at (or fork from) every step, run with durability='sync'"
            )
        return index

    def _stored_near(self, at: int) -> str:
        """Which steps nearest to step ``at`` have a stored state, as a clause."""
        known = [0] + [
            number
            for number, index in enumerate(self._rows_of, 1)
            if self._state_rows.get(index, index) is not None
        ]
        before = max(number for number in known if number < at)
        after = [number for number in known if number > at]
        if after:
            return f"steps {before} and {after[0]} have one"
        return f"step {before} has one" if before else "step 0 (its start) has one"

    def rows_through(self, at: int | None = None) -> list[Checkpoint]:
        """The rows up to finished step ``at`` (all for ``None``), with the
        "state" row that holds what it changed, if it ran under
        ``durability="async"`` or ``"exit"`` (for a branch's step, the one
        that holds ``shared`` after the step before it): ``shared`` after
        it, folded.

        Raises:
            ResumeError: If there is no such step, it did not finish, or
                its state was not stored.
        """
        last = self.row_of(at)
        rows = self.rows[: last + 1]
        state = self._state_rows.get(last)
        return rows if state is None else [*rows, self.rows[state]]

    def state(self, at: int | None = None) -> dict[Any, Any]:
        """``shared`` as it was after step ``at`` (the latest: ``None``).

        Raises:
            ResumeError: As `rows_through` says.
            StoreError: If the run's data cannot be decoded (see `codec`).
        """
        return folded(self._unpack, self.initial, self.rows_through(at))


def _state_rows(rows: list[Checkpoint]) -> dict[int, int | None]:
    """For each step of the run's own shared that recorded no changes (under
    ``durability="async"`` or ``"exit"``), by its row's index: the index of
    the "state" row that holds ``shared`` after it, or ``None`` if no row
    does (a later step's changes came in the same one). One missing means
    that the steps changed nothing: their writer writes a "state" row with
    every batch of rows when there is something to write.

    A branch's rows (``view_step``, ``branch``) change only its view: the
    run's ``shared`` after one is as the last step (or update) before it
    left it, so one after such a step gets that step's entry: its "state"
    row, which may come after the branch's row (one before it is in the
    fold up to the branch's row already: no entry), or ``None``.

    The "state" row of what a flow's own ``prep`` wrote (`PREP`), or the
    run's own flow after its steps (`POST`), holds no step's state: the
    writer put the steps' own one before it, if they changed anything, so
    the steps since the last such row changed nothing (no entry: exact)."""
    found: dict[int, int | None] = {}
    lax: list[int] = []  # the steps without changes since the last row with some
    views: list[tuple[int, int]] = []  # the branch rows after them: (row, step before it)
    for index, row in enumerate(rows):
        kind = row.kind
        if kind == "step" and not row.payload:
            lax.append(index)
        elif kind == "view_step" or kind == "branch":
            if lax:  # else shared is as the fold up to it has it: exact
                views.append((index, lax[-1]))
        elif kind == "state" and (row.node == PREP or row.node == POST):
            lax, views = [], []
        elif kind == "state":
            for step in lax[:-1]:
                found[step] = None
            if lax:
                found[lax[-1]] = index
            for view, step in views:
                found[view] = found[step]
            lax, views = [], []
        elif kind == "step" or kind == "update":
            lax, views = [], []  # those before changed nothing: folded up to them, exact
    return found


def _part(resumes: list[float], when: float | None, inherited: bool, fork: bool) -> int:
    """Which part of a run a row was written in: the resumes before it (a
    fork's first part is its first resume)."""
    if when is None or inherited:
        return 0
    return max(bisect_right(resumes, when) - fork, 0)


def _current_steps(
    walks: Walks | None,
    finished: dict[str, list[Checkpoint]],
    batches: Any,
    at_work: Callable[[str], bool],
) -> list[tuple[str, str, bool]]:
    """The steps a run that has not completed is in, outermost first, as
    (key, node name, whether it is in a branch): the run's own node, then in
    each walk the node after its last finished step (its start, if none
    finished), and the walk of that node if it is a flow, or the walks of
    the branches ``at_work`` if it is a fork (by its key: ``fork/b0:name``),
    each followed in turn. Empty if the recorded graph cannot say."""
    if walks is None:
        return []
    # The batch flows whose parameter sets' walks recorded steps (``key[i]``):
    # such a flow is where the run is, not one walk of its own.
    of_sets = {frame.partition("[")[0] for frame in finished if "[" in frame}
    steps: list[tuple[str, str, bool]] = []

    def follow(frame: str, prefix: str, in_branch: bool) -> None:
        while prefix in walks:
            nodes = walks[prefix]
            done = finished.get(frame, [])
            name: str | None = nodes.start
            if done and frame:  # (at the root: a node run alone, at work until its run ends)
                last = done[-1]
                action = "default" if last.action is None else json.loads(last.action)
                name = nodes.successor(last.node, action if isinstance(action, str) else "default")
            if name is None:  # the walk has ended: its flow's step is the one at work
                return
            key = f"{frame}/{len(done)}:{name}" if frame else f"0:{name}"  # the run's own: 0:flow
            steps.append((key, name, in_branch))
            if key in batches or key in of_sets:  # a batch (of sets too): its progress tells more
                return
            for index, branch in enumerate(_branch_names(walks, f"{prefix}{name}/")):
                if at_work(f"{key}/b{index}:{branch}"):
                    follow(f"{key}/b{index}:{branch}", f"{prefix}{name}/branch {index}/", True)
            frame, prefix = key, f"{prefix}{name}/"

    follow("", "", False)
    return steps


def _branch_names(walks: Walks, prefix: str) -> list[str]:
    """The names of a fork's branches (``prefix``: its path and ``/``) as
    `Parallel.branch_names` gives them: each head's, with ``#2``... if two
    share one; none for a node that is not a fork."""
    names: list[str] = []
    while (branch := walks.get(f"{prefix}branch {len(names)}/")) is not None:
        name = str(branch.start)
        count = sum(1 for other in names if other == name or other.startswith(f"{name}#"))
        names.append(name if count == 0 else f"{name}#{count + 1}")
    return names


def _here(paths: list[str], node: str) -> int:
    """Which of the steps at ``paths`` (outermost first) a run is at: the
    deepest one on the path ``node`` the store says it is at (where it
    asked or failed: ``fork/a/a#7`` is in ``fork/a/a``), else the last."""
    for index in range(len(paths) - 1, -1, -1):
        path = paths[index]
        if node == path or node.startswith((f"{path}/", f"{path}#", f"{path}[")):
            return index
    return len(paths) - 1


def _kept_renames(
    kept: Any, graph: str, rows: list[Checkpoint]
) -> tuple[dict[str, str], bool] | None:
    """The renames a run keeps (old: new), and whether its flow kept its own
    name (rows after a rename of the flow itself begin with its new name);
    ``None`` for a run resumed with none."""
    if not isinstance(kept, dict) or not kept:
        return None
    renamed = {str(old): str(new) for old, new in kept.items()}
    root = graph.partition("\n")[0].rpartition(": ")[0]
    new_root = renamed.get(root)
    keep_root = new_root is None or not any(
        row.frame.split("/", 1)[0] == f"0:{new_root}" for row in rows
    )
    return renamed, keep_root


def apply_renames(
    rows: list[Checkpoint], renamed: dict[str, str], keep_root: bool = False
) -> list[Checkpoint]:
    """Rows with the nodes in ``renamed`` (old name: new) under their new
    names: in the row's node and in every step of its frame (the flow's
    own step too, unless ``keep_root``)."""
    if not renamed:
        return rows
    rename: Callable[[str], str] = lambda key: renamed_key(key, renamed, keep_root)  # noqa: E731
    return [
        row._replace(frame=rename(row.frame), node=renamed.get(row.node, row.node)) for row in rows
    ]


def renamed_key(key: str, renamed: dict[str, str], keep_root: bool = False) -> str:
    """A step key with renamed nodes: ``/0:old/1:x`` is ``/0:new/1:x`` (and
    ``0:old[3]``, a parameter set, ``0:new[3]``; ``0:old#3``, an item that
    asked, ``0:new#3``)."""
    parts = key.split("/")
    for index, part in enumerate(parts):
        place, colon, name = part.partition(":")
        if not colon or (keep_root and index == 0):
            continue
        suffix = ""
        if name.endswith("]") and "[" in name:  # a parameter set: name[3]
            name, bracket, rest = name.partition("[")
            suffix = bracket + rest
        elif name not in renamed:  # an item's question: name#3
            base, mark, number = name.rpartition("#")
            if mark and number.isdigit() and base in renamed:
                name, suffix = base, mark + number
        if name in renamed:
            parts[index] = f"{place}:{renamed[name]}{suffix}"
    return "/".join(parts)
