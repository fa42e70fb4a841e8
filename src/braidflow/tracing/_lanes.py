"""The lanes of a timeline: what the events build (`Builder`: lanes, spans,
marks, the items in flight), the order lanes are drawn in, big batches
packed into as few lanes as their overlap needs, and the strip of items
running and waiting over time (`load`)."""

from __future__ import annotations

import heapq
from typing import Any

from .._usage import Usage

__all__ = [
    "BACKOFF",
    "BRANCH",
    "ITEM",
    "NODE",
    "PACK_OVER",
    "WAIT",
    "Builder",
    "Item",
    "Open",
    "lanes_of",
    "load",
]

# Span types, as the page's script reads them.
NODE, ITEM, WAIT, BRANCH, BACKOFF = 0, 1, 2, 3, 4
PACK_OVER = 100  # a batch with more items than this is packed into lanes
_MOST_POINTS = 2000  # of the strip of items over time

Names = tuple[str, ...]  # an event's path


class Item:
    """One run of a batch item, for the strip: when it ran, the batch item
    whose sub-flow it is in, and when it waited for a limiter or waited out a
    retry's delay (its sub-flow's steps included): ``[lane, begin, end, ...]``
    spans. ``first_wait``: a batch node item's wait for its first attempt,
    counted from the item's start (between them the item runs no code of
    the node's: the attempt asks for its limiters first thing)."""

    __slots__ = ("begin", "busy", "end", "first_wait", "parent", "retries", "waits")

    def __init__(self, begin: float, parent: Item | None) -> None:
        self.begin = begin
        self.end: float | None = None
        self.parent = parent
        self.waits: list[list[Any]] = []
        self.retries: list[list[Any]] = []
        self.busy = False  # it has done something since it started
        self.first_wait: list[Any] | None = None


class Open:
    """A step (or branch) begun in this part and not ended yet: when, on which
    lane, and how many items of its own batch it started (of how many)."""

    __slots__ = ("began", "lane", "shape", "started", "total")

    def __init__(self, began: float, lane: int, shape: int) -> None:
        self.began, self.lane, self.shape = began, lane, shape
        self.started = 0
        self.total: int | None = None


class Builder:
    def __init__(self) -> None:
        self.keys: list[Any] = []  # each lane's key, in the order lanes were made
        self.lane_of: dict[Any, int] = {}
        self.spans: list[list[Any]] = []
        self.marks: list[list[Any]] = []
        self.info: list[str] = []
        self.inner: dict[Names, tuple[Names, int]] = {}  # a sub-flow's path -> its item
        self.running: dict[tuple[Names, int], Item] = {}  # items in flight
        self.items: list[Item] = []
        self.totals: dict[Names, int] = {}  # a batch's number of items, when known
        self.again = 0  # item runs cut off by a crash that ran again in the next part
        self.failed_again = 0  # failed item runs that ran again in the next part
        self.usage = Usage(calls=0)  # what the run's calls reported

    def lane(self, key: Any) -> int:
        index = self.lane_of.get(key)
        if index is None:
            index = self.lane_of[key] = len(self.keys)
            self.keys.append(key)
        return index

    def lane_at(self, path: Names, item: int | None) -> int:
        """The lane of an event: its item's, if it names one, else its step's
        (a step of a sub-flow carries its parameter set's index as ``item``)."""
        if item is not None and ("item", path, item) in self.lane_of:
            return self.lane_of[("item", path, item)]
        return self.lane(("node", path))

    def owner(self, path: Names, item: int | None) -> Item | None:
        """The item in flight an event belongs to: its own, else the batch flow
        item whose sub-flow holds ``path``."""
        if item is not None and (path, item) in self.running:
            return self.running[(path, item)]
        for end in range(len(path), 0, -1):
            key = self.inner.get(path[:end])
            if key is not None and key in self.running:
                return self.running[key]
        return None

    def note(self, text: str) -> int:
        self.info.append(text)
        return len(self.info) - 1


def lanes_of(build: Builder) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[int]]:
    """The lanes in the order drawn (each under its parent, in the order they
    started), the packed groups of large batches, and where each lane made
    went (its index in that order)."""
    lane_of, inner = build.lane_of, build.inner
    children: dict[int, list[int]] = {}
    shown: list[tuple[str, str, str]] = []  # label, title, kind
    for index, key in enumerate(build.keys):
        if key[0] == "item":
            _, path, item = key
            parent, under = _parent(lane_of, inner, path, len(path))
            title = f"{' / '.join(path)} [{item}]"
            label = " / ".join((*path[under:-1], f"{path[-1]} [{item}]"))
            shown.append((label, title, "item"))
        else:
            path = key[1]
            parent, under = _parent(lane_of, inner, path, len(path) - 1)
            shown.append((" / ".join(path[under:]), " / ".join(path), "node"))
        children.setdefault(parent, []).append(index)
    packs = _packs(build, children)
    groups = [{"label": label, "items": count, "slots": slots} for label, count, slots, _ in packs]
    slot_of = {
        lane: (number, slot) for number, pack in enumerate(packs) for lane, slot in pack[3].items()
    }
    lanes: list[dict[str, Any]] = []
    order = [0] * len(build.keys)
    stack: list[tuple[int, int, tuple[int, int] | None]] = [
        (lane, 0, None) for lane in reversed(children.get(-1, []))
    ]
    while stack:
        index, depth, inside = stack.pop()
        order[index] = len(lanes)
        label, title, kind = shown[index]
        lane: dict[str, Any] = {"label": label, "title": title, "depth": depth, "kind": kind}
        if inside is not None:
            lane["inside"] = list(inside)
        pack = slot_of.get(index)
        if pack is not None:
            lane["pack"] = list(pack)
        lanes.append(lane)
        below = inside if inside is not None else pack
        stack.extend((child, depth + 1, below) for child in reversed(children.get(index, [])))
    return lanes, groups, order


def _parent(
    lane_of: dict[Any, int], inner: dict[Names, tuple[Names, int]], path: Names, longest: int
) -> tuple[int, int]:
    """The lane that ``path`` is drawn under, and how many of its names that
    lane stands for: the nearest step, or batch flow item, it is inside."""
    for end in range(longest, 0, -1):
        prefix = path[:end]
        lane = lane_of.get(("node", prefix))
        if lane is None:
            owner = inner.get(prefix)
            if owner is not None:
                lane = lane_of.get(("item", *owner))
        if lane is not None:
            return lane, end
    return -1, 0


def _packs(
    build: Builder, children: dict[int, list[int]]
) -> list[tuple[str, int, int, dict[int, int]]]:
    """The batches with more than `PACK_OVER` items, each packed into as few
    lanes as it ever had items in flight (an item on the lowest lane free when
    it starts): (name, items, lanes, {item lane: its lane in the pack})."""
    extent: dict[int, list[float]] = {}
    for span in build.spans:
        if span[3] == ITEM:
            seen = extent.setdefault(span[0], [span[1], span[2]])
            seen[0], seen[1] = min(seen[0], span[1]), max(seen[1], span[2])
    packs = []
    for lanes in children.values():
        items = [lane for lane in lanes if build.keys[lane][0] == "item" and lane in extent]
        if len(items) <= PACK_OVER:
            continue
        items.sort(key=lambda lane: extent[lane][0])
        free: list[int] = []
        busy: list[tuple[float, int]] = []
        slots: dict[int, int] = {}
        count = 0
        for lane in items:
            begin, finish = extent[lane]
            while busy and busy[0][0] <= begin:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                slot = heapq.heappop(free)
            else:
                slot, count = count, count + 1
            slots[lane] = slot
            heapq.heappush(busy, (finish, slot))
        name = build.keys[items[0]][1][-1]
        packs.append((name, len(items), count, slots))
    return packs


def load(items: list[Item]) -> list[list[float]]:
    """Batch items over time, as ``[time, running, waiting, backing off]``
    steps, at most ~2,000 of them. Each item counts where its work is: an
    item whose own batch has items in flight (a batch inside a batch flow's
    sub-flow) counts as nothing, its items count; else it is waiting while
    it (or its sub-flow's step) waits for a limiter, backing off while it
    waits out a retry's delay, and running otherwise."""
    changes: list[tuple[float, int, Item, int]] = []  # time, what, item, +1/-1
    active, inner, wait, retry = 0, 1, 2, 3
    for item in items:
        finish = item.begin if item.end is None else item.end  # each part ends its own
        changes.append((item.begin, active, item, 1))
        changes.append((finish, active, item, -1))
        if item.parent is not None:
            changes.append((item.begin, inner, item.parent, 1))
            changes.append((finish, inner, item.parent, -1))
        for kind, spans in ((wait, item.waits), (retry, item.retries)):
            for span in spans:
                begin = item.begin if span is item.first_wait else max(span[1], item.begin)
                stop = min(span[2], finish)
                if begin < stop:
                    changes.append((begin, kind, item, 1))
                    changes.append((stop, kind, item, -1))
    changes.sort(key=lambda change: change[0])
    state: dict[int, list[int]] = {}  # id(item) -> [active, inner, waits, retries]
    totals = [0, 0, 0]  # running, waiting, backing off

    def counted(counts: list[int]) -> int | None:
        if not counts[active] or counts[inner]:
            return None
        return 1 if counts[wait] else 2 if counts[retry] else 0

    points: list[list[float]] = []
    for number, (at, kind, item, step) in enumerate(changes):
        counts = state.setdefault(id(item), [0, 0, 0, 0])
        before = counted(counts)
        counts[kind] += step
        after = counted(counts)
        if before != after:
            if before is not None:
                totals[before] -= 1
            if after is not None:
                totals[after] += 1
        last = number + 1 == len(changes) or changes[number + 1][0] != at
        if last and (not points or points[-1][1:] != totals):
            points.append([at, *totals])
    if len(points) > _MOST_POINTS:  # keep each bucket's peaks, so bursts stay visible
        size = len(points) / _MOST_POINTS
        buckets: list[list[float]] = []
        for number in range(_MOST_POINTS):
            bucket = points[int(number * size) : int((number + 1) * size)] or [points[-1]]
            buckets.append([bucket[0][0], *(max(p[n] for p in bucket) for n in (1, 2, 3))])
        points = buckets
    return points
