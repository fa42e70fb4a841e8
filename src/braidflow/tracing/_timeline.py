"""Timeline: a run drawn as lanes over time, in one self-contained HTML file.

Each node step and each batch item gets a lane, drawn under what it belongs
to; spans show when it ran and how it ended, limiter waits, retries and
their delays are marked on it, and a strip on top shows how many items were
running, waiting for a limiter and waiting to retry. Lanes are drawn only when scrolled into
view, so 10,000 items stay readable. The page loads nothing from the network.
A run that was resumed is drawn part by part, each resume marked, and what a
crash cut off ends where its part's recorded events do (see `timeline_data`).
"""

from __future__ import annotations

import html
import json
import os
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from .._budget import OverBudget
from .._errors import describe_error
from .._events import Event
from .._strict_json import safe_repr
from .._usage import Usage
from ..durable._drain import DrainStop
from ..durable._interrupt import Interrupted
from ._files import writable_path
from ._lanes import (
    BACKOFF,
    BRANCH,
    ITEM,
    NODE,
    WAIT,
    Builder,
    Item,
    Open,
    lanes_of,
    load,
)
from ._stops import DRAINED, WAITING, is_a, stop_of

__all__ = ["Timeline", "timeline_data"]

# Outcomes, as the page's script reads them (span types: `_lanes`).
# UNFINISHED: no end recorded before the run's end (abandoned). INTERRUPTED: no
# end recorded before its part of the run stopped with no end of its own (its
# process died); REUSED: that too, and the part after reused its checkpointed
# result without running it again (it had finished; its end went unwritten).
# ASKED: it stopped the run to ask for input (``braidflow.interrupt``).
OK, FAILED, CANCELLED, UNFINISHED, INTERRUPTED, REUSED, ASKED = 0, 1, 2, 3, 4, 5, 6
RETRY, ERROR, EMIT = 0, 1, 2
# What shows that an item has done something of its own since it started.
_BUSY = frozenset(("emit", "retry", "error", "limiter_wait", "node_end", "branch_end", "item_end"))

Names = tuple[str, ...]  # an event's path


def _outcome(error: BaseException | None) -> int:
    if error is None:
        return OK
    stop = stop_of(error)
    if stop is None:
        return FAILED
    return ASKED if stop == WAITING else CANCELLED  # (drained: drawn as stopped)


def _ended(error: BaseException | None) -> str:
    """How a part of the run that has its ``run_end`` ended."""
    outcome = _outcome(error)
    if outcome == ASKED:
        return "waiting"
    if stop_of(error) == DRAINED:
        return "drained"
    return {OK: "completed", CANCELLED: "cancelled"}.get(outcome, "failed")


def last_part_ended(events: list[Event]) -> str:
    """How the last part of a run's events (from its last ``run_start``)
    ended: ``completed``, ``failed``, ``cancelled``, ``drained``, ``waiting``, or
    ``interrupted`` (no ``run_end``: its process died, or it is still running).

    Raises:
        ValueError: If no event starts a run.
    """
    finished = next((e for e in reversed(_parts(events)[-1]) if e.kind == "run_end"), None)
    return "interrupted" if finished is None else _ended(finished.error)


def _said(error: BaseException) -> str:
    """What a span's note says of how it ended, when not well."""
    if is_a(error, Interrupted):
        return f"asked for input: {str(error)[:80]}"
    if is_a(error, OverBudget):
        return f"waits for a higher budget: {str(error)[:120]}"
    if is_a(error, DrainStop):  # (past the grace period, its message says so)
        return f"drained: {str(error)[:120] or 'stopped at a safe point'}"
    return describe_error(error)


def _ms(seconds: float) -> str:
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


def timeline_data(events: list[Event]) -> dict[str, Any]:
    """Turn one run's events into the lanes, spans and marks the page draws.

    Lanes come in the order they are drawn, each under what it belongs to: a
    flow's steps under the flow, a batch's items under its step, and the
    steps of a batch flow's sub-flow under the item that ran them. Times are
    seconds from the run's start.

    A run that was resumed has one part per attempt, each from its
    ``run_start`` (a stored run's `recorded_events`). The parts are drawn one
    after the other, each later one moved to start just after the one before
    ended (their clocks may be different processes'), and listed in
    ``parts``. Whatever a part leaves open ends where the part ends: a part
    with no ``run_end`` (its process died) at its last recorded event, its
    open steps and items drawn as cut off (`INTERRUPTED`, or `REUSED` when
    the next part's run of that batch ended without running the item again:
    its result had been kept).

    Raises:
        ValueError: If no event starts a run.
    """
    parts = _parts(events)
    build = Builder()
    active = sum(_last(part) - part[0].time for part in parts)
    gap = max(active * 0.02, 0.001)  # what a pause between parts is drawn as
    drawn: list[dict[str, Any]] = []
    for number, part in enumerate(parts, start=1):
        begin = 0.0 if number == 1 else drawn[-1]["end"] + gap
        later = _first_runs(parts[number]) if number < len(parts) else None
        name = "the run" if len(parts) == 1 else f"part {number}"
        drawn.append(_draw_part(build, part, name, number, part[0].time - begin, later))
    end = drawn[-1]["end"]
    item_spans = [span for span in build.spans if span[3] == ITEM]
    unrecorded = 0  # items of a batch that ran with no events kept: written after a crash
    if drawn[-1]["ended"] == "completed" and any(p["ended"] == "interrupted" for p in drawn):
        seen: dict[Names, int] = {}
        for key in build.keys:
            if key[0] == "item":
                seen[key[1]] = seen.get(key[1], 0) + 1
        unrecorded = sum(max(0, total - seen.get(path, 0)) for path, total in build.totals.items())
    lanes, groups, order = lanes_of(build)
    for thing in (*build.spans, *build.marks):
        thing[0] = order[thing[0]]
    spent = {"tokens": build.usage.tokens, "cost": build.usage.cost} if build.usage.calls else {}
    return {
        "run": {
            **spent,
            "id": parts[0][0].run_id,
            "name": parts[0][0].node,
            "duration": end,
            "ended": drawn[-1]["ended"],
            "error": drawn[-1]["error"],
            "items": len(item_spans) - build.again,  # an item run cut off and run again: once
            "failed": sum(1 for span in item_spans if span[4] == FAILED) - build.failed_again,
            "interrupted": sum(1 for span in item_spans if span[4] in (INTERRUPTED, REUSED)),
            "reused": sum(1 for span in item_spans if span[4] == REUSED),
            "unrecorded": unrecorded,
            "retries": sum(1 for mark in build.marks if mark[2] == RETRY),
            "waits": sum(1 for span in build.spans if span[3] == WAIT),
        },
        "parts": drawn,
        "lanes": lanes,
        "groups": groups,
        "spans": build.spans,
        "marks": build.marks,
        "info": build.info,
        "load": load(build.items),
    }


def _parts(events: list[Event]) -> list[list[Event]]:
    """The parts of a run: its events from each ``run_start`` to the next."""
    starts = [index for index, event in enumerate(events) if event.kind == "run_start"]
    if not starts:
        raise ValueError("these events have no run_start: no run to draw")
    return [events[a:b] for a, b in zip(starts, [*starts[1:], len(events)], strict=True)]


def _last(part: list[Event]) -> float:
    """When a part's last recorded event happened (threads may emit out of order)."""
    return max(event.time for event in part)


def _first_runs(part: list[Event]) -> dict[Names, tuple[set[int], bool | None]]:
    """For each step of a part, its first run there: the items it started,
    and whether it ended well (``None``: no end recorded). A resumed part
    runs first the step its part before was cut off in."""
    runs: dict[Names, tuple[set[int], list[bool | None]]] = {}
    going: set[Names] = set()
    for event in part:
        kind, path = event.kind, event.path
        if kind == "node_start" and path not in runs:
            runs[path] = (set(), [None])
            going.add(path)
        elif kind == "item_start" and path in going and event.item is not None:
            runs[path][0].add(event.item)
        elif kind == "node_end" and path in going:
            going.discard(path)
            runs[path][1][0] = event.error is None
    return {path: (started, ended[0]) for path, (started, ended) in runs.items()}


def _draw_part(
    build: Builder,
    part: list[Event],
    name: str,
    number: int,
    shift: float,
    later: dict[Names, tuple[set[int], bool | None]] | None,
) -> dict[str, Any]:
    """Draw one part of the run (``name``: "the run", or "part 2"), its
    events' times less ``shift``, and end at the part's end whatever it left
    open. ``later``: the next part's first run of each step, if the run
    was resumed after this part. Returns the part as ``parts`` lists it."""
    open_nodes: dict[Names, list[Open]] = {}
    open_items: dict[tuple[Names, int], tuple[float, int]] = {}
    waiting: dict[tuple[Names, int | None], tuple[list[Any], str]] = {}  # waits begun, for what
    backing_off: dict[tuple[Names, int | None], list[Any]] = {}  # a retry's delay
    attempts: dict[tuple[Names, int | None], int] = {}
    failed: list[tuple[Names, int, list[Any]]] = []  # item runs that failed here
    first_span = len(build.spans)
    begin = end = part[0].time - shift
    finished: Event | None = None
    for event in part:
        at = event.time - shift
        end = max(end, at)
        kind, path, item = event.kind, event.path, event.item
        key = (path, item)
        if kind in _BUSY:
            busy = build.owner(path, item)
            if busy is not None:
                busy.busy = True
        if kind in ("node_start", "branch_start"):
            shape = BRANCH if kind == "branch_start" else NODE
            open_nodes.setdefault(path, []).append(Open(at, build.lane(("node", path)), shape))
        elif kind in ("node_end", "branch_end") and open_nodes.get(path):
            step = open_nodes[path].pop()
            text = f"{'branch ' if step.shape == BRANCH else ''}{' / '.join(path)}"
            text += f" · {_ms(at - step.began)}"
            if event.error is not None:
                text += f" · {_said(event.error)}"
            elif step.total is not None and step.started < step.total:  # resumed
                reused = step.total - step.started
                text += (
                    f" · ran {step.started} of its {step.total} items; the other {reused}"
                    f" had finished before: {name} reused their checkpointed results"
                )
            outcome = _outcome(event.error)
            build.spans.append([step.lane, step.began, at, step.shape, outcome, build.note(text)])
            _cut_short(build, waiting, backing_off, (path, None), at, event.error)
        elif kind == "item_start" and item is not None:
            lane = build.lane(("item", path, item))
            open_items[(path, item)] = (at, lane)
            running = Item(at, build.owner(path, None))
            build.items.append(running)
            build.running[(path, item)] = running
            if path:
                build.inner[(*path[:-1], f"{path[-1]}[{item}]")] = (path, item)
            total = event.data.get("total") if isinstance(event.data, dict) else None
            if isinstance(total, int):
                build.totals[path] = max(total, build.totals.get(path, 0))
            if open_nodes.get(path):  # the items its step started, for what it reused
                step = open_nodes[path][-1]
                step.started += 1
                if isinstance(total, int):
                    step.total = total
        elif kind == "item_end" and item is not None and (path, item) in open_items:
            _cut_short(build, waiting, backing_off, (path, item), at, event.error)
            began, lane = open_items.pop((path, item))
            done = build.running.pop((path, item), None)
            if done is not None:
                done.end = at
            tries = attempts.pop((path, item), 0) + 1
            text = f"{path[-1]} [{item}] · {_ms(at - began)}"
            if tries > 1:
                text += f" · {tries} attempts"
            if event.error is not None:
                text += f" · {_said(event.error)}"
            span: list[Any] = [lane, began, at, ITEM, _outcome(event.error), build.note(text)]
            build.spans.append(span)
            if span[4] == FAILED:
                failed.append((path, item, span))
        elif kind == "limiter_wait_start":
            _stop_backing_off(backing_off, key, at)
            names = ", ".join((event.data or {}).get("limiters", []))
            span = [build.lane_at(path, item), at, at, WAIT, OK, -1]
            waiting[key] = (span, names)
            owner = build.owner(path, item)
            if owner is not None:
                owner.waits.append(span)
                own = item is not None and build.running.get((path, item)) is owner
                if own and not owner.busy and owner.first_wait is None:
                    owner.first_wait = span  # a batch node's item: nothing ran before it
        elif kind == "limiter_wait":
            waited = event.duration or 0.0
            names = ", ".join((event.data or {}).get("limiters", []))
            begun = waiting.pop(key, None)
            if begun is not None:
                wait = begun[0]
            else:  # no limiter_wait_start: events kept before there was one
                wait = [build.lane_at(path, item), at - waited, at, WAIT, OK, -1]
                owner = build.owner(path, item)
                if owner is not None:
                    owner.waits.append(wait)
            wait[1], wait[2] = max(at - waited, begin), at
            wait[5] = build.note(f"waited {_ms(waited)} for {names}")
            build.spans.append(wait)
        elif kind == "retry":
            _stop_backing_off(backing_off, key, at)
            attempts[key] = attempts.get(key, 0) + 1
            delay = (event.data or {}).get("delay", 0)
            text = (
                f"attempt {(event.attempt or 0) + 1} failed: {describe_error(event.error)}"
                f" · retry in {_ms(delay)}"
            )
            lane = build.lane_at(path, item)
            build.marks.append([lane, at, RETRY, build.note(text)])
            if delay > 0:
                note = build.note(f"waits {_ms(delay)} before attempt {(event.attempt or 0) + 2}")
                span = [lane, at, at + delay, BACKOFF, OK, note]
                build.spans.append(span)
                backing_off[key] = span
                owner = build.owner(path, item)
                if owner is not None:
                    owner.retries.append(span)
        elif kind == "error" and not (event.error and _outcome(event.error) == ASKED):
            text = f"error: {describe_error(event.error)}"
            build.marks.append([build.lane_at(path, item), at, ERROR, build.note(text)])
        elif kind == "emit":
            shown = safe_repr(event.data)
            text = f"emit: {shown if len(shown) <= 80 else shown[:77] + '...'}"
            build.marks.append([build.lane_at(path, item), at, EMIT, build.note(text)])
        elif kind == "usage":
            usage = Usage.from_dict(event.data)
            build.usage += usage
            text = f"usage: {usage.tokens:,} tokens ({usage.input_tokens:,} in, "
            text += f"{usage.output_tokens:,} out)"
            text += f", cost {usage.cost:.4g}" if usage.cost is not None else ""
            text += f", {usage.model}" if usage.model else ""
            build.marks.append([build.lane_at(path, item), at, EMIT, build.note(text)])
        elif kind == "run_end":
            finished = event
    # The part's end ends what it left open: with the run's end, what never
    # ended (abandoned); with no end recorded, what its process was doing, or
    # had done without the events that said so being written, when it died.
    if finished is None:
        outcome = INTERRUPTED
        why = f"cut off: {name} has no end recorded (its process died"
        why += ")" if later is not None else ", or it is still running)"
    else:
        outcome = UNFINISHED
        why = f"unfinished: no end recorded before {name} ended"
    for path, stack in open_nodes.items():
        for step in stack:
            text = f"{'branch ' if step.shape == BRANCH else ''}{' / '.join(path)}"
            text += f" · {_ms(end - step.began)} recorded · {why}"
            build.spans.append([step.lane, step.began, end, step.shape, outcome, build.note(text)])
    for (path, item), (began, lane) in open_items.items():
        text = f"{path[-1]} [{item}] · {_ms(end - began)} recorded · {why}"
        drawn_as = outcome
        run = None if later is None else later.get(path)
        if outcome == INTERRUPTED and run is not None:
            started, well = run
            if item in started:
                text += f"; it ran again in part {number + 1}"
                build.again += 1
            elif well:
                drawn_as = REUSED
                text += (
                    f"; it had finished: part {number + 1} reused its checkpointed result"
                    " without running it again"
                )
        build.spans.append([lane, began, end, ITEM, drawn_as, build.note(text)])
    for path, item, span in failed:  # the next part may have run it again
        run = None if later is None else later.get(path)
        if run is not None and item in run[0]:
            build.info[span[5]] += f" · it ran again in part {number + 1}"
            build.failed_again += 1
    for span, names in waiting.values():
        span[2], span[4] = end, outcome
        span[5] = build.note(f"waits for {names} · {why}")
        build.spans.append(span)
    for span in build.spans[first_span:]:  # a retry's delay past the part's end
        span[2] = min(span[2], end)
    for running in build.running.values():
        running.end = end
    build.running.clear()
    error = None if finished is None else finished.error
    ended = "interrupted" if finished is None else _ended(error)
    said = "" if error is None or ended == "waiting" else describe_error(error)
    return {"begin": begin, "end": end, "ended": ended, "error": said}


def _cut_short(
    build: Builder,
    waiting: dict[tuple[Names, int | None], tuple[list[Any], str]],
    backing_off: dict[tuple[Names, int | None], list[Any]],
    key: tuple[Names, int | None],
    at: float,
    error: BaseException | None,
) -> None:
    """A step or item ends: a limiter wait of its own that never got its
    slots ends with it, as it ended; a retry's delay, no later than it."""
    begun = waiting.pop(key, None)
    if begun is not None:
        span, names = begun
        span[2], span[4] = at, _outcome(error)
        span[5] = build.note(f"waited {_ms(at - span[1])} for {names}, then cut short")
        build.spans.append(span)
    _stop_backing_off(backing_off, key, at)


def _stop_backing_off(
    backing_off: dict[tuple[Names, int | None], list[Any]], key: Any, at: float
) -> None:
    span = backing_off.pop(key, None)
    if span is not None:
        span[2] = min(span[2], at)


_SLOTS = re.compile("__TITLE__|__DATA__")
# In the data's script block, no "<", ">" or "&" at all (JSON's own escapes
# in their place): neither "</script>" nor "<!--<script>", which would put
# the page's own script inside the block, can be written by what a run holds.
_INERT = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render(data: dict[str, Any], title: str) -> str:
    """The page: the template with the run's data and a title filled in,
    in one pass (a title holding ``__DATA__`` stays text)."""
    template = resources.files(__package__).joinpath("timeline.html").read_text("utf-8")
    filled = {
        "__TITLE__": html.escape(title),
        "__DATA__": json.dumps(data, separators=(",", ":")).translate(_INERT),
    }
    return _SLOTS.sub(lambda slot: filled[slot[0]], template)


class Timeline:
    """An observer that writes one self-contained HTML page of the run at its end.

    The page draws the run as lanes over time: every node step and every
    batch item, with limiter waits, retries, failures and emits marked on
    them, hover details, a legend, and the number of items in flight. It
    needs no network: script and styles are inline.

    Args:
        path: The HTML file to write when the run ends (rewritten by each run
            this observer watches).
        title: The page's title; default: the name of the flow that ran.

    Raises:
        InvalidParameterError: If the file cannot be written there; said
            when the observer is made, before any run starts.
    """

    def __init__(self, path: str | os.PathLike[str], *, title: str | None = None) -> None:
        self.path: Path = writable_path(path, "Timeline")
        self.title = title
        self._events: dict[str, list[Event]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Timeline({str(self.path)!r})"

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        with self._lock:
            self._events.setdefault(event.run_id, []).append(event)
            if event.kind != "run_end":
                return
            events = self._events.pop(event.run_id)
        self.write(events)

    def write(self, events: list[Event]) -> None:
        """Write the page for a run's events now: those an observer saw, or a
        stored run's (``braidflow.recorded_events``). A run that was resumed
        has one part per attempt, each from ``run_start`` on; they are drawn
        one after the other, the time between them cut short, each resume
        marked; what a part left open ends where the part ends.

        Raises:
            ValueError: If no event starts a run.
        """
        data = timeline_data(events)
        title = self.title or f"braidflow run of {data['run']['name']}"
        self.path.write_text(render(data, title), encoding="utf-8")
