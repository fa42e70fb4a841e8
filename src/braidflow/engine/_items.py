"""A batch's items: checked, run one after another or at once, observed and checkpointed.

One set of runners serves batch nodes (an item's exec attempts), batch
flows (a sub-flow per parameter set) and parallel branches. `sequential`
is a generator a driver runs; `run_parallel` runs items at once in a task
group, at most ``max_concurrency`` at a time, reading the input only as
fast as that allows. Around each item, `item_steps` (in `_around_items`) puts its events (an
observed run) and its checkpoint (a durable run).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from typing import Any

from .._budget import OverBudget
from .._context import GATES, RUN
from .._errors import BatchItemsError, Failure, SetupError, add_note
from .._limits import Limiter
from .._options import check_max_concurrency, on_error_of
from .._plan import preset, variant
from .._questions import Interrupted, asked_together
from .._taskgroup import TaskGroup
from ..durable._drain import DrainStop
from ._around_items import ItemCheckpoints, commit, item_steps, items_recorded
from ._attempts import cancelled_error
from ._effects import AWAIT

__all__ = ["batch_items", "default_thread_count", "run_parallel", "sequential"]

Steps = Generator[tuple[Any, ...], Any, Any]
MakeItem = Callable[[Any, int, bool], Steps]  # (item, index, from_sync) -> its steps

_EXHAUSTED: Any = object()  # what an async iterator gives when it has no more items


def batch_items(node: Any, prep_result: Any) -> Any:
    """Check that ``prep_result`` can supply items and return it (``None``, or
    any false value, such as ``0`` or ``False``: no items, as PocketFlow's
    ``prep(shared) or []`` reads it).

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
        cls, base = type(node), preset(type(node))
        instead = variant(cls, "async") or "AsyncBatchNode"
        derive = (
            f"make it an {instead}"
            if cls.__name__ == base
            else f"derive {cls.__name__} from {instead} in place of {base}"
        )
        raise BatchItemsError(
            f"{node._describe()}: prep returned an async iterator "
            f"({type(prep_result).__name__}), which a synchronous node cannot read; "
            f"{derive} (its items may then come from an async iterator), or return a list "
            "or generator",
            node=node._display_name(),
        )
    try:
        iter(prep_result)
    except TypeError:
        if not prep_result:  # `return len(rows) > 0 and rows`: no items
            return ()
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


# -- one after another ------------------------------------------------------------------


def sequential(node: Any, items: Any, make_item: MakeItem, keep: bool) -> Steps:
    """Run items one after another; return their results in order if ``keep``."""
    check_max_concurrency(node, node.max_concurrency, parallel=False)
    on_error_of(node, parallel=False)  # "collect" set by an __init__ is refused here
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
    items_recorded()
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
    become `Failure` entries, but a `SetupError` stops the items as under
    ``"raise"``. Results keep the input order.

    ``drive`` runs an item's steps (the async driver). ``from_sync``: the
    stage runs from sync code, on a private loop. ``fast_exec``, when given,
    is the node's own exec coroutine function, awaited per item with nothing
    around it when nothing else applies: the fan-out's fast path, one frame
    per item (it saves a driver and a generator per item, a third of an
    item's cost in the 100k-item benchmark). ``observe``, ``checkpoint``:
    whether items get events and checkpoints of their own.
    """
    limit = _bound(node)
    collect = on_error_of(node) == "collect"
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
    runs_in = "task" if limit is None else "worker"
    placed = results if stored else None
    # In a durable run, an item that asks stops alone: the rest run on, then
    # the stage raises every question asked, at once.
    asked: list[Interrupted] | None = [] if run is not None and run.durable else None
    # The fast path of a durable batch: the bare exec in a checkpoint, one
    # coroutine an item (no driver, no generator: half the cost of one).
    checkpoints: ItemCheckpoints | None = None
    if (
        fast_exec is not None
        and checkpoint
        and run is not None
        and run.durable is not None
        and not (observe and run.observers)
    ):
        checkpoints = ItemCheckpoints(run.durable, node, items, runs_in, placed, asked)
        wrapped = None
    else:
        wrapped = item_steps(
            node,
            items,
            make_item,
            runs_in,
            placed,
            observe=observe,
            checkpoint=checkpoint,
            asked=asked,
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
        except SetupError:
            # braidflow refusing what it was given (a usage with no cost under
            # a cost budget, a model with no price): a mistake no item mends.
            # Collected, every other item would make its (paid) call for
            # nothing; it stops the batch as under "raise".
            raise
        except Exception as error:
            value = Failure(error, item, index)
        results[index] = value

    def steps_of(index: int, item: Any) -> Steps:
        # One item in a worker's turn: its result kept or collected, or left
        # where its checkpoint put it.
        if collect:
            try:
                value = yield from one_item(item, index, from_sync)
            except SetupError:  # stops the batch, as in `run_collecting`
                raise
            except Exception as error:
                value = Failure(error, item, index)
            results[index] = value
        elif keep and not stored:
            results[index] = yield from one_item(item, index, from_sync)
        else:
            yield from one_item(item, index, from_sync)

    async def run_fast(index: int, item: Any) -> Any:
        # A direct item in a worker, or in a task of its own with a checkpoint:
        # label its failure with its index.
        started = None
        if checkpoints is not None:
            started = checkpoints.start(item, index)
            if started is None:  # finished before: its recorded result stands
                return checkpoints.recorded_result(item, index)
            if started[4]:  # the item before must be in the store first
                await commit(checkpoints.durable)
        try:
            value = await direct(item)  # type: ignore[misc]
        except Exception as error:
            _failed_on(node, error, index)  # notes the index
            raise
        except asyncio.CancelledError as cancel:
            failure = _failed_on(node, cancel, index)
            if failure is cancel:
                raise
            raise failure from cancel
        except Interrupted as question:  # (only a checkpointed item can ask)
            asked.append(question)  # type: ignore[union-attr]
            return None
        finally:
            if started is not None:
                checkpoints.leave(started)  # type: ignore[union-attr]
        if started is not None:
            if checkpoints.finished(started, value):  # type: ignore[union-attr]
                await commit(checkpoints.durable)  # type: ignore[union-attr]
        elif keep and limit is not None:  # a worker's: in place (a task's is its result)
            results[index] = value
        return value

    is_async_source = hasattr(items, "__aiter__")
    drained: list[bool] = []  # a worker (or an item's task) stopped at a drain
    # In a durable run, an item that has not begun when the run drains stops
    # quietly: the others finish theirs (its failure would cancel them).
    drains = run is not None and run.durable is not None and checkpoint
    try:
        async with TaskGroup(own_cancellation) as group:
            if limit is None:
                # No bound: one task per item, created as items are read.
                def start(index: int, item: Any) -> None:
                    coroutine: Coroutine[Any, Any, Any]
                    if collect:
                        results.append(None)
                        coroutine = run_collecting(index, item)
                    elif checkpoints is not None:
                        coroutine = run_fast(index, item)
                    elif direct is not None:
                        coroutine = direct(item)
                    else:
                        coroutine = run_item(item, index)
                    if drains:
                        coroutine = _item_until_drained(coroutine, drained)
                    task = group.spawn(coroutine)
                    if tasks is not None:  # (none under collect)
                        tasks.append(task)

                if is_async_source:

                    async def feed() -> None:
                        index = 0
                        async for item in items:
                            if drained:  # the run drains: read no more
                                break
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
                if is_async_source:
                    feed_from = _AsyncFeed(items, pending)
                    workers = limit
                    numbered: Iterator[tuple[int, Any]] | None = None
                elif type(items) is list or type(items) is tuple:
                    workers = min(limit, len(items))
                    if pending is not None:
                        pending.extend([None] * len(items))
                    numbered = enumerate(items)
                else:
                    workers = limit
                    numbered = _numbered(items, pending)

                worker: Callable[[], Coroutine[Any, Any, Any]]
                if direct is not None:  # the fast path: a coroutine a worker

                    async def fast_worker() -> None:
                        if numbered is None:
                            while (pair := await feed_from.take()) is not None:
                                await run_fast(*pair)
                        else:
                            for index, item in numbered:
                                await run_fast(index, item)

                    worker = fast_worker
                else:  # one driver a worker, its items' steps in turn

                    def worker_steps() -> Steps:
                        if numbered is None:
                            next_pair = (AWAIT, None, None, feed_from.take, ())
                            while (pair := (yield next_pair)) is not None:
                                yield from steps_of(*pair)
                        else:
                            for index, item in numbered:
                                yield from steps_of(index, item)

                    def steps_worker() -> Coroutine[Any, Any, Any]:
                        return drive(worker_steps())

                    worker = steps_worker

                if drains:  # a drain stops each worker before its next item
                    worker = _until_drained(worker, drained)
                token = GATES.set((*GATES.get(), gate))
                try:
                    for _ in range(workers):
                        group.spawn(worker())
                finally:
                    GATES.reset(token)
    except OverBudget as stop:  # the questions asked meanwhile wait with the budget
        stop.also_asked(asked)
        raise
    except Exception as error:
        if direct is not None and tasks:
            for index, task in enumerate(tasks):
                if task.done() and not task.cancelled() and task.exception() is error:
                    add_note(error, f"{node._describe()} failed on item {index}")
                    break
        raise
    finally:
        await _close_async(items)
    if drained:  # items are left that did not start: post must not run
        raise DrainStop
    items_recorded()
    if asked:
        raise asked_together(asked)
    if tasks:
        return [task.result() for task in tasks]
    return results if keep else None


def _until_drained(
    worker: Callable[[], Coroutine[Any, Any, Any]], drained: list[bool]
) -> Callable[[], Coroutine[Any, Any, Any]]:
    """``worker``, stopping quietly when the run drains (noted in ``drained``)."""
    return lambda: _item_until_drained(worker(), drained)


async def _item_until_drained(item: Coroutine[Any, Any, Any], drained: list[bool]) -> Any:
    """An item's task (or a worker's), stopping quietly when the run drains
    before it begins (before its next item)."""
    try:
        return await item
    except DrainStop:
        drained.append(True)
        return None


async def _close_async(items: Any) -> None:
    if hasattr(items, "__aiter__"):
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    elif isinstance(items, Generator):
        items.close()
