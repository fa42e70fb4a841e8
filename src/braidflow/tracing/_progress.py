"""Progress: a live display of batch nodes and batch flows while a run goes."""

from __future__ import annotations

import threading
from typing import Any

from .._events import Event

__all__ = ["Progress"]


class Progress:
    """An observer that shows, for each batch node and batch flow of a run, a
    live line: items done out of the total (or a count, for lazy input),
    items in flight, failures, rate and time left. Uses ``rich``.

    It is quiet when the output is not a terminal (a log file, CI), unless
    the console given says otherwise.

    Args:
        console: The ``rich.console.Console`` to draw on; default: standard error.
        transient: Remove the display when the run ends (default: leave it).

    Raises:
        ImportError: If ``rich`` is not installed (``pip install 'braidflow[tracing]'``).
    """

    def __init__(self, console: Any = None, *, transient: bool = False) -> None:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress
        except ImportError as missing:
            raise ImportError(
                "braidflow.tracing.Progress needs rich: pip install 'braidflow[tracing]'"
            ) from missing
        self.console = console if console is not None else Console(stderr=True)
        self._display = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[in_flight]} in flight"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("·"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=self.console,
            transient=transient,
        )
        self._tasks: dict[tuple[str, ...], Any] = {}
        self._counts: dict[tuple[str, ...], list[int]] = {}  # in flight, failed
        self._again: set[tuple[str, ...]] = set()  # batches run once more (a loop)
        self._lock = threading.Lock()
        self._live = False

    def __repr__(self) -> str:
        return "Progress()"

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        kind = event.kind
        if kind == "run_start":
            if self.console.is_terminal and not self._live:
                self._display.start()
                self._live = True
        elif kind == "node_start":
            with self._lock:
                if event.path in self._tasks:  # its items add to the same line
                    self._again.add(event.path)
        elif kind == "item_start":
            self._item_started(event)
        elif kind == "item_end":
            self._item_ended(event)
        elif kind == "run_end" and self._live:
            self._display.stop()
            self._live = False

    def _item_started(self, event: Event) -> None:
        path = event.path
        total = (event.data or {}).get("total")
        with self._lock:
            task = self._tasks.get(path)
            if task is None:
                task = self._tasks[path] = self._display.add_task(
                    " / ".join(path), total=total, in_flight=0, failed="", rate=""
                )
                self._counts[path] = [0, 0]
            elif path in self._again:
                self._again.discard(path)
                before = next(t.total for t in self._display.tasks if t.id == task)
                grown = None if total is None or before is None else before + total
                self._display.update(task, total=grown)
            counts = self._counts[path]
            counts[0] += 1
            self._display.update(task, in_flight=counts[0])

    def _item_ended(self, event: Event) -> None:
        path = event.path
        with self._lock:
            task = self._tasks.get(path)
            if task is None:
                return
            counts = self._counts[path]
            counts[0] -= 1
            if event.error is not None:
                counts[1] += 1
            self._display.advance(task)
            speed = next(t.speed for t in self._display.tasks if t.id == task)
            self._display.update(
                task,
                in_flight=counts[0],
                failed=f"{counts[1]} failed" if counts[1] else "",
                rate=f"{speed:.1f}/s" if speed else "",
            )
