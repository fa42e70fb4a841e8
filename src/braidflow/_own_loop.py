"""A private event loop on the thread that asks for one, and Ctrl-C while it runs.

Sync code that needs concurrency (a sync flow's parallel batch, an
``AsyncFlow`` run from sync code) runs a loop of its own, as ``asyncio.run``
does. asyncio makes a Ctrl-C a cancel of that run only where Python's own
SIGINT handler is in place; under a program's own handler, braidflow's
`_Interrupt` stands in for it while the loop runs (`run_on_new_loop`), so
what that handler raises never lands inside asyncio's machinery.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_new_loop", "sigint_handler"]

T = TypeVar("T")


def run_on_new_loop(
    make: Callable[[], Coroutine[Any, Any, T]],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """``asyncio.run(make())`` (a new loop, from ``loop_factory``), in this
    thread, which runs no loop; a Ctrl-C cancels the run, whatever handles SIGINT.

    asyncio turns a Ctrl-C into a cancel of the run only where Python's own
    handler has SIGINT. On the main thread under a handler of the program's
    own, `_Interrupt` stands in for it while the loop runs: raised where the
    signal lands, what the handler raises would land inside asyncio (a
    callback, a task's step), losing a wake-up that a task waits for forever.
    """
    handler = signal.getsignal(signal.SIGINT)
    if (
        threading.current_thread() is not threading.main_thread()
        or handler is signal.default_int_handler
        or not callable(handler)
    ):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(make())
    # In place before the loop is made: a Ctrl-C while it is being made would
    # leave half a loop (its __del__ complains at exit).
    interrupt = _Interrupt(handler)
    signal.signal(signal.SIGINT, interrupt)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            try:
                try:
                    interrupt.loop = runner.get_loop()
                    if interrupt.raised is not None:  # before the run began: none begins
                        raise interrupt.raised
                    result = runner.run(interrupt.run(make))
                finally:
                    runner.close()  # under `interrupt` too: closing runs the loop
            except BaseException:
                if interrupt.raised is None:
                    raise
                raise interrupt.raised  # noqa: B904  # the run's own end is its __context__
    finally:
        if signal.getsignal(signal.SIGINT) is interrupt:
            signal.signal(signal.SIGINT, handler)
    if interrupt.raised is not None:  # interrupted as the run returned
        raise interrupt.raised
    return result


def sigint_handler() -> Any:
    """SIGINT's handler (`signal.getsignal`): the program's own where
    braidflow's loop stands in for it meanwhile (see `run_on_new_loop`)."""
    handler = signal.getsignal(signal.SIGINT)
    return handler.__wrapped__ if isinstance(handler, _Interrupt) else handler


class _Interrupt:
    """SIGINT's handler while braidflow's loop runs on the main thread, in
    place of the program's own: it calls that handler at once, and makes what
    it raises (a ``KeyboardInterrupt``) a cancel of the run, raised once the
    loop has closed, as asyncio does for Python's own handler."""

    __slots__ = ("__wrapped__", "loop", "raised", "task")

    def __init__(self, handler: Callable[[int, Any], Any]) -> None:
        self.__wrapped__ = handler
        self.loop: asyncio.AbstractEventLoop | None = None  # until it is made
        self.task: asyncio.Task[Any] | None = None
        self.raised: BaseException | None = None  # what the handler raised first

    def __call__(self, signum: int, frame: Any) -> None:
        try:
            self.__wrapped__(signum, frame)
        except BaseException as error:  # raised to the run's caller once the loop has closed
            if self.raised is None:
                self.raised = error
            if self.loop is None:  # not made yet: `raised` stops the run before it begins
                return
            try:
                self.loop.call_soon_threadsafe(self._cancel)
            except RuntimeError:  # the loop has closed: `raised` is all that is left to do
                pass

    def _cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        self.task = asyncio.current_task()
        if self.raised is not None:  # interrupted before the run began: it does not
            raise asyncio.CancelledError
        return await make()
