"""Timeline: a run drawn as lanes over time, in one self-contained HTML file.

Each node step and each batch item gets a lane; spans show when it ran and
how it ended, limiter waits and retries are marked on it, and a strip on top
shows how many items were in flight. Lanes are drawn only when scrolled into
view, so 10,000 items stay readable. The page loads nothing from the network.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import threading
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import describe_error
from .._events import Event
from ._files import writable_path

__all__ = ["Timeline", "timeline_data"]

# Span types and outcomes, as the page's script reads them.
NODE, ITEM, WAIT, BRANCH = 0, 1, 2, 3
OK, FAILED, CANCELLED, UNFINISHED = 0, 1, 2, 3
RETRY, ERROR, EMIT = 0, 1, 2
_MOST_POINTS = 2000  # of the in-flight strip


def _outcome(error: BaseException | None) -> int:
    if error is None:
        return OK
    if isinstance(error, asyncio.CancelledError):
        return CANCELLED
    return FAILED


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.2f} s"


class _Builder:
    def __init__(self) -> None:
        self.lanes: list[dict[str, Any]] = []
        self.lane_of: dict[Any, int] = {}
        self.spans: list[list[Any]] = []
        self.marks: list[list[Any]] = []
        self.info: list[str] = []

    def lane(self, key: Any, label: str, depth: int, kind: str) -> int:
        index = self.lane_of.get(key)
        if index is None:
            index = self.lane_of[key] = len(self.lanes)
            self.lanes.append({"label": label, "depth": depth, "kind": kind})
        return index

    def node_lane(self, path: tuple[str, ...]) -> int:
        return self.lane(("node", path), " / ".join(path), len(path) - 1, "node")

    def item_lane(self, path: tuple[str, ...], item: int) -> int:
        return self.lane(("item", path, item), f"{path[-1]} [{item}]", len(path), "item")

    def note(self, text: str) -> int:
        self.info.append(text)
        return len(self.info) - 1


def timeline_data(events: list[Event]) -> dict[str, Any]:
    """Turn one run's events into the lanes, spans and marks the page draws.

    Times are seconds from the run's start.
    """
    start_event = next(e for e in events if e.kind == "run_start")
    origin = start_event.time
    build = _Builder()
    open_nodes: dict[tuple[str, ...], list[tuple[float, int]]] = {}
    open_items: dict[tuple[tuple[str, ...], int], tuple[float, int]] = {}
    attempts: dict[tuple[tuple[str, ...], int | None], int] = {}
    end = 0.0
    run_error: BaseException | None = None
    for event in events:
        at = event.time - origin
        end = max(end, at)
        kind, path = event.kind, event.path
        if kind in ("node_start", "branch_start"):
            open_nodes.setdefault(path, []).append((at, build.node_lane(path)))
        elif kind in ("node_end", "branch_end") and open_nodes.get(path):
            began, lane = open_nodes[path].pop()
            shape = BRANCH if kind == "branch_end" else NODE
            text = f"{'branch ' if shape == BRANCH else ''}{' / '.join(path)} · {_ms(at - began)}"
            if event.error is not None:
                text += f" · {describe_error(event.error)}"
            build.spans.append([lane, began, at, shape, _outcome(event.error), build.note(text)])
        elif kind == "item_start" and event.item is not None:
            open_items[(path, event.item)] = (at, build.item_lane(path, event.item))
        elif kind == "item_end" and event.item is not None and (path, event.item) in open_items:
            began, lane = open_items.pop((path, event.item))
            tries = attempts.pop((path, event.item), 0) + 1
            text = f"{path[-1]} [{event.item}] · {_ms(at - began)}"
            if tries > 1:
                text += f" · {tries} attempts"
            if event.error is not None:
                text += f" · {describe_error(event.error)}"
            build.spans.append([lane, began, at, ITEM, _outcome(event.error), build.note(text)])
        elif kind == "limiter_wait":
            lane = _lane_at(build, path, event.item)
            waited = event.duration or 0.0
            names = ", ".join((event.data or {}).get("limiters", []))
            text = f"waited {_ms(waited)} for {names}"
            build.spans.append([lane, at - waited, at, WAIT, OK, build.note(text)])
        elif kind == "retry":
            key = (path, event.item)
            attempts[key] = attempts.get(key, 0) + 1
            delay = (event.data or {}).get("delay", 0)
            text = (
                f"attempt {(event.attempt or 0) + 1} failed: {describe_error(event.error)}"
                f" · retry in {_ms(delay)}"
            )
            build.marks.append([_lane_at(build, path, event.item), at, RETRY, build.note(text)])
        elif kind == "error":
            text = f"error: {describe_error(event.error)}"
            build.marks.append([_lane_at(build, path, event.item), at, ERROR, build.note(text)])
        elif kind == "emit":
            shown = repr(event.data)
            text = f"emit: {shown if len(shown) <= 80 else shown[:77] + '...'}"
            build.marks.append([_lane_at(build, path, event.item), at, EMIT, build.note(text)])
        elif kind == "run_end":
            run_error = event.error
    for stack in open_nodes.values():  # steps that never ended: abandoned or cut short
        for began, lane in stack:
            build.spans.append([lane, began, end, NODE, UNFINISHED, build.note("unfinished")])
    for (_, item), (began, lane) in open_items.items():
        text = f"item {item} unfinished"
        build.spans.append([lane, began, end, ITEM, UNFINISHED, build.note(text)])
    item_spans = [span for span in build.spans if span[3] == ITEM]
    return {
        "run": {
            "id": start_event.run_id,
            "name": start_event.node,
            "duration": end,
            "error": describe_error(run_error),
            "items": len(item_spans),
            "failed": sum(1 for span in item_spans if span[4] == FAILED),
            "retries": sum(1 for mark in build.marks if mark[2] == RETRY),
            "waits": sum(1 for span in build.spans if span[3] == WAIT),
        },
        "lanes": build.lanes,
        "spans": build.spans,
        "marks": build.marks,
        "info": build.info,
        "in_flight": _in_flight(item_spans),
    }


def _lane_at(build: _Builder, path: tuple[str, ...], item: int | None) -> int:
    return build.item_lane(path, item) if item is not None else build.node_lane(path)


def _in_flight(item_spans: list[list[Any]]) -> list[list[float]]:
    """Items in flight over time, as (time, count) steps, at most ~2,000 of them."""
    changes = sorted([(span[1], 1) for span in item_spans] + [(span[2], -1) for span in item_spans])
    points: list[list[float]] = []
    count = 0
    for at, step in changes:
        count += step
        points.append([at, count])
    if len(points) > _MOST_POINTS:  # keep each bucket's peak, so bursts stay visible
        size = len(points) / _MOST_POINTS
        buckets: list[list[float]] = []
        for number in range(_MOST_POINTS):
            bucket = points[int(number * size) : int((number + 1) * size)] or [points[-1]]
            buckets.append([bucket[0][0], max(point[1] for point in bucket)])
        points = buckets
    return points


def render(data: dict[str, Any], title: str) -> str:
    """The page: the template with the run's data and a title filled in."""
    template = resources.files(__package__).joinpath("timeline.html").read_text("utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


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
        one after the other, the time between them cut short and marked.

        Raises:
            ValueError: If no event starts a run.
        """
        data = timeline_data(_joined(events))
        title = self.title or f"braidflow run of {data['run']['name']}"
        self.path.write_text(render(data, title), encoding="utf-8")


def _joined(events: list[Event]) -> list[Event]:
    """The parts of a resumed run on one time line: each later part moved so
    that it starts just after the one before ended (their clocks may be
    different processes'); an ``emit`` on the run marks where it resumed."""
    starts = [index for index, event in enumerate(events) if event.kind == "run_start"]
    if not starts:
        raise ValueError("these events have no run_start: no run to draw")
    if len(starts) == 1:
        return events[starts[0] :]
    parts = [events[a:b] for a, b in zip(starts, [*starts[1:], len(events)], strict=True)]
    active = sum(part[-1].time - part[0].time for part in parts)
    gap = max(active * 0.02, 0.001)  # what a pause between parts is drawn as
    joined = list(parts[0])
    end = parts[0][-1].time
    for number, part in enumerate(parts[1:], start=2):
        shift = part[0].time - end - gap
        first = part[0]
        joined.append(
            replace(
                first,
                kind="emit",
                time=first.time - shift,
                data=f"resumed: part {number} of the run",
            )
        )
        joined.extend(
            replace(event, time=event.time - shift) for event in part if event is not first
        )
        end = part[-1].time - shift
    return joined
