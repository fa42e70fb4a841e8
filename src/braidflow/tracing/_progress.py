"""Progress: a live display of batch nodes and batch flows while a run goes.

Each number on a line is counted from events, and means what its label says:
``running`` counts items started and neither waiting for a limiter
(``limiter_wait_start`` until ``limiter_wait``) nor waiting out a retry's
delay (``backing off``); those are counted apart. ``cached`` counts items
whose result came from a result cache (``cache_hit``). A line is laid out for the
console's width: the bar shrinks first, then the name is cut, then the bar
goes, then the numbers move to lines of their own; a number is never cut.
The tokens and cost a batch's items reported (``usage`` events) show on its line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._events import Event
from .._usage import Usage
from ._owners import ItemOwners, Path
from ._stops import DRAINED, WAITING, stop_of

__all__ = ["Progress", "Row", "lay_out"]

BAR, LEAST_BAR, LEAST_LABEL = 40, 8, 16  # widths, in columns
GAP = "  "  # between two numbers


class _Batch:
    """One line: a batch node or batch flow of the graph, every run of it
    added up (a loop's, each parameter set's of an enclosing batch flow)."""

    __slots__ = (
        "backing_off",
        "cached",
        "cancelled",
        "cost",
        "done",
        "drained",
        "failed",
        "first",
        "in_flight",
        "label",
        "last",
        "open",
        "reused",
        "tokens",
        "total",
        "waiting",
    )

    def __init__(self, label: str, total: int | None, at: float) -> None:
        self.label = label
        self.total: int | None = total
        self.done = self.failed = self.cancelled = self.drained = 0
        self.cached = 0  # items whose result came from a result cache
        self.reused = 0  # items of a resumed run that had finished before (not run again)
        self.in_flight = self.waiting = 0
        self.backing_off: set[_Item] = set()
        self.open: set[Path] = set()  # the steps of it that run now
        self.first = self.last = at  # first item's start; last item's end
        self.tokens = 0  # reported by its items
        self.cost: float | None = None


class _Item:
    """A batch item in flight: its line, its open limiter waits, and until when
    it waits out a retry's delay (0: it does not)."""

    __slots__ = ("batch", "retry_until", "waits")

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch
        self.waits = 0
        self.retry_until = 0.0


class Row:
    """One line as drawn: a name, how full the bar is (``None``: the total is
    not known), whether the batch is finished, and the numbers, each a
    ``(text, style)`` pair."""

    __slots__ = ("finished", "fraction", "label", "numbers")

    def __init__(
        self,
        label: str,
        fraction: float | None,
        finished: bool,
        numbers: list[tuple[str, str]],
    ) -> None:
        self.label, self.fraction, self.finished, self.numbers = label, fraction, finished, numbers

    def numbers_text(self) -> str:
        return GAP.join(text for text, _ in self.numbers)


class Progress:
    """An observer that shows, for each batch node and batch flow of a run, a
    live line: items done out of the total (or a count, for lazy input),
    items running, items waiting for a limiter, items waiting out a retry's
    delay, items served from a result cache, failures, the rate, the time
    left, and the tokens and cost its items reported
    (`braidflow.Node.report_usage`); `usage` is the run's total. Uses ``rich``.

    A batch inside a batch flow's sub-flow has one line for all parameter
    sets, its total growing as each reaches it; a batch run again in a loop
    adds its items to its line. A ``Progress`` is itself a rich renderable:
    ``console.print(progress)`` draws its lines as they stand.

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
            from rich.live import Live
        except ImportError as missing:
            raise ImportError(
                "braidflow.tracing.Progress needs rich: pip install 'braidflow[tracing]'"
            ) from missing
        self.console = console if console is not None else Console(stderr=True)
        self._live = Live(self, console=self.console, transient=transient, refresh_per_second=8)
        self._lock = threading.Lock()
        self._clock: Callable[[], float] = time.monotonic  # what "now" is, for a line in flight
        self._showing: str | None = None  # the id of the run shown live
        self._reset()

    def _reset(self) -> None:
        self._batches: dict[Path, _Batch] = {}  # by the batch's path, sub-flow indexes left out
        self._items: ItemOwners[_Item] = ItemOwners()
        self._waits: dict[tuple[Path, int | None], _Item] = {}  # open limiter waits
        self._fresh: set[Path] = set()  # steps started whose first item is yet to come
        self._usage = Usage(calls=0)

    def __repr__(self) -> str:
        return "Progress()"

    @property
    def usage(self) -> Usage:
        """What the calls of the run shown so far reported, in all."""
        with self._lock:
            return self._usage

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        kind = event.kind
        if kind == "run_start":
            if self._showing is None:
                with self._lock:
                    self._reset()
                if self.console.is_terminal:
                    self._showing = event.run_id
                    self._live.start()
            return
        if kind == "run_end":
            if event.run_id == self._showing:
                self._showing = None
                self._live.stop()
            return
        with self._lock:
            if kind == "item_start":
                self._item_started(event)
            elif kind == "item_end":
                self._item_ended(event)
            elif kind == "node_start":
                self._fresh.add(event.path)
                self._busy(event)
            elif kind == "node_end":
                self._node_ended(event)
            elif kind == "limiter_wait_start":
                item = self._busy(event)
                if item is not None:
                    self._waits[(event.path, event.item)] = item
                    item.waits += 1
                    if item.waits == 1:
                        item.batch.waiting += 1
            elif kind == "limiter_wait":
                self._busy(event)
                self._unwait(self._waits.pop((event.path, event.item), None))
            elif kind == "retry":
                delay = (event.data or {}).get("delay") or 0
                item = self._items.value(event.path, event.item)
                if item is not None and delay > 0:
                    item.retry_until = event.time + delay
                    item.batch.backing_off.add(item)
            elif kind in ("emit", "branch_start"):
                self._busy(event)
            elif kind == "usage":
                self._used(event)
            elif kind == "cache_hit":
                item = self._items.value(event.path, event.item)
                if item is not None:
                    item.batch.cached += 1

    def _busy(self, event: Event) -> _Item | None:
        """The item ``event`` belongs to, which is no longer waiting out a retry's delay."""
        item = self._items.value(event.path, event.item)
        if item is not None and item.retry_until:
            item.retry_until = 0.0
            item.batch.backing_off.discard(item)
        return item

    def _used(self, event: Event) -> None:
        usage = Usage.from_dict(event.data)
        self._usage += usage
        item = self._busy(event)
        if item is not None:
            batch = item.batch
            batch.tokens += usage.tokens
            if usage.cost is not None:
                batch.cost = usage.cost + (batch.cost or 0.0)

    def _unwait(self, item: _Item | None) -> None:
        if item is not None and item.waits > 0:
            item.waits -= 1
            if item.waits == 0:
                item.batch.waiting -= 1

    def _node_ended(self, event: Event) -> None:
        path = event.path
        self._fresh.discard(path)
        self._unwait(self._waits.pop((path, None), None))
        self._busy(event)
        batch = self._batches.get(self._items.template(path))
        if batch is not None:
            batch.open.discard(path)

    def _item_started(self, event: Event) -> None:
        path, index = event.path, event.item
        if index is None:
            return
        self._busy(event)  # a sub-flow's nested batch: its enclosing item goes on
        data = event.data or {}
        total = data.get("total")
        key = self._items.template(path)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch(" / ".join(key), total, event.time)
            batch.reused = data.get("reused", 0)
            self._fresh.discard(path)
        elif path in self._fresh:  # this step's first item: its items add to the line
            self._fresh.discard(path)
            batch.total = None if total is None or batch.total is None else batch.total + total
            batch.reused += data.get("reused", 0)
        if not batch.in_flight and batch.done:  # the line goes on after a pause
            batch.first += event.time - batch.last
        batch.in_flight += 1
        batch.open.add(path)
        self._items.start(path, index, _Item(batch))

    def _item_ended(self, event: Event) -> None:
        if event.item is None:
            return
        self._unwait(self._waits.pop((event.path, event.item), None))
        item = self._items.end(event.path, event.item)
        if item is None:
            return
        batch = item.batch
        if item.waits:
            item.waits = 0
            batch.waiting -= 1
        batch.backing_off.discard(item)
        batch.in_flight -= 1
        batch.done += 1
        batch.last = event.time
        error = event.error
        if error is not None:
            stop = stop_of(error)
            if stop == WAITING:  # a question, a budget: no failure, not done
                batch.done -= 1
            elif stop == DRAINED:
                batch.drained += 1
            elif stop is not None:
                batch.cancelled += 1
            else:
                batch.failed += 1

    # -- drawing ---------------------------------------------------------------------------

    def _rows(self) -> list[Row]:
        """The lines as they stand now, one per batch, in the order each first started."""
        now = self._clock()
        with self._lock:
            return [_row(batch, now) for batch in self._batches.values()]

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield from lay_out(self._rows(), options.max_width, _colour(console))


def _row(batch: _Batch, now: float) -> Row:
    backing = 0
    for item in list(batch.backing_off):
        if item.retry_until > now:
            backing += 1
        else:
            item.retry_until = 0.0
            batch.backing_off.discard(item)
    total, ran = batch.total, batch.done
    done = ran + batch.reused  # what finished, before a resume too; the rate is of what ran
    finished = batch.in_flight == 0 and (not batch.open or (total is not None and done >= total))
    if finished and total is None:  # lazy input, all read: now the total is known
        total = done
    numbers: list[tuple[str, str]] = [(f"{done}/{'?' if total is None else total}", "")]
    if batch.reused:
        numbers.append((f"{batch.reused} reused", "dim"))
    if batch.cached:
        numbers.append((f"{batch.cached} cached", "dim"))
    if not finished:
        running = max(0, batch.in_flight - batch.waiting - backing)
        numbers.append((f"{running} running", ""))
        if batch.waiting:
            numbers.append((f"{batch.waiting} waiting", "yellow"))
        if backing:
            numbers.append((f"{backing} backing off", "yellow"))
    if batch.failed:
        numbers.append((f"{batch.failed} failed", "red"))
    if batch.cancelled:
        numbers.append((f"{batch.cancelled} cancelled", "dim"))
    if batch.drained:
        numbers.append((f"{batch.drained} drained", "dim"))
    if batch.tokens:
        numbers.append((f"{batch.tokens:,} tokens", "cyan"))
    if batch.cost is not None:
        numbers.append((f"cost {batch.cost:.4g}", "cyan"))
    took = (now if batch.in_flight else batch.last) - batch.first
    rate = ran / took if ran and took > 0 else None
    if rate is not None:
        numbers.append((f"{rate:.1f}/s" if rate < 100 else f"{rate:,.0f}/s", "progress.data.speed"))
    if finished:
        numbers.append((f"took {_clock(took)}", "progress.elapsed"))
    elif total is not None and rate is not None:
        numbers.append((f"~{_clock((total - done) / rate)} left", "progress.remaining"))
    else:
        numbers.append((f"{_clock(took)} elapsed", "progress.elapsed"))
    fraction = None if total is None else (min(1.0, done / total) if total else 1.0)
    return Row(batch.label, fraction, finished, numbers)


def _clock(seconds: float) -> str:
    """``<0.1s``, ``0.4s``, ``17s``, ``12:30``, ``1:02:03``."""
    if seconds < 0.1:
        return "<0.1s"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    hours, rest = divmod(whole, 3600)
    minutes, second = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{second:02}" if hours else f"{minutes}:{second:02}"


def _colour(console: Any) -> bool:
    return console.color_system is not None and not console.no_color


def lay_out(rows: list[Row], width: int, colour: bool = True) -> Iterator[Any]:
    """The lines of ``rows`` for a console ``width`` columns wide, as rich
    ``Text``: name, bar, numbers, aligned across rows. When they do not fit,
    the bar shrinks (to `LEAST_BAR`), then the names are cut (to
    `LEAST_LABEL`, with an ellipsis), then the bar goes; when even that does
    not fit, each row's numbers go on lines of their own under its name,
    moved whole from line to line. A number is never cut."""
    from rich.text import Text

    if not rows:
        return
    name = max(len(row.label) for row in rows)
    numbers = max(len(row.numbers_text()) for row in rows)
    least_name = min(name, LEAST_LABEL)
    bar = min(BAR, width - name - numbers - 2)
    if bar < LEAST_BAR:
        name = width - numbers - 2 - LEAST_BAR
        bar = LEAST_BAR
        if name < least_name:
            bar = 0
            name = min(max(len(row.label) for row in rows), width - numbers - 1)
    if name < least_name:  # numbers on lines of their own
        for row in rows:
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(row.label, "progress.description")
            line.truncate(width, overflow="ellipsis")
            yield line
            yield from _wrapped(row, width, Text)
        return
    for row in rows:
        line = Text(no_wrap=True, overflow="crop")
        label = Text(row.label, "progress.description")
        label.truncate(name, overflow="ellipsis", pad=True)
        line.append_text(label)
        if bar:
            line.append(" ")
            line.append_text(_bar(row, bar, colour, Text))
        line.append(" ")
        _numbers(line, row.numbers)
        yield line


def _numbers(line: Any, numbers: list[tuple[str, str]]) -> None:
    for number, (text, style) in enumerate(numbers):
        if number:
            line.append(GAP)
        line.append(text, style)


def _wrapped(row: Row, width: int, text_class: Any) -> Iterator[Any]:
    """A row's numbers under its name, indented, as many to a line as fit."""
    indent = "  "
    line: list[tuple[str, str]] = []
    used = len(indent)
    for number in row.numbers:
        size = len(number[0]) + (len(GAP) if line else 0)
        if line and used + size > width:
            yield _indented(indent, line, text_class)
            line, used, size = [], len(indent), len(number[0])
        line.append(number)
        used += size
    if line:
        yield _indented(indent, line, text_class)


def _indented(indent: str, numbers: list[tuple[str, str]], text_class: Any) -> Any:
    line = text_class(indent, no_wrap=True, overflow="crop")
    _numbers(line, numbers)
    return line


def _bar(row: Row, width: int, colour: bool, text_class: Any) -> Any:
    """The bar, ``width`` columns: full to ``row.fraction``; a total not known
    is shown as a dim bar with a bright stretch that moves."""
    bar = text_class()
    if row.fraction is None:
        stretch = max(1, width // 4)
        start = int(time.monotonic() * 8) % (width + stretch) - stretch
        for column in range(width):
            inside = start <= column < start + stretch
            bar.append("━" if colour or inside else " ", "bar.pulse" if inside else "bar.back")
        return bar
    halves = int(width * 2 * row.fraction)
    full, half = divmod(halves, 2)
    style = "bar.finished" if row.finished else "bar.complete"
    bar.append("━" * full, style)
    if half:
        bar.append("╸", style)
    rest = width - full - half
    if rest:
        bar.append(("━" if colour else " ") * rest, "bar.back")
    return bar
