"""Parallel branches: ``a >> [b, c] >> d`` runs ``b`` and ``c`` at once, then ``d``.

Each branch walks its own path, from its head until the path ends, at its
own pace, on an isolated view of ``shared``; at the join their changes are
merged into the store by declared rules. Failure policy, bounds and
cancellation are those of parallel batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ._batch import Failure, run_parallel_async
from ._context import PATH, RUN, STEP, Run, StepAt
from ._errors import InvalidParameterError, WiringError, add_note
from ._flow import Flow
from ._merge import SharedView, apply_changes, check_rules, merge
from ._node import BaseNode
from ._plan import default
from ._threads import run_to_completion
from ._wiring import Wirable

__all__ = ["BRANCHES", "Parallel"]

BRANCHES = "branches"  # the batch mode of a Parallel: its items are its branches


def _heads(branches: Iterable[Any], owner: str) -> list[BaseNode]:
    heads = list(branches)
    if not heads:
        raise WiringError(f"{owner}: a fan-out needs at least one branch; the list is empty")
    seen: set[int] = set()
    for head in heads:
        if not isinstance(head, Wirable):
            raise WiringError(
                f"{owner}: branch {head!r} ({type(head).__name__}) is not a node or a flow; "
                "each branch of a fan-out is a node, the first node of a chain, or a flow"
            )
        if id(head) in seen:
            raise WiringError(
                f"{owner}: {head!r} appears twice in one fan-out; each branch runs on its own "
                "view of shared, so give each one once (make a second node if you want it twice)"
            )
        seen.add(id(head))
    return heads


class _BranchScope:
    """One branch while its run is observed: ``branch_start``, then ``branch_end``."""

    __slots__ = ("name", "path", "run", "started", "token")

    def __init__(self, run: Run, name: str, path: tuple[str, ...]) -> None:
        self.run, self.name, self.path = run, name, path
        self.token = PATH.set(path)
        self.started = now = time.monotonic()
        run.emit("branch_start", node=name, path=path, at=now)

    def end(self, error: BaseException | None = None) -> None:
        PATH.reset(self.token)
        now = time.monotonic()
        self.run.emit(
            "branch_end",
            node=self.name,
            path=self.path,
            duration=now - self.started,
            error=error,
            at=now,
        )


class Parallel(BaseNode):
    """Run branches at the same time, each on its own view of ``shared``; merge at the join.

    ``a >> [b, c] >> d`` is ``a >> Parallel(b, c) >> d``. Each branch is a
    node, the first node of a chain, or a flow: it runs until its own path
    ends, at its own pace. A branch reads ``shared`` as it was at the fork and
    sees its own writes, in-place changes included, never a sibling's; values
    it never touches are never copied. At the join, a key changed by one
    branch is applied; a key changed by several raises `MergeConflict`
    unless ``merge`` gives it a rule. Then the Parallel's successors run.

    Args:
        *branches: The branches' first nodes (or flows), in branch order.
        merge: ``{key: rule}``: ``"extend"`` (each branch's additions to a
            list, in branch order), ``"sum"`` (base plus each branch's change),
            ``"update"`` (dict keys; one key set by two branches is a conflict),
            ``"last"`` (the last branch in branch order wins), or a function
            ``(value before the fork, [each changing branch's value]) -> value``
            (``braidflow.MISSING`` stands for a key absent or deleted).
        max_concurrency: Most branches running at once; ``None``: all.
        on_error: ``"raise"`` (default): the first failing branch cancels the
            others and its error propagates once they stopped; nothing is
            merged. ``"collect"``: the others finish and are merged; the
            failures (`Failure` objects, ``item`` = branch name) go to
            ``shared[failures_key]`` and the Parallel's action is ``"failed"``
            if it has a successor for it, else the default.
        failures_key: Where ``on_error="collect"`` puts the failures.
        name: A label for errors, events and graphs; default ``"Parallel"``.

    Raises:
        WiringError: For no branch, something that is not a node or flow, or
            one node given twice.
        InvalidParameterError: For a bad merge rule or option.
    """

    _bf_batch = BRANCHES

    def __init__(
        self,
        *branches: BaseNode,
        merge: dict[str, Any] | None = None,
        max_concurrency: int | None = None,
        on_error: str = "raise",
        failures_key: str = "branch_failures",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        owner = self._describe()
        self.branches = _heads(branches, owner)
        self._bf_merge = check_rules(merge, owner)
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise InvalidParameterError(
                f"{owner}: max_concurrency={max_concurrency!r} must be an int >= 1, or None",
                node=self._display_name(),
            )
        if on_error not in ("raise", "collect"):
            raise InvalidParameterError(
                f"{owner}: on_error={on_error!r} is not one of 'raise', 'collect'",
                node=self._display_name(),
            )
        if not isinstance(failures_key, str):
            raise InvalidParameterError(
                f"{owner}: failures_key={failures_key!r} must be a string key of shared",
                node=self._display_name(),
            )
        self.max_concurrency = max_concurrency
        self._bf_on_error = on_error
        self.failures_key = failures_key
        # One walker per branch: a flow whose start is the branch's head.
        self._bf_walkers = [Flow(start=head) for head in self.branches]

    def branch_names(self) -> list[str]:
        """The branches' names: each head's name, with ``#2``... if two share one."""
        names: list[str] = []
        for head in self.branches:
            name = str(head.name)
            count = sum(1 for other in names if other == name or other.startswith(f"{name}#"))
            names.append(name if count == 0 else f"{name}#{count + 1}")
        return names

    @default
    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> Any:
        """Return the join's action: ``"failed"`` after collected failures (if
        wired), else the default."""
        return exec_res

    def _stage_sync(self, shared: Any, prep_result: Any) -> Any:
        # From sync code: the branches run on a private event loop, their sync
        # nodes in braidflow's threads.
        return run_to_completion(lambda: self._fork_join(shared, True, True))

    async def _stage_async(self, shared: Any, prep_result: Any, offload: bool = False) -> Any:
        return await self._fork_join(shared, offload, False)

    async def _fork_join(self, shared: Any, offload: bool, sync_only: bool) -> Any:
        names = self.branch_names()
        walkers = self._bf_walkers
        views = [SharedView(shared) for _ in walkers]
        params = self.params
        run = RUN.get()
        observing = run if run is not None and run.observers else None
        durable = run.durable if run is not None else None
        stage = STEP.get().key
        touched = STEP.get().touched
        path = PATH.get() or (self._display_name(),)
        # Resuming: a branch that finished before is not run again; its
        # recorded changes are merged as its view's would be.
        finished: dict[int, dict[Any, Any]] = {}
        if durable is not None:
            for index in range(len(walkers)):
                changes = durable.branch(stage, index)
                if changes is not None:
                    finished[index] = changes

        async def run_branch(index: int, _: int) -> Any:
            scope = (
                _BranchScope(observing, names[index], (*path, names[index])) if observing else None
            )
            frame = (
                STEP.set(StepAt(f"{stage}/b{index}:{names[index]}", touched)) if durable else None
            )
            try:
                result = await walkers[index]._walk_async(views[index], params, offload, sync_only)
                if durable is not None:
                    durable.branch_done(stage, index, names[index], self, result, views[index])
            except BaseException as error:
                if isinstance(error, Exception):
                    add_note(error, f"branch {names[index]!r} of {self._describe()} failed")
                if scope is not None:
                    scope.end(error)
                raise
            finally:
                if frame is not None:
                    STEP.reset(frame)
            if scope is not None:
                scope.end()
            return result

        to_run = [index for index in range(len(walkers)) if index not in finished]
        results = await run_parallel_async(
            self, to_run, run_branch, True, observe=False, checkpoint=False
        )
        assert results is not None  # keep=True
        outcome = dict(zip(to_run, results, strict=True))
        failures = [
            Failure(result.error, names[index], index)
            for index, result in outcome.items()
            if isinstance(result, Failure)
        ]
        failed = {failure.index for failure in failures}
        branch_changes = [
            (names[i], finished[i] if i in finished else views[i].changes())
            for i in range(len(walkers))
            if i not in failed
        ]
        try:
            merged = merge(shared, branch_changes, self._bf_merge)
        except Exception as error:
            add_note(error, f"while joining the branches of {self._describe()}")
            raise
        apply_changes(shared, merged)
        if failures:
            shared[self.failures_key] = failures
            return "failed" if "failed" in self.successors else None
        return None
