"""What the engine's shared code asks a driver to do: the effects, as tuples.

The lifecycle, the attempt loop, a batch's items and a flow's walk are
generators written once. Where their sync and async forms would differ
(calling user code, waiting, sleeping, running items at once), they yield
an effect and receive its outcome; the sync driver (``_sync``) and the
async driver (``_async``) each carry out every effect their own way.

Every effect is a tuple ``(op, node, index, ...)``: the operation, the node
whose code runs (or ``None``) and the batch item's index (or ``None``), so
that a driver can name them when user code raises ``CancelledError`` by
itself. Tuples, not objects: an effect is made for every call of user code.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AWAIT",
    "CALL",
    "COMMIT",
    "MAYBE_AWAIT",
    "NODE",
    "PARALLEL",
    "REMOTE",
    "SLEEP",
    "STAGE",
    "THREAD",
    "TIMED",
    "WAIT",
    "call_effect",
]

# (CALL, node, index, function, args): call sync code here. The async driver
# calls it on the loop's thread, then stops if the run was cancelled meanwhile.
CALL: Final = 0
# (AWAIT, node, index, function, args): call a coroutine function and await it.
AWAIT: Final = 1
# (THREAD, node, index, function, args): sync code off the loop, in one of
# braidflow's threads (the sync driver, which has no loop, calls it here).
THREAD: Final = 2
# (MAYBE_AWAIT, node, index, function, args, offload): call a class's own
# PocketFlow-internal method (``_exec``, ``_orch``...); await what it returns
# if that is awaitable; in a thread if ``offload``.
MAYBE_AWAIT: Final = 3
# (REMOTE, node, index, dispatch, args): one exec call through an executor.
REMOTE: Final = 4
# (TIMED, node, index, how, function, args, seconds, held): one of the calls
# above (``how``: CALL, THREAD, AWAIT or REMOTE) under a deadline; raises
# `TimedOut` when it passes. Sync code is timed in a thread, which is
# abandoned if late: it keeps the limiters in ``held`` until it ends.
TIMED: Final = 5
# (NODE, node, None, shared, offload): run a node's step: its fast path, its
# own ``_run``/``_run_async``, or its lifecycle (driven here).
NODE: Final = 6
# (WAIT, node, index, limiters, taken, stop): wait until every limiter after
# the first ``taken[0]`` (held already) gives a slot, counting each in
# ``taken[0]`` as it is taken (on failure, the attempt gives back as many as
# it says); ``stop``, the run's drain or None, ends a queued wait at once
# (a `DrainStop`: see `Limiter._stop_waits`).
WAIT: Final = 7
# (SLEEP, node, index, seconds): wait on the run's clock.
SLEEP: Final = 8
# (PARALLEL, node, None, items, make_item, keep, fast_exec, own_events): run
# a stage's items at once (`_items.run_parallel`: ``own_events`` says
# whether each item gets events and a checkpoint of its own); the sync
# driver runs them on a private event loop.
PARALLEL: Final = 9
# (STAGE, node, None, steps): run a step's exec stage, its own steps (a
# walk, a batch's items...), driven by a driver of their own until they end.
STAGE: Final = 12
# (COMMIT, node, index, durable): wait until the finished items queued for
# the group commit are in the store: the async driver lets the loop turn once
# (the commit runs then); the sync driver writes them now. Raises the
# commit's error, if it failed.
COMMIT: Final = 11


def call_effect(
    node: object,
    index: int | None,
    function: object,
    args: tuple[object, ...],
    coro: bool,
    offload: bool,
) -> tuple[object, ...]:
    """The effect that calls user code: awaited if it is a coroutine function,
    in a thread if ``offload``, else here."""
    if coro:
        return (AWAIT, node, index, function, args)
    return (THREAD if offload else CALL, node, index, function, args)
