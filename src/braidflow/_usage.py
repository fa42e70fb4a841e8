"""Usage of LLM calls: what one call used (`Usage`), reported once from ``exec``.

`report` is what ``node.report_usage(...)`` does: it corrects the attempt's
weighted limiters, adds to the run's totals (its budget, its stored record)
and, if the run is observed, emits a ``usage`` event.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

from ._after_fork import call_in_children
from ._context import ATTEMPT, PATH, REMOTE, RUN, current_item
from ._errors import InvalidParameterError
from ._options import check_number
from ._threads import runs_going
from ._weights import correct_claims

__all__ = ["Spend", "Usage", "recorded_spend", "report", "usage_of"]


@dataclass(frozen=True, slots=True)
class Usage:
    """What LLM calls used: tokens in and out, and what they cost, if known.

    Usages add up (``a + b``): tokens and calls are summed; the cost is the
    sum of the costs known (``None`` if none is); the model is kept if both
    name the same one (or one is of no calls).

    Attributes:
        input_tokens: Tokens of the prompt (ints >= 0).
        output_tokens: Tokens generated.
        cost: What it cost, in the unit of the prices given (``None``: not known).
        model: The model that answered, or ``None``.
        calls: How many calls this is the usage of.

    Raises:
        InvalidParameterError: For a token count that is not an int >= 0, or a
            cost that is not a finite number >= 0.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    model: str | None = None
    calls: int = 1

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidParameterError(f"Usage: {name}={value!r} must be an int >= 0")
        cost = self.cost
        if cost is not None:
            check_number(
                cost,
                f"Usage: cost={cost!r}",
                "a finite number >= 0, or None if not known",
                at_least=0,
            )
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidParameterError(f"Usage: model={self.model!r} must be a string or None")

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        costs = [cost for cost in (self.cost, other.cost) if cost is not None]
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            sum(costs) if costs else None,
            other.model
            if not self.calls
            else self.model
            if not other.calls or self.model == other.model
            else None,
            self.calls + other.calls,
        )

    def as_dict(self) -> dict[str, Any]:
        """As JSON values: what events, traces and the stored record carry."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": self.cost,
            "model": self.model,
            "calls": self.calls,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """The usage `as_dict` gave (unknown keys are left out)."""
        return cls(
            int(data.get("input_tokens", 0)),
            int(data.get("output_tokens", 0)),
            data.get("cost"),
            data.get("model"),
            int(data.get("calls", 0)),
        )


NO_USAGE = Usage(calls=0)
_first_report = threading.Lock()


def _forked() -> None:
    """In a child made by ``os.fork``: a thread that held the lock is not there."""
    global _first_report
    _first_report = threading.Lock()


call_in_children(_forked)


class Spend:
    """A run's spending: the usage reported so far and its budget (if any).

    ``running`` counts the exec attempts of a budgeted run that are going on
    (what a stop waits for); ``refused`` is the attempt that first found the
    budget reached, while it stops the run (a `braidflow._budget.Refusal`);
    a resumed run starts from what it spent before.
    """

    __slots__ = ("budget", "lock", "refused", "running", "total")

    def __init__(self, budget: Any = None, before: Usage = NO_USAGE) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self.total = before
        self.running = 0
        self.refused: Any = None

    def add(self, usage: Usage) -> Usage:
        """Count ``usage``; return the total."""
        with self.lock:
            total = self.total = self.total + usage
        return total


def usage_of(
    usage: Any, input_tokens: Any, output_tokens: Any, cost: Any, model: Any, node: Any
) -> Usage:
    """The `Usage` ``report_usage`` of ``node`` was given: one, or its parts."""
    describe = node._describe()
    if usage is None:
        try:
            return Usage(input_tokens, output_tokens, cost, model)
        except InvalidParameterError as error:  # said again, naming the node
            raise InvalidParameterError(
                f"{describe}: report_usage(): {error}", node=node._display_name()
            ) from None
    if not isinstance(usage, Usage):
        raise InvalidParameterError(
            f"{describe}: report_usage({usage!r}) takes a braidflow.Usage (e.g. from "
            "braidflow.llm.usage_from_openai(response)), or input_tokens=, output_tokens=, "
            "cost=, model="
        )
    if (input_tokens, output_tokens, cost, model) != (0, 0, None, None):
        raise InvalidParameterError(
            f"{describe}: report_usage() takes a Usage or its parts, not both"
        )
    return usage


def report(node: Any, usage: Usage) -> None:
    """Count what a call of ``node`` used, everywhere it shows (see `Node.report_usage`):
    in its run, and in each run that run was started in (from a node's code),
    as a use of that node."""
    correct_claims(usage, node)
    run = RUN.get()
    if run is None:
        remote = REMOTE.get()
        if remote is not None:  # sent back with the exec's outcome, counted there
            remote.sent.append(("usage", usage))
        elif runs_going():  # (outside every run, a report is legitimate, and counts nowhere)
            _warn_lost(node)
        return
    counted = run
    while counted is not None:  # refused before it counts anywhere
        _refuse_costless(counted, node, usage)
        counted = counted.enclosing and counted.enclosing[0]
    state = ATTEMPT.get()
    attempt = state.attempt if state is not None and state.node is node else None
    where: tuple[Any, ...] = (node._display_name(), PATH.get(), current_item(), attempt)
    while run is not None:
        _count(run, usage, *where)
        if run.enclosing is None:
            break
        run, *where = run.enclosing


def _warn_lost(node: Any) -> None:
    """Say that a report made outside the run's context, while a run goes on,
    counts nowhere. Python's default filter shows it once per calling line."""
    warnings.warn(
        f"{node._describe()}: report_usage() was called in a thread that does not see the "
        "run (one braidflow did not start: a ThreadPoolExecutor's, loop.run_in_executor's), "
        "so this usage counts nowhere: in no budget, record or event. If the call is part "
        "of a run, make it in the run's context: submit it as "
        "`pool.submit(contextvars.copy_context().run, call, *args)` (a copy per call), or "
        "`await asyncio.to_thread(call, *args)`, which copies it",
        RuntimeWarning,
        stacklevel=4,
    )


def enclosing() -> tuple[Any, ...] | None:
    """Where a run that starts now is started, if in another run's node: that
    run, and the node's name, path, item and attempt there (see `report`)."""
    run = RUN.get()
    if run is None:
        return None
    state = ATTEMPT.get()
    path = PATH.get()
    node = state.node._display_name() if state is not None else path[-1] if path else None
    return (run, node, path, current_item(), state.attempt if state is not None else None)


def _refuse_costless(run: Any, node: Any, usage: Usage) -> None:
    """Refuse usage with no cost where ``run`` has a cost budget."""
    spend = run.spend
    budget = spend.budget if spend is not None else None
    if (
        usage.cost is None
        and budget is not None
        and budget.cost is not None
        and (usage.input_tokens or usage.output_tokens)
    ):
        whose = "its run has" if run is RUN.get() else "the run its run was started in has"
        raise InvalidParameterError(
            f"{node._describe()} reported usage with no cost ({usage.input_tokens} tokens in, "
            f"{usage.output_tokens} out), and {whose} a cost budget ({budget!r}): a cost "
            "left out would let the budget be overrun; report the cost (usage_from_openai("
            "response, prices=Prices(...)), or report_usage(..., cost=...)), or give the "
            "budget tokens= instead",
            node=node._display_name(),
        )


def _count(
    run: Any, usage: Usage, node: str | None, path: Any, item: Any, attempt: int | None
) -> None:
    """Count ``usage`` in ``run``: its total, its record, its ``usage`` event."""
    spend = run.spend
    if spend is None:
        with _first_report:  # threads of one run reporting at once make one Spend
            spend = run.spend
            if spend is None:
                spend = run.spend = Spend()
    total = spend.add(usage)
    if run.durable is not None:  # in the store now and then, not only at the run's end
        run.durable.usage.so_far(total)
    if run.observers:
        run.emit("usage", node=node, path=path, item=item, attempt=attempt, data=usage.as_dict())


def recorded_spend(kept: Any) -> tuple[int | None, float | None]:
    """The tokens and cost a run's ``braidflow.usage`` metadata (``kept``)
    records, each ``None`` if it records none: braidflow's own record, or one
    written by hand as ``{"total_tokens": n}`` (or ``"tokens"``, or parts
    named ``*_tokens``, added up) and ``"cost"``; what is not a number is
    left out."""
    if not isinstance(kept, dict):
        return None, None
    tokens = _whole(kept.get("total_tokens", kept.get("tokens")))
    if tokens is None:
        parts = [_whole(value) for key, value in kept.items() if str(key).endswith("_tokens")]
        counted = [part for part in parts if part is not None]
        tokens = sum(counted) if counted else None
    cost = kept.get("cost", kept.get("cost_usd"))
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost != cost:
        cost = None
    return tokens, cost


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
