"""The flow engine: walk a graph step by step, nested flows, batch flows.

The walk (copy the node, hand it the run's params, route by its action) is
one generator; a sync driver and an async driver each run it. A flow is a
node, so it nests; batch flows run their sub-flow once per parameter set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ._attempt import cancelled_error, run_is_cancelled
from ._batch import (
    PARALLEL,
    SEQUENTIAL,
    SINGLE,
    batch_items,
    run_parallel_async,
    run_sequential_async,
    run_sequential_sync,
)
from ._context import PATH, RUN, STAGE, STEP, Run, Stage, StepAt
from ._errors import AsyncUsageError, BatchItemsError, InvalidParameterError, WiringError, add_note
from ._merge import SharedView, apply_changes, check_rules, merge
from ._node import UNSET, AsyncNode, BaseNode, check_executor
from ._plan import copy_node, default
from ._run import StepScope
from ._wiring import as_node, changed, route
from .durable import DurableRun

if TYPE_CHECKING:
    from ._branches import Parallel

__all__ = ["AsyncBatchFlow", "AsyncFlow", "AsyncParallelBatchFlow", "BatchFlow", "Flow"]

Steps = Generator[BaseNode, Any, Any]

_Start = TypeVar("_Start", bound=BaseNode)


def _steps(flow: Flow, params: dict[str, Any], run: Run | None) -> Steps:
    """Yield a fresh copy of each node to run, receive its action, route on.

    When ``run`` is observed, each copy carries its display name, unique in
    the graph. Returns the last action when the walk ends.
    """
    node = flow.__dict__.get("start_node")  # what the property reads, without its call
    if node is None:
        node = getattr(flow, "start_node", None)  # a subclass's own start_node, if any
    if node is None:
        raise WiringError(
            f"{flow._describe()} has no start node; pass Flow(start=node) or call "
            "flow.start(node) before running it",
            node=flow._display_name(),
        )
    names = run.names_in(node) if run is not None else None
    action = None
    while node is not None:
        original = node
        node = copy_node(node)
        if names is not None:
            node.__dict__["_bf_display"] = names.get(id(original))
        node.set_params(params)
        action = yield node
        node = flow.get_next_node(node, action)
    return action


class _Checkpoints:
    """A walk's part of a durable run: it skips the steps that finished before
    (resuming) and records each step that finishes now."""

    __slots__ = (
        "durable",
        "frame",
        "key",
        "name",
        "position",
        "recorded",
        "token",
        "touched",
    )

    def __init__(self, durable: DurableRun) -> None:
        self.durable = durable
        self.frame = STEP.get().key
        self.recorded = durable.steps_in(self.frame)
        self.position = 0

    def replayed(self, node: BaseNode, shared: Any) -> tuple[bool, Any]:
        """If this step finished before, skip it: ``(True, its action)``."""
        if self.position >= len(self.recorded):
            return False, None
        action = self.durable.replay(self.recorded[self.position], node, shared)
        self.position += 1
        return True, action

    def start(self, node: BaseNode, name: str) -> None:
        """Begin the step of ``node``, whose display name is ``name``."""
        self.name = name
        self.key = key = f"{self.frame}/{self.position}:{name}"
        self.durable.at = key
        self.touched: set[Any] = set()  # what this step reads and writes in shared
        self.token = STEP.set(StepAt(key, self.touched))

    def stop(self) -> None:
        STEP.reset(self.token)

    def failed(self, error: BaseException) -> None:
        """Note the step a failure came from (the innermost sees it first)."""
        self.durable.failed_in(error, self.key)

    def done(self, node: BaseNode, action: Any, shared: Any) -> None:
        self.durable.step_done(
            self.frame, self.position, node, self.name, action, shared, self.touched
        )
        self.position += 1


def _begin_step(
    node: BaseNode, checkpoints: _Checkpoints | None, observing: Run | None, path: tuple[str, ...]
) -> StepScope | None:
    """Begin a step under its display name: its checkpoint scope, if the run
    is durable; its events' scope (returned), if it is observed."""
    name = node._display_name()
    if checkpoints is not None:
        checkpoints.start(node, name)
    return StepScope(observing, name, (*path, name)) if observing else None


def _step_failed(flow: Flow, node: BaseNode, step: StepScope | None, error: BaseException) -> None:
    """Say where a step failed, in a note and (if observed) in its events."""
    if not isinstance(error, asyncio.CancelledError):
        add_note(error, f"{node._describe()} failed in {flow._describe()}")
    if step is not None:
        step.end(error)


class Flow(BaseNode):
    """A graph of nodes run from ``start``; each step runs a fresh copy of a node.

    ``post`` returns the last action by default, so a flow nested in another
    routes its parent by its last inner action.

    Args:
        start: The first node (or set it later with `start`).
        name: A label for errors, traces and graphs; default: the class name.
        executor: Where the items' ``exec`` of every batch node inside runs,
            unless a node has its own ``executor=`` (see `braidflow.executors`).
    """

    _bf_is_flow = True
    offload_sync: bool = False
    _bf_isolate: bool = False
    _bf_merge: dict[str, Any] = {}  # noqa: RUF012 - read only; __init__ sets its own

    def __init__(
        self,
        start: BaseNode | None = None,
        *,
        name: str | None = None,
        max_concurrency: int | None = UNSET,
        on_error: str = UNSET,
        offload_sync: bool = False,
        isolate: bool = False,
        merge: dict[str, Any] | None = None,
        executor: Any = None,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency, on_error=on_error)
        if executor is not None:
            self._bf_executor = check_executor(self, executor)
        self.start_node = as_node(start, self, f"{self._describe()}: start")
        if (isolate or merge is not None) and self._bf_batch != PARALLEL:
            raise InvalidParameterError(
                f"{self._describe()}: isolate= and merge= are for AsyncParallelBatchFlow, whose "
                "sub-flows run at the same time; other flows run one step at a time",
                node=self._display_name(),
            )
        if merge is not None and not isolate:
            raise InvalidParameterError(
                f"{self._describe()}: merge= applies to isolated sub-flows; add isolate=True",
                node=self._display_name(),
            )
        self._bf_isolate = bool(isolate)
        self._bf_merge = check_rules(merge, self._describe())
        if offload_sync and not self._bf_async:
            raise InvalidParameterError(
                f"{self._describe()}: offload_sync=True is for AsyncFlow; a synchronous "
                "Flow has no event loop to keep free",
                node=self._display_name(),
            )
        self.offload_sync = bool(offload_sync)

    @property
    def start_node(self) -> BaseNode | None:
        """The node the walk starts from (``None`` until set)."""
        try:
            return self.__dict__["start_node"]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute 'start_node'"
            ) from None

    @start_node.setter
    def start_node(self, node: BaseNode | None) -> None:
        # Kept in the instance dict under PocketFlow's name; the walk reads it there.
        self.__dict__["start_node"] = node
        changed()

    @overload
    def start(self, start: list[BaseNode] | tuple[BaseNode, ...]) -> Parallel: ...
    @overload
    def start(self, start: _Start) -> _Start: ...

    def start(self, start: Any) -> Any:
        """Set the start node and return it, so wiring can continue from it.

        A list of nodes starts with parallel branches (`Parallel`), as in
        ``Flow(start=[b, c])``; the ``Parallel`` is returned.

        Raises:
            WiringError: If ``start`` is not a node, a flow, a list of them or ``None``.
        """
        start = as_node(start, self, f"{self._describe()}: start")
        self.start_node = start
        return start

    def get_next_node(self, curr: BaseNode, action: Any) -> BaseNode | None:
        """Return the node that follows ``curr`` after ``action``, or ``None`` to end."""
        nxt: BaseNode | None = route(curr, action)
        return nxt

    @default
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Return the last action of the inner walk (``None`` for batch flows)."""
        return exec_res

    @default
    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Async form of `post`."""
        return exec_res

    # -- drivers ------------------------------------------------------------------

    def _reached_async(self, node: BaseNode) -> AsyncUsageError:
        return AsyncUsageError(
            f"{self._describe()} is synchronous but reached async {node._describe()}; "
            "use AsyncFlow and `await flow.run_async(shared)`",
            node=node._display_name(),
        )

    @default
    def _orch(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        """Walk the graph synchronously; return the last action."""
        run = RUN.get()
        observing = run if run is not None and run.observers else None
        durable = run.durable if run is not None else None
        checkpoints = _Checkpoints(durable) if durable is not None else None
        send = _steps(self, params or {**self.params}, run if observing or durable else None).send
        path = PATH.get()
        action = None
        while True:
            try:
                node = send(action)
            except StopIteration as stop:
                return stop.value
            if node._bf_async:
                raise self._reached_async(node)
            if checkpoints is not None:
                skipped, recorded = checkpoints.replayed(node, shared)
                if skipped:
                    action = recorded
                    continue
            step = (
                _begin_step(node, checkpoints, observing, path)
                if checkpoints is not None or observing
                else None
            )
            try:
                try:
                    action = node._run(shared)
                finally:
                    if checkpoints is not None:
                        checkpoints.stop()
                if checkpoints is not None:
                    checkpoints.done(node, action, shared)
            except Exception as error:
                if checkpoints is not None:
                    checkpoints.failed(error)
                _step_failed(self, node, step, error)
                raise
            except asyncio.CancelledError as cancel:  # sync code: never the run's own
                stray = cancelled_error(node, cancel, None)
                _step_failed(self, node, step, stray)
                raise stray from cancel
            if step is not None:
                step.end()

    async def _orch_async(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        """Walk the graph, awaiting async nodes and calling sync ones; return the last action."""
        return await self._walk_async(shared, params, self.offload_sync, False)

    async def _walk_async(
        self,
        shared: Any,
        params: dict[str, Any] | None,
        offload_default: bool,
        sync_only: bool,
    ) -> Any:
        """The async driver of the walk, for async flows and, inside async code,
        for sync flows too (``sync_only``), so that their limiter waits and retry
        delays happen on the loop and their steps can be offloaded to threads."""
        run = RUN.get()
        observing = run if run is not None and run.observers else None
        durable = run.durable if run is not None else None
        checkpoints = _Checkpoints(durable) if durable is not None else None
        send = _steps(self, params or {**self.params}, run if observing or durable else None).send
        path = PATH.get()
        action = None
        while True:
            try:
                node = send(action)
            except StopIteration as stop:
                return stop.value
            if checkpoints is not None:
                skipped, recorded = checkpoints.replayed(node, shared)
                if skipped:
                    action = recorded
                    continue
            step = (
                _begin_step(node, checkpoints, observing, path)
                if checkpoints is not None or observing
                else None
            )
            try:
                try:
                    if node._bf_async:
                        if sync_only:
                            raise self._reached_async(node)
                        action = await node._run_async(shared)
                    else:
                        offload = node._bf_offload
                        if offload is None:
                            # Limited sync code is typically an API call: off the loop.
                            offload = offload_default or bool(node._bf_limits)
                        if not offload and node._bf_single_exec and node._is_simple():
                            action = node._run(shared)
                        else:
                            action = await node._run_in_loop(shared, offload)
                finally:
                    if checkpoints is not None:
                        checkpoints.stop()
                if checkpoints is not None:
                    checkpoints.done(node, action, shared)
            except Exception as error:
                if checkpoints is not None:
                    checkpoints.failed(error)
                _step_failed(self, node, step, error)
                raise
            except asyncio.CancelledError as cancel:
                if run_is_cancelled():
                    _step_failed(self, node, step, cancel)
                    raise
                stray = cancelled_error(node, cancel, None)
                _step_failed(self, node, step, stray)
                raise stray from cancel
            if step is not None:
                step.end()

    # -- the exec stage of a flow: one walk, or one per parameter set ----------------

    def _item_params(self, item: Any, index: int) -> dict[str, Any]:
        if not isinstance(item, Mapping):
            raise BatchItemsError(
                f"{self._describe()}: item {index} from prep is {type(item).__name__}; each "
                "item of a batch flow must be a dict of params for one run of the sub-flow",
                node=self._display_name(),
                item_index=index,
            )
        return {**self.params, **item}

    def _label_param_set_error(self, error: BaseException, item: Any, index: int) -> None:
        shown = repr(item)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        add_note(error, f"{self._describe()} failed on param set {index}: {shown}")

    def _stage_sync(self, shared: Any, prep_result: Any) -> Any:
        if self._bf_executor is not None:  # the default of the batch nodes inside
            token = STAGE.set(Stage(self._bf_executor, shared))
            try:
                return self._stage_sync_here(shared, prep_result)
            finally:
                STAGE.reset(token)
        return self._stage_sync_here(shared, prep_result)

    def _stage_sync_here(self, shared: Any, prep_result: Any) -> Any:
        if self._bf_batch == SINGLE:
            return self._orch(shared)
        items = batch_items(self, prep_result, allow_async=False)

        def run_item(item: Any, index: int) -> Any:
            try:
                return self._orch(shared, self._item_params(item, index))
            except Exception as error:
                self._label_param_set_error(error, item, index)
                raise

        return run_sequential_sync(self, items, run_item, False)

    async def _stage_async(self, shared: Any, prep_result: Any, offload: bool = False) -> Any:
        if self._bf_executor is not None:  # the default of the batch nodes inside
            token = STAGE.set(Stage(self._bf_executor, shared))
            try:
                return await self._stage_async_here(shared, prep_result, offload)
            finally:
                STAGE.reset(token)
        return await self._stage_async_here(shared, prep_result, offload)

    async def _stage_async_here(self, shared: Any, prep_result: Any, offload: bool = False) -> Any:
        if self._bf_async:
            walk = self._orch_async
        else:
            # A sync flow inside async code: same walk, sync nodes only, and the
            # offload default of the flow around it.
            async def walk(shared: Any, params: dict[str, Any] | None = None) -> Any:
                return await self._walk_async(shared, params, offload, True)

        batch = self._bf_batch
        if batch == SINGLE:
            return await walk(shared)
        items = batch_items(self, prep_result, allow_async=self._bf_async)

        async def run_item(item: Any, index: int) -> Any:
            try:
                return await walk(shared, self._item_params(item, index))
            except Exception as error:
                self._label_param_set_error(error, item, index)
                raise

        if batch == SEQUENTIAL:
            return await run_sequential_async(self, items, run_item, False)
        collect = self._bf_on_error == "collect"
        if not self._bf_isolate:  # PocketFlow's way: every sub-flow writes to one shared dict
            return await run_parallel_async(self, items, run_item, collect)
        views: dict[int, SharedView] = {}
        run = RUN.get()
        durable: DurableRun | None = run.durable if run is not None else None
        stage = STEP.get().key
        # Resuming: sub-flows that finished before are skipped (by the item
        # checkpoints); their recorded changes are merged instead of a view's.
        recorded = durable.recorded_items(stage) if durable is not None else {}

        async def run_isolated(item: Any, index: int) -> Any:
            view = SharedView(shared)
            try:
                result = await walk(view, self._item_params(item, index))
            except Exception as error:
                self._label_param_set_error(error, item, index)
                raise
            if durable is not None:  # before the item's own checkpoint: no loss either way
                durable.sub_flow_done(stage, index, view, self)
            views[index] = view  # only a sub-flow that finished is merged
            return result

        def changes_of(index: int) -> dict[Any, Any]:
            if index in views:
                return views[index].changes()
            assert durable is not None  # only a resumed run has recorded sub-flows
            return durable.recorded_changes(stage, index)

        results = await run_parallel_async(self, items, run_isolated, collect)
        finished = sorted(views.keys() | recorded.keys())
        changes = [(f"param set {index}", changes_of(index)) for index in finished]
        try:
            apply_changes(shared, merge(shared, changes, self._bf_merge))
        except Exception as error:
            add_note(error, f"while merging the sub-flows of {self._describe()}")
            raise
        return results


class BatchFlow(Flow):
    """A flow whose ``prep`` returns parameter sets; the sub-flow runs once per set.

    Each run gets ``{**flow.params, **param_set}``. ``post`` receives
    ``exec_res=None``.
    """

    _bf_batch = SEQUENTIAL


class AsyncFlow(Flow, AsyncNode[Any, Any]):
    """A flow that hosts async and sync nodes and nested flows of either kind.

    Run it with ``await flow.run_async(shared)`` (or ``flow.run(shared)`` from
    plain sync code). Sync nodes run on the event loop thread unless they
    were made with ``offload=True`` or the flow with ``offload_sync=True``,
    in which case they run in a worker thread.
    """

    _bf_async = True


class AsyncBatchFlow(AsyncFlow, BatchFlow):
    """An async batch flow: the sub-flow runs once per parameter set, in order."""

    _bf_batch = SEQUENTIAL


class AsyncParallelBatchFlow(AsyncFlow, BatchFlow):
    """An async batch flow whose sub-flow runs concurrently, once per parameter set.

    Options: ``max_concurrency`` (most sub-flows in flight) and ``on_error``
    as on `AsyncParallelBatchNode`. Under ``on_error="collect"``,
    ``post`` receives one entry per parameter set: the sub-flow's last action,
    or a `Failure`.

    By default every sub-flow writes to the one ``shared`` dict, as in
    PocketFlow, so concurrent sub-flows can overwrite each other. With
    ``isolate=True`` each sub-flow works on its own view of ``shared`` (as a
    branch of `Parallel` does) and their changes are merged when all
    are done, in parameter-set order, by the rules in ``merge=``; a key
    changed by two sub-flows without a rule raises `MergeConflict`.
    """

    _bf_batch = PARALLEL
