"""Parallel branches: ``a >> [b, c] >> d`` runs ``b`` and ``c`` at once, then ``d``.

Each branch walks its own path, from its head until the path ends, at its
own pace, on an isolated view of ``shared``; at the join their changes are
merged into the store by declared rules. Failure policy, bounds and
cancellation are those of parallel batches.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

from ._errors import InvalidParameterError, WiringError
from ._flow import Flow
from ._merge import check_rules, rule_where
from ._node import BaseNode
from ._options import check_max_concurrency, check_on_error
from ._plan import default
from ._sites import wired_here
from ._wiring import Wirable
from .engine import fork_join

__all__ = ["Parallel"]


def _heads(branches: Iterable[Any], owner: str) -> list[BaseNode]:
    heads = list(branches)
    if not heads:
        raise WiringError(f"{owner}: a fan-out needs at least one branch; the list is empty")
    seen: set[int] = set()
    for head in heads:
        if not isinstance(head, Wirable):
            made = (
                f"; give a node made from it: {head.__name__}()"
                if isinstance(head, type) and issubclass(head, Wirable)
                else ""
            )
            raise WiringError(
                f"{owner}: branch {head!r} ({type(head).__name__}) is not a node or a flow; "
                f"each branch of a fan-out is a node, the first node of a chain, or a flow{made}"
            )
        if id(head) in seen:
            raise WiringError(
                f"{owner}: {head!r} appears twice in one fan-out; each branch runs on its own "
                "view of shared, so give each one once (make a second node if you want it twice)"
            )
        seen.add(id(head))
    mistake = wired_here(heads)
    if mistake is not None:
        branch = f"branch {mistake.node._display_name()!r}"
        raise WiringError(f"{owner}: {mistake.explained(branch)}")
    return heads


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
            ``shared[failures_key]``, in branch order with those that forks
            nested in the finished branches collected there, and the
            Parallel's action is ``"failed"`` (for a failure of its own
            branches) if it has a successor for it, else the default. A
            `SetupError` is never collected: it stops them as ``"raise"`` does.
        failures_key: Where ``on_error="collect"`` puts the failures.
        name: A label for errors, events and graphs; default ``"Parallel"``.

    Raises:
        WiringError: For no branch, something that is not a node or flow, or
            one node given twice.
        InvalidParameterError: For a bad merge rule or option.
    """

    _bf_batch = "branches"  # its items are its branches

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
        self.max_concurrency = check_max_concurrency(self, max_concurrency)
        self._bf_on_error = check_on_error(self, on_error)
        if not isinstance(failures_key, str):
            raise InvalidParameterError(
                f"{owner}: failures_key={failures_key!r} must be a string key of shared",
                node=self._display_name(),
            )
        self.failures_key = failures_key
        # One walker per branch: a flow whose start is the branch's head.
        self._bf_walkers = [Flow(start=head) for head in self.branches]
        for walker in self._bf_walkers:
            walker.__dict__["_bf_branch_of"] = self  # so that its errors speak of this Parallel

    def _merge_advice(self, key: Any, rule: str) -> str:
        """How a conflict at this join is told to give ``key`` a rule."""
        listed = self.__dict__.get("_bf_listed", False)
        return rule_where(key, rule, self._describe(), "Parallel", self._bf_merge, listed)

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

    def _stage(self, shared: Any, prep_result: Any, offload: bool) -> Generator[Any, Any, Any]:
        """A fork's exec stage: its branches at once, merged at the join."""
        return fork_join(self, shared, offload)


Wirable._fan_out = Parallel  # what `a >> [b, c]` makes: defined here, above the wiring
