"""Run budgets: ``budget=Budget(tokens=..., cost=...)`` stops a run before a call over it.

Before each exec attempt of a budgeted run, the engine asks whether the
run's spending reached its budget (`reached`): if not, the attempt starts
(`attempt_started`, counted as in flight until `attempt_ended`); if so, it
gives back the limiters it took (a call in flight may need one to end),
waits for the calls in flight to finish (they count) and stops the run
(`stop_at_budget`), by raising `BudgetExceeded` or, in a durable run with
``on_exceed="suspend"``, by suspending it as ``waiting`` until it is
resumed with a higher budget.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from contextvars import ContextVar
from typing import Any

from ._after_fork import call_in_children, reset_in_children
from ._context import RUN
from ._errors import BudgetExceeded, InvalidParameterError
from ._options import check_number
from ._usage import Spend, Usage

__all__ = [
    "Budget",
    "OverBudget",
    "active",
    "attempt_ended",
    "attempt_started",
    "budgeted",
    "check_budget",
    "close_budget",
    "open_budget",
]

_ON_EXCEED = ("raise", "suspend")
# How many budgeted attempts of one run (its Spend) enclose this code (exec
# code that runs a flow of the same run): a stop waits for the attempts in
# flight other than those. A run started inside another's exec has a Spend
# of its own, and counts none of the other's.
_ENCLOSING: ContextVar[tuple[Spend | None, int]] = ContextVar(
    "braidflow_budgeted", default=(None, 0)
)
reset_in_children(_ENCLOSING)
_POLL = 0.005  # seconds between looks at the attempts in flight, while stopping
# How many budgeted runs are going on in this process: while none is, the
# engine's fast paths skip the budget (one module attribute read per node).
active = 0
_active_lock = threading.Lock()


def _forked() -> None:
    """In a child made by ``os.fork``: the budgeted runs were the parent's, and
    a thread that held the lock is not there."""
    global active, _active_lock
    active = 0
    _active_lock = threading.Lock()


call_in_children(_forked)


class Budget:
    """The most a run may spend on LLM calls: tokens, cost, or both.

    Given to ``run``/``run_async``/``resume`` as ``budget=``. Usage counts
    as nodes report it (``self.report_usage(...)``). Before each exec
    attempt, if the run has spent as much as the budget or more, the run
    stops before that call: attempts already in flight finish and count, so
    the budget is overshot by at most what they use, and `BudgetExceeded`
    names the first attempt refused (others refused meanwhile wait for it
    to raise, and name it too). A resumed run counts
    what its earlier parts spent. Under a parallel batch's
    ``on_error="collect"`` the items stopped are `braidflow.Failure` s of
    `BudgetExceeded` and the run goes on without calling. The wait for the
    calls in flight follows the run's clock.

    Args:
        tokens: Most input plus output tokens, or ``None``.
        cost: Most cost (in the unit of the prices the usage was priced
            with), or ``None``.
        on_exceed: ``"raise"`` (default): `BudgetExceeded`. ``"suspend"`` (a
            durable run only): the run is stored as ``waiting`` with the
            reason and `Suspended` is raised; ``flow.resume(run_id,
            store=..., budget=Budget(...higher))`` carries on from there,
            redoing nothing that finished.

    Raises:
        InvalidParameterError: For a limit that is not a number >= 0 (tokens:
            an int), neither limit given, or another ``on_exceed``.
    """

    __slots__ = ("cost", "on_exceed", "tokens")

    def __init__(
        self, *, tokens: int | None = None, cost: float | None = None, on_exceed: str = "raise"
    ) -> None:
        if tokens is not None and (
            isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0
        ):
            raise InvalidParameterError(f"Budget: tokens={tokens!r} must be an int >= 0, or None")
        if cost is not None:
            check_number(
                cost, f"Budget: cost={cost!r}", "a finite number >= 0, or None", at_least=0
            )
        if tokens is None and cost is None:
            raise InvalidParameterError("Budget: give tokens=, cost= or both")
        if on_exceed not in _ON_EXCEED:
            raise InvalidParameterError(
                f"Budget: on_exceed={on_exceed!r} must be 'raise' or 'suspend'"
            )
        self.tokens = tokens
        self.cost = cost
        self.on_exceed = on_exceed

    def __repr__(self) -> str:
        parts = [f"{name}={getattr(self, name)!r}" for name in ("tokens", "cost")]
        parts = [part for part in parts if not part.endswith("=None")]
        if self.on_exceed != "raise":
            parts.append(f"on_exceed={self.on_exceed!r}")
        return f"Budget({', '.join(parts)})"

    def reached(self, spent: Usage) -> str | None:
        """Why ``spent`` reaches this budget (``None``: it does not)."""
        if self.tokens is not None and spent.tokens >= self.tokens:
            return f"{spent.tokens} tokens spent, budget {self.tokens}"
        if self.cost is not None and spent.cost is not None and spent.cost >= self.cost:
            return f"cost {spent.cost:g} spent, budget {self.cost:g}"
        return None


class OverBudget(BaseException):
    """Raised to suspend a durable run whose budget is spent (a
    ``BaseException``, so no retry, fallback or ``except Exception`` stops it).

    Attributes:
        error: The `BudgetExceeded` that says where and why.
        asked: The questions (`braidflow._questions.Interrupted`) other items
            or branches of a parallel stage asked before it stopped: the run
            waits on them too.
    """

    def __init__(self, error: BudgetExceeded) -> None:
        super().__init__(str(error))
        self.error = error
        self.asked: tuple[Any, ...] = ()

    def also_asked(self, asked: list[Any] | None) -> None:
        """Keep the questions a parallel stage gathered before it stopped."""
        if asked:
            self.asked = (*self.asked, *(question for one in asked for question in one.asked))


def check_budget(budget: Any, owner: Any, durable: bool) -> Any:
    """A run's ``budget=``, checked before the run starts.

    Raises:
        InvalidParameterError: For something other than a `Budget`, or
            ``on_exceed="suspend"`` in a run with no store to resume it from.
    """
    if budget is None:
        return None
    name = owner._display_name()
    if not isinstance(budget, Budget):
        raise InvalidParameterError(
            f"{owner._describe()}: budget={budget!r} must be a braidflow.Budget, e.g. "
            "Budget(tokens=100_000) or Budget(cost=2.0)",
            node=name,
        )
    if budget.on_exceed == "suspend" and not durable:
        raise InvalidParameterError(
            f"{owner._describe()}: {budget!r} suspends the run, which needs a durable run to "
            "resume: pass store= too, or on_exceed='raise'",
            node=name,
        )
    return budget


def open_budget() -> None:
    """A budgeted run starts: the engine's fast paths look at budgets from now on."""
    global active
    with _active_lock:
        active += 1


def close_budget() -> None:
    """A budgeted run has ended."""
    global active
    with _active_lock:
        active -= 1


def budgeted() -> Spend | None:
    """The running run's spending, if it has a budget (else ``None``)."""
    run = RUN.get()
    if run is None:
        return None
    spend: Spend | None = run.spend
    return spend if spend is not None and spend.budget is not None else None


def reached(spend: Spend) -> bool:
    """Whether the run's spending reached its budget: no attempt starts then."""
    return spend.budget.reached(spend.total) is not None


def attempt_started(spend: Spend) -> Any:
    """An exec attempt of a budgeted run starts: counted as in flight until
    `attempt_ended`, given the token this returns."""
    with spend.lock:
        spend.running += 1
    counted, count = _ENCLOSING.get()
    return _ENCLOSING.set((spend, count + 1 if counted is spend else 1))


class Refusal:
    """The exec attempt that first found a run's budget reached, while it
    stops the run: its node, item, how many of the run's attempts enclose
    it, and whether it has stopped (raised, or was cancelled)."""

    __slots__ = ("done", "enclosing", "index", "node")

    def __init__(self, node: Any, index: int | None, enclosing: int) -> None:
        self.node = node
        self.index = index
        self.enclosing = enclosing
        self.done = False


def stop_at_budget(
    spend: Spend, node: Any, index: int | None, sleep: Any
) -> Generator[Any, Any, Any]:
    """The budget is reached before an exec attempt (which holds no limiter
    now): wait for the attempts in flight to finish, then stop the run.

    The first attempt refused stops the run, and the error names it. One
    refused while that one is still stopping (another item, which may find
    no call in flight) joins its stop: its error names the first too, and it
    waits for the first to raise before it does (unless the first waits for
    a call that encloses this attempt, which only this one's error can end).

    ``sleep`` is the effect that waits a moment (the engine's ``SLEEP``).

    Raises:
        BudgetExceeded: Always, once they finished (``on_exceed="raise"``).
        OverBudget: The same, to suspend a durable run.
    """
    budget = spend.budget
    counted, count = _ENCLOSING.get()
    enclosing = count if counted is spend else 0  # (another run's attempts are not this one's)
    mine = Refusal(node, index, enclosing)
    with spend.lock:
        first = spend.refused
        if first is None:
            first = spend.refused = mine
    try:
        while spend.running > enclosing or (  # calls in flight finish and count
            # the first refused, free to raise: it goes first
            not first.done and first is not mine and spend.running <= first.enclosing
        ):
            yield (sleep, node, index, _POLL)
        spent = spend.total
        where = f" item {first.index}" if first.index is not None else ""
        run = RUN.get()
        durable = run.durable if run is not None else None
        error = BudgetExceeded(  # (a suspended run's message says how to resume it)
            f"{first.node._describe()}{where}: the run's {budget!r} is reached "
            f"({budget.reached(spent)}; {spent.calls} calls) before its next call",
            node=first.node._display_name(),
            item_index=first.index,
            spent=spent,
            budget=budget,
        )
        if budget.on_exceed == "suspend" and durable is not None:
            raise OverBudget(error)
        raise error
    finally:
        if first is mine:  # stopped (or cancelled): a later refusal starts a stop of its own
            with spend.lock:
                mine.done = True
                spend.refused = None


def attempt_ended(spend: Spend, token: Any) -> None:
    """The attempt `attempt_started` counted has ended."""
    _ENCLOSING.reset(token)
    with spend.lock:
        spend.running -= 1
