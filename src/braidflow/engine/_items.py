"""A batch's items: checked, run one after another or at once, observed and checkpointed.

One set of runners serves batch nodes (an item's exec attempts), batch
flows (a sub-flow per parameter set) and parallel branches. `sequential`
is a generator a driver runs; `run_parallel` runs items at once in a task
group, at most ``max_concurrency`` at a time, reading the input only as
fast as that allows. Around each item, `item_steps` puts its events (an
observed run) and its checkpoint (a durable run).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from typing import Any

from .._context import GATES, ITEM, PATH, RUN, STEP, ItemAt, StepAt
from .._errors import BatchItemsError, Failure, add_note
from .._limits import Limiter
from .._options import check_max_concurrency
from .._taskgroup import TaskGroup
from ._attempts import cancelled_error
from ._effects import AWAIT, COMMIT, RECORD
from ._observe import ItemScope, item_total

__all__ = ["batch_items", "default_thread_count", "item_steps", "run_parallel", "sequential"]

Steps = Generator[tuple[Any, ...], Any, Any]
MakeItem = Callable[[Any, int, bool], Steps]  # (item, index, from_sync) -> its steps

_EXHAUSTED: Any = object()  # what an async iterator gives when it has no more items


def batch_items(node: Any, prep_result: Any) -> Any:
    """Check that ``prep_result`` can supply items and return it (``None``: no items).

    Raises:
        BatchItemsError: If it is not iterable, or is an async iterator given
            to a synchronous node.
    """
    if prep_result is None:
        return ()
    if type(prep_result) is list or type(prep_result) is tuple:
        return prep_result
    if hasattr(prep_result, "__aiter__"):
        if node._bf_async:
            return prep_result
        raise BatchItemsError(
            f"{node._describe()}: prep returned an async iterator "
            f"({type(prep_result).__name__}), which a synchronous node cannot read; "
            "use the Async variant of this class, or return a list or generator",
            node=node._display_name(),
        )
    try:
        iter(prep_result)
    except TypeError:
        raise BatchItemsError(
            f"{node._describe()}: prep returned {type(prep_result).__name__}, which is not "
            "iterable; return a list, tuple, generator or iterator of items "
            "(async nodes: also an async iterator), or None for no items",
            node=node._display_name(),
        ) from None
    return prep_result


def default_thread_count() -> int:
    """The bound of a sync parallel node that sets no ``max_concurrency``."""
    return min(32, (os.cpu_count() or 1) + 4)


def _bound(node: Any) -> int | None:
    """``max_concurrency``, checked where it is used (a subclass may have set
    it after the constructor checked it)."""
    limit = check_max_concurrency(node, node.max_concurrency)
    if limit is None and not node._bf_async and node._bf_batch == "parallel":
        return default_thread_count()  # a sync parallel node: one thread per item in flight
    return limit


def _close(items: Any) -> Steps:
    """Close an input we may have stopped reading early, now rather than at GC."""
    if hasattr(items, "__aiter__"):
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            yield (AWAIT, None, None, aclose, ())
    else:
        close = getattr(items, "close", None)
        if close is not None and isinstance(items, Generator):
            close()


# -- around each item: events and checkpoints ----------------------------------------


def item_steps(
    node: Any,
    items: Any,
    make_item: MakeItem,
    runs_in: str,
    results: list[Any] | None = None,
    *,
    observe: bool = True,
    checkpoint: bool = True,
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
    checkpoints of their own (a fork's branches have their own)."""
    run = RUN.get()
    if run is None:
        return None
    inner = make_item
    if observe and run.observers:
        name = node._display_name()
        path = PATH.get() or (name,)
        flow = node._bf_is_flow
        total = item_total(items)

        def observed_item(item: Any, index: int, from_sync: bool) -> Steps:
            scope = ItemScope(run, name, path, index, flow, total)
            try:
                value = yield from make_item(item, index, from_sync)
            except BaseException as error:
                scope.end(error)
                raise
            scope.end()
            return value

        inner = observed_item
    durable = run.durable if checkpoint else None
    if durable is None:
        return inner if inner is not make_item else None
    step = STEP.get()
    stage = step.key
    batch = (stage, id(node))
    recorded = durable.recorded_items(stage)
    flow = node._bf_is_flow  # a parameter set's sub-flow walks a frame of its own

    def checkpointed_item(item: Any, index: int, from_sync: bool) -> Steps:
        if recorded and index in recorded:
            result = durable.item_result(index, recorded[index], item, node)
        else:
            fingerprint = durable.fingerprint(item, index, node)  # before exec changes it
            at: ItemAt | None = None
            token: Any = None
            if flow:
                token = STEP.set(StepAt(f"{stage}[{index}]", step.touched))
            elif runs_in == "task":  # its context is its own, and ends with it
                ITEM.set(index)
            elif runs_in == "worker":  # its next item only moves its marker on
                at = ITEM.get()  # type: ignore[assignment]
                if type(at) is ItemAt and at.batch is batch:
                    if at.queued:  # the item before must be in the store first
                        yield (COMMIT, node, index, durable)
                        at.queued = False
                    at.index = index
                else:
                    at = ItemAt(batch, index)
                    ITEM.set(at)
            else:
                token = ITEM.set(index)
            try:
                result = yield from inner(item, index, from_sync)
            finally:
                if token is not None:
                    (STEP if flow else ITEM).reset(token)
            yield (RECORD, node, index, durable, batch, fingerprint, result)
            # Nothing new runs until this item is in the store, so a crash can
            # only lose items in flight. A node's worker waits before its next
            # item (its last one never waits); a task per item ends here (post
            # waits for the commit); anything else waits now.
            if at is not None:
                at.queued = True
            elif runs_in != "task":
                yield (COMMIT, node, index, durable)
        if results is not None:
            results[index] = result
        return result

    return checkpointed_item


def _items_recorded() -> None:
    """In a durable run, the items queued for the group commit are written
    now, before anything (``post``, the merge of sub-flows) uses their results."""
    run = RUN.get()
    if run is not None and run.durable is not None:
        run.durable.flush()


# -- one after another ------------------------------------------------------------------


def sequential(node: Any, items: Any, make_item: MakeItem, keep: bool) -> Steps:
    """Run items one after another; return their results in order if ``keep``."""
    check_max_concurrency(node, node.max_concurrency, parallel=False)
    steps_of = item_steps(node, items, make_item, "sequence") or make_item
    results: list[Any] | None = [] if keep else None
    try:
        if hasattr(items, "__aiter__"):
            iterator = aiter(items)
            index = 0
            while (item := (yield (AWAIT, node, None, anext, (iterator, _EXHAUSTED)))) is not (
                _EXHAUSTED
            ):
                value = yield from steps_of(item, index, False)
                if results is not None:
                    results.append(value)
                index += 1
        else:
            for index, item in enumerate(items):
                value = yield from steps_of(item, index, False)
                if results is not None:
                    results.append(value)
    finally:
        yield from _close(items)
    _items_recorded()
    return results


# -- at once ------------------------------------------------------------------------------


class _AsyncFeed:
    """Hands out ``(index, item)`` pairs from an async iterator, one taker at a time."""

    def __init__(self, items: Any, results: list[Any] | None) -> None:
        self._iterator: AsyncIterator[Any] = aiter(items)
        self._lock = asyncio.Lock()
        self._results = results
        self._index = 0
        self._done = False

    async def take(self) -> tuple[int, Any] | None:
        async with self._lock:
            if self._done:
                return None
            try:
                item = await anext(self._iterator)
            except StopAsyncIteration:
                self._done = True
                return None
            index = self._index
            self._index += 1
            if self._results is not None:
                self._results.append(None)
            return index, item


def _numbered(items: Iterable[Any], results: list[Any] | None) -> Iterator[tuple[int, Any]]:
    """Number items as they are read, growing ``results`` to match."""
    if results is None:
        yield from enumerate(items)
        return
    append = results.append
    for pair in enumerate(items):
        append(None)
        yield pair


def _failed_on(node: Any, error: BaseException, index: int) -> BaseException:
    """What a failure of a node's bare exec on item ``index`` becomes: the
    error, noted with the index; a stray cancellation, the item's failure."""
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            return error
        return cancelled_error(node, error, index)
    add_note(error, f"{node._describe()} failed on item {index}")
    return error


async def run_parallel(
    node: Any,
    items: Any,
    make_item: MakeItem,
    keep: bool,
    drive: Callable[[Steps], Coroutine[Any, Any, Any]],
    *,
    from_sync: bool = False,
    fast_exec: Callable[[Any], Coroutine[Any, Any, Any]] | None = None,
    observe: bool = True,
    checkpoint: bool = True,
) -> list[Any] | None:
    """Run items concurrently in a task group, at most ``node.max_concurrency`` at once.

    Under ``on_error="raise"`` the first failure cancels every other item and
    is re-raised once all of them have stopped. Under ``"collect"`` failures
    become `Failure` entries. Results keep the input order.

    ``drive`` runs an item's steps (the async driver). ``from_sync``: the
    stage runs from sync code, on a private loop. ``fast_exec``, when given,
    is the node's own exec coroutine function, awaited per item with nothing
    around it when nothing else applies: the fan-out's fast path, one frame
    per item (it saves a driver and a generator per item, a third of an
    item's cost in the 100k-item benchmark). ``observe``, ``checkpoint``:
    whether items get events and checkpoints of their own.
    """
    limit = _bound(node)
    collect = node._bf_on_error == "collect"
    results: list[Any] = []
    run = RUN.get()
    # In a durable run, bounded workers' items put their results in place themselves.
    stored = (
        checkpoint
        and keep
        and not collect
        and limit is not None
        and run is not None
        and run.durable is not None
    )
    wrapped = item_steps(
        node,
        items,
        make_item,
        "task" if limit is None else "worker",
        results if stored else None,
        observe=observe,
        checkpoint=checkpoint,
    )
    one_item = wrapped or make_item
    direct = fast_exec if wrapped is None else None
    tasks: list[asyncio.Task[Any]] | None = [] if keep and not collect else None

    def run_item(item: Any, index: int) -> Coroutine[Any, Any, Any]:
        return drive(one_item(item, index, from_sync))

    def own_cancellation(task: asyncio.Task[Any]) -> BaseException:
        # An item task that ended cancelled although nobody cancelled it: its
        # own code raised CancelledError (only direct items can end so).
        index = tasks.index(task) if tasks is not None and task in tasks else None
        return cancelled_error(node, asyncio.CancelledError(), index)

    async def run_collecting(index: int, item: Any) -> None:
        try:
            value = await run_item(item, index)
        except Exception as error:
            value = Failure(error, item, index)
        results[index] = value

    async def run_keeping(index: int, item: Any) -> None:
        results[index] = await run_item(item, index)

    async def run_fast(index: int, item: Any) -> None:
        # A direct item inside a bounded worker: label its failure with its index.
        try:
            value = await direct(item)  # type: ignore[misc]
            if keep:
                results[index] = value
        except Exception as error:
            _failed_on(node, error, index)  # notes the index
            raise
        except asyncio.CancelledError as cancel:
            failure = _failed_on(node, cancel, index)
            if failure is cancel:
                raise
            raise failure from cancel

    is_async_source = hasattr(items, "__aiter__")
    try:
        async with TaskGroup(own_cancellation) as group:
            if limit is None:
                # No bound: one task per item, created as items are read.
                def start(index: int, item: Any) -> None:
                    if collect:
                        results.append(None)
                        group.spawn(run_collecting(index, item))
                        return
                    task = group.spawn(direct(item) if direct else run_item(item, index))
                    if tasks is not None:
                        tasks.append(task)

                if is_async_source:

                    async def feed() -> None:
                        index = 0
                        async for item in items:
                            start(index, item)
                            index += 1

                    group.spawn(feed())
                else:
                    for index, item in enumerate(items):
                        start(index, item)
            else:
                # A bound: that many workers, each taking the next item when free.
                # The bound also becomes a gate that sync attempts under a
                # timeout hold, so threads they abandon keep counting against it.
                gate = Limiter(limit, name=f"max_concurrency of {node._display_name()}")
                pending = results if keep else None
                run_next: Callable[[int, Any], Coroutine[Any, Any, Any]]
                if collect:
                    run_next = run_collecting
                elif direct is not None:
                    run_next = run_fast
                elif keep and not stored:
                    run_next = run_keeping
                else:
                    run_next = lambda index, item: run_item(item, index)  # noqa: E731

                if is_async_source:
                    feed_from = _AsyncFeed(items, pending)

                    async def worker() -> None:
                        while (pair := await feed_from.take()) is not None:
                            await run_next(*pair)

                    workers = limit
                else:
                    if type(items) is list or type(items) is tuple:
                        workers = min(limit, len(items))
                        if pending is not None:
                            pending.extend([None] * len(items))
                        numbered: Iterator[tuple[int, Any]] = enumerate(items)
                    else:
                        workers = limit
                        numbered = _numbered(items, pending)

                    async def worker() -> None:
                        for index, item in numbered:
                            await run_next(index, item)

                token = GATES.set((*GATES.get(), gate))
                try:
                    for _ in range(workers):
                        group.spawn(worker())
                finally:
                    GATES.reset(token)
    except Exception as error:
        if direct is not None and tasks:
            for index, task in enumerate(tasks):
                if task.done() and not task.cancelled() and task.exception() is error:
                    add_note(error, f"{node._describe()} failed on item {index}")
                    break
        raise
    finally:
        await _close_async(items)
    _items_recorded()
    if tasks:
        return [task.result() for task in tasks]
    return results if keep else None


async def _close_async(items: Any) -> None:
    if hasattr(items, "__aiter__"):
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    elif isinstance(items, Generator):
        items.close()
