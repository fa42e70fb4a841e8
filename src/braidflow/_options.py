"""Checks of every option a node, flow, policy or limiter takes, each written once.

Each check raises `InvalidParameterError` naming the owner, the option and
the value, and saying what would work. Constructors call them where an
option is given; the engine calls the same check where it reads an option
that a subclass may have set after the constructor ran.
"""

from __future__ import annotations

import math
from typing import Any

from ._clock import LONGEST_WAIT
from ._errors import InvalidParameterError
from ._plan import preset, variant

__all__ = [
    "ON_ERROR_CHOICES",
    "UNSET",
    "check_attempts",
    "check_durability",
    "check_cache",
    "check_cache_options",
    "check_executor",
    "check_limits",
    "check_max_concurrency",
    "check_number",
    "check_offload",
    "check_on_error",
    "check_retry_counts",
    "check_retry_options",
    "check_timeout",
    "is_number",
    "on_error_of",
]

ON_ERROR_CHOICES = ("raise", "collect")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()  # the default of an option that was not given


def is_number(value: Any) -> bool:
    """A real number: an int or a float, not a bool, not NaN."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and not (isinstance(value, float) and math.isnan(value))
    )


def check_number(
    value: Any,
    where: str,
    expected: str,
    *,
    node: str | None = None,
    at_least: float = -math.inf,
    above: float = -math.inf,
    at_most: float = math.inf,
    finite: bool = True,
) -> float:
    """Return ``value`` as a float if it is a real number in range, else raise.

    ``where`` names the owner and option as the message shows them
    (``"node 'Fetch': wait=-1"``); ``expected`` says what would work.
    """
    if (
        not is_number(value)
        or value < at_least
        or value <= above
        or value > at_most
        or (finite and math.isinf(value))
    ):
        raise InvalidParameterError(f"{where} must be {expected}", node=node)
    return float(value)


def check_attempts(value: Any, where: str, *, node: str | None = None) -> int:
    """An attempt count: an int >= 1 (1 means a single attempt, no retry)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(
            f"{where} must be an int >= 1 (it counts attempts: 1 means run exec once, no retry)",
            node=node,
        )
    return value


def check_timeout(node: Any, timeout: Any) -> float | None:
    """A node's ``timeout=``: seconds > 0; infinity means none."""
    seconds = check_number(
        timeout,
        f"{node._describe()}: timeout={timeout!r}",
        "a number > 0",
        node=node._display_name(),
        above=0,
        finite=False,
    )
    if seconds == math.inf:
        return None
    return min(seconds, LONGEST_WAIT)  # longer than a thread can wait is forever anyway


def check_retry_options(node: Any) -> None:
    """Check ``max_retries`` and ``wait`` where they are read: a subclass may
    set them after the constructor checked its arguments."""
    if node._bf_retry is not None:
        return
    max_retries, wait = node.max_retries, node.wait
    if (
        type(max_retries) is int
        and max_retries >= 1
        and (type(wait) is float or type(wait) is int)
        and 0 <= wait < math.inf
    ):
        return  # the usual case, checked cheaply
    describe, name = node._describe(), node._display_name()
    check_attempts(max_retries, f"{describe}: max_retries={max_retries!r}", node=name)
    check_number(
        wait,
        f"{describe}: wait={wait!r}",
        "a finite number of seconds >= 0",
        node=name,
        at_least=0,
    )


def check_max_concurrency(node: Any, limit: Any, *, parallel: bool = True) -> int | None:
    """A parallel stage's ``max_concurrency``: an int >= 1, or None for no bound.

    ``parallel``: whether ``node`` runs anything in parallel; a bound on a
    node that does not is a mistake.
    """
    if limit is None:
        return None
    describe, name = node._describe(), node._display_name()
    if not parallel:
        raise InvalidParameterError(
            f"{describe}: max_concurrency={limit!r} bounds nothing on a kind that is not "
            "parallel: "
            + _not_parallel(node, f"max_concurrency={limit!r}", "runs items at once, bounded")
            + (
                "; to bound how many nodes run at once, share a Limiter: "
                f"limits=[Limiter({limit!r})]"
                if not node._bf_is_flow and node._bf_batch == "single"
                else ""
            ),
            node=name,
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidParameterError(
            f"{describe}: max_concurrency={limit!r} must be an int >= 1, or None for no bound",
            node=name,
        )
    return limit


def _not_parallel(node: Any, option: str, does: str) -> str:
    """Why ``option`` (``max_concurrency=4``) means nothing on ``node``, which
    is not parallel, and the kind that ``does`` what it was given for."""
    cls = type(node).__name__
    instead = variant(type(node), "parallel")
    if instead is not None:
        base = preset(type(node))
        made = (
            f"`{instead}(..., {option})`"
            if cls == base
            else f"derive {cls} from {instead} in place of {base}"
        )
        return f"{cls} runs its items one at a time; {instead} {does}: {made}"
    if node._bf_is_flow:
        return (
            f"{cls} walks one step at a time; AsyncParallelBatchFlow {does} (a sub-flow "
            f"per parameter set): `AsyncParallelBatchFlow(..., {option})`"
        )
    return (
        f"{cls} has no items; a parallel batch kind {does}: "
        f"`AsyncParallelBatchNode(..., {option})` (ParallelBatchNode for sync code)"
    )


def check_on_error(node: Any, on_error: Any, *, parallel: bool = True) -> str:
    """A parallel stage's ``on_error``: ``"raise"`` or ``"collect"``."""
    describe, name = node._describe(), node._display_name()
    if on_error not in ON_ERROR_CHOICES:
        raise InvalidParameterError(
            f"{describe}: on_error={on_error!r} is not one of "
            f"{', '.join(map(repr, ON_ERROR_CHOICES))}",
            node=name,
        )
    if on_error != "raise" and not parallel:
        raise InvalidParameterError(
            f"{describe}: on_error={on_error!r} is for parallel kinds, which can go on past "
            "a failure: "
            + _not_parallel(
                node, f"on_error={on_error!r}", "runs every item and collects failures"
            ),
            node=name,
        )
    return str(on_error)


def on_error_of(node: Any, *, parallel: bool = True) -> str:
    """A stage's ``on_error``, read where the stage runs: one its ``__init__``
    set on the node after the constructor checked its own (``self.on_error =
    "collect"``) is checked now and used; else the constructor's.

    A callable there is a lifecycle hook, not a policy (as on the class).
    """
    state = node.__dict__
    if "on_error" not in state or callable(state["on_error"]):  # (the usual case first)
        policy: str = node._bf_on_error
        return policy
    return check_on_error(node, state["on_error"], parallel=parallel)


def check_retry_counts(node: Any, max_retries: Any, wait: Any) -> None:
    """A node's ``max_retries`` (attempts in all) and ``wait`` (seconds between)."""
    describe, name = node._describe(), node._display_name()
    check_attempts(max_retries, f"{describe}: max_retries={max_retries!r}", node=name)
    check_number(
        wait,
        f"{describe}: wait={wait!r}",
        "a finite number of seconds >= 0 (wait=inf would never retry)",
        node=name,
        at_least=0,
    )


def check_limits(node: Any, limits: Any, limiter_type: Any) -> tuple[Any, ...]:
    """A node's ``limits=``: one limiter or several (or weighted ones), each once."""
    if isinstance(limits, limiter_type):
        return (limits,)
    try:
        found = tuple(limits)
    except TypeError:
        found = (limits,)
    describe, name = node._describe(), node._display_name()
    for limiter in found:
        if not isinstance(limiter, limiter_type):
            given = f"got {limiter!r}"
            if isinstance(limiter, type) and issubclass(limiter, limiter_type):
                given = f"got the class {limiter.__name__}; make one: {limiter.__name__}(...)"
            raise InvalidParameterError(
                f"{describe}: limits must be Limiter objects (or limiter.weighted(...)), {given}",
                node=name,
            )
    seen: dict[int, Any] = {}  # each limiter's id: how it was first given (maybe weighted)
    for limiter in found:
        base = getattr(limiter, "limiter", limiter)
        if id(base) in seen:
            raise InvalidParameterError(
                f"{describe}: {_given_twice(base, seen[id(base)], limiter)}", node=name
            )
        seen[id(base)] = limiter
    return found


def _given_twice(base: Any, earlier: Any, later: Any) -> str:
    """What ``limits=`` did wrong in giving the limiter ``base`` as ``earlier``
    and again as ``later`` (each ``base`` itself or a weighted form of it), and
    what to do."""
    if earlier is later:
        return (
            f"limits lists {later!r} more than once; an attempt holds each limiter once, "
            "so give each one once"
        )
    if earlier is base or later is base:
        how = "plain and weighted"
        which = "the weighted one takes its weight in units an attempt, the plain one 1"
    else:
        how, which = "weighted twice", "the one with the weight an attempt should take"
    return (
        f"limits gives the same limiter twice, {how}: {earlier!r} and {later!r}; an "
        f"attempt holds each limiter once, so keep one of the two ({which})"
    )


DURABILITY = ("sync", "async", "exit")


def check_durability(owner: Any, durability: Any, *, node: bool = False) -> str:
    """A run's ``durability=`` (one of `DURABILITY`), or a node's (only
    ``"sync"``: a node can ask for more than its run gives, not less)."""
    if node:
        if durability != "sync":
            raise InvalidParameterError(
                f"{owner._describe()}: durability={durability!r}: a node can only ask for "
                "durability='sync' (its checkpoint in the store before the run goes on); "
                "the run's durability= sets the others",
                node=owner._display_name(),
            )
        return "sync"
    if durability not in DURABILITY:
        raise InvalidParameterError(
            f"{owner._describe()}: durability={durability!r} must be 'sync' (each checkpoint "
            "in the store before the run goes on), 'async' (written in batches every 50 ms; "
            "a crash may lose the last) or 'exit' (written when the run stops)",
            node=owner._display_name(),
        )
    return str(durability)


def check_offload(node: Any, offload: Any) -> bool:
    """A node's ``offload=``: for sync nodes only."""
    if node._bf_async and offload:
        raise InvalidParameterError(
            f"{node._describe()}: offload=True is for synchronous nodes; an async node "
            "already yields to the event loop while it awaits",
            node=node._display_name(),
        )
    return bool(offload)


def check_executor(node: Any, executor: Any) -> Any:
    """The ``executor=`` of a batch node or a flow."""
    if not callable(getattr(executor, "prepare", None)):
        raise InvalidParameterError(
            f"{node._describe()}: executor={executor!r} is not an executor (it needs a "
            "prepare(node, method) method); use braidflow.executors.RayExecutor(...), or "
            "leave it out for braidflow.executors.InProcessExecutor(), the default",
            node=node._display_name(),
        )
    if node._bf_batch == "single" and not node._bf_is_flow:
        raise InvalidParameterError(
            f"{node._describe()}: executor= runs a batch's items elsewhere; "
            f"{type(node).__name__} has no items (use a batch kind such as "
            "AsyncParallelBatchNode, or give the executor to the flow: "
            "AsyncFlow(start=..., executor=...))",
            node=node._display_name(),
        )
    return executor


def check_cache(node: Any, cache: Any, cache_type: type) -> Any:
    """A node's ``cache=``: ``True`` (a `Cache` keeping results in the run's
    store), a `Cache`, or ``None``/``False`` for none."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return cache_type()
    if isinstance(cache, cache_type):
        return cache
    raise InvalidParameterError(
        f"{node._describe()}: cache={cache!r} must be True (results kept in the run's store), "
        "a braidflow.Cache(...) (a store of its own, a ttl, a version, a key), or None; "
        "write `cache=Cache(store=SQLiteStore('cache.db'))` for a cache of its own",
        node=node._display_name(),
    )


def check_cache_options(
    store: Any, ttl: Any, version: Any, key: Any, refresh: Any, clock: Any, store_type: type
) -> float | None:
    """The options of a result cache (`Cache`); return its ttl in seconds
    (``None``: no limit)."""
    if store is not None and not isinstance(store, store_type):
        raise InvalidParameterError(
            f"Cache(store={store!r}): a cache's store keeps its entries (cache_get and "
            "cache_put), which this one cannot; use SQLiteStore(path) or MemoryStore(), or "
            "leave store out for the run's own store"
        )
    seconds = None
    if ttl is not None:
        seconds = check_number(
            ttl,
            f"Cache(ttl={ttl!r}): ttl",
            "a number of seconds > 0, or None to use results until refreshed",
            above=0,
            finite=False,
        )
        if seconds == math.inf:
            seconds = None
    if version is not None and (not isinstance(version, str) or not version):
        raise InvalidParameterError(
            f"Cache(version={version!r}): version must be a non-empty string naming the "
            "version of exec's code (version='2'), or None to derive it from exec's code"
        )
    if key is not None and not callable(key):
        raise InvalidParameterError(
            f"Cache(key={key!r}): key must be a function of the prep result (or a batch's "
            "item) that gives what identifies it, such as key=lambda item: item['id']"
        )
    if not isinstance(refresh, bool):
        raise InvalidParameterError(f"Cache(refresh={refresh!r}): refresh must be True or False")
    if clock is not None and not callable(clock):
        raise InvalidParameterError(
            f"Cache(clock={clock!r}): clock must be a function giving seconds since the "
            "epoch, such as time.time"
        )
    return seconds
