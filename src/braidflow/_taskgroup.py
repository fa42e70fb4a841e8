"""Structured fan-out: child tasks that cannot outlive their parent.

The first child to fail cancels the others; the parent waits until every
child has stopped, then raises that first failure itself, as raised (never
wrapped in a group of braidflow's making; later failures become a note).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from ._errors import add_note

__all__ = ["TaskGroup", "note_lost"]


class TaskGroup:
    """Run child tasks; the first failure cancels the rest; nothing outlives the group.

    Use as ``async with TaskGroup(on_stray) as group: group.spawn(coro)``. The
    body should not await: children do the waiting (a reader of an async
    iterator is a child too), so a failure never has to interrupt the body.

    A child that ends cancelled although nobody cancelled it (its own code
    raised ``CancelledError``) is a failure: ``on_stray(task)`` returns the
    exception that stands for it. Only the cancellation of the task that
    awaits the group ends the group as cancelled.
    """

    __slots__ = (
        "_done",
        "_errors",
        "_loop",
        "_lost",
        "_on_stray",
        "_pending",
        "_stopping",
        "_tasks",
    )

    def __init__(self, on_stray: Callable[[asyncio.Task[Any]], BaseException]) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending = 0
        self._errors: list[BaseException] = []
        # Errors children raised once they were told to stop, which their
        # cancellation carries (its __cause__): told with the group's outcome.
        self._lost: list[BaseException] = []
        self._stopping = False
        self._done: asyncio.Future[None] | None = None
        self._on_stray = on_stray

    async def __aenter__(self) -> TaskGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.cancel()
        cancelled: asyncio.CancelledError | None = None
        while self._pending:
            self._done = self._loop.create_future()
            try:
                await self._done
            except asyncio.CancelledError as error:
                cancelled = cancelled or error
                self.cancel()
        if exc is not None:
            return  # the body's own error propagates
        errors = self._errors
        if cancelled is not None:
            # Cancelled from outside: the group ends cancelled, and what its
            # children raised meanwhile is chained and noted, not lost.
            raised = errors + self._lost
            if raised:
                if cancelled.__cause__ is None:
                    cancelled.__cause__ = raised[0]
                shown = ", ".join(repr(error) for error in raised[:4])
                add_note(
                    cancelled, f"while it was cancelled, {len(raised)} item(s) raised: {shown}"
                )
            self._errors, self._lost = [], []
            raise cancelled
        if errors:
            first = errors[0]
            more = errors[1:] + self._lost
            if more:
                _note_the_others(first, more)
            self._errors, self._lost = [], []
            raise first

    @property
    def failed(self) -> bool:
        """True once a child has failed (the others are being cancelled)."""
        return bool(self._errors)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start ``coroutine`` as a child task (it sees a copy of the current context)."""
        task = self._loop.create_task(coroutine)
        self._pending += 1
        self._tasks.add(task)
        task.add_done_callback(self._child_done)
        if self._stopping:
            task.cancel()
        return task

    def cancel(self) -> None:
        """Cancel every child still running."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._pending -= 1
        if task.cancelled():
            if not self._stopping:
                self._fail(self._on_stray(task))
            elif _LOST:  # rarely anything: no look-up, and no weak reference, for nothing
                cause = _LOST.pop(task, None)
                if cause is not None:
                    self._lost.append(cause)
        else:
            error = task.exception()
            if error is not None:
                self._fail(error)
        if not self._pending and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _fail(self, error: BaseException) -> None:
        self._errors.append(error)
        if not self._stopping:
            self.cancel()


# Errors that tasks raised once they were told to stop, by task: a child's is
# told with its group's outcome (the cancellation it ended with carries it).
# An entry lasts until its task is done: the error reaches its own task (its
# traceback's frames hold the run's context), so the weak key alone would
# never die; a task's group takes it first, `_forget` whatever is left.
_LOST: weakref.WeakKeyDictionary[asyncio.Task[Any], BaseException] = weakref.WeakKeyDictionary()


def note_lost(error: BaseException) -> None:
    """Note that the running task raised ``error`` while it was being
    cancelled (it ends cancelled): its group, if it has one, tells it. In
    one of braidflow's threads (no loop) it does nothing: the task that waits
    for the thread notes the error when the thread returns it."""
    task = asyncio.current_task() if asyncio._get_running_loop() is not None else None
    if task is not None:
        if task not in _LOST:
            task.add_done_callback(_forget)
        _LOST[task] = error


def _forget(task: asyncio.Task[Any]) -> None:
    """``task`` is done: an error noted for it that no group took is dropped
    (it is told on the cancellation the task ended with, if any)."""
    _LOST.pop(task, None)


def _note_the_others(first: BaseException, more: list[BaseException]) -> None:
    """Note on ``first`` (the error a group raises) what its other children
    raised while it stopped: those that raised the same error (a budget's
    stop, which every item that meets it raises) counted, the others shown."""
    alike: list[BaseException] = []
    others: list[BaseException] = []
    for error in more:
        (alike if error is first or _same(error, first) else others).append(error)
    if others:
        shown = ", ".join(repr(error) for error in others[:3])
        add_note(first, f"{len(others)} more item(s) failed while stopping: {shown}")
    if alike:
        add_note(first, f"{len(alike)} more item(s) stopped with this same error")


def _same(error: BaseException, first: BaseException) -> bool:
    try:
        return type(error) is type(first) and bool(error.args == first.args)
    except Exception:  # arguments that cannot be compared: not the same
        return False
