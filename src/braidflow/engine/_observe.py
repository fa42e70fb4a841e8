"""The events the engine emits while a run is observed: steps, items, branches, waits.

Each scope emits its start event when made and its end event (and an
``error`` event, for a failure) at `end`, and sets the path (and item)
the code inside sees. Nothing here is built when nobody observes the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence, Sized
from typing import Any

from .._context import ITEM, PATH, Run, observed
from ..durable._drain import CUT_SHORT, DrainStop

__all__ = ["BranchScope", "ItemScope", "StepScope", "emit_error", "emit_wait", "item_total"]


class StepScope:
    """A node's step while its run is observed: ``node_start`` now, ``node_end``
    (and ``error``, if it failed) at `end`, with the path set between."""

    __slots__ = ("name", "path", "run", "started", "token")

    def __init__(self, run: Run, name: str, path: tuple[str, ...]) -> None:
        self.run = run
        self.name = name
        self.path = path
        self.token = PATH.set(path)
        self.started = now = time.monotonic()
        run.emit("node_start", node=name, path=path, at=now)

    def end(self, error: BaseException | None = None) -> None:
        PATH.reset(self.token)
        run = self.run
        if isinstance(error, Exception):  # a failure; a stop (cancelled, a question) is none
            run.emit("error", node=self.name, path=self.path, error=error)
        elif error is not None:
            error = _told(run, error)
        now = time.monotonic()
        run.emit(
            "node_end",
            node=self.name,
            path=self.path,
            duration=now - self.started,
            error=error,
            at=now,
        )


class ItemScope:
    """One batch item while its run is observed: ``item_start`` now, then
    ``item_end`` (and ``error``) at `end`. For a batch flow the item's
    path element is ``name[index]``, so its sub-flow's nodes are told apart."""

    __slots__ = ("index", "item_token", "name", "path", "path_token", "run", "started")

    def __init__(
        self, run: Run, name: str, path: tuple[str, ...], index: int, flow: bool, data: Any
    ) -> None:
        self.run, self.name, self.path, self.index = run, name, path, index
        self.item_token = ITEM.set(index)
        self.path_token = PATH.set((*path[:-1], f"{name}[{index}]")) if flow else None
        self.started = now = time.monotonic()
        run.emit("item_start", node=name, path=path, item=index, data=data, at=now)

    def end(self, error: BaseException | None = None) -> None:
        ITEM.reset(self.item_token)
        if self.path_token is not None:
            PATH.reset(self.path_token)
        run = self.run
        if isinstance(error, Exception):  # a failure; a stop (cancelled, a question) is none
            run.emit("error", node=self.name, path=self.path, item=self.index, error=error)
        elif error is not None:
            error = _told(run, error)
        now = time.monotonic()
        run.emit(
            "item_end",
            node=self.name,
            path=self.path,
            item=self.index,
            duration=now - self.started,
            error=error,
            at=now,
        )


class BranchScope:
    """One branch of a fork while its run is observed: ``branch_start``, then ``branch_end``."""

    __slots__ = ("name", "path", "run", "started", "token")

    def __init__(self, run: Run, name: str, path: tuple[str, ...]) -> None:
        self.run, self.name, self.path = run, name, path
        self.token = PATH.set(path)
        self.started = now = time.monotonic()
        run.emit("branch_start", node=name, path=path, at=now)

    def end(self, error: BaseException | None = None) -> None:
        PATH.reset(self.token)
        if error is not None and not isinstance(error, Exception):
            error = _told(self.run, error)
        now = time.monotonic()
        self.run.emit(
            "branch_end",
            node=self.name,
            path=self.path,
            duration=now - self.started,
            error=error,
            at=now,
        )


def _told(run: Run, error: BaseException) -> BaseException:
    """A stop as an end event tells it: what the end of a drain's grace
    period stopped (a cancel; a sync run's ``KeyboardInterrupt``) was
    drained, a `DrainStop`, as the run it ends is; a real Ctrl-C or cancel
    stays what it is."""
    durable = run.durable
    if durable is not None and durable.drain.cut_short(error):
        return DrainStop(CUT_SHORT)
    return error


def item_total(items: Any) -> dict[str, int] | None:
    """``{"total": n}`` for items whose number is known up front (a list, a
    range), as ``item_start`` events carry it; else ``None``."""
    if isinstance(items, Sized) and not hasattr(items, "__next__"):
        return {"total": len(items)}
    return None


def emit_wait(
    run: Run,
    node: Any,
    limiters: Sequence[Any],
    index: int | None,
    attempt: int,
    duration: float | None,
) -> None:
    """An attempt's wait for ``limiters``: ``limiter_wait_start`` when it
    begins (``duration`` is ``None``), ``limiter_wait`` when it has the slots
    after ``duration`` s. A wait cut short (cancelled, a `LimiterDeadlock`)
    has no ``limiter_wait``: the item's or step's end event closes it."""
    run.emit(
        "limiter_wait_start" if duration is None else "limiter_wait",
        node=node._display_name(),
        path=PATH.get(),
        item=index,
        attempt=attempt,
        duration=duration,
        data={"limiters": [limiter.name or repr(limiter) for limiter in limiters]},
    )


def emit_error(node: Any, error: BaseException) -> None:
    """An ``error`` event for a failure the node's ``on_error`` hook swallowed."""
    run = observed()
    if run is not None:
        run.emit("error", node=node._display_name(), path=PATH.get(), error=error)
