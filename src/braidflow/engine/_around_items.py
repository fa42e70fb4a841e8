"""Around each batch item: its events (an observed run) and its checkpoint (a durable run).

`item_steps` wraps the steps of one item with what the run needs;
`ItemCheckpoints` keeps a durable batch's items: one that finished before
is not run again, one that finishes now is recorded, and a runner waits
for its commit (under ``durability="sync"``) before its next item. A new
item is a safe point: a run asked to drain starts none, and an item that
asks a question (``interrupt``) stops alone while its siblings run on.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Generator
from typing import Any

from .._context import ITEM, PATH, RUN, STEP, ItemAt, StepAt
from .._errors import add_note
from .._questions import Interrupted
from .._taskgroup import note_lost
from ..durable._drain import DrainStop
from ._attempts import finished_item
from ._effects import COMMIT
from ._observe import ItemScope, item_total

__all__ = ["ItemCheckpoints", "Started", "commit", "item_steps", "items_recorded", "turn"]

Steps = Generator[tuple[Any, ...], Any, Any]
MakeItem = Callable[[Any, int, bool], Steps]  # (item, index, from_sync) -> its steps


def item_steps(
    node: Any,
    items: Any,
    make_item: MakeItem,
    runs_in: str,
    results: list[Any] | None = None,
    *,
    observe: bool = True,
    checkpoint: bool = True,
    asked: list[Interrupted] | None = None,
) -> MakeItem | None:
    """``make_item`` with what the run needs around each item: its events, if
    the run is observed; its checkpoint (outermost, so replayed items emit
    nothing), if it is durable. ``None`` for a plain run: nothing to add.

    ``runs_in`` says what runs the items: ``"sequence"``, the caller, one
    after another; ``"worker"``, tasks that each take item after item; or
    ``"task"``, a task per item. The first two go on to another item when
    one returns, so its checkpoint must be in the store first; a task of its
    own per item need not wait. ``results``: where a worker puts each
    item's result, at its index (saving its caller a frame per item).
    ``observe``, ``checkpoint``: whether the items get events and
    checkpoints of their own (a fork's branches have their own). ``asked``:
    where an item that asks (``interrupt``) leaves its question, to stop
    alone (a parallel stage's); ``None``: its question stops the stage."""
    run = RUN.get()
    if run is None:
        return None
    inner = make_item
    durable = run.durable if checkpoint else None
    if observe and run.observers:
        name = node._display_name()
        path = PATH.get() or (name,)
        flow = node._bf_is_flow
        total = item_total(items)
        reused = len(durable.recorded_items(STEP.get().key)) if durable is not None else 0
        if reused:  # resuming: so many finished before, and are not run (nor observed) again
            total = {**(total or {}), "reused": reused}

        def observed_item(item: Any, index: int, from_sync: bool) -> Steps:
            scope = ItemScope(run, name, path, index, flow, total)
            try:
                value = yield from make_item(item, index, from_sync)
            except BaseException as error:
                # One that finished in its thread as it was stopped is recorded.
                finished = durable is not None and finished_item(error, node) is not None
                scope.end(None if finished else error)
                raise
            scope.end()
            return value

        inner = observed_item
    if durable is None:
        return inner if inner is not make_item else None
    checkpoints = ItemCheckpoints(durable, node, items, runs_in, results, asked)

    def checkpointed_item(item: Any, index: int, from_sync: bool) -> Steps:
        started = checkpoints.start(item, index)
        if started is None:  # finished before: its recorded result stands
            return checkpoints.recorded_result(item, index)
        if started[4]:  # the item before must be in the store first
            yield (COMMIT, node, index, durable)
        try:
            result = yield from inner(item, index, from_sync)
        except Interrupted as question:
            if checkpoints.asked is None:
                raise
            checkpoints.asked.append(question)  # it stops alone; its siblings run on
            return None
        except (asyncio.CancelledError, KeyboardInterrupt) as stop:  # (Ctrl-C: a sync run's)
            checkpoints.finished_meanwhile(started, stop)
            raise
        finally:
            checkpoints.leave(started)
        if checkpoints.finished(started, result):
            yield (COMMIT, node, index, durable)
        return result

    return checkpointed_item


# An item whose checkpoint is under way: (its index, its fingerprint, its
# worker's marker or None, the token of the mark it set in the context or None,
# whether the item before must be in the store first). A tuple: one an item.
Started = tuple[int, int, ItemAt | None, Any, bool]


class ItemCheckpoints:
    """The checkpoints of one batch's items in a durable run: an item that
    finished before is not run again (its recorded result stands); one that
    finishes now is in the store before its worker goes on.

    ``runs_in`` says what runs the items: ``"sequence"``, the caller, one
    after another; ``"worker"``, tasks that each take item after item; or
    ``"task"``, a task per item. The first two go on to another item when
    one returns, so its checkpoint must be in the store first; a task of its
    own per item need not wait (``post`` waits for the group commit).
    ``results``: where each item's result goes, at its index (a worker's).
    ``asked``: where an item that asks leaves its question (see `item_steps`).
    """

    __slots__ = (
        "asked",
        "batch",
        "durable",
        "flow",
        "key",
        "node",
        "recorded",
        "results",
        "runs_in",
        "step",
        "waits",
    )

    def __init__(
        self,
        durable: Any,
        node: Any,
        items: Any,
        runs_in: str,
        results: list[Any] | None,
        asked: list[Interrupted] | None = None,
    ) -> None:
        self.durable = durable
        self.asked = asked
        self.node = node
        self.runs_in = runs_in
        self.results = results
        self.step = step = STEP.get()
        self.key = key = step.key
        total = item_total(items)  # kept with the items, for the run's history
        self.batch = (key, id(node), None if total is None else str(total["total"]))
        self.recorded = durable.recorded_items(key)
        self.flow = node._bf_is_flow  # a parameter set's sub-flow walks a frame of its own
        # Whether a runner waits for an item's commit before it goes on: under
        # durability="sync"; a node that asks for it in another run writes at once.
        self.waits = durable.strict

    def start(self, item: Any, index: int) -> Started | None:
        """Begin item ``index``; ``None`` if it finished before. The fingerprint
        is taken now, before exec may change the item."""
        if self.recorded and index in self.recorded:
            return None
        if self.durable.drain.stopping():  # the run drains: no new item starts
            raise DrainStop
        fingerprint = self.durable.fingerprint(item, index, self.node)
        runs_in = self.runs_in
        if self.flow:
            token = STEP.set(StepAt(f"{self.key}[{index}]", self.step.touched))
            return (index, fingerprint, None, token, False)
        if runs_in == "task":  # its context is its own, and ends with it
            ITEM.set(index)
            return (index, fingerprint, None, None, False)
        if runs_in == "worker":  # its next item only moves its marker on
            at = ITEM.get()
            wait_first = False
            if type(at) is ItemAt and at.batch is self.batch:
                if at.queued:  # the item before must be in the store first
                    wait_first = True
                    at.queued = False
                at.index = index
            else:
                at = ItemAt(self.batch, index)
                ITEM.set(at)
            return (index, fingerprint, at, None, wait_first)
        return (index, fingerprint, None, ITEM.set(index), False)

    def recorded_result(self, item: Any, index: int) -> Any:
        """The result item ``index`` had when it finished before."""
        result = self.durable.item_result(index, self.recorded[index], item, self.node)
        if self.results is not None:
            self.results[index] = result
        return result

    def leave(self, started: Started) -> None:
        """The item's code is done: undo the marks `start` set."""
        if started[3] is not None:
            (STEP if self.flow else ITEM).reset(started[3])

    def finished_meanwhile(self, started: Started, stop: BaseException) -> None:
        """``stop`` (a cancellation: a sibling failed, the run drains or is
        cancelled) reached the item while its code ran in a thread, which
        cannot be stopped: if that code finished meanwhile (`finished_item`),
        record the item as any other, in the store now, so a resume does not
        redo it. ``stop`` still ends the item: a failure to record it is
        noted on it (the item then runs again on resume)."""
        finished = finished_item(stop, self.node)
        if finished is None:
            return
        try:
            self.finished(started, finished[0])
            self.durable.hand_over()
        except Exception as error:
            what = "param set" if self.flow else "item"
            add_note(
                stop,
                f"{self.node._describe()}: {what} {started[0]} finished, but could not be "
                f"recorded ({error!r}); it runs again on resume",
            )
            note_lost(error)

    def finished(self, started: Started, result: Any) -> bool:
        """Record the finished item; return whether it must be in the store
        before its runner goes on. Nothing new runs until an item is in the
        store, so a crash loses only items in flight: a worker waits before
        its next item (its last one never waits), a task per item not at all,
        anything else now."""
        index, fingerprint, at = started[0], started[1], started[2]
        self.durable.record_item(self.batch, index, fingerprint, result, self.node)
        if self.results is not None:
            self.results[index] = result
        if not self.waits:  # async or exit: on at once (a strict node's item is written now)
            if self.node._bf_strict:
                self.durable.sync()
            return False
        if at is not None:
            at.queued = True
            return False
        return self.runs_in != "task"


@types.coroutine
def turn() -> Generator[None, None, None]:
    """Let the event loop turn once (``asyncio.sleep(0)``, without its coroutine)."""
    yield


async def commit(durable: Any) -> None:
    """Wait until the items queued for the group commit are in the store: it
    runs at the loop's next turn. Raises the commit's error, if it failed."""
    await turn()
    durable.check_written()


def items_recorded() -> None:
    """In a durable run, the items queued for the group commit are written
    now, before anything (``post``, the merge of sub-flows) uses their results."""
    run = RUN.get()
    if run is not None and run.durable is not None:
        run.durable.hand_over()
