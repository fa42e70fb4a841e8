"""The node kinds: `Node`, `BatchNode`, `ParallelBatchNode`, `AsyncNode` and the async batch kinds.

Each kind is a preset of two choices, sync or async and how it batches
(none, one item after another, items at once), plus `Node`'s options: the
policies every exec attempt runs under (retries, timeout, limiters), where
sync code runs (``offload``), where a batch's items run (``executor``) and
where exec's results are kept for reuse (``cache``).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._cache import Cache
from ._errors import InvalidParameterError
from ._holding import ordered
from ._limits import Limiter
from ._node import BaseNode, exec_one
from ._options import (
    UNSET,
    check_cache,
    check_durability,
    check_executor,
    check_limits,
    check_offload,
    check_retry_counts,
    check_timeout,
)
from ._policy import Retry
from ._state import StateT
from ._weights import Weighted

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BatchNode",
    "Node",
    "ParallelBatchNode",
]

PrepT = TypeVar("PrepT")
ExecT = TypeVar("ExecT")
ItemT = TypeVar("ItemT")


def _state_optional(cls: Any, params: Any, parameterize: Any) -> Any:
    """``Node[str, str]`` at run time: the state type, a node kind's last
    parameter, may be left out (type checkers default it to ``Any``, PEP 696;
    Python before 3.13 cannot)."""
    if not isinstance(params, tuple):
        params = (params,)
    parameters = getattr(cls, "__parameters__", ())
    if parameters and parameters[-1] is StateT and len(params) == len(parameters) - 1:
        params = (*params, Any)
    return parameterize(params)


class Node(BaseNode, Generic[PrepT, ExecT, StateT]):
    """A synchronous node with retries: ``prep`` -> ``exec`` (retried) -> ``post``.

    Generic in what ``prep`` returns and ``exec`` returns, for type checkers:
    ``class Greet(Node[str, str])``, and optionally in the type of the shared
    state its flow declares: ``Node[str, str, State]`` types ``shared`` in
    ``prep`` and ``post`` (see `Flow`'s ``state=``). Unparameterized, all
    are ``Any``.

    Args:
        max_retries: How many times ``exec`` may run in all (PocketFlow's
            meaning: 1 is a single attempt). Must be >= 1.
        wait: Seconds to sleep between attempts. Must be >= 0; ``None`` is 0.
        name: A label for errors, traces and graphs; default: the class name.
        retry: A `Retry` policy (backoff, jitter, which errors), instead
            of ``max_retries``/``wait``.
        timeout: Seconds each exec attempt may take; a late attempt fails
            with `NodeTimeoutError` (a ``TimeoutError``) and is retried
            like any failure. Sync ``exec`` code is timed in a worker thread.
        limits: `Limiter` objects (or one) that every exec attempt holds.
        offload: Run this sync node in a worker thread when inside an
            ``AsyncFlow``, so the event loop stays live. ``None``: the flow decides.
        durability: ``"sync"``: in a durable run whose ``durability=`` is
            ``"async"`` or ``"exit"``, this node's checkpoint (each item's,
            for a batch) and every one before it are in the store before the
            run goes on, as under ``"sync"``. ``None``: as the run says.
        executor: For batch kinds: where each item's ``exec`` runs, e.g.
            ``braidflow.executors.RayExecutor()``; ``prep``, ``post``, limits,
            retries, timeouts and events stay here. ``None``: in this process
            (or the flow's executor, if it has one).
        cache: Keep exec's results and reuse them instead of running exec
            again for the same input (for a batch kind, per item): ``True``
            keeps them in the run's store; a `Cache` says where, for how
            long, and what the key is made of. A result taken from the
            cache skips exec with its limits, retries and timeout.

    Raises:
        InvalidParameterError: For a value that cannot work, naming the node.
    """

    _exec = exec_one  # one item: what a batch class's own _exec reaches per item

    def __init__(
        self,
        max_retries: int = 1,
        wait: float | None = 0,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        limits: Limiter | Iterable[Limiter] | None = None,
        offload: bool | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
        executor: Any = None,
        durability: str | None = None,
        cache: Cache | bool | None = None,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency, on_error=on_error)
        if executor is not None:
            self._bf_executor = check_executor(self, executor)
        if durability is not None:
            self._bf_strict = check_durability(self, durability, node=True) == "sync"
        if wait is None:  # no wait: PocketFlow ran it too, unless a retry came
            wait = 0
        check_retry_counts(self, max_retries, wait)
        self.max_retries = max_retries
        self.wait = wait
        if retry is not None:
            if not isinstance(retry, Retry):
                raise InvalidParameterError(
                    f"{self._describe()}: retry={retry!r} must be a braidflow.Retry",
                    node=self._display_name(),
                )
            if max_retries != 1 or wait != 0:
                raise InvalidParameterError(
                    f"{self._describe()}: give either retry=Retry(...) or max_retries/wait, "
                    "not both",
                    node=self._display_name(),
                )
            self._bf_retry = retry
            self.max_retries = retry.attempts
            self.wait = retry.delay
        if timeout is not None:
            self._bf_timeout = check_timeout(self, timeout)
        if limits is not None:
            self._bf_limits = ordered(check_limits(self, limits, (Limiter, Weighted)))
            if any(isinstance(limit, Weighted) for limit in self._bf_limits):
                self._bf_weighted = tuple(
                    limit.limiter if isinstance(limit, Weighted) else limit
                    for limit in self._bf_limits
                )
        if offload is not None:
            self._bf_offload = check_offload(self, offload)
        if cache is not None:
            self._bf_cache = check_cache(self, cache, Cache)
        self._bf_policy = bool(
            retry is not None
            or self._bf_timeout is not None
            or limits
            or self._bf_cache is not None
        )

    if TYPE_CHECKING:  # the typed view of the phases; the engine's are in BaseNode

        def prep(self, shared: StateT) -> PrepT: ...
        def exec(self, prep_res: PrepT) -> ExecT: ...
        def post(self, shared: StateT, prep_res: PrepT, exec_res: ExecT) -> str | None: ...
        def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT: ...
    else:

        def __class_getitem__(cls, params):
            return _state_optional(cls, params, super().__class_getitem__)


class BatchNode(Node[Any, Any, StateT], Generic[ItemT, ExecT, StateT]):
    """A node whose ``prep`` returns items; ``exec`` runs once per item, in order.

    ``prep`` may return a list, any iterable or generator (read lazily), or
    ``None`` for no items. ``post`` receives the list of results. Generic in
    the item type and the per-item result: ``BatchNode[str, int]`` (and the
    state type: ``BatchNode[str, int, State]``).
    """

    _bf_batch = "sequential"
    _exec = BaseNode._exec  # the batch's items (Node's: one item)

    if TYPE_CHECKING:

        def prep(self, shared: StateT) -> Iterable[ItemT] | None: ...
        def exec(self, prep_res: ItemT) -> ExecT: ...
        def post(self, shared: StateT, prep_res: Any, exec_res: list[ExecT]) -> str | None: ...
        def exec_fallback(self, prep_res: ItemT, exc: Exception) -> ExecT: ...


class ParallelBatchNode(BatchNode[ItemT, ExecT, StateT]):
    """A synchronous batch node whose items run in a bounded thread pool.

    For sync SDK calls: ``max_concurrency`` threads at most (default:
    ``min(32, cpu_count + 4)``), results in input order, ``on_error`` as for
    `AsyncParallelBatchNode`.
    """

    _bf_batch = "parallel"


class AsyncNode(Node[PrepT, ExecT, StateT]):
    """A node whose phases may be coroutines, run by an ``AsyncFlow``.

    Each phase may be written as ``prep_async``/``exec_async``/``post_async``
    or as plain ``prep``/``exec``/``post``, with ``async def`` or ``def``;
    the choice is read once per class. The fallback is
    ``exec_fallback_async`` (or ``exec_fallback``, or the older
    ``process_after_fail``). For type checkers, the ``_async`` names carry
    the ``PrepT``/``ExecT`` types; the plain names may be either kind.
    """

    _bf_async = True
    _exec = exec_one  # one item, as PocketFlow's AsyncNode._exec

    if TYPE_CHECKING:

        def prep(self, shared: Any) -> Any: ...
        def exec(self, prep_res: Any) -> Any: ...
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any: ...
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any: ...
        async def prep_async(self, shared: StateT) -> PrepT: ...
        async def exec_async(self, prep_res: PrepT) -> ExecT: ...
        async def post_async(
            self, shared: StateT, prep_res: PrepT, exec_res: ExecT
        ) -> str | None: ...
        async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT: ...


class _AsyncBatchTyping(Generic[ItemT, ExecT, StateT]):
    """The typed view of the async batch kinds' phases (type checkers only)."""

    if TYPE_CHECKING:

        async def prep_async(
            self, shared: StateT
        ) -> Iterable[ItemT] | AsyncIterable[ItemT] | None: ...
        async def exec_async(self, prep_res: ItemT) -> ExecT: ...
        async def post_async(
            self, shared: StateT, prep_res: Any, exec_res: list[ExecT]
        ) -> str | None: ...
        async def exec_fallback_async(self, prep_res: ItemT, exc: Exception) -> ExecT: ...
    else:

        def __class_getitem__(cls, params):
            return _state_optional(cls, params, super().__class_getitem__)


class AsyncBatchNode(
    _AsyncBatchTyping[ItemT, ExecT, StateT],
    AsyncNode[Any, Any, StateT],
    BatchNode[Any, Any, StateT],
):
    """An async batch node: items one at a time; ``prep`` may also return an async iterator."""

    _bf_batch = "sequential"
    _exec = BaseNode._exec  # the batch's items


class AsyncParallelBatchNode(
    _AsyncBatchTyping[ItemT, ExecT, StateT],
    AsyncNode[Any, Any, StateT],
    BatchNode[Any, Any, StateT],
):
    """An async batch node whose items run concurrently in a task group.

    Options (keywords, or class attributes of the same name):
        max_concurrency: Most items in flight at once; ``None`` = no bound.
            Input (a list, generator or async iterator) is read only as fast
            as this allows, so memory does not grow with the input's length.
        on_error: ``"raise"`` (default): the first failure (after retries and
            fallback) cancels the other items and propagates once they have
            stopped. ``"collect"``: every item runs; ``post`` receives results
            in input order with `Failure` objects for failed items (a
            `SetupError` is never collected: it stops them as ``"raise"`` does).
    """

    _bf_batch = "parallel"
    _exec = BaseNode._exec  # the batch's items
