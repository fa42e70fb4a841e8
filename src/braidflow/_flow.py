"""The flows: `Flow`, `BatchFlow` and the async kinds: a graph of nodes, walked step by step.

A flow is a node whose exec stage walks its graph (the engine's `walk`):
each step runs a fresh copy of a node and routes by its action; a flow is
a node, so it nests. Batch flows walk their sub-flow once per parameter
set, one after another or at once (isolated and merged, if asked).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Generator, Mapping
from typing import Any, TypeVar, overload

from ._context import RUN
from ._errors import (
    AsyncUsageError,
    BatchItemsError,
    Failure,
    InvalidParameterError,
    WiringWarning,
    add_note,
)
from ._kinds import AsyncNode
from ._merge import check_rules
from ._node import BaseNode
from ._options import UNSET, check_executor
from ._plan import default, preset, variant
from ._sites import wired_here
from ._state import StateType, state_type
from ._wiring import as_node, changed, route
from .engine import drive_async, drive_sync, flow_stage, typed_stage, walk

__all__ = ["AsyncBatchFlow", "AsyncFlow", "AsyncParallelBatchFlow", "BatchFlow", "Flow"]

_Start = TypeVar("_Start", bound=BaseNode)


class Flow(BaseNode):
    """A graph of nodes run from ``start``; each step runs a fresh copy of a node.

    ``post`` returns the last action by default, so a flow nested in another
    routes its parent by its last inner action.

    Args:
        start: The first node (or set it later with `start`).
        name: A label for errors, traces and graphs; default: the class name.
        executor: Where the items' ``exec`` of every batch node inside runs,
            unless a node has its own ``executor=`` (see `braidflow.executors`).
        state: The type of ``shared``: a ``TypedDict``, a dataclass or a
            pydantic model (docs/typed-state.md). ``shared`` is checked
            against it when the flow starts (`StateError` names the key);
            its nodes get a view of ``shared`` read by attribute for a
            dataclass or a model; the merge rules in its ``Annotated`` keys
            (``Annotated[list[str], braidflow.merge.extend]``) are those of
            every join inside, unless a join's own ``merge=`` says otherwise.
            Default: ``None``, an untyped dict, as in PocketFlow.
        validate: Check each value a node writes against its key's type
            (for a model, pydantic's validation of that field, its field
            validators included, its model validators not): `StateError`
            at the write; a required key deleted is refused too, and in a
            durable run each step's touched keys are checked before it is
            recorded (a value changed in place). Off by default: it costs
            (bench/, "typed state").
    """

    _bf_is_flow = True
    offload_sync: bool = False
    _bf_isolate: bool = False
    _bf_merge: dict[str, Any] = {}  # noqa: RUF012 - read only; __init__ sets its own
    _bf_state: StateType | None = None  # state=: read by the stage, once per flow step

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
        state: type | None = None,
        validate: bool = False,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency, on_error=on_error)
        if state is not None:
            self._bf_state = state_type(state, validate, self._describe())
        elif validate is not False:
            raise InvalidParameterError(
                f"{self._describe()}: validate= checks the values nodes write against the "
                "flow's state type; give the type too: state=State",
                node=self._display_name(),
            )
        if executor is not None:
            self._bf_executor = check_executor(self, executor)
        self.start_node = as_node(start, self, f"{self._describe()}: start")
        if start is not None and not isinstance(start, list | tuple):
            _warn_if_wired_here(self, start)
        if (isolate or merge is not None) and self._bf_batch != "parallel":
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
    def start(self, start: list[BaseNode] | tuple[BaseNode, ...]) -> Any: ...
    @overload
    def start(self, start: _Start) -> _Start: ...

    def start(self, start: Any) -> Any:
        """Set the start node and return it, so wiring can continue from it.

        A list of nodes starts with parallel branches (`Parallel`), as in
        ``Flow(start=[b, c])``; the ``Parallel`` is returned.

        Raises:
            WiringError: If ``start`` is not a node, a flow, a list of them or ``None``.
        """
        if start is not None and not isinstance(start, list | tuple):
            _warn_if_wired_here(self, start)
        start = as_node(start, self, f"{self._describe()}: start")
        self.start_node = start
        return start

    @default
    def get_next_node(self, curr: BaseNode, action: Any) -> BaseNode | None:
        """Return the node that follows ``curr`` after ``action``, or ``None`` to end."""
        nxt: BaseNode | None = route(curr, action)
        return nxt

    @default
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Return the last action of the inner walk (``None`` for batch flows;
        under ``on_error="collect"``, ``"failed"`` if a parameter set failed
        and a ``"failed"`` successor is wired)."""
        return self._default_action(exec_res)

    @default
    async def post_async(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Async form of `post`."""
        return self._default_action(exec_res)

    def _default_action(self, exec_res: Any) -> Any:
        if type(exec_res) is not list or self._bf_batch == "single":
            return exec_res
        # A batch flow's results, under on_error="collect": no action of its own.
        failed = any(isinstance(result, Failure) for result in exec_res)
        return "failed" if failed and "failed" in self.successors else None

    # -- what the engine calls back ---------------------------------------------------

    def _stage(self, shared: Any, prep_result: Any, offload: bool) -> Generator[Any, Any, Any]:
        """A flow's exec stage: its walk, or one walk per parameter set (of a
        typed flow: on its state, checked first)."""
        state = self._bf_state
        if state is None:
            return flow_stage(self, shared, prep_result, offload)
        return typed_stage(self, state, shared, prep_result, offload)

    @default
    def _orch(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        """PocketFlow's name for the walk: run the graph synchronously with
        ``params`` (default: the flow's own); return the last action."""
        return drive_sync(walk(self, shared, params or {**self.params}, False, True))

    @default
    async def _orch_async(self, shared: Any, params: dict[str, Any] | None = None) -> Any:
        """Async form of `_orch`: sync nodes run on the loop, or in threads with
        ``offload_sync``."""
        steps = walk(self, shared, params or {**self.params}, self.offload_sync, False)
        return await drive_async(steps)

    def _reached_async(self, node: BaseNode) -> AsyncUsageError:
        """The error for this synchronous flow reaching an async node, with the
        change that works where the run is: which flow to make async, and how
        the flow that was run is then run (from plain code, or async code)."""
        run = RUN.get()
        top = run.top if run is not None else self
        parallel = self.__dict__.get("_bf_branch_of")
        if parallel is None:
            problem = f"{self._describe()} is synchronous but reached async {node._describe()}"
            fix = f"make it {_async_form(self)}"
            around = top is not self
        else:  # a branch's walker: a flow the user never made
            problem = (
                f"async {node._describe()} is a branch of {parallel._describe()}, which runs "
                "synchronously here"
            )
            around = top is not parallel
            fix = (
                "make the flows around it async (`AsyncFlow(start=...)` in place of "
                "`Flow(start=...)`)"
                if around
                else "run it in an AsyncFlow (`AsyncFlow(start=...)`)"
            )
        if around and top._bf_async:
            then = f"; {top._describe()}, which you run, then runs it as one of its steps"
        else:
            if around:
                fix += (
                    f", and so every synchronous flow around it, up to {top._describe()}, "
                    "which you run"
                    if parallel is None
                    else f", up to {top._describe()}, which you run"
                )
            # Where the run was started (a sync run's branches run on a loop of their own).
            in_async_code = (
                run.task is not None if run is not None else asyncio._get_running_loop() is not None
            )
            if in_async_code:
                then = "; then, as this run is inside async code, `await flow.run_async(shared)`"
            else:
                then = (
                    "; then run that as before: `flow.run(shared)` runs an AsyncFlow to "
                    "completion from plain code"
                )
        return AsyncUsageError(f"{problem}; {fix}{then}", node=node._display_name())

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


def _async_form(flow: Flow) -> str:
    """How to make ``flow`` its async variant: ``an AsyncFlow (`AsyncFlow(start=...)`
    in place of `Flow(start=...)`)``, or derive a subclass from it."""
    cls, base = type(flow).__name__, preset(type(flow))
    instead = variant(type(flow), "async") or "AsyncFlow"
    if cls == base:
        return f"an {instead} (`{instead}(start=...)` in place of `{base}(start=...)`)"
    return f"an {instead} (derive {cls} from {instead} in place of {base})"


def _warn_if_wired_here(flow: Flow, start: Any) -> None:
    """Warn when a flow's start was made by wiring in the same expression
    (``Flow(start=p >> a)`` starts at ``a``): a warning, not an error, since
    PocketFlow runs such a flow (from ``a``) and its programs must still run."""
    mistake = wired_here((start,))
    if mistake is not None:
        warnings.warn(
            f"{flow._describe()}: "
            + mistake.explained(f"its start, {start._display_name()!r},").replace(
                "would never run", "will never run"
            ),
            WiringWarning,
            stacklevel=mistake.stacklevel,
        )


class BatchFlow(Flow):
    """A flow whose ``prep`` returns parameter sets; the sub-flow runs once per set.

    Each run gets ``{**flow.params, **param_set}``. ``post`` receives
    ``exec_res=None``.
    """

    _bf_batch = "sequential"


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

    _bf_batch = "sequential"


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

    _bf_batch = "parallel"
