"""One run of a node or flow, as its caller sees it.

``run(shared)`` on an async node or flow, inside a running event loop, returns
a :class:`PendingRun`: the run, not started until it is awaited (or handed to
``asyncio.create_task``), and a clear warning if it is dropped unawaited.
"""

from __future__ import annotations

import warnings
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._node import BaseNode

__all__ = ["PendingRun"]


class PendingRun(Coroutine[Any, Any, Any]):
    """A run of an async node or flow that starts when awaited.

    Returned by ``flow.run(shared)`` where an event loop is already running,
    so the form ``await flow.run(shared)`` of PocketFlow's early docs works
    (also at a notebook's top level). It is a coroutine: ``await`` it, or
    pass it to ``asyncio.create_task`` or ``asyncio.gather``. The result is
    the run's last action, as from ``run_async``.
    """

    __slots__ = ("_coroutine", "_node", "_shared")

    def __init__(self, node: BaseNode, shared: Any) -> None:
        self._node = node
        self._shared = shared
        self._coroutine: Coroutine[Any, Any, Any] | None = None

    def _start(self) -> Coroutine[Any, Any, Any]:
        if self._coroutine is None:
            self._coroutine = self._node._run_top_async(self._shared)
        return self._coroutine

    def __await__(self) -> Generator[Any, None, Any]:
        return self._start().__await__()

    def send(self, value: Any) -> Any:
        return self._start().send(value)

    def throw(self, *exc_info: Any) -> Any:
        return self._start().throw(*exc_info)

    def close(self) -> None:
        if self._coroutine is None:
            self._coroutine = _NEVER_STARTED
        else:
            self._coroutine.close()

    def __repr__(self) -> str:
        state = "not started" if self._coroutine is None else "started"
        return f"<PendingRun of {self._node._describe()}, {state}: await it>"

    def __del__(self) -> None:
        if self._coroutine is None:
            warnings.warn(
                f"{self._node._describe()}.run(shared) was never awaited, so the run did "
                "not happen; inside async code (or a notebook) write "
                "`await flow.run(shared)` or `await flow.run_async(shared)`",
                RuntimeWarning,
                stacklevel=2,
            )


async def _closed() -> None:
    """Stands in for the coroutine of a run closed before it started."""


_NEVER_STARTED = _closed()
_NEVER_STARTED.close()
