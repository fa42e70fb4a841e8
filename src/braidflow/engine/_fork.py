"""A fork's branches: each walks its own path on its own view of ``shared``; merged at the join.

`fork_join` is the exec stage of a `Parallel`: its branches run as the
items of a parallel stage (bounds, failure policy and cancellation are
those of parallel batches), each with its own events and, in a durable
run, its own checkpoint with what it changed.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

from .._budget import OverBudget
from .._context import PATH, RUN, STATE, STEP, StepAt
from .._errors import Failure, add_note
from .._merge import apply_changes, merge
from .._questions import Interrupted, asked_together
from .._state_views import store_under
from .._views import Changes, SharedView
from ..durable._drain import DrainStop
from ._effects import PARALLEL
from ._observe import BranchScope
from ._typed import join_advice, join_rules
from ._walk import walk

__all__ = ["fork_join"]

Steps = Generator[tuple[Any, ...], Any, Any]
_DRAINED: Any = object()  # a branch's result when it stopped at a drain


def _noted_in(error: BaseException, where: str) -> bool:
    """Whether the walk noted ``error`` as a node's failure in ``where``."""
    ending = f" failed in {where}"
    return any(note.endswith(ending) for note in getattr(error, "__notes__", ()))


def fork_join(parallel: Any, shared: Any, offload: bool) -> Steps:
    """Run the branches of ``parallel`` at once and merge their changes into
    ``shared``; return the join's action (``"failed"`` after collected
    failures, if the Parallel has a successor for it)."""
    names = parallel.branch_names()
    walkers = parallel._bf_walkers
    shared = store_under(shared)  # in a typed flow: the store under its view
    state = STATE.get()
    views = [SharedView(shared) for _ in walkers]
    params = parallel.params
    run = RUN.get()
    observing = run if run is not None and run.observers else None
    durable = run.durable if run is not None else None
    step = STEP.get()
    at = step.key
    path = PATH.get() or (parallel._display_name(),)
    # Resuming: a branch that finished before is not run again; its
    # recorded changes are merged as its view's would be.
    finished: dict[int, dict[Any, Any]] = {}
    if durable is not None:
        for index in range(len(walkers)):
            changes = durable.recorded_branch(at, index)
            if changes is not None:
                finished[index] = changes
        if type(shared) is SharedView:  # in a branch: what its branches saved before
            durable.nested_before(at, shared)
    # A branch that asks (``interrupt``) stops alone: the others run on, and
    # the join raises every question asked once they have all stopped.
    asked: list[Interrupted] = []

    def one_branch(index: int, _position: int, from_sync: bool) -> Steps:
        name = names[index]
        where = f"branch {name!r} of {parallel._describe()}"
        scope = BranchScope(observing, name, (*path, name)) if observing is not None else None
        token = None
        if durable is not None:
            token = STEP.set(StepAt(f"{at}/b{index}:{name}", step.touched))
        try:
            # From sync code the branches run on a private loop, their sync
            # nodes in threads, and an async node is out of place.
            view = views[index] if state is None else state.view(views[index])
            result = yield from walk(
                walkers[index], view, params, offload or from_sync, from_sync, where
            )
            if durable is not None:
                durable.branch_done(at, index, name, parallel, result, views[index])
        except DrainStop as stop:  # the others finish their step; the fork then stops
            if scope is not None:
                scope.end(stop)
            return _DRAINED
        except Interrupted as question:
            asked.append(question)
            if scope is not None:
                scope.end(question)
            return None
        except BaseException as error:
            # A node's failure was noted by the walk ("node 'b' failed in
            # branch ..."); anything else (the walk refusing an async node,
            # a checkpoint's store) is noted here.
            if isinstance(error, Exception) and not _noted_in(error, where):
                add_note(error, f"{where} failed")
            if scope is not None:
                scope.end(error)
            raise
        finally:
            if token is not None:
                STEP.reset(token)
        if scope is not None:
            scope.end()
        return result

    to_run = [index for index in range(len(walkers)) if index not in finished]
    try:
        results = yield (PARALLEL, parallel, None, to_run, one_branch, True, None, False)
    except OverBudget as stop:  # the questions asked meanwhile wait with the budget
        stop.also_asked(asked)
        raise
    if any(result is _DRAINED for result in results):
        raise DrainStop  # a question asked meanwhile is asked again on resume
    if asked:
        raise asked_together(asked)
    outcome = dict(zip(to_run, results, strict=True))
    key = parallel.failures_key
    own = 0  # this fork's own failures: its failed branches
    collected: list[Failure] = []  # and those of the forks nested in the others
    branch_changes: list[tuple[str, Mapping[Any, Any]]] = []
    for index, name in enumerate(names):
        result = outcome.get(index)
        if isinstance(result, Failure):  # a failed branch is not merged
            collected.append(Failure(result.error, name, index))
            own += 1
            continue
        changes = finished[index] if index in finished else views[index].changes()
        nested = changes.get(key)
        if isinstance(nested, list) and nested and all(type(item) is Failure for item in nested):
            collected.extend(nested)
        branch_changes.append((name, changes))
    if collected:  # the join writes the key: its branches' values there are in `collected`
        branch_changes = [(name, _without(changes, key)) for name, changes in branch_changes]
    try:
        rules = parallel._bf_merge if state is None else join_rules(parallel._bf_merge)
        advice = parallel._merge_advice if state is None else join_advice(parallel._merge_advice)
        merged = merge(shared, branch_changes, rules, advice)
    except Exception as error:
        add_note(error, f"while joining the branches of {parallel._describe()}")
        raise
    apply_changes(shared, merged)
    if collected:
        shared[key] = collected
    if own:
        return "failed" if "failed" in parallel.successors else None
    return None


def _without(changes: Mapping[Any, Any], key: Any) -> Mapping[Any, Any]:
    """A branch's changes but that of ``key``."""
    if key not in changes:
        return changes
    if isinstance(changes, Changes):
        return changes.without(key)
    return {name: value for name, value in changes.items() if name != key}
