"""Item iteration for batch nodes and batch flows: sequential, parallel, streaming.

One set of runners serves both: a batch node runs ``exec`` per item, a batch
flow runs its sub-flow per parameter set. Parallel runs go through a task
group (or a bounded thread pool for sync nodes); input may be any iterable,
generator or async iterator and is read only as fast as the bound allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from ._errors import BatchItemsError, add_note

__all__ = [
    "Failure",
    "batch_items",
    "run_parallel_async",
    "run_parallel_threads",
    "run_sequential_async",
    "run_sequential_sync",
]

SINGLE = "single"
SEQUENTIAL = "sequential"
PARALLEL = "parallel"
ON_ERROR_CHOICES = ("raise", "collect")

RunItemSync = Callable[[Any, int], Any]
RunItemAsync = Callable[[Any, int], Awaitable[Any]]


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


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    errors = group.exceptions
    first = errors[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    if len(errors) > 1:
        others = ", ".join(repr(e) for e in errors[1:4])
        add_note(first, f"{len(errors) - 1} more item(s) failed while stopping: {others}")
    return first


@contextlib.asynccontextmanager
async def _closing(items: Any) -> AsyncIterator[None]:
    """Close an async generator we stopped reading early, now rather than at GC."""
    try:
        yield
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None and hasattr(items, "__aiter__"):
            await aclose()


def run_sequential_sync(items: Iterable[Any], run_item: RunItemSync, keep: bool) -> Any:
    """Run items one after another; return their results in order if ``keep``."""
    if keep:
        return [run_item(item, index) for index, item in enumerate(items)]
    for index, item in enumerate(items):
        run_item(item, index)
    return None


async def run_sequential_async(items: Any, run_item: RunItemAsync, keep: bool) -> Any:
    """Await items one after another, from an iterable or an async iterator."""
    results: list[Any] | None = [] if keep else None
    if hasattr(items, "__aiter__"):
        index = 0
        async with _closing(items):
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
    direct: Callable[[Any], Awaitable[Any]] | None = None,
) -> list[Any] | None:
    """Run items concurrently in a task group, at most ``node.max_concurrency`` at once.

    Under ``on_error="raise"`` the first failure cancels every other item and
    is re-raised once all of them have stopped. Under ``"collect"`` failures
    become :class:`Failure` entries. Results keep the input order.

    ``direct``, when given, is the node's own exec coroutine function, to be
    awaited per item with nothing around it (no retry, fallback or policy
    applies and failures propagate): the fan-out hot path, one frame per item.
    """
    limit: int | None = node.max_concurrency
    collect = node._bf_on_error == "collect"
    results: list[Any] = []
    tasks: list[asyncio.Task[Any]] = []  # per item, on the direct unbounded path only

    async def one(index: int, item: Any) -> None:
        try:
            value = await run_item(item, index)
        except Exception as error:
            if not collect:
                raise
            value = Failure(error, item, index)
        if keep:
            results[index] = value

    async def one_direct(index: int, item: Any) -> None:
        try:
            value = await direct(item)  # type: ignore[misc]
        except Exception as error:
            add_note(error, f"{node._describe()} failed on item {index}")
            raise
        if keep:
            results[index] = value

    step = one if direct is None else one_direct
    is_async_source = hasattr(items, "__aiter__")
    try:
        async with _closing(items), asyncio.TaskGroup() as group:
            if limit is None and not is_async_source:
                if type(items) is not list and type(items) is not tuple:
                    items = list(items)
                if direct is not None:
                    create = group.create_task
                    tasks = [create(direct(item)) for item in items]  # type: ignore[arg-type]
                else:
                    if keep:
                        results = [None] * len(items)
                    for index, item in enumerate(items):
                        group.create_task(one(index, item))
            elif limit is None:
                index = 0
                async for item in items:
                    if keep:
                        results.append(None)
                    group.create_task(step(index, item))
                    index += 1
            elif is_async_source:
                feed = _AsyncFeed(items, results if keep else None)

                async def async_worker() -> None:
                    while (pair := await feed.take()) is not None:
                        await step(*pair)

                for _ in range(limit):
                    group.create_task(async_worker())
            else:
                if type(items) is list or type(items) is tuple:
                    workers = min(limit, len(items))
                    if keep:
                        results = [None] * len(items)
                    numbered: Iterator[tuple[int, Any]] = enumerate(items)
                else:
                    workers = limit
                    numbered = _numbered(items, results if keep else None)

                async def worker() -> None:
                    for index, item in numbered:
                        await step(index, item)

                for _ in range(workers):
                    group.create_task(worker())
    except BaseExceptionGroup as group_error:
        first = _first_error(group_error)
        for index, task in enumerate(tasks):
            if task.done() and not task.cancelled() and task.exception() is first:
                add_note(first, f"{node._describe()} failed on item {index}")
                break
        raise first from None
    if tasks and keep:
        return [task.result() for task in tasks]
    return results if keep else None


def default_thread_count() -> int:
    """The thread pool size used when a sync parallel node sets no ``max_concurrency``."""
    return min(32, (os.cpu_count() or 1) + 4)


def run_parallel_threads(
    node: Any, items: Iterable[Any], run_item: RunItemSync, keep: bool
) -> list[Any] | None:
    """Run a sync node's items in a bounded thread pool; results in input order.

    Items are read from the input only as threads free up. Under
    ``on_error="raise"`` the first failure stops new items from starting,
    waits for the running ones (threads cannot be interrupted) and re-raises.
    """
    limit: int = node.max_concurrency or default_thread_count()
    collect = node._bf_on_error == "collect"
    results: list[Any] = []
    numbered = _numbered(items, results if keep else None)
    pending: dict[Future[Any], tuple[int, Any]] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(limit, thread_name_prefix=f"braidflow-{node._display_name()}") as pool:

        def fill() -> None:
            while len(pending) < limit:
                pair = next(numbered, None)
                if pair is None:
                    return
                pending[pool.submit(run_item, pair[1], pair[0])] = pair

        try:
            fill()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index, item = pending.pop(future)
                    try:
                        value = future.result()
                    except Exception as error:
                        if not collect:
                            failure = failure or error
                            continue
                        value = Failure(error, item, index)
                    if keep:
                        results[index] = value
                if failure is not None:
                    break
                fill()
        finally:
            for future in pending:
                future.cancel()
            wait(pending)
    if failure is not None:
        raise failure
    return results if keep else None
