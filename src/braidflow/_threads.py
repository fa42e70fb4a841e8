"""Running synchronous work off the event loop: offloaded steps and timed attempts.

Python cannot interrupt a thread. So an offloaded step that is cancelled is
waited for before the cancellation goes on (nothing it does lands after the
run has ended), and a timed-out attempt is abandoned to finish on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["call_in_new_thread", "call_with_deadline", "run_in_thread"]


async def run_in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in the loop's default executor, with this context.

    If the awaiting task is cancelled, keep waiting until the thread is done,
    then re-raise the cancellation.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    future = loop.run_in_executor(None, context.run, function, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except BaseException:  # the thread's own error; the cancellation wins
                break
        if not future.cancelled():
            future.exception()  # mark it retrieved so asyncio does not log it
        raise


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


async def call_in_new_thread(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in a new daemon thread and await its result.

    Used for timed attempts: if the await is cancelled (the timeout fired),
    the thread is left to finish and its result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            value, ok = context.run(function, *args), True
        except BaseException as error:  # handed to the awaiting task
            value, ok = error, False
        try:
            loop.call_soon_threadsafe(_settle, future, ok, value)
        except RuntimeError:  # the loop closed meanwhile; nobody is waiting
            pass

    threading.Thread(target=target, daemon=True, name="braidflow-timed-attempt").start()
    return await future


def call_with_deadline(function: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """Run ``function(*args)`` in a new daemon thread; wait at most ``timeout`` seconds.

    Raises:
        TimeoutError: If it did not finish in time (it keeps running, unobserved).
    """
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(function, *args)))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((False, error))
        finally:
            finished.set()

    threading.Thread(target=target, daemon=True, name="braidflow-timed-attempt").start()
    if not finished.wait(timeout):
        raise TimeoutError
    ok, value = outcome[0]
    if ok:
        return value
    raise value
