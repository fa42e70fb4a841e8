"""Weighted limits: a `Limiter` counting units (tokens) instead of calls.

`Weighted` is what a node's ``limits=`` holds (``tpm.weighted(estimate)``);
each exec attempt takes a `Claim` of that many units, corrected to what the
call reports it used (`braidflow.Node.report_usage`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from ._context import CLAIMS
from ._deadlock import holds
from ._errors import InvalidParameterError, RunError

__all__ = ["Claim", "Weighted", "claims_for", "correct_claims", "expire_units", "take_units"]

# What a sum of fractional units may exceed a bound by and still fit: float
# sums drift (0.1 taken thirty times is 3.0000000000000004, over a rate of 3).
SLACK = 1e-9

# What a report corrects a claim to, by the name given as ``by=``.
_MEASURES: dict[str, Callable[[Any], float | None]] = {
    "tokens": lambda usage: usage.input_tokens + usage.output_tokens,
    "input_tokens": lambda usage: usage.input_tokens,
    "output_tokens": lambda usage: usage.output_tokens,
    "cost": lambda usage: usage.cost,
}


def _capacity(limiter: Any) -> float | None:
    """The most units one acquisition can take: the smaller of
    ``max_concurrent`` and what the rate window holds (``None``: no bound)."""
    bounds = [bound for bound in (limiter._max, limiter._capacity) if bound is not None]
    return min(bounds) if bounds else None


class Weighted:
    """A `Limiter` as a node's ``limits=`` counts it: ``weight`` units per
    exec attempt, not one. Made by `Limiter.weighted`.

    ``limits=[rpm, tpm.weighted(lambda text: len(text) // 4 + 500)]``: each
    exec attempt takes one slot of ``rpm`` and the item's weight in units of
    ``tpm``, of its ``max_concurrent`` while it runs and of its ``rate`` per
    ``per`` seconds (``Limiter(rate=90_000, per=60)`` is 90,000 tokens per
    minute). The weight is an estimate, a number or a function of what
    ``exec`` receives (``prep``'s result, or the batch item), called once
    per item before its first attempt. When the attempt reports what it used
    (``self.report_usage(...)``), its units are corrected to that: an
    over-estimate is given back to the window at once, an under-estimate
    charged (to the window it started in, or now if that has passed).

    Fairness: one queue, first come first served, heavy and light alike.
    A heavy call at the head waits until its units are free and the lighter
    calls behind it wait for it, so no call is starved by others. A call
    nested in an attempt holding the same limiter goes ahead (the head may
    wait for the units that attempt holds, see `braidflow.Limiter`), and so
    does a call that the head waits for through other limiters (a cycle
    first come, first served would hang: see `braidflow.LimiterDeadlock`).

    The check that refuses hold-and-wait deadlocks (`braidflow.LimiterDeadlock`)
    counts the units each attempt holds of ``max_concurrent`` and the units
    the request asks: an attempt holding 6 of 10 whose nested node asks for
    6 more is refused, one whose nested node asks for 4 waits (a rate alone
    never deadlocks).

    Args:
        limiter: The limiter counted.
        weight: Units per attempt: a number >= 0, or a function of the item
            that returns one.
        by: What a report corrects the units to: ``"tokens"`` (input plus
            output, the default), ``"input_tokens"``, ``"output_tokens"``,
            ``"cost"``, a function of the reported `braidflow.Usage`, or
            ``None`` (the estimate stands).

    Raises:
        InvalidParameterError: For a weight that is not a number >= 0 or a
            function, a weight larger than the limiter can ever give at once
            (its ``max_concurrent``, or what ``rate`` allows in one window:
            it would wait forever), or an unknown ``by``.
    """

    __slots__ = ("_measure", "_order", "by", "limiter", "weight")

    def __init__(self, limiter: Any, weight: Any, by: Any = "tokens") -> None:
        self.limiter = limiter
        self._order = limiter._order  # held in the limiter's place in the global order
        if not callable(weight):
            weight = self._checked(weight, "weight", None)
        self.weight = weight
        if by is None or callable(by):
            self._measure = by
        elif isinstance(by, str) and by in _MEASURES:
            self._measure = _MEASURES[by]
        else:
            raise InvalidParameterError(
                f"{limiter!r}.weighted(): by={by!r} must be one of {sorted(_MEASURES)}, a "
                "function of the reported Usage, or None",
                node=limiter.name,
            )
        self.by = by
        with limiter._lock:
            count_units(limiter)

    def __repr__(self) -> str:
        return f"{self.limiter!r}.weighted({self.weight!r})"

    @property
    def name(self) -> str | None:
        return self.limiter.name  # type: ignore[no-any-return]

    def _checked(self, units: Any, what: str, node: Any, index: int | None = None) -> float:
        problem: str | None
        if isinstance(units, bool) or not isinstance(units, int | float):
            problem = f"is a {type(units).__name__}, not a number"
        elif not math.isfinite(units) or units < 0:
            problem = "is not a finite number >= 0"
        else:
            problem = self.too_many(units)
            if problem is None:
                return float(units)
        raise self.refusal(units, what, problem, node, index)

    def too_many(self, units: float) -> str | None:
        """What is wrong with ``units``, more than the limiter can ever give at
        once (its bound may have been lowered since); ``None`` if nothing is."""
        capacity = _capacity(self.limiter)
        if capacity is None or units <= capacity:
            return None
        return (
            f"is more than {self.limiter!r} can ever give at once ({capacity:g}): it "
            "would wait forever; raise the limiter's bound or split the call"
        )

    def refusal(
        self, units: Any, what: str, problem: str, node: Any, index: int | None
    ) -> InvalidParameterError:
        """The error for ``units`` of an attempt of ``node`` (item ``index``)."""
        where = ""
        if node is not None:
            where = node._describe() + (f" item {index}" if index is not None else "") + ": "
        return InvalidParameterError(
            f"{where}{what} {units!r} for {self.limiter!r} {problem}",
            node=node._display_name() if node is not None else self.limiter.name,
        )

    def units(self, item: Any, node: Any, index: int | None) -> float:
        """The units an attempt of ``node`` on ``item`` takes (checked)."""
        weight = self.weight
        if not callable(weight):
            bound = self.limiter._max  # it may have been lowered since
            if bound is not None and weight > bound:
                return self._checked(weight, "the weight", node, index)
            return weight  # type: ignore[no-any-return]
        return self._checked(weight(item), "the weight", node, index)

    def measure(self, usage: Any) -> float | None:
        """The units a reported ``usage`` stands for (``None``: no correction)."""
        measure = self._measure
        return None if measure is None else measure(usage)


class Entry:
    """A start in the rate window of a limiter counting units: when, and how
    many units (a plain acquisition's: one)."""

    __slots__ = ("start", "units")

    def __init__(self, start: float, units: float) -> None:
        self.start = start
        self.units = units


class Claim(Entry):
    """One exec attempt's units of a weighted limiter: taken, corrected to
    the usage reported, given back. It stands in for the limiter in the
    attempt's held limiters (``try_acquire``, ``release``, the wait), and is
    its own entry in the rate window, so a correction moves both at once.
    ``units``: the estimate until taken, then what it holds; ``reported``
    (set by the first report): the usage reported so far, in units."""

    __slots__ = ("limiter", "reported", "weighted")

    def __init__(self, weighted: Weighted, units: float) -> None:
        self.weighted = weighted
        self.limiter = weighted.limiter
        self.units = units

    def __repr__(self) -> str:
        return f"{self.limiter!r} ({self.units:g} units)"

    @property
    def name(self) -> str | None:
        return self.limiter.name  # type: ignore[no-any-return]

    def take(self) -> float:
        """`Limiter._try_take` for this claim's units (under the limiter's lock)."""
        return take_units(self.limiter, self.units, self)

    def try_acquire(self) -> bool:
        """`Limiter.try_acquire` for this claim's units."""
        limiter = self.limiter
        took = False
        try:
            with limiter._lock:
                took = (not limiter._waiting or holds(limiter)) and take_units(
                    limiter, self.units, self
                ) == 0.0
        except BaseException:  # a Ctrl-C as the lock was let go: see `Limiter._enqueue`
            if took:
                self.release()
            raise
        return took

    async def _acquire_queued(
        self, taken: tuple[Any, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """`Limiter._acquire_queued` for this claim's units."""
        await self.limiter._wait(taken, node, index, self, stop)

    def _acquire_queued_blocking(
        self, taken: tuple[Any, ...], node: Any, index: int | None, stop: Any = None
    ) -> None:
        """`Limiter._acquire_queued_blocking` for this claim's units."""
        self.limiter._wait_blocking(taken, node, index, self, stop)

    def release(self) -> None:
        """Give back the units held in flight (the window keeps its entry)."""
        limiter = self.limiter
        with limiter._lock:
            left = limiter._in_flight - self.units
            if left < -1e-9:
                raise RunError(f"{limiter!r}: more units given back than were taken")
            limiter._in_flight = left if left > 0 else 0.0
            if limiter._waiting:
                limiter._wake_next()

    def correct(self, units: float) -> None:
        """The attempt used ``units`` in fact: move what it holds in flight,
        and its entry in the rate window, to that. An entry that has left the
        window already is charged anew, now, for what it under-counted."""
        limiter = self.limiter
        with limiter._lock:
            change = units - self.units
            if not change:
                return
            if limiter._capacity is not None:
                now = limiter._clock.now()
                expire_units(limiter, now)  # before the entry's units change
                if self.start + limiter._period > now:
                    limiter._used += change  # the entry (this claim) is in the window
                elif change > 0:
                    limiter._starts.append(Entry(now, change))
                    limiter._used += change
            self.units = units
            limiter._in_flight += change
            if limiter._in_flight > limiter._peak:
                limiter._peak = limiter._in_flight
            if change < 0 and limiter._waiting:
                limiter._wake_next()


def expire_units(limiter: Any, now: float) -> None:
    """Drop the window's entries that left it (under the limiter's lock)."""
    starts, period = limiter._starts, limiter._period
    while starts and starts[0].start + period <= now:
        limiter._used -= starts.popleft().units
    if not starts:
        limiter._used = 0.0  # no drift from adding and taking away fractions


def take_units(limiter: Any, units: float, claim: Claim | None) -> float:
    """Take ``units`` of a limiter counting units, under its lock: 0 if taken,
    -1 if ``max_concurrent`` has not that many free, or the seconds until the
    rate window has room. ``claim`` (``None``: a plain acquisition) becomes
    the window's entry."""
    bound = limiter._max
    if bound is not None and limiter._in_flight + units > bound + SLACK:
        return -1.0
    capacity = limiter._capacity
    if capacity is not None:
        now = limiter._clock.now()
        starts = limiter._starts
        if starts and starts[0].start + limiter._period <= now:
            expire_units(limiter, now)
        if limiter._used + units > capacity + SLACK:
            # The room comes when enough of the oldest starts have left.
            used: float = limiter._used
            room: float = capacity - units + SLACK
            period: float = limiter._period
            for entry in starts:
                used -= entry.units
                if used <= room:
                    return max(entry.start + period - now, 1e-9)  # type: ignore[no-any-return]
            return period  # pragma: no cover - units never exceed the capacity
        if claim is None:
            starts.append(Entry(now, units))
        else:
            claim.start = now
            starts.append(claim)
        limiter._used += units
    in_flight = limiter._in_flight = limiter._in_flight + units
    limiter._acquired += 1
    if in_flight > limiter._peak:
        limiter._peak = in_flight
    return 0.0


def count_units(limiter: Any) -> None:
    """From now on keep ``limiter``'s rate window as `Entry` objects (a
    plain limiter keeps bare start times, the cheapest). Under its lock."""
    if limiter._counts_units:
        return
    limiter._starts = deque(Entry(start, 1.0) for start in limiter._starts)
    limiter._used = float(len(limiter._starts))
    limiter._counts_units = True


def claims_for(
    node: Any, item: Any, index: int | None
) -> Callable[[], tuple[tuple[Any, ...], tuple[Claim, ...]]]:
    """For an item of a node whose ``limits=`` hold weighted limiters: its
    units, computed now, and a function giving each attempt what it holds
    (the node's limits, a fresh `Claim` for each weighted one) and its claims."""
    limits = node._bf_limits
    if len(limits) == 1:  # the common case, made once per attempt: kept cheap
        only = limits[0]
        amount = only.units(item, node, index)

        def one() -> tuple[tuple[Any, ...], tuple[Claim, ...]]:
            claim = (Claim(only, amount),)
            return claim, claim

        return one
    pairs = [
        (limit, limit.units(item, node, index) if type(limit) is Weighted else None)
        for limit in limits
    ]

    def held() -> tuple[tuple[Any, ...], tuple[Claim, ...]]:
        taken = tuple(limit if amount is None else Claim(limit, amount) for limit, amount in pairs)
        return taken, tuple(each for each in taken if type(each) is Claim)

    return held


def correct_claims(usage: Any, node: Any) -> None:
    """Correct the running attempt's weighted claims to ``usage`` (added to
    what it reported before, for an attempt that makes several calls).

    Raises:
        InvalidParameterError: If a ``by=`` function gives no number >= 0.
    """
    claims = CLAIMS.get()
    if not claims:
        return
    for claim in claims:
        weighted = claim.weighted
        units = weighted.measure(usage)
        if units is None:
            continue
        if (
            isinstance(units, bool)
            or not isinstance(units, int | float)
            or not (math.isfinite(units) and units >= 0)
        ):
            raise InvalidParameterError(
                f"{node._describe()}: by={weighted.by!r} of {weighted.limiter!r} gave "
                f"{units!r} for the usage reported ({usage!r}); it must give a number >= 0 "
                "of units used, or None to leave the estimate as it is",
                node=node._display_name(),
            )
        before = getattr(claim, "reported", None)
        claim.reported = units if before is None else before + units
        claim.correct(claim.reported)
