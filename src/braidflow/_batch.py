"""Item iteration for batch nodes and batch flows: sequential, parallel, streaming.

One set of runners serves both: a batch node runs ``exec`` per item, a batch
flow runs its sub-flow per parameter set. Parallel runs go through a task
group, at most ``max_concurrency`` items at once; input may be any iterable,
generator or async iterator and is read only as fast as the bound allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import types
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Iterator
from contextvars import Token
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ._attempt import cancelled_error, own_cancellation
from ._context import GATES, ITEM, RUN, STEP, ItemAt, StepAt
from ._errors import BatchItemsError, InvalidParameterError, add_note
from ._limits import Limiter
from ._run import observe_items
from ._taskgroup import TaskGroup

if TYPE_CHECKING:
    from .durable import DurableRun

__all__ = [
    "Failure",
    "batch_items",
    "default_thread_count",
    "run_parallel_async",
    "run_sequential_async",
    "run_sequential_sync",
]

SINGLE = "single"
SEQUENTIAL = "sequential"
PARALLEL = "parallel"
ON_ERROR_CHOICES = ("raise", "collect")

RunItemSync = Callable[[Any, int], Any]
RunItemAsync = Callable[[Any, int], Coroutine[Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class Failure:
    """Stands in a result list, under ``on_error="collect"``, for an item that failed.

    Attributes:
        error: The exception the item ended with, after retries and fallback.
        item: The item (for batch flows: the parameter set) that failed.
        index: Its position in the input.
    """

    error: BaseException
    item: Any
    index: int


def batch_items(node: Any, prep_result: Any, *, allow_async: bool) -> Any:
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
        if allow_async:
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


def _no_bound_here(node: Any) -> None:
    """A sequential batch runs one item at a time; a bound set on it is a mistake."""
    if node.max_concurrency is not None:
        raise InvalidParameterError(
            f"{node._describe()}: max_concurrency={node.max_concurrency!r} is set, but "
            f"{type(node).__name__} runs its items one at a time; use a parallel kind "
            "(AsyncParallelBatchNode, AsyncParallelBatchFlow, ParallelBatchNode)",
            node=node._display_name(),
        )


def _bound(node: Any) -> int | None:
    """Read and check ``max_concurrency`` where it is used: a subclass may have
    set it after the constructor checked it."""
    limit = node.max_concurrency
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidParameterError(
            f"{node._describe()}: max_concurrency={limit!r} must be an int >= 1, "
            "or None for no bound",
            node=node._display_name(),
        )
    if limit is None and not node._bf_async and node._bf_batch == PARALLEL:
        return default_thread_count()  # a sync parallel node: one thread per item in flight
    return limit


def _close_sync(items: Any) -> None:
    if isinstance(items, types.GeneratorType):
        items.close()


@contextlib.asynccontextmanager
async def _closing(items: Any) -> AsyncIterator[None]:
    """Close a generator we stopped reading early, now rather than at GC."""
    try:
        yield
    finally:
        if hasattr(items, "__aiter__"):
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()
        else:
            _close_sync(items)


def _wrapped(
    node: Any,
    run_item: Any,
    items: Any,
    is_async: bool,
    observe: bool,
    checkpoint: bool,
    direct: Callable[[Any], Coroutine[Any, Any, Any]] | None = None,
    runs_in: str = "sequence",
    results: list[Any] | None = None,
) -> Any:
    """The per-item function with what the run needs around it: events, if it
    is observed; checkpoints (outermost, so replayed items emit nothing), if
    it is durable. Unchanged for a plain run. ``direct``: the node's bare exec,
    which checkpoints of items nobody observes call instead of ``run_item``.
    ``runs_in``: what runs the items (see `checkpointed_items`).
    ``results``: where checkpointed items put their results, by index."""
    run = RUN.get()
    if run is None:
        return run_item
    if observe and run.observers:
        run_item = observe_items(run, node, run_item, items, is_async)
        direct = None
    if checkpoint and run.durable is not None:
        failed = None if direct is None else partial(_direct_failed, node)
        return checkpointed_items(
            run.durable, node, run_item, is_async, direct, failed, runs_in, results
        )
    return run_item


def _direct_failed(node: Any, error: BaseException, index: int) -> BaseException:
    """What a failure of a node's bare exec on item ``index`` becomes: the
    error, noted with the index; a stray cancellation, the item's failure."""
    if isinstance(error, asyncio.CancelledError):
        return own_cancellation(node, error, index)
    add_note(error, f"{node._describe()} failed on item {index}")
    return error


def _items_recorded() -> None:
    """In a durable run, the items queued for the group commit are written
    now, before anything (``post``, the merge of sub-flows) uses their results."""
    run = RUN.get()
    if run is not None and run.durable is not None:
        run.durable.flush()


def run_sequential_sync(node: Any, items: Iterable[Any], run_item: RunItemSync, keep: bool) -> Any:
    """Run items one after another; return their results in order if ``keep``."""
    _no_bound_here(node)
    run_item = _wrapped(node, run_item, items, False, True, True)
    try:
        if keep:
            return [run_item(item, index) for index, item in enumerate(items)]
        for index, item in enumerate(items):
            run_item(item, index)
        return None
    finally:
        _close_sync(items)


async def run_sequential_async(node: Any, items: Any, run_item: RunItemAsync, keep: bool) -> Any:
    """Await items one after another, from an iterable or an async iterator."""
    _no_bound_here(node)
    run_item = _wrapped(node, run_item, items, True, True, True)
    results: list[Any] | None = [] if keep else None
    async with _closing(items):
        if hasattr(items, "__aiter__"):
            index = 0
            async for item in items:
                value = await run_item(item, index)
                if results is not None:
                    results.append(value)
                index += 1
        else:
            for index, item in enumerate(items):
                value = await run_item(item, index)
                if results is not None:
                    results.append(value)
    _items_recorded()
    return results


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


async def run_parallel_async(
    node: Any,
    items: Any,
    run_item: RunItemAsync,
    keep: bool,
    direct: Callable[[Any], Coroutine[Any, Any, Any]] | None = None,
    observe: bool = True,
    checkpoint: bool = True,
) -> list[Any] | None:
    """Run items concurrently in a task group, at most ``node.max_concurrency`` at once.

    Under ``on_error="raise"`` the first failure cancels every other item and
    is re-raised once all of them have stopped. Under ``"collect"`` failures
    become `Failure` entries. Results keep the input order.

    ``direct``, when given, is the node's own exec coroutine function, to be
    awaited per item with nothing around it (no retry, fallback or policy
    applies and failures propagate): the fan-out hot path, one frame per item.
    """
    limit = _bound(node)
    collect = node._bf_on_error == "collect"
    results: list[Any] = []
    # In a durable run, bounded workers' items put their results in place themselves.
    run = RUN.get()
    stored = (
        checkpoint
        and keep
        and not collect
        and limit is not None
        and run is not None
        and run.durable is not None
    )
    wrapped = _wrapped(
        node,
        run_item,
        items,
        True,
        observe,
        checkpoint,
        direct,
        "task" if limit is None else "worker",
        results if stored else None,
    )
    if wrapped is not run_item:  # items emit events or checkpoints: no bare exec then
        run_item, direct = wrapped, None
    tasks: list[asyncio.Task[Any]] | None = [] if keep and not collect else None

    def stray(task: asyncio.Task[Any]) -> BaseException:
        # An item task that ended cancelled although nobody cancelled it: its
        # own code raised CancelledError (only direct items can end so).
        index = tasks.index(task) if tasks is not None and task in tasks else None
        return cancelled_error(node, asyncio.CancelledError(), index)

    async def collected(index: int, item: Any) -> None:
        try:
            value = await run_item(item, index)
        except Exception as error:
            value = Failure(error, item, index)
        results[index] = value

    async def kept(index: int, item: Any) -> None:
        results[index] = await run_item(item, index)

    async def one_direct(index: int, item: Any) -> None:
        # A direct item inside a bounded worker: label its failure with its index.
        try:
            value = await direct(item)  # type: ignore[misc]
            if keep:
                results[index] = value
        except Exception as error:
            _direct_failed(node, error, index)  # notes the index
            raise
        except asyncio.CancelledError as cancel:
            raise _direct_failed(node, cancel, index) from cancel

    is_async_source = hasattr(items, "__aiter__")
    try:
        async with _closing(items), TaskGroup(stray) as group:
            if limit is None:
                # No bound: one task per item, created as items are read.
                def start(index: int, item: Any) -> None:
                    if collect:
                        results.append(None)
                        group.spawn(collected(index, item))
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
                one: Callable[[int, Any], Coroutine[Any, Any, Any]]
                if collect:
                    one = collected
                elif direct is not None:
                    one = one_direct
                elif keep and not stored:
                    one = kept
                else:
                    one = lambda index, item: run_item(item, index)  # noqa: E731

                if is_async_source:
                    feed_from = _AsyncFeed(items, pending)

                    async def worker() -> None:
                        while (pair := await feed_from.take()) is not None:
                            await one(*pair)

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
                            await one(index, item)

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
    _items_recorded()
    if tasks:
        return [task.result() for task in tasks]
    return results if keep else None


def checkpointed_items(
    durable: DurableRun,
    node: Any,
    run_item: Any,
    is_async: bool,
    direct: Callable[[Any], Any] | None = None,
    failed: Callable[[BaseException, int], BaseException] | None = None,
    runs_in: str = "sequence",
    results: list[Any] | None = None,
) -> Any:
    """Wrap a batch runner's per-item function: an item that finished before is
    not run again (its recorded result stands); one that finishes now is in
    the store before its worker goes on (in the event loop, written at the
    loop's next turn with the others that finished meanwhile).

    ``direct``: the node's own exec coroutine function, to await instead of
    ``run_item`` when nothing else applies to an item (the batch runner's
    fast path); ``failed`` says what its failure on an item becomes.
    ``runs_in`` says what runs the items: ``"sequence"``, the caller, one
    after another; ``"worker"``, tasks that each take item after item; or
    ``"task"``, a task per item. The first two go on to another item when
    one returns, so they must wait until it is in the store first; a task
    of its own per item need not. ``results``: a list to put each item's
    result in, at its index (saving the caller a frame per item)."""
    step = STEP.get()
    stage = step.key
    batch = (stage, id(node))
    recorded = durable.recorded_items(stage)
    # A parameter set's sub-flow walks a frame of its own; an item is told
    # apart (for interrupt answers) by its index.
    flow = node._bf_is_flow

    if is_async:

        async def item_async(item: Any, index: int) -> Any:
            if recorded and index in recorded:
                result = durable.item_result(index, recorded[index], item, node)
                if results is not None:
                    results[index] = result
                return result
            mark = durable.fingerprint(item)  # before exec, which may change the item
            token: Token[Any] | None = None
            at: ItemAt | None = None
            if flow:
                token = STEP.set(StepAt(f"{stage}[{index}]", step.touched))
            elif runs_in == "task":  # its context is its own, and ends with it
                ITEM.set(index)
            elif runs_in == "worker":  # its next item only moves its marker on
                at = ITEM.get()  # type: ignore[assignment]
                if type(at) is ItemAt and at.batch is batch:
                    if at.queued:  # the item before must be in the store first
                        await _yield()
                        at.queued = False
                        durable.check_written()
                    at.index = index
                else:
                    at = ItemAt(batch, index)
                    ITEM.set(at)
            else:
                token = ITEM.set(index)
            try:
                if direct is None:
                    result = await run_item(item, index)
                else:
                    try:
                        result = await direct(item)
                    except Exception as error:
                        failed(error, index)  # type: ignore[misc]  # notes the index
                        raise
                    except asyncio.CancelledError as cancel:
                        raise failed(cancel, index) from cancel  # type: ignore[misc]
            finally:
                if token is not None:
                    (STEP if flow else ITEM).reset(token)
            durable.queue_item(batch, index, mark, result, node)
            if results is not None:
                results[index] = result
            # Nothing new runs until this item is in the store, so a crash can
            # only lose items in flight. Its commit is queued (call_soon) before
            # this task's next step: it has run when a yield returns. A node's
            # worker yields before its next item (its last one never waits); a
            # task per item ends here (post waits for the commit).
            if at is not None:
                at.queued = True
            elif runs_in != "task":
                await _yield()
                durable.check_written()
            return result

        return item_async

    def item_sync(item: Any, index: int) -> Any:
        if recorded and index in recorded:
            return durable.item_result(index, recorded[index], item, node)
        mark = durable.fingerprint(item)  # before exec, which may change the item
        if flow:
            token: Token[Any] = STEP.set(StepAt(f"{stage}[{index}]", step.touched))
        else:
            token = ITEM.set(index)
        try:
            result = run_item(item, index)
        finally:
            (STEP if flow else ITEM).reset(token)
        durable.item_done(stage, index, mark, result, node)
        return result

    return item_sync


@types.coroutine
def _yield() -> Generator[None, None, None]:
    """Let the event loop turn once (``asyncio.sleep(0)``, without its coroutine)."""
    yield
