"""A flow's walk: copy each node, hand it the params, run it, route by its action.

`walk` is the generator both drivers run for every flow: each step runs a
fresh copy of a node (its run is the driver's: `NODE`), with its
checkpoint in a durable run and its events in an observed one. A flow's
exec stage (`flow_stage`) is one walk, or one per parameter set of a batch
flow, isolated and merged when the flow asks for it. A node run alone in
a durable run is a walk of one step (`node_walk`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from time import monotonic, time
from typing import Any

from .._context import HANDED_DOWN, PATH, RUN, STATE, STEP, HandedDown, StepAt, WalkStepAt
from .._errors import BraidflowError, StateError, WiringError, add_note
from .._merge import apply_changes, merge, rule_where
from .._options import on_error_of
from .._plan import copy_node
from .._state_views import store_under
from .._taskgroup import note_lost
from .._views import SharedView
from .._wiring import DEFAULT_ACTION, route
from ..durable._drain import DrainStop
from ..durable._tracking import TrackingDict
from ._attempts import ended_walk, finished_action, finished_item, unfinished_item
from ._effects import MAYBE_AWAIT, NODE, PARALLEL
from ._items import batch_items, sequential
from ._observe import StepScope
from ._typed import join_advice, join_rules

__all__ = ["StepCheckpoints", "flow_stage", "node_walk", "typed_stage", "walk"]

Steps = Generator[tuple[Any, ...], Any, Any]


class StepCheckpoints:
    """A walk's part of a durable run: it skips the steps that finished before
    (resuming) and records each step that finishes now (each begins in
    `walk` itself, which sets its name, start, touched set and `STEP`)."""

    __slots__ = (
        "drain",
        "durable",
        "frame",
        "lax",
        "name",
        "position",
        "recorded",
        "replaying",
        "started",
        "state",
        "step",
        "target",
        "touched",
    )

    def __init__(self, durable: Any, shared: Any, frame: str) -> None:
        self.durable = durable
        self.drain = durable.drain
        self.frame = frame  # the walk's key: its flow's step's ("" for the run's own node)
        self.recorded = durable.steps_in(self.frame)
        self.replaying = len(self.recorded)  # while position is below: steps to skip
        self.position = 0
        # The running step (or the last to run): where its code runs (its
        # StepAt), its node, and when it began (set in walk).
        self.step: StepAt | None = None
        self.name = ""
        self.started = 0.0
        self.touched: set[Any] = set()  # what the running step reads and writes in shared
        # What the steps record of: the store itself, in a typed flow the
        # store under its view. Under async or exit, a step of the run's own
        # store is recorded the cheap way (durable.lax_step_done).
        self.target = target = store_under(shared)
        self.lax = not durable.strict and type(target) is TrackingDict
        # A flow that validates its state (validate=True): each step's values
        # are checked before it is recorded (`done`), its lax steps too.
        state = STATE.get()
        self.state: Any = state if state is not None and state.validate else None

    def replayed(self, node: Any, shared: Any) -> Any:
        """Skip this step, which finished before (position < replaying): its action."""
        action = self.durable.replay(self.recorded[self.position], node, store_under(shared))
        self.position += 1
        return action

    def failed(self, error: BaseException) -> None:
        """Note the step a failure came from (the innermost sees it first)."""
        if self.step is not None:
            self.durable.failed_in(error, self.step.key)

    def finished_meanwhile(self, node: Any, stop: BaseException) -> tuple[Any] | None:
        """``stop`` (a cancellation) reached the step while its code ran in a
        thread: if that code finished meanwhile (a sibling branch failed as
        it ended, say), record the step as any other, so a resume does not
        redo it; return its action (a 1-tuple), or ``None``."""
        finished = finished_action(stop)
        if finished is not None:
            if self.state is not None:
                try:
                    self._check()
                except StateError:
                    return None  # not recorded: it runs again on resume
            if self.lax:
                self.durable.lax_step_done(self, node, finished[0])
            else:
                self.done(node, finished[0])
        return finished

    def done(self, node: Any, action: Any) -> None:
        """Record the step that finished; the next one begins at the next
        position. (A lax walk's steps are `DurableRun.lax_step_done`'s, but
        in a flow that validates its state, where they come here first.)

        Raises:
            StateError: In a flow that validates its state, if a key the step
                touched does not fit its type (changed in place, say): the
                step is not recorded.
        """
        durable = self.durable
        if self.state is not None:
            self._check()
            if self.lax:
                durable.lax_step_done(self, node, action)
                return
        durable.step_done(
            self.frame,
            self.position,
            node,
            self.name,
            action,
            self.target,
            self.touched,
            self.started,
        )
        self.position += 1
        if node._bf_strict and not durable.strict:  # durability="sync" in a view's walk
            durable.sync()

    def _check(self) -> None:
        """What the step left fits the state type, where it touched it
        (`StateType.check_step`): a store never holds what its resume refuses."""
        target = self.target
        if type(target) is TrackingDict:
            keys: Any = target.touched(self.touched)
        else:  # a branch's view: the keys it noted since its last step
            keys = target._dirty
        self.state.check_step(target, keys)


def walk(
    flow: Any,
    shared: Any,
    params: dict[str, Any],
    offload: bool,
    sync_only: bool,
    where: str | None = None,
) -> Steps:
    """Run ``flow``'s graph from its start; return the last action.

    ``offload``: what sync nodes that do not say do (run in threads or on the
    loop). ``sync_only``: reaching an async node is an error (a sync flow).
    ``where``: what a failing node's note says it failed in; default the
    flow (a branch's walker is no flow of the user's: ``branch 'b' of node 'par'``).
    """
    node = flow.__dict__.get("start_node")  # what the property reads, without its call
    if node is None:
        node = getattr(flow, "start_node", None)  # a subclass's own start_node, if any
    if node is None:
        raise WiringError(
            f"{flow._describe()} has no start node; pass `{type(flow).__name__}(start=node)` "
            "or call `flow.start(node)` before running it",
            node=flow._display_name(),
        )
    run = RUN.get()
    durable = run.durable if run is not None else None
    observing = run if run is not None and run.observers else None
    names = run.names_in(node) if run is not None and (observing or durable) else None
    checkpoints = StepCheckpoints(durable, shared, STEP.get().key) if durable is not None else None
    # Under async or exit, the steps of the run's own shared: DurableRun.lax_step_done.
    # (Checked first, by checkpoints.done, in a flow that validates its state.)
    lax_done: Any = None
    if checkpoints is not None and checkpoints.lax and checkpoints.state is None:
        lax_done = checkpoints.durable.lax_step_done
    # The STEP each step of a durable walk set; the first one's token, to
    # leave the variable as it was when the walk ends.
    token = None
    path = PATH.get()
    plain_routing = not flow._bf_plan.custom_routing
    new = object.__new__
    action = None
    try:
        while node is not None:
            original = node
            plan = node._bf_plan
            if plan.copy_plain:  # copy.copy's result and set_params', made directly
                state = original.__dict__.copy()
                state["params"] = params
                if names is not None:
                    state["_bf_display"] = display = names.get(id(original))
                node = new(node.__class__)
                node.__dict__ = state
            else:
                node = copy_node(node)
                node.set_params(params)
                if names is not None:
                    node.__dict__["_bf_display"] = display = names.get(id(original))
            if sync_only and node._bf_async:
                raise flow._reached_async(node)
            if checkpoints is not None:
                if checkpoints.position < checkpoints.replaying:  # it finished before
                    action = checkpoints.replayed(node, shared)
                    node = flow.get_next_node(node, action)
                    continue
                # The step begins (inline: a call would cost a tenth of a lax
                # step), unless the run drains. A durable run names its nodes:
                # display is this one's name.
                drain = checkpoints.drain
                if drain.asked or monotonic() >= drain.next_poll:  # its stopping(), cheap
                    if drain.stopping():
                        raise DrainStop
                name = checkpoints.name = display or node._display_name()
                checkpoints.started = time()
                # Where the step's code runs: a StepAt of its own, kept by
                # whatever its code starts (a task, a thread) after it ends;
                # its key made only if asked for (most steps never are).
                touched = checkpoints.touched = set()
                at = new(WalkStepAt)
                at.frame = checkpoints.frame
                at.position = checkpoints.position
                at.name = name
                at.touched = touched
                durable.at = checkpoints.step = at  # type: ignore[union-attr]
                set_at = STEP.set(at)
                if token is None:
                    token = set_at
            step = None
            if observing is not None:
                name = node._display_name()
                step = StepScope(observing, name, (*path, name))
            try:
                action = yield (NODE, node, None, shared, offload, plan)
                if checkpoints is not None:
                    if lax_done is not None:
                        lax_done(checkpoints, node, action)
                    else:
                        checkpoints.done(node, action)
            except BaseException as error:
                finished = None
                if isinstance(error, Exception):
                    if checkpoints is not None:
                        checkpoints.failed(error)
                    add_note(error, f"{node._describe()} failed in {where or flow._describe()}")
                    if isinstance(error, BraidflowError) and error.node is None:
                        error.node = node._display_name()  # (a refused write, say)
                elif checkpoints is not None:
                    finished = checkpoints.finished_meanwhile(node, error)
                    if finished is not None and plain_routing and _last(node, finished[0]):
                        ended_walk(error, flow, finished[0])  # a parameter set's: it finished
                if step is not None:
                    step.end(error if finished is None else None)
                raise
            if step is not None:
                step.end()
            if plain_routing:  # route(), without its call when the action is wired
                try:
                    node = node.successors[action or "default"]
                except (KeyError, TypeError):
                    node = route(node, action)
            else:
                node = flow.get_next_node(node, action)
    finally:
        if token is not None:
            STEP.reset(token)
    return action


def _last(node: Any, action: Any) -> bool:
    """Whether ``action`` ends the walk at ``node`` (no successor for it)."""
    if action is not None and type(action) is not str:
        return False  # (the walk would have failed on it)
    return node.successors.get(action or DEFAULT_ACTION) is None


def node_walk(node: Any, shared: Any) -> Steps:
    """A node (not a flow) run alone in a durable run, as a walk of one step:
    the node, at the run's root (frame ``""``, position 0: its key is the
    run's own, ``0:name``, under which its items, questions and idempotency
    keys were always kept). Its step is recorded when it finishes, after
    its items, with what it changed, as a one-node flow's step is; resuming
    a run whose step finished (a fork after it, a crash before the run's end
    was recorded) skips it. Return its action."""
    durable = RUN.get().durable  # type: ignore[union-attr]
    checkpoints = StepCheckpoints(durable, shared, "")
    if checkpoints.replaying:  # it finished before
        return checkpoints.replayed(node, shared)
    # The step is the run's own StepAt (RunScope's): what the node touches is noted there.
    at = durable.at = checkpoints.step = STEP.get()
    checkpoints.name = node._display_name()
    checkpoints.touched = at.touched
    checkpoints.started = time()
    try:
        action = yield (NODE, node, None, shared, False, node._bf_plan)
    except Exception as error:
        checkpoints.failed(error)
        raise
    except BaseException as stop:
        checkpoints.finished_meanwhile(node, stop)
        raise
    if checkpoints.lax:
        durable.lax_step_done(checkpoints, node, action)
    else:
        checkpoints.done(node, action)
    return action


def flow_stage(flow: Any, shared: Any, prep_result: Any, offload: bool) -> Steps:
    """A flow's exec stage: its walk, or one walk per parameter set of a batch
    flow. Its executor, if it has one, is the default of the batch nodes inside.
    ``offload``: what the flow's sync nodes do (for a sync flow in async code)."""
    run = RUN.get()
    if run is not None and run.durable is not None:
        _prep_kept(run.durable, shared, flow)
    if flow._bf_executor is None and flow._bf_batch == "single" and not _own_orch(flow):
        return _walk_of(flow, shared, {**flow.params}, offload)  # the common case, as is
    return _stage(flow, shared, prep_result, offload)


def _prep_kept(durable: Any, shared: Any, flow: Any) -> None:
    """A durable flow's own ``prep`` ran: what it changed in the run's store
    is kept before its walk begins; resuming inside the flow, it ran again,
    and what it touched gets back its recorded value. (A branch's view is
    recorded with the branch, and rebuilt as it replays.)"""
    at = STEP.get()
    target = store_under(shared)
    if type(target) is not TrackingDict:
        return
    if durable.recorded.resumed and durable.recorded.began(at.key):
        durable.prep_ran_again(at.key, target, at.touched)
    elif at.touched:
        state = STATE.get()
        if state is not None and state.validate:  # as a step is (StepCheckpoints.done)
            state.check_step(target, target.touched(at.touched), flow, "prep")
        durable.prep_done(at.key, target, at.touched)


def typed_stage(flow: Any, state: Any, shared: Any, prep_result: Any, offload: bool) -> Steps:
    """Run ``flow``'s stage on its state: the store checked (keys with a
    default the store lacks get it first), its nodes given the state's view."""
    store = store_under(shared)
    if STATE.get() is not state:  # the run, or the flow around, checked this type already
        store, _ = state.store_of(store, flow)
        state.check(store, flow)
    token = STATE.set(state)
    try:
        return (yield from flow_stage(flow, state.view(store), prep_result, offload))
    finally:
        STATE.reset(token)


def _own_orch(flow: Any) -> bool:
    """Whether the class has its own ``_orch`` (``_orch_async``) in place of the walk."""
    plan = flow._bf_plan
    return bool(plan.custom_orch_async if flow._bf_async else plan.custom_orch)


def _walk_of(flow: Any, shared: Any, params: dict[str, Any], offload: bool) -> Steps:
    """The flow's walk: an async flow's sync nodes run as its ``offload_sync``
    says; a sync flow's as the flow around it says, and it reaches no async node."""
    if flow._bf_async:
        return walk(flow, shared, params, flow.offload_sync, False)
    return walk(flow, shared, params, offload, True)


def _walk_or_orch(flow: Any, shared: Any, params: dict[str, Any] | None, offload: bool) -> Steps:
    """The flow's walk, or the class's own ``_orch``/``_orch_async`` if it has
    one, called as PocketFlow calls it: ``(shared)`` for a flow's own params
    (``params`` None), ``(shared, params)`` for a parameter set's."""
    if not _own_orch(flow):
        given = {**flow.params} if params is None else params
        return (yield from _walk_of(flow, shared, given, offload))
    args = (shared,) if params is None else (shared, params)
    if flow._bf_async:
        return (yield (MAYBE_AWAIT, flow, None, flow._orch_async, args, False))
    return (yield (MAYBE_AWAIT, flow, None, flow._orch, args, offload))


def _stage(flow: Any, shared: Any, prep_result: Any, offload: bool) -> Steps:
    executor = flow._bf_executor
    token = HANDED_DOWN.set(HandedDown(executor, shared)) if executor is not None else None
    try:
        batch = flow._bf_batch
        if batch == "single":
            return (yield from _walk_or_orch(flow, shared, None, offload))
        items = batch_items(flow, prep_result)
        if batch == "sequential" or not flow._bf_isolate:  # the sets share `shared`
            _sets_done_before(shared)

        def one_set(item: Any, index: int, from_sync: bool) -> Steps:
            try:
                params = flow._item_params(item, index)
                return (yield from _walk_or_orch(flow, shared, params, offload))
            except Exception as error:
                flow._label_param_set_error(error, item, index)
                raise

        if batch == "sequential":
            return (yield from sequential(flow, items, one_set, False))
        collect = on_error_of(flow) == "collect"
        if not flow._bf_isolate:  # PocketFlow's way: every sub-flow writes to one shared dict
            return (yield (PARALLEL, flow, None, items, one_set, collect, None, True))
        return (yield from _isolated(flow, shared, items, offload, collect))
    finally:
        if token is not None:
            HANDED_DOWN.reset(token)


def _changes_kept(
    durable: Any, stop: BaseException, stage: str, index: int, view: SharedView, flow: Any
) -> None:
    """An isolated parameter set whose walk ended as ``stop`` reached it keeps
    what it changed, as a finished one does, before its checkpoint records
    it; if that fails, it is not recorded (and runs again on resume), and
    ``stop`` still ends it, the failure noted on it."""
    try:
        durable.sub_flow_done(stage, index, view, flow)
    except Exception as error:
        unfinished_item(stop)
        add_note(
            stop,
            f"{flow._describe()}: param set {index} finished, but what it changed "
            f"could not be recorded ({error!r}); it runs again on resume",
        )
        note_lost(error)


def _sets_done_before(shared: Any) -> None:
    """Resuming, on a branch's view: what the batch's parameter sets that
    finished before changed is applied to it (the store itself was
    rebuilt with it; a view starts from the store)."""
    run = RUN.get()
    durable = run.durable if run is not None else None
    view = store_under(shared)
    if durable is not None and type(view) is SharedView:
        durable.replay_sets(STEP.get().key, view)


def _isolated(flow: Any, shared: Any, items: Any, offload: bool, collect: bool) -> Steps:
    """Parallel sub-flows, each on its own view of ``shared``; their changes
    are merged when all are done, in parameter-set order."""
    views: dict[int, SharedView] = {}
    shared = store_under(shared)  # in a typed flow: the store under its view
    state = STATE.get()
    run = RUN.get()
    durable = run.durable if run is not None else None
    stage = STEP.get().key
    # Resuming: sub-flows that finished before are skipped (by the item
    # checkpoints); their recorded changes are merged instead of a view's.
    recorded = durable.recorded_items(stage) if durable is not None else {}
    if durable is not None and type(shared) is SharedView:  # in a branch: what sets saved before
        durable.nested_before(stage, shared)

    def isolated_set(item: Any, index: int, from_sync: bool) -> Steps:
        view = SharedView(shared)
        try:
            params = flow._item_params(item, index)
            shown = view if state is None else state.view(view)
            result = yield from _walk_or_orch(flow, shown, params, offload)
        except Exception as error:
            flow._label_param_set_error(error, item, index)
            raise
        except asyncio.CancelledError as stop:  # its walk may have ended meanwhile
            if durable is not None and finished_item(stop, flow) is not None:
                _changes_kept(durable, stop, stage, index, view, flow)
            raise
        if durable is not None:  # before the item's own checkpoint: no loss either way
            durable.sub_flow_done(stage, index, view, flow)
        views[index] = view  # only a sub-flow that finished is merged
        return result

    def changes_of(index: int) -> dict[Any, Any]:
        if index in views:
            return views[index].changes()
        assert durable is not None  # only a resumed run has recorded sub-flows
        changes: dict[Any, Any] = durable.recorded_changes(stage, index)
        return changes

    results = yield (PARALLEL, flow, None, items, isolated_set, collect, None, True)
    changes = [
        (f"param set {index}", changes_of(index))
        for index in sorted(views.keys() | recorded.keys())
    ]
    try:
        own = flow._bf_merge
        kind = type(flow).__name__

        def advice(key: Any, rule: str) -> str:
            return rule_where(key, rule, flow._describe(), kind, own)

        apply_changes(shared, merge(shared, changes, join_rules(own), join_advice(advice)))
    except Exception as error:
        add_note(error, f"while merging the sub-flows of {flow._describe()}")
        raise
    return results
