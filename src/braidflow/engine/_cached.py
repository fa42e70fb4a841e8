"""An item's exec through its node's result cache: a result kept before is
taken, else exec runs (its attempts) and its result is kept for next time.

Items that need one key at once on one event loop (a parallel batch's, or
those of runs sharing the loop) compute it once: the first runs its
attempts, the others wait for it and decode what it kept. A failed exec, or
a fallback's result, is not kept: the waiting items then compute their own,
unless the failure stops their batch (`_ends_its_task`): then they are
woken only once its group has been told, which cancels them first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator
from functools import partial
from typing import Any

from .._after_fork import call_in_children
from .._cache import cache_key
from .._context import PATH, RUN, observed
from .._errors import AsyncUsageError, CacheError, SetupError
from .._options import on_error_of
from .._questions import Interrupted
from ..durable._codec import UNSAVABLE, Codec
from ..stores._base import CacheEntry
from ._effects import AWAIT

__all__ = ["cached"]

Steps = Generator[tuple[Any, ...], Any, Any]


class _Computing:
    """A key whose result an item is computing: on which event loop (``None``:
    none, nobody can wait for it), the event its waiters wait on (made by
    the first of them), and what was kept (``None``: nothing)."""

    __slots__ = ("data", "done", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.done: asyncio.Event | None = None
        self.data: bytes | None = None


# The keys being computed in this process, by (id of the store, key).
_COMPUTING: dict[tuple[int, str], _Computing] = {}
# In a child made by os.fork, none is: the items computing them were the parent's.
call_in_children(_COMPUTING.clear)
_CODECS = {"json": Codec("json"), "pickle": Codec("pickle")}


def cached(
    node: Any,
    item: Any,
    index: int | None,
    shared: Any,
    offload: bool,
    dispatch: Any,
    attempts: Callable[..., Steps],
    fallback: Callable[..., Steps],
) -> Steps:
    """Item ``index``'s result from ``node``'s cache, else from its
    ``attempts`` (whose final failure goes to ``fallback``), kept once computed.

    Raises:
        CacheError: If the input has no key, the result cannot be kept, or
            the cache uses the run's store and the run has none.
        StoreError: If the store fails.
    """
    cache = node._bf_cache
    store = cache._store if cache._store is not None else _run_store(node, index)
    serializer = store.serializer
    codec = _CODECS.get(serializer) or Codec(serializer)
    key = cache_key(cache, node, item, index, serializer)
    slot = (id(store), key)
    while True:
        entry = store.cache_get(key)
        if entry is not None and cache._usable(entry):
            try:
                value = codec.decode(entry[0])
            except Exception:  # not ours to read (written by another serializer): computed anew
                pass
            else:
                _emit_hit(node, index, key)
                return value
        computing = _COMPUTING.get(slot)
        loop = asyncio._get_running_loop()
        if computing is None or computing.loop is None or computing.loop is not loop:
            break  # nobody computes it here, or where this code cannot wait for it
        if computing.done is None:
            computing.done = asyncio.Event()
        try:
            yield (AWAIT, node, index, computing.done.wait, ())
        except AsyncUsageError:  # the sync driver, on the loop's thread: it cannot wait
            break
        if computing.data is not None:
            _emit_hit(node, index, key)
            return codec.decode(computing.data)
        # It failed, or fell back: look again, then compute it here.
    mine = _Computing(asyncio._get_running_loop())
    owner = _COMPUTING.setdefault(slot, mine) is mine
    fell_back = False
    released_now = True

    def failed(*args: Any) -> Steps:
        nonlocal fell_back
        fell_back = True  # a fallback's result is the item's, never the cache's
        return fallback(*args)

    try:
        value = yield from attempts(node, item, index, shared, offload, dispatch, failed)
        if not fell_back:
            data = _encoded(codec, value, node, index)
            store.cache_put(key, CacheEntry(data, cache._clock(), node.name))
            mine.data = data
        return value
    except BaseException as error:
        task = asyncio.current_task() if mine.loop is not None else None
        if owner and task is not None and _ends_its_task(node, index, error):
            # The failure ends this item's task, which stops its batch: the
            # items waiting here are woken (and newcomers kept waiting) only
            # when the task is done, by a callback added after its group's,
            # so that group has cancelled those of its own items first: none
            # starts a call of its own once the batch is stopping.
            task.add_done_callback(partial(_release, slot, mine, owner))
            released_now = False
        raise
    finally:
        if released_now:
            _release(slot, mine, owner)


def _release(slot: tuple[int, str], mine: _Computing, owner: bool, *_: Any) -> None:
    """The key is computed (or failed): wake the items that wait for it."""
    if owner:
        _COMPUTING.pop(slot, None)
    if mine.done is not None:
        mine.done.set()


def _ends_its_task(node: Any, index: int | None, error: BaseException) -> bool:
    """Whether ``error``, raised by item ``index``'s exec, ends the task that
    item runs in: an item of a parallel batch, under ``on_error="raise"``,
    or any error ``"collect"`` does not collect (a `SetupError`, a cancel, a
    budget's stop). A question (`Interrupted`) stops its item alone."""
    if index is None or node._bf_batch != "parallel":
        return False
    if isinstance(error, Interrupted | GeneratorExit):
        return False
    return (
        not isinstance(error, Exception)
        or isinstance(error, SetupError)
        or on_error_of(node) == "raise"
    )


def _run_store(node: Any, index: int | None) -> Any:
    """The run's store, for a cache that has none of its own."""
    run = RUN.get()
    durable = run.durable if run is not None else None
    if durable is None:
        raise CacheError(
            f"{node._describe()}: cache=True keeps results in the run's store, and this run "
            "has none; run it with a store, `flow.run(shared, store=SQLiteStore('runs.db'))`, "
            "or give the cache a store of its own: "
            "`cache=Cache(store=SQLiteStore('cache.db'))`",
            node=node._display_name(),
            item_index=index,
        )
    store = durable.store
    if not callable(getattr(store, "cache_get", None)):
        raise CacheError(
            f"{node._describe()}: cache=True keeps results in the run's store, and "
            f"{store!r} keeps no cache entries (it has no cache_get and cache_put); give the "
            "cache a store that does: `cache=Cache(store=SQLiteStore('cache.db'))`",
            node=node._display_name(),
            item_index=index,
        )
    return store


def _encoded(codec: Codec, value: Any, node: Any, index: int | None) -> bytes:
    """An exec result as the cache keeps it."""
    try:
        return codec.encode(value)
    except UNSAVABLE as error:
        where = f" on item {index}" if index is not None else ""
        instead = (
            "return plain data from exec (a str, numbers, lists and dicts with string keys), "
            "or give the cache a store that pickles: "
            "`Cache(store=SQLiteStore('cache.db', serializer='pickle'))`"
            if codec.kind == "json"
            else "return a value that can be pickled from exec"
        )
        raise CacheError(
            f"{node._describe()}: exec's result{where} (a {type(value).__name__}) cannot be "
            f"kept in the result cache as {codec.kind} ({error}); {instead}",
            node=node._display_name(),
            item_index=index,
        ) from error


def _emit_hit(node: Any, index: int | None, key: str) -> None:
    run = observed()
    if run is not None:
        run.emit(
            "cache_hit", node=node._display_name(), path=PATH.get(), item=index, data={"key": key}
        )
