"""The executor interface: how the engine hands one item's exec to somewhere else."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

from .._after_fork import reset_in_children

__all__ = ["Dispatch", "DispatchTimeout", "Executor", "InProcessExecutor", "still_running"]

# Where a call under a timeout notes that it runs on after it was stopped.
_STILL_RUNNING: ContextVar[list[Callable[[Callable[[], None]], None]] | None] = ContextVar(
    "braidflow_still_running", default=None
)
reset_in_children(_STILL_RUNNING)


def still_running(when_ended: Callable[[Callable[[], None]], None]) -> None:
    """For a `Dispatch` whose call, stopped for its timeout (``run_async``
    cancelled, or ``run`` raising `DispatchTimeout`), may run on a while (a
    Ray task blocked in a call ends only when the call returns): say so,
    with ``when_ended(callback)``, which calls ``callback`` once the call
    has really ended (from any thread). The engine then keeps the attempt's
    limiter slots and bounds until then, as for a thread it abandons. A
    dispatch that says nothing has its slots given back at once."""
    noted = _STILL_RUNNING.get()
    if noted is not None:
        noted.append(when_ended)


Noted = list[Callable[[Callable[[], None]], None]]


def timed_dispatch() -> tuple[Noted, Any]:
    """For the engine, around a dispatched call under a timeout: the list
    `still_running` fills, and the token to reset it with."""
    noted: Noted = []
    return noted, _STILL_RUNNING.set(noted)


def timed_dispatch_done(token: Any) -> None:
    _STILL_RUNNING.reset(token)


def runs_on(noted: Noted, release: Callable[[], None]) -> bool:
    """After a dispatched call was stopped for its timeout: whether it said it
    runs on; if so, ``release`` is called once it really ends (the attempt is
    abandoned to it, and gives back nothing itself)."""
    if not noted:
        return False
    noted[0](release)
    return True


class DispatchTimeout(Exception):
    """Raised by `Dispatch.run` when the call outlived its ``timeout`` (and was
    stopped); the engine turns it into the node's `NodeTimeoutError`."""


@runtime_checkable
class Dispatch(Protocol):
    """Runs one call of a node's exec (for one item, one attempt) elsewhere.

    The engine calls ``run_async`` from async code and ``run`` from sync
    code, with the arguments exec takes (the item). Either returns exec's
    result, or raises what exec raised, with its own type and message.
    Cancelling ``run_async`` (a timeout, a cancelled run) must stop the call;
    so must ``run`` when its ``timeout`` passes (it then raises
    `DispatchTimeout`) or when it is interrupted. A call that may run on
    after it was stopped for its timeout says so with `still_running`, so
    that its slots are kept until it ends.
    """

    async def run_async(self, *args: Any) -> Any:
        """Run the call and wait for its result without blocking the loop."""
        ...

    def run(self, *args: Any, timeout: float | None = None) -> Any:
        """Run the call and block until its result, at most ``timeout`` seconds."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Where a batch node's items run their ``exec``.

    ``prepare`` is called once per batch, before any item is dispatched, with
    the node and the name of its exec method (``exec`` or ``exec_async``). It
    checks that the node can run there (refusing with a clear error if not)
    and returns the `Dispatch` that runs each item's call, or ``None`` for
    "in this process, the engine's own way" (threads for sync exec when
    offloaded). Everything else (limiters, retries, fallback, timeouts,
    events, checkpoints) stays with the engine, in the driver.
    """

    def prepare(self, node: Any, method: str) -> Dispatch | None:
        """Get ready to run ``node``'s ``method`` for a batch's items."""
        ...


class InProcessExecutor:
    """Run exec in this process: what happens without an executor.

    Useful to keep one batch node at home when its flow sends the others'
    items to a cluster (``Flow(executor=RayExecutor(...))``).
    """

    def __repr__(self) -> str:
        return "InProcessExecutor()"

    def prepare(self, node: Any, method: str) -> Dispatch | None:
        """Nothing to ship: the engine runs the items itself."""
        return None
