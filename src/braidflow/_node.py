"""The node engine: prep -> exec -> post, sync or async, with per-attempt policy.

One engine runs every node kind. A class says only whether it is async and
how it batches (none, sequential, parallel); which user methods to call,
and whether to await them, is decided once per class when it is defined.
Retries, fallback, timeouts and limits wrap each exec attempt of each item.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
import warnings
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._batch import (
    ON_ERROR_CHOICES,
    PARALLEL,
    SEQUENTIAL,
    SINGLE,
    batch_items,
    run_parallel_async,
    run_parallel_threads,
    run_sequential_async,
    run_sequential_sync,
)
from ._context import ATTEMPT, AttemptState
from ._errors import (
    AsyncUsageError,
    InvalidParameterError,
    NodeDefinitionError,
    NodeTimeoutError,
    add_note,
    has_note,
)
from ._limits import Limiter, acquire_all, acquire_all_blocking, ordered, release_all
from ._policy import Retry, next_delay
from ._threads import call_in_new_thread, call_with_deadline, run_in_thread
from ._wiring import Wirable

__all__ = [
    "AsyncBatchNode",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchNode",
    "Node",
    "ParallelBatchNode",
]


PrepT = TypeVar("PrepT")
ExecT = TypeVar("ExecT")
ItemT = TypeVar("ItemT")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


def _default(function: Any) -> Any:
    """Mark an engine method as the do-nothing default a subclass may replace."""
    function._braidflow_default = True
    return function


def _required_positional_count(function: Any) -> int | None:
    """Count the positional parameters without defaults (self included); None if *args."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if (
            parameter.kind
            in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            and parameter.default is inspect.Parameter.empty
        ):
            count += 1
    return count


def _is_coroutine_function(function: Any) -> bool:
    return inspect.iscoroutinefunction(inspect.unwrap(function))


class _Plan:
    """Which user method serves each phase of a class, and how to call it."""

    __slots__ = (
        "exec",
        "exec_coro",
        "exec_wants_shared",
        "fallback",
        "fallback_coro",
        "fallback_default",
        "fallback_wants_shared",
        "post",
        "post_coro",
        "prep",
        "prep_coro",
    )

    def __init__(self, cls: type[BaseNode]) -> None:
        is_async = cls._bf_async
        self.prep, self.prep_coro = self._pick(
            cls, ("prep_async", "prep") if is_async else ("prep",)
        )
        self.exec, self.exec_coro = self._pick(
            cls, ("exec_async", "exec") if is_async else ("exec",)
        )
        self.post, self.post_coro = self._pick(
            cls, ("post_async", "post") if is_async else ("post",)
        )
        fallbacks: tuple[str, ...] = ("exec_fallback", "process_after_fail")
        if is_async:
            fallbacks = ("exec_fallback_async", *fallbacks)
        self.fallback, self.fallback_coro = self._pick(cls, fallbacks)
        self.fallback_default = getattr(getattr(cls, self.fallback), "_braidflow_default", False)
        # The oldest documented forms take the shared store first:
        # exec(shared, prep_res) and process_after_fail(shared, prep_res, exc).
        self.exec_wants_shared = self._takes(cls, self.exec, 3)
        self.fallback_wants_shared = self._takes(cls, self.fallback, 4)
        if not is_async:
            for name, coro in (
                (self.prep, self.prep_coro),
                (self.exec, self.exec_coro),
                (self.post, self.post_coro),
                (self.fallback, self.fallback_coro),
            ):
                if coro:
                    raise NodeDefinitionError(
                        f"{cls.__name__}.{name} is 'async def', but {cls.__name__} is a "
                        f"synchronous node; derive it from the Async variant (AsyncNode, "
                        f"AsyncBatchNode, AsyncFlow, ...) so its coroutines are awaited",
                        node=cls.__name__,
                    )

    @staticmethod
    def _pick(cls: type[BaseNode], names: tuple[str, ...]) -> tuple[str, bool]:
        for name in names:
            function = getattr(cls, name, None)
            if function is not None and not getattr(function, "_braidflow_default", False):
                return name, _is_coroutine_function(function)
        function = getattr(cls, names[0])
        return names[0], _is_coroutine_function(function)

    @staticmethod
    def _takes(cls: type[BaseNode], name: str, positional: int) -> bool:
        function = getattr(cls, name)
        if getattr(function, "_braidflow_default", False):
            return False
        return _required_positional_count(function) == positional


def copy_node(node: BaseNode) -> BaseNode:
    """The fresh shallow copy a flow runs at each step (as ``copy.copy`` would make)."""
    cls = node.__class__
    if cls._bf_plain_copy:
        new = object.__new__(cls)
        new.__dict__.update(node.__dict__)
        return new
    return copy.copy(node)


_COPY_HOOKS = ("__copy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__")


def _has_plain_copy(cls: type) -> bool:
    """True when copy.copy(instance) would just copy ``__dict__`` into a new object."""
    if cls.__new__ is not object.__new__:  # type: ignore[comparison-overlap]
        return False
    for klass in cls.__mro__:
        if klass is object:
            continue
        if vars(klass).get("__slots__"):  # slot values live outside __dict__
            return False
        if any(hook in vars(klass) for hook in _COPY_HOOKS):
            return False
    return True


class _Attempts:
    """Bookkeeping of one item's attempt loop, shared by the sync and async drivers:
    the attempt number in the run context (and on the node, as PocketFlow kept
    it), and the retry decision after each failure."""

    __slots__ = ("node", "state", "token")

    def __init__(self, node: BaseNode, index: int | None) -> None:
        self.node = node
        self.state = AttemptState(node, index)

    def __enter__(self) -> _Attempts:
        self.token = ATTEMPT.set(self.state)
        self.node.__dict__["_bf_cur_retry"] = 0
        return self

    def __exit__(self, *exc_info: object) -> None:
        ATTEMPT.reset(self.token)

    @property
    def number(self) -> int:
        """The 0-based attempt running now."""
        return self.state.attempt

    def after_failure(self, error: BaseException) -> float | None:
        """Return the wait before the next attempt (and count it), or None to give up."""
        node = self.node
        state = self.state
        delay = next_delay(node._bf_retry, node.max_retries, node.wait, state.attempt, error)
        if delay is not None:
            state.attempt += 1
            node.__dict__["_bf_cur_retry"] = state.attempt
        return delay


class BaseNode(Wirable):
    """The engine behind every node and flow: the prep -> exec -> post lifecycle.

    Subclass one of the presets (:class:`Node`, :class:`AsyncNode`, the batch
    kinds, the flows) rather than this class. A node reads the shared store
    in ``prep``, does its work in ``exec`` (pure and retryable), and writes
    back in ``post``, whose return value is the action that picks the next
    node. ``self.params`` holds the parameters a flow hands to this run.

    Args:
        name: A label used in errors, traces and graphs; defaults to the class name.
    """

    # What kind of node this is: set by the presets, read by the engine.
    _bf_async: ClassVar[bool] = False
    _bf_batch: ClassVar[str] = SINGLE
    _bf_plan: ClassVar[_Plan]
    _bf_plain_copy: ClassVar[bool] = True
    _bf_is_flow: ClassVar[bool] = False
    _bf_single_exec: ClassVar[bool] = True  # a plain node, not a batch and not a flow

    # PocketFlow's options, and max_concurrency: public and read at run time,
    # so a subclass may set them in its body or in its __init__.
    max_retries: int = 1
    wait: float = 0
    max_concurrency: int | None = None
    # Policies set through the constructor. They live under private names so
    # that a user's own `self.timeout`, `self.limits` or `self.retry` (common in
    # PocketFlow code), or a KayGraph-style `on_error` hook method, never
    # changes how braidflow runs the node.
    _bf_retry: Retry | None = None
    _bf_timeout: float | None = None
    _bf_limits: tuple[Limiter, ...] = ()
    _bf_offload: bool | None = None
    _bf_on_error: str = "raise"

    def __init__(
        self,
        *,
        name: str | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
    ) -> None:
        self.params: dict[str, Any] = {}
        self.successors: dict[str, BaseNode | None] = {}
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidParameterError(
                    f"{type(self).__name__}: name={name!r} must be a non-empty string"
                )
            self.name = name
        self._configure_batch(max_concurrency, on_error)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._bf_plan = _Plan(cls)
        cls._bf_plain_copy = _has_plain_copy(cls)
        cls._bf_single_exec = cls._bf_batch == SINGLE and not cls._bf_is_flow

    # -- identity -------------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's label: the ``name=`` it was given, or its class name."""
        return self.__dict__.get("_bf_name") or type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_bf_name"] = value

    def _display_name(self) -> str:
        return str(self.name)

    def _describe(self) -> str:
        """``node 'Fetch'``, or ``flow 'Main' (AsyncFlow)`` when named apart from its class."""
        kind = "flow" if self._bf_is_flow else "node"
        cls = type(self).__name__
        name = self._display_name()
        return f"{kind} {name!r}" if name == cls else f"{kind} {name!r} ({cls})"

    def __repr__(self) -> str:
        name = self.__dict__.get("_bf_name")
        return f"<{type(self).__name__}{f' {name!r}' if name else ''}>"

    @property
    def cur_retry(self) -> int:
        """The 0-based number of the exec attempt running now, for this item.

        Correct per item even when items run concurrently: it is read from
        the running item's context, not from a field the items share.
        """
        state = ATTEMPT.get()
        if state is not None and state.node is self:
            return state.attempt
        value: int = self.__dict__.get("_bf_cur_retry", 0)
        return value

    @cur_retry.setter
    def cur_retry(self, value: int) -> None:
        self.__dict__["_bf_cur_retry"] = value

    # -- configuration ----------------------------------------------------------

    def _configure_batch(self, max_concurrency: Any, on_error: Any) -> None:
        parallel = self._bf_batch == PARALLEL
        if max_concurrency is not UNSET:
            if max_concurrency is not None and not parallel:
                raise InvalidParameterError(
                    f"{self._describe()}: max_concurrency applies to parallel batch kinds "
                    "(AsyncParallelBatchNode, AsyncParallelBatchFlow, ParallelBatchNode)",
                    node=self._display_name(),
                )
            self.max_concurrency = max_concurrency
        limit = self.max_concurrency
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidParameterError(
                f"{self._describe()}: max_concurrency={limit!r} must be an int >= 1, "
                "or None for no bound",
                node=self._display_name(),
            )
        if on_error is UNSET:
            # A class attribute of the same name works too, if it is a policy name
            # (a method called on_error is a lifecycle hook, not a policy).
            declared = getattr(type(self), "on_error", "raise")
            on_error = declared if isinstance(declared, str) else "raise"
        if on_error not in ON_ERROR_CHOICES:
            raise InvalidParameterError(
                f"{self._describe()}: on_error={on_error!r} is not one of "
                f"{', '.join(map(repr, ON_ERROR_CHOICES))}",
                node=self._display_name(),
            )
        if on_error != "raise" and not parallel:
            raise InvalidParameterError(
                f"{self._describe()}: on_error applies to parallel batch kinds; "
                "sequential batches stop at the first failure",
                node=self._display_name(),
            )
        self._bf_on_error = on_error

    def set_params(self, params: dict[str, Any]) -> None:
        """Set the parameters for this run (a flow calls it on each step's copy)."""
        self.params = params

    # -- the phases users override ------------------------------------------------

    @_default
    def prep(self, shared: Any) -> Any:
        """Read what ``exec`` needs from the shared store. Default: ``None``."""
        return None

    @_default
    def exec(self, prep_res: Any) -> Any:
        """Do the work; for batch kinds, for one item. Pure and retryable. Default: ``None``."""
        return None

    @_default
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Write results to the shared store and return the next action. Default: ``None``."""
        return None

    @_default
    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        """Called when the last attempt failed: return a result, or raise. Default: re-raise."""
        raise exc

    @_default
    async def prep_async(self, shared: Any) -> Any:
        """Async form of :meth:`prep` (async nodes only)."""
        return None

    @_default
    async def exec_async(self, prep_res: Any) -> Any:
        """Async form of :meth:`exec` (async nodes only)."""
        return None

    @_default
    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Async form of :meth:`post` (async nodes only)."""
        return None

    @_default
    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        """Async form of :meth:`exec_fallback` (async nodes only). Default: re-raise."""
        raise exc

    # -- entry points ---------------------------------------------------------------

    def _warn_unreachable_successors(self, flow_kind: str) -> None:
        for successor in self.successors.values():
            if successor is not None:
                warnings.warn(f"Node won't run successors. Use {flow_kind}.", stacklevel=3)
                return

    def run(self, shared: Any = UNSET, **legacy: Any) -> Any:
        """Run this node (or flow) once on ``shared`` and return its action.

        An async node or flow called from plain synchronous code is run to
        completion on a new event loop. Successors are not followed; put the
        node in a flow for that. (Early PocketFlow spelled the argument
        ``shared_storage=``; that keyword is accepted too.)

        Raises:
            AsyncUsageError: If this node is async and an event loop is
                already running in this thread: ``await node.run_async(shared)``.
        """
        shared = self._shared_argument(shared, legacy)
        if self._bf_async:
            self._warn_unreachable_successors("AsyncFlow")
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self._run_top_async(shared))
            raise AsyncUsageError(
                f"{self._describe()} is async and an event loop is already running in this "
                "thread, so run() cannot wait for it; use `await node.run_async(shared)`",
                node=self._display_name(),
            )
        self._warn_unreachable_successors("Flow")
        try:
            return self._run(shared)
        except Exception as error:
            self._label_top_error(error)
            raise

    async def run_async(self, shared: Any = UNSET, **legacy: Any) -> Any:
        """Run this node (or flow) once on ``shared`` inside a running event loop.

        A synchronous node is run as it is (in a worker thread if it was made
        with ``offload=True``).
        """
        shared = self._shared_argument(shared, legacy)
        self._warn_unreachable_successors("AsyncFlow")
        return await self._run_top_async(shared)

    def _shared_argument(self, shared: Any, legacy: dict[str, Any]) -> Any:
        if legacy:
            if shared is UNSET and list(legacy) == ["shared_storage"]:
                return legacy["shared_storage"]
            raise TypeError(
                f"{self._describe()}: run() takes the shared store as its one argument, "
                f"got unexpected keyword(s) {sorted(legacy)}"
            )
        if shared is UNSET:
            raise TypeError(f"{self._describe()}: run() needs the shared store, e.g. run({{}})")
        return shared

    async def _run_top_async(self, shared: Any) -> Any:
        try:
            if self._bf_async:
                return await self._run_async(shared)
            if self._bf_offload:
                return await run_in_thread(self._run, shared)
            return self._run(shared)
        except Exception as error:
            self._label_top_error(error)
            raise

    def _label_top_error(self, error: BaseException) -> None:
        if not has_note(error):
            add_note(error, f"raised in {self._describe()}")

    # -- the lifecycle ----------------------------------------------------------------

    def _run(self, shared: Any) -> Any:
        """Run prep, exec and post synchronously; return the action."""
        if self._bf_async:
            raise AsyncUsageError(
                f"{self._describe()} is async and cannot run synchronously here; "
                "put it in an AsyncFlow, or use `await node.run_async(shared)`",
                node=self._display_name(),
            )
        prep_result = self.prep(shared)
        if self._bf_single_exec and self._is_simple():
            # The hot path, inlined: one plain attempt, no policy to apply.
            plan = self._bf_plan
            try:
                if plan.exec_wants_shared:
                    exec_result = self.exec(shared, prep_result)
                else:
                    exec_result = self.exec(prep_result)
            except Exception as error:
                exec_result = self._fallback_sync(prep_result, error, None, 0, shared)
        else:
            exec_result = self._stage_sync(shared, prep_result)
        return self.post(shared, prep_result, exec_result)

    async def _run_async(self, shared: Any) -> Any:
        """Run prep, exec and post, awaiting whichever phases are coroutines."""
        plan = self._bf_plan
        prep_result = getattr(self, plan.prep)(shared)
        if plan.prep_coro:
            prep_result = await prep_result
        if self._bf_single_exec and self._is_simple():
            # The hot path, inlined: one plain attempt, no policy to apply.
            call = getattr(self, plan.exec)
            try:
                if plan.exec_wants_shared:
                    exec_result = call(shared, prep_result)
                else:
                    exec_result = call(prep_result)
                if plan.exec_coro:
                    exec_result = await exec_result
            except Exception as error:
                exec_result = await self._fallback_async(prep_result, error, None, 0, shared)
        else:
            exec_result = await self._stage_async(shared, prep_result)
        action = getattr(self, plan.post)(shared, prep_result, exec_result)
        if plan.post_coro:
            action = await action
        return action

    def _stage_sync(self, shared: Any, prep_result: Any) -> Any:
        """The exec stage: one attempt loop per item, as the batch mode says."""
        batch = self._bf_batch
        if batch == SINGLE:
            return self._attempt_sync(prep_result, None, shared)
        items = batch_items(self, prep_result, allow_async=False)

        def run_item(item: Any, index: int) -> Any:
            return self._attempt_sync(item, index, shared)

        if batch == SEQUENTIAL:
            return run_sequential_sync(items, run_item, True)
        return run_parallel_threads(self, items, run_item, True)

    async def _stage_async(self, shared: Any, prep_result: Any) -> Any:
        batch = self._bf_batch
        if batch == SINGLE:
            return await self._attempt_async(prep_result, None, shared)
        items = batch_items(self, prep_result, allow_async=True)

        def run_item(item: Any, index: int) -> Any:
            return self._attempt_async(item, index, shared)

        if batch == SEQUENTIAL:
            return await run_sequential_async(items, run_item, True)
        plan = self._bf_plan
        direct = None
        if (
            self._is_simple()
            and plan.exec_coro
            and not plan.exec_wants_shared
            and plan.fallback_default
            and self._bf_on_error == "raise"
        ):
            direct = getattr(self, plan.exec)
        return await run_parallel_async(self, items, run_item, True, direct)

    def _exec(self, prep_res: Any) -> Any:
        """PocketFlow's name for the exec stage (retries included), kept for old code."""
        if self._bf_async:
            return self._stage_async(None, prep_res)
        return self._stage_sync(None, prep_res)

    # -- one item: attempts, retry, fallback ------------------------------------------

    def _is_simple(self) -> bool:
        return (
            self._bf_retry is None
            and self.max_retries == 1
            and self._bf_timeout is None
            and not self._bf_limits
        )

    def _attempt_sync(self, item: Any, index: int | None, shared: Any) -> Any:
        plan = self._bf_plan
        call = getattr(self, plan.exec)
        args = (shared, item) if plan.exec_wants_shared else (item,)
        if self._is_simple():
            try:
                return call(*args)
            except Exception as error:
                return self._fallback_sync(item, error, index, 0, shared)
        with _Attempts(self, index) as attempts:
            while True:
                try:
                    return self._guarded_sync(call, args, attempts.number, index)
                except Exception as error:
                    delay = attempts.after_failure(error)
                    if delay is None:
                        return self._fallback_sync(item, error, index, attempts.number, shared)
                    if delay > 0:
                        time.sleep(delay)

    def _guarded_sync(self, call: Any, args: tuple[Any, ...], attempt: int, index: Any) -> Any:
        limits = self._bf_limits
        if limits:
            acquire_all_blocking(limits)
        try:
            timeout = self._bf_timeout
            if timeout is None:
                return call(*args)
            try:
                return call_with_deadline(call, args, timeout)
            except TimeoutError:
                raise self._timeout_error(timeout, attempt, index) from None
        finally:
            if limits:
                release_all(limits)

    async def _attempt_async(self, item: Any, index: int | None, shared: Any) -> Any:
        plan = self._bf_plan
        call = getattr(self, plan.exec)
        args = (shared, item) if plan.exec_wants_shared else (item,)
        if self._is_simple():
            try:
                result = call(*args)
                if plan.exec_coro:
                    result = await result
                return result
            except Exception as error:
                return await self._fallback_async(item, error, index, 0, shared)
        with _Attempts(self, index) as attempts:
            while True:
                try:
                    return await self._guarded_async(call, args, attempts.number, index)
                except Exception as error:
                    delay = attempts.after_failure(error)
                    if delay is None:
                        return await self._fallback_async(
                            item, error, index, attempts.number, shared
                        )
                    if delay > 0:
                        await asyncio.sleep(delay)

    async def _guarded_async(
        self, call: Any, args: tuple[Any, ...], attempt: int, index: Any
    ) -> Any:
        limits = self._bf_limits
        if limits:
            await acquire_all(limits)
        try:
            timeout = self._bf_timeout
            if timeout is None:
                result = call(*args)
                if self._bf_plan.exec_coro:
                    result = await result
                return result
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    if self._bf_plan.exec_coro:
                        return await call(*args)
                    return await call_in_new_thread(call, *args)
            except TimeoutError:
                if deadline.expired():
                    raise self._timeout_error(timeout, attempt, index) from None
                raise
        finally:
            if limits:
                release_all(limits)

    def _timeout_error(self, timeout: float, attempt: int, index: Any) -> NodeTimeoutError:
        where = f" item {index}" if index is not None else ""
        return NodeTimeoutError(
            f"{self._describe()}{where}: exec attempt {attempt + 1} timed out after {timeout} s",
            node=self._display_name(),
            timeout=timeout,
            attempt=attempt,
            item_index=index,
        )

    def _total_attempts(self) -> int:
        return self._bf_retry.attempts if self._bf_retry is not None else self.max_retries

    def _label_item_error(self, error: BaseException, index: Any, attempt: int) -> None:
        parts = []
        if index is not None:
            parts.append(f"item {index}")
        total = self._total_attempts()
        if total > 1:
            parts.append(f"attempt {attempt + 1} of {total}")
        if parts:
            add_note(error, f"{self._describe()} failed on {', '.join(parts)}")

    def _fallback_sync(
        self, item: Any, error: Exception, index: Any, attempt: int, shared: Any
    ) -> Any:
        plan = self._bf_plan
        fallback = getattr(self, plan.fallback)
        try:
            if plan.fallback_wants_shared:
                return fallback(shared, item, error)
            return fallback(item, error)
        except Exception as raised:
            if raised is error:
                self._label_item_error(error, index, attempt)
            raise

    async def _fallback_async(
        self, item: Any, error: Exception, index: Any, attempt: int, shared: Any
    ) -> Any:
        plan = self._bf_plan
        fallback = getattr(self, plan.fallback)
        try:
            if plan.fallback_wants_shared:
                result = fallback(shared, item, error)
            else:
                result = fallback(item, error)
            if plan.fallback_coro:
                result = await result
            return result
        except Exception as raised:
            if raised is error:
                self._label_item_error(error, index, attempt)
            raise


BaseNode._bf_plan = _Plan(BaseNode)


def _check_number(node: BaseNode, option: str, value: Any, minimum: float, strict: bool) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad:
        bad = value <= minimum if strict else value < minimum
    if bad:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise InvalidParameterError(
            f"{node._describe()}: {option}={value!r} must be a number {bound}",
            node=node._display_name(),
        )


class Node(BaseNode, Generic[PrepT, ExecT]):
    """A synchronous node with retries: ``prep`` -> ``exec`` (retried) -> ``post``.

    Generic in what ``prep`` returns and ``exec`` returns, for type checkers:
    ``class Greet(Node[str, str])``. Unparameterized, both are ``Any``.

    Args:
        max_retries: How many times ``exec`` may run in all (PocketFlow's
            meaning: 1 is a single attempt). Must be >= 1.
        wait: Seconds to sleep between attempts. Must be >= 0.
        name: A label for errors, traces and graphs; default: the class name.
        retry: A :class:`Retry` policy (backoff, jitter, which errors), instead
            of ``max_retries``/``wait``.
        timeout: Seconds each exec attempt may take; a late attempt fails
            with :class:`NodeTimeoutError` (a ``TimeoutError``) and is retried
            like any failure. Sync ``exec`` code is timed in a worker thread.
        limits: :class:`Limiter` objects (or one) that every exec attempt holds.
        offload: Run this sync node in a worker thread when inside an
            ``AsyncFlow``, so the event loop stays live. ``None``: the flow decides.

    Raises:
        InvalidParameterError: For a value that cannot work, naming the node.
    """

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        limits: Limiter | Iterable[Limiter] | None = None,
        offload: bool | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency, on_error=on_error)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
            raise InvalidParameterError(
                f"{self._describe()}: max_retries={max_retries!r} must be an int >= 1 "
                "(it counts attempts: 1 means run exec once, no retry)",
                node=self._display_name(),
            )
        _check_number(self, "wait", wait, 0, strict=False)
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
            _check_number(self, "timeout", timeout, 0, strict=True)
            self._bf_timeout = timeout
        if limits is not None:
            self._bf_limits = self._check_limits(limits)
        if offload is not None:
            if self._bf_async and offload:
                raise InvalidParameterError(
                    f"{self._describe()}: offload=True is for synchronous nodes; an async "
                    "node already yields to the event loop while it awaits",
                    node=self._display_name(),
                )
            self._bf_offload = bool(offload)

    def _check_limits(self, limits: Limiter | Iterable[Limiter]) -> tuple[Limiter, ...]:
        if isinstance(limits, Limiter):
            return (limits,)
        try:
            found = tuple(limits)
        except TypeError:
            found = (limits,)  # type: ignore[assignment]
        for limiter in found:
            if not isinstance(limiter, Limiter):
                raise InvalidParameterError(
                    f"{self._describe()}: limits must be Limiter objects, got {limiter!r}",
                    node=self._display_name(),
                )
        return ordered(found)

    if TYPE_CHECKING:  # the typed view of the phases; the engine's are in BaseNode

        def prep(self, shared: Any) -> PrepT: ...
        def exec(self, prep_res: PrepT) -> ExecT: ...
        def post(self, shared: Any, prep_res: PrepT, exec_res: ExecT) -> str | None: ...
        def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT: ...


class BatchNode(Node[Any, Any], Generic[ItemT, ExecT]):
    """A node whose ``prep`` returns items; ``exec`` runs once per item, in order.

    ``prep`` may return a list, any iterable or generator (read lazily), or
    ``None`` for no items. ``post`` receives the list of results. Generic in
    the item type and the per-item result: ``BatchNode[str, int]``.
    """

    _bf_batch = SEQUENTIAL

    if TYPE_CHECKING:

        def prep(self, shared: Any) -> Iterable[ItemT] | None: ...
        def exec(self, prep_res: ItemT) -> ExecT: ...
        def post(self, shared: Any, prep_res: Any, exec_res: list[ExecT]) -> str | None: ...
        def exec_fallback(self, prep_res: ItemT, exc: Exception) -> ExecT: ...


class ParallelBatchNode(BatchNode[ItemT, ExecT]):
    """A synchronous batch node whose items run in a bounded thread pool.

    For sync SDK calls: ``max_concurrency`` threads at most (default:
    ``min(32, cpu_count + 4)``), results in input order, ``on_error`` as for
    :class:`AsyncParallelBatchNode`.
    """

    _bf_batch = PARALLEL


class AsyncNode(Node[PrepT, ExecT]):
    """A node whose phases may be coroutines, run by an ``AsyncFlow``.

    Each phase may be written as ``prep_async``/``exec_async``/``post_async``
    or as plain ``prep``/``exec``/``post``, with ``async def`` or ``def``;
    the choice is read once per class. The fallback is
    ``exec_fallback_async`` (or ``exec_fallback``, or the older
    ``process_after_fail``). For type checkers, the ``_async`` names carry
    the ``PrepT``/``ExecT`` types; the plain names may be either kind.
    """

    _bf_async = True

    if TYPE_CHECKING:

        def prep(self, shared: Any) -> Any: ...
        def exec(self, prep_res: Any) -> Any: ...
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any: ...
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any: ...
        async def prep_async(self, shared: Any) -> PrepT: ...
        async def exec_async(self, prep_res: PrepT) -> ExecT: ...
        async def post_async(self, shared: Any, prep_res: PrepT, exec_res: ExecT) -> str | None: ...
        async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT: ...


class _AsyncBatchTyping(Generic[ItemT, ExecT]):
    """The typed view of the async batch kinds' phases (type checkers only)."""

    if TYPE_CHECKING:

        async def prep_async(
            self, shared: Any
        ) -> Iterable[ItemT] | AsyncIterable[ItemT] | None: ...
        async def exec_async(self, prep_res: ItemT) -> ExecT: ...
        async def post_async(
            self, shared: Any, prep_res: Any, exec_res: list[ExecT]
        ) -> str | None: ...
        async def exec_fallback_async(self, prep_res: ItemT, exc: Exception) -> ExecT: ...


class AsyncBatchNode(_AsyncBatchTyping[ItemT, ExecT], AsyncNode[Any, Any], BatchNode[Any, Any]):
    """An async batch node: items one at a time; ``prep`` may also return an async iterator."""

    _bf_batch = SEQUENTIAL


class AsyncParallelBatchNode(
    _AsyncBatchTyping[ItemT, ExecT], AsyncNode[Any, Any], BatchNode[Any, Any]
):
    """An async batch node whose items run concurrently in a task group.

    Options (keywords, or class attributes of the same name):
        max_concurrency: Most items in flight at once; ``None`` = no bound.
            Input (a list, generator or async iterator) is read only as fast
            as this allows, so memory does not grow with the input's length.
        on_error: ``"raise"`` (default): the first failure (after retries and
            fallback) cancels the other items and propagates once they have
            stopped. ``"collect"``: every item runs; ``post`` receives results
            in input order with :class:`Failure` objects for failed items.
    """

    _bf_batch = PARALLEL
