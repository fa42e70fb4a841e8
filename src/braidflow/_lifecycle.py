"""The node lifecycle: prep -> exec stage -> post, synchronously, on the loop, or in threads.

``Lifecycle`` is the part of every node that runs it: the inlined hot path of a
plain node, the general path (hooks, batches, flows, ``_exec`` overrides), a
sync node driven from async code, and the exec stage per batch mode.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from ._attempt import (
    attempt_async,
    attempt_sync,
    cancelled_error,
    fallback_async,
    fallback_sync,
    own_cancellation,
)
from ._batch import (
    SEQUENTIAL,
    SINGLE,
    batch_items,
    run_parallel_async,
    run_sequential_async,
    run_sequential_sync,
)
from ._context import PATH, STAGE, Stage, observed
from ._errors import AsyncUsageError
from ._plan import Plan, default
from ._threads import run_in_thread, run_to_completion, stop_requested

if TYPE_CHECKING:
    from ._limits import Limiter
    from ._policy import Retry

__all__ = ["Lifecycle"]


class Lifecycle:
    """How a node runs. Mixed into ``BaseNode``, which holds the options read here."""

    # What the class and the constructor decided (set in BaseNode and its presets).
    _bf_async: ClassVar[bool]
    _bf_batch: ClassVar[str]
    _bf_plan: ClassVar[Plan]
    _bf_is_flow: ClassVar[bool]
    _bf_single_exec: ClassVar[bool]
    _bf_hooked: ClassVar[bool]
    _bf_plain: ClassVar[bool]
    max_retries: int
    wait: float
    max_concurrency: int | None
    _bf_retry: Retry | None
    _bf_timeout: float | None
    _bf_limits: tuple[Limiter, ...]
    _bf_executor: Any
    _bf_on_error: str

    if TYPE_CHECKING:  # the node's own methods, defined in BaseNode

        def prep(self, shared: Any) -> Any: ...
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any: ...
        def exec(self, *args: Any) -> Any: ...
        def before_prep(self, shared: Any) -> Any: ...
        def after_exec(self, shared: Any, prep_res: Any, exec_res: Any) -> Any: ...
        def on_error(self, shared: Any, error: Exception) -> Any: ...
        def _describe(self) -> str: ...
        def _display_name(self) -> str: ...

    @default
    def _run(self, shared: Any) -> Any:
        """Run prep, exec and post synchronously; return the action."""
        if self._bf_async:
            raise AsyncUsageError(
                f"{self._describe()} is async and cannot run synchronously here; "
                "put it in an AsyncFlow, or use `await node.run_async(shared)`",
                node=self._display_name(),
            )
        if not self._bf_plain:
            return self._run_general(shared)
        # The hot path, inlined: a plain node with no hooks, and when no policy
        # applies, one plain attempt.
        prep_result = self.prep(shared)
        if self._is_simple():
            try:
                if self._bf_plan.exec_wants_shared:
                    exec_result = self.exec(shared, prep_result)
                else:
                    exec_result = self.exec(prep_result)
            except Exception as error:
                exec_result = fallback_sync(self, prep_result, error, None, 0, shared)
            except asyncio.CancelledError as cancel:  # sync code: never the run's own
                stray = cancelled_error(self, cancel, None)
                exec_result = fallback_sync(self, prep_result, stray, None, 0, shared)
        else:
            exec_result = attempt_sync(self, prep_result, None, shared)
        return self.post(shared, prep_result, exec_result)

    def _run_general(self, shared: Any) -> Any:
        """The synchronous lifecycle of every other node: batches, flows, an
        ``_exec`` override, and the lifecycle hooks."""
        hooked = self._bf_hooked
        try:
            if hooked:
                self.before_prep(shared)
            prep_result = self.prep(shared)
            if self._bf_plan.custom_exec:
                token = STAGE.set(Stage(_executor(), shared))
                try:
                    exec_result = self._exec(prep_result)
                finally:
                    STAGE.reset(token)
            else:
                exec_result = self._stage_sync(shared, prep_result)
            if hooked:
                self.after_exec(shared, prep_result, exec_result)
            return self.post(shared, prep_result, exec_result)
        except Exception as error:
            if hooked and self._swallowed(self.on_error(shared, error), error):
                return None
            raise

    @default
    async def _run_async(self, shared: Any) -> Any:
        """Run prep, exec and post, awaiting whichever phases are coroutines."""
        if not self._bf_plain:
            return await self._run_general_async(shared)
        # The hot path, inlined: a plain node with no hooks, and when no policy
        # applies, one plain attempt.
        plan = self._bf_plan
        prep_result = getattr(self, plan.prep)(shared)
        if plan.prep_coro:
            prep_result = await prep_result
        if self._is_simple():
            call = getattr(self, plan.exec)
            try:
                if plan.exec_wants_shared:
                    exec_result = call(shared, prep_result)
                else:
                    exec_result = call(prep_result)
                if plan.exec_coro:
                    exec_result = await exec_result
            except Exception as error:
                exec_result = await fallback_async(self, prep_result, error, None, 0, shared)
            except asyncio.CancelledError as cancel:
                stray = own_cancellation(self, cancel, None)
                exec_result = await fallback_async(self, prep_result, stray, None, 0, shared)
        else:
            exec_result = await attempt_async(self, prep_result, None, shared)
        action = getattr(self, plan.post)(shared, prep_result, exec_result)
        if plan.post_coro:
            action = await action
        return action

    async def _run_general_async(self, shared: Any) -> Any:
        """The async lifecycle of every other node: batches, flows, an ``_exec``
        override, and the lifecycle hooks."""
        plan = self._bf_plan
        hooked = self._bf_hooked
        try:
            if hooked:
                await self._hook_async("before_prep", False, shared)
            prep_result = getattr(self, plan.prep)(shared)
            if plan.prep_coro:
                prep_result = await prep_result
            if plan.custom_exec:
                exec_result = await self._custom_exec_async(shared, prep_result, False)
            else:
                exec_result = await self._stage_async(shared, prep_result)
            if hooked:
                await self._hook_async("after_exec", False, shared, prep_result, exec_result)
            action = getattr(self, plan.post)(shared, prep_result, exec_result)
            if plan.post_coro:
                action = await action
            return action
        except Exception as error:
            if hooked and await self._on_error_async(shared, error, False):
                return None
            raise

    async def _run_in_loop(self, shared: Any, offload: bool) -> Any:
        """Run a synchronous node or flow from async code: braidflow's waits
        (limiters, retry delays) happen on the loop, and with ``offload`` each
        phase of user code runs in one of braidflow's threads."""
        plan = self._bf_plan
        if plan.custom_run or plan.custom_orch:
            return await run_in_thread(self._run, shared) if offload else self._run(shared)
        if offload and self._bf_single_exec and self._is_simple():
            # Nothing to wait for between the phases: one trip to a thread.
            return await run_in_thread(self._run_offloaded, shared)
        hooked = self._bf_hooked
        try:
            if hooked:
                await self._hook_async("before_prep", offload, shared)
            if offload:
                prep_result = await run_in_thread(self.prep, shared)
            else:
                prep_result = self.prep(shared)
            if plan.custom_exec:
                exec_result = await self._custom_exec_async(shared, prep_result, offload)
            else:
                exec_result = await self._stage_async(shared, prep_result, offload)
            if hooked:
                await self._hook_async("after_exec", offload, shared, prep_result, exec_result)
            if offload:
                return await run_in_thread(self.post, shared, prep_result, exec_result)
            return self.post(shared, prep_result, exec_result)
        except Exception as error:
            if hooked and await self._on_error_async(shared, error, offload):
                return None
            raise

    def _run_offloaded(self, shared: Any) -> Any:
        """A plain sync node's phases in one worker thread; if the run is
        cancelled meanwhile, no later phase starts."""
        hooked = self._bf_hooked
        try:
            if hooked:
                self.before_prep(shared)
            prep_result = self.prep(shared)
            if stop_requested():
                raise asyncio.CancelledError
            exec_result = attempt_sync(self, prep_result, None, shared)
            if stop_requested():
                raise asyncio.CancelledError
            if hooked:
                self.after_exec(shared, prep_result, exec_result)
            return self.post(shared, prep_result, exec_result)
        except Exception as error:
            if hooked and self._swallowed(self.on_error(shared, error), error):
                return None
            raise

    async def _hook_async(self, hook: str, offload: bool, *args: Any) -> Any:
        """Call a lifecycle hook from async code: awaited if ``async def``, in
        a thread if the node is offloaded."""
        function = getattr(self, hook)
        if self._bf_plan.hook_coro.get(hook):
            return await function(*args)
        if offload:
            return await run_in_thread(function, *args)
        return function(*args)

    async def _on_error_async(self, shared: Any, error: Exception, offload: bool) -> bool:
        answer = await self._hook_async("on_error", offload, shared, error)
        return self._swallowed(answer, error)

    def _swallowed(self, answer: Any, error: Exception) -> bool:
        """Whether ``on_error`` swallowed the error (it returned True); the run's
        observers still see it as an ``error`` event."""
        if answer is not True:
            return False
        run = observed()
        if run is not None:
            run.emit("error", node=self._display_name(), path=PATH.get(), error=error)
        return True

    async def _custom_exec_async(self, shared: Any, prep_result: Any, offload: bool) -> Any:
        """Call a class's own ``_exec`` override (awaiting what it returns if needed)."""
        token = STAGE.set(Stage(_executor(), shared))
        try:
            if offload:
                result = await run_in_thread(self._exec, prep_result)
            else:
                result = self._exec(prep_result)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            STAGE.reset(token)

    def _stage_sync(self, shared: Any, prep_result: Any) -> Any:
        """The exec stage from sync code: one attempt loop per item, as the batch mode says."""
        batch = self._bf_batch
        if batch == SINGLE:
            return attempt_sync(self, prep_result, None, shared)
        items = batch_items(self, prep_result, allow_async=False)
        remote = self._dispatch()
        if batch == SEQUENTIAL:
            call = None if remote is None else remote.run

            def run_item(item: Any, index: int) -> Any:
                return attempt_sync(self, item, index, shared, call)

            return run_sequential_sync(self, items, run_item, True)
        # A parallel batch from sync code: items on a private event loop, their
        # exec in braidflow's threads (or wherever the executor runs them).
        return run_to_completion(lambda: self._stage_parallel(shared, items, True, remote))

    async def _stage_async(self, shared: Any, prep_result: Any, offload: bool = False) -> Any:
        """The exec stage from async code."""
        batch = self._bf_batch
        if batch == SINGLE:
            return await attempt_async(self, prep_result, None, shared, offload)
        items = batch_items(self, prep_result, allow_async=self._bf_async)
        remote = self._dispatch()
        if batch == SEQUENTIAL:
            call = None if remote is None else remote.run_async

            def run_item(item: Any, index: int) -> Any:
                return attempt_async(self, item, index, shared, offload, call)

            return await run_sequential_async(self, items, run_item, True)
        return await self._stage_parallel(shared, items, offload, remote)

    def _dispatch(self) -> Any:
        """How this batch's items reach their executor (its own, else its flow's),
        prepared once; None: they run here."""
        executor = self._bf_executor
        if executor is None:
            executor = _executor()
            if executor is None:
                return None
        return executor.prepare(self, self._bf_plan.exec)

    async def _stage_parallel(
        self, shared: Any, items: Any, offload: bool, remote: Any = None
    ) -> Any:
        if remote is not None:  # each item's exec is awaited where the executor runs it

            def run_remote(item: Any, index: int) -> Any:
                return attempt_async(self, item, index, shared, False, remote.run_async)

            return await run_parallel_async(self, items, run_remote, True)
        # A sync parallel node exists to run its items' exec in threads.
        offload = offload or not self._bf_async

        def run_item(item: Any, index: int) -> Any:
            return attempt_async(self, item, index, shared, offload)

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

    @default
    def _exec(self, prep_res: Any) -> Any:
        """PocketFlow's name for the exec stage (retries included). A subclass may
        override it, e.g. to cache, and call ``super()._exec(prep_res)``; for
        async kinds that returns an awaitable."""
        stage = STAGE.get()
        shared = stage.shared if stage is not None else None
        if self._bf_async:
            return self._stage_async(shared, prep_res)
        return self._stage_sync(shared, prep_res)

    def _is_simple(self) -> bool:
        """No policy applies to an attempt: no retry, timeout or limiter."""
        return (
            self._bf_retry is None
            and self.max_retries == 1
            and self._bf_timeout is None
            and not self._bf_limits
        )


def _executor() -> Any:
    """The executor the enclosing flow hands to its batch nodes, if any."""
    stage = STAGE.get()
    return stage.executor if stage is not None else None
