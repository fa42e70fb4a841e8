"""The checkpoint writer of a durable run: rows to the store, items by group commit.

Steps, branches and answers are written at once. Finished batch items are
queued and written together at the event loop's next turn (a group commit),
those of one batch as one row, before any other row; a sync batch writes
each item as it finishes.

How far "written" goes is the run's durability: ``sync`` (the store has
each row before the run goes on), ``async`` (rows are kept and written in
batches, one append every `PERIOD` seconds or `BATCH` rows, and on an event
loop also when the period ends with nothing else written: a crash loses
the last batch) or ``exit`` (rows are kept here and written when the run
stops, however it stops but a kill). In every mode the store holds a
prefix of the run's rows, in order, so a resume always finds a consistent
run.

Why ``async`` writes from the run's own thread, not from a thread of its
own: a writer thread takes Python's lock for the rows it encodes, and on a
run of quick steps the two threads' hand-overs cost more than the commits
saved (the chain benchmark: 25 µs a node, against 20 for ``sync`` and 12
batched here).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from time import monotonic, time
from typing import Any

from ..stores._base import Checkpoint, Store
from ._codec import Codec

__all__ = ["CheckpointWriter"]


PERIOD = 0.05  # seconds: how long an async run keeps rows before writing them, at most
BATCH = 1024  # rows that an async run writes at once, however young


def _nothing_to_settle(last: Checkpoint) -> list[Checkpoint]:
    return []


def _no_steps() -> list[Checkpoint]:
    return []


class CheckpointWriter:
    """Writes one run's checkpoint rows to its store, in order."""

    def __init__(self, store: Store, run_id: str, codec: Codec, mode: str = "sync") -> None:
        self.store = store
        self.run_id = run_id
        self.codec = codec
        self.mode = mode  # the run's durability= (see _options.DURABILITY)
        self._kept: list[Checkpoint] = []  # exit: every row until the run stops; async: a batch
        # async: when the batch kept must be written (None: no batch begun);
        # and on the wall clock, what the run's steps compare their end time
        # with, so that most of them need not call `tick`: it is due (or the
        # clock went back) once a step ended after `due_hint` (before `begun_hint`).
        self._due: float | None = None
        self.due_hint = self.begun_hint = 0.0
        self.batch_lock = threading.Lock()
        # async, exit: the rows of the steps the run keeps (before any other
        # row), and the row of what they changed in shared, after a batch.
        self._steps: Callable[[], list[Checkpoint]] = _no_steps
        self._settle: Callable[[Checkpoint], list[Checkpoint]] = _nothing_to_settle
        # Rows wait here for the next turn of the event loop, so items finishing
        # together are written in one transaction (a group commit), those of one
        # batch as one row; any other write takes them first.
        self._pending: list[Checkpoint] = []
        # Finished items' payloads, each batch's after a (batch, node) marker
        # when it differs from the one before: an item adds no object the
        # garbage collector must follow. The list is only ever changed in
        # place, so the loop appends to it without the lock.
        self._queued: list[Any] = []
        self._queued_batch: Any = None  # the batch of the last marker queued
        self._taken_batch: Any = None  # the last marker taken: whose items come next
        # Sync batches write from worker threads while the loop queues rows.
        self._queue_lock = threading.Lock()
        self._flush_due = False
        self._write_error: BaseException | None = None

    def lax(
        self,
        steps: Callable[[], list[Checkpoint]],
        settle: Callable[[Checkpoint], list[Checkpoint]],
    ) -> None:
        """Under async or exit: ``steps()`` gives the rows of steps the run
        kept itself, which go before any other row; ``settle(last)`` the row
        of what they changed, which ends each batch written (see _lax)."""
        self._steps = steps
        self._settle = settle

    def tick(self, kept: int) -> None:
        """A step was kept by the run (``kept`` of them now): under async,
        write the batch if it is full or due."""
        if self.mode != "async":
            return
        now = monotonic()
        due = self._due
        if due is None:
            self._begin_batch(now)
        elif now >= due or kept + len(self._kept) >= BATCH:
            with self.batch_lock:
                self._write_batch()

    def _begin_batch(self, now: float) -> None:
        """A new batch: due a period from now, and on an event loop written
        then even if nothing else is written by then."""
        self._due = now + PERIOD
        self.begun_hint = time()
        self.due_hint = self.begun_hint + PERIOD
        loop = asyncio._get_running_loop()
        if loop is not None:
            loop.call_later(PERIOD, self._batch_due)

    def items_row(
        self, batch: tuple[str, int, str | None], node: Any, parts: list[bytes]
    ) -> Checkpoint:
        """One row for items of one batch (its stage, its node's id, how many
        items it has): ``[index, fingerprint, result]`` each."""
        name, cls = node._display_name(), type(node).__qualname__
        return Checkpoint(
            "items", batch[0], len(parts), name, cls, batch[2], self.codec.join(parts), None, time()
        )

    def queue_item(self, batch: tuple[str, int, str | None], payload: bytes, node: Any) -> None:
        """Queue a finished item's payload for the group commit at the loop's next turn.

        Items finishing in the same turn of the loop are written together, in
        one transaction (a group commit) at the start of the next turn, those
        of one ``batch`` (its stage, and the node's id) in one row.

        Raises:
            StoreError: If an earlier group commit failed; the batch stops.
        """
        if self._write_error is not None:
            raise self._write_error
        if batch is not self._queued_batch:
            self._queued.append((batch, node))
            self._queued_batch = batch
        self._queued.append(payload)
        if not self._flush_due:
            self._flush_soon()

    def check_written(self) -> None:
        """Raise the error of a failed group commit, if one failed.

        Raises:
            StoreError: If the group commit failed; the batch stops.
        """
        if self._write_error is not None:
            raise self._write_error

    def queue_row(self, row: Checkpoint) -> None:
        """Queue a row for the group commit at the next turn of the event loop.

        Raises:
            StoreError: If an earlier group commit failed; the batch stops.
        """
        self.check_written()
        with self._queue_lock:
            self._pending.append(row)
        self._flush_soon()

    def _flush_soon(self) -> None:
        # On an event loop, at its next turn; without one, at the next write
        # or `flush` (a sync driver writes each item's checkpoint at once).
        if not self._flush_due:
            loop = asyncio._get_running_loop()
            if loop is not None:
                self._flush_due = True
                loop.call_soon(self._flush)

    def _take_pending(self) -> list[Checkpoint]:
        """The queued rows, the items of each batch joined into one row."""
        batches: dict[tuple[str, int, str | None], tuple[Any, list[bytes]]] = {}
        parts: list[bytes] | None = None
        with self._queue_lock:
            queued = self._queued
            count = len(queued)
            taken = queued[:count]
            del queued[:count]  # an item queued meanwhile stays, after these
            pending, self._pending = self._pending, []
            # Payloads before the first marker are those of the last one taken.
            marker = self._taken_batch
            for entry in taken:
                if type(entry) is not bytes:
                    marker, parts = entry, None
                    continue
                if parts is None:
                    parts = batches.setdefault(marker[0], (marker[1], []))[1]
                parts.append(entry)
            self._taken_batch = marker
        rows = [self.items_row(batch, node, group) for batch, (node, group) in batches.items()]
        return rows + pending

    def _flush(self) -> None:
        self._flush_due = False
        if self._write_error is not None or not (self._pending or self._queued):
            return
        rows = self._take_pending()
        try:
            self._hand(rows)
        except BaseException as error:  # told to the next item, and at the run's end
            with self._queue_lock:
                self._pending = rows + self._pending
            self._write_error = error

    def _hand(self, rows: list[Checkpoint]) -> None:
        """Rows, in order, to where the run's durability sends them."""
        mode = self.mode
        if mode == "sync":
            self.store.append(self.run_id, rows)
        elif mode == "exit":
            with self.batch_lock:
                self._kept += self._steps()
                self._kept += rows
        else:  # async: a batch, written when full or due
            with self.batch_lock:  # sync batches hand rows over from worker threads
                self._kept += self._steps()
                self._kept += rows
                now = monotonic()
                due = self._due
                if due is None:
                    self._begin_batch(now)
                if len(self._kept) >= BATCH or (due is not None and now >= due):
                    self._write_batch()

    def settle(self) -> None:
        """Under async or exit: the steps the run kept, and the ``state`` row of
        what they changed, go among the rows kept now, so that a row written
        next comes after them."""
        with self.batch_lock:
            self._kept += self._steps()
            if self._kept:
                self._kept += self._settle(self._kept[-1])

    def _write_batch(self) -> None:
        """Write the batch kept (the caller holds the batch lock). If the
        store fails, the rows stay kept, first: nothing later overtakes them."""
        rows, self._kept, self._due = self._kept, [], None
        self.due_hint = self.begun_hint = 0.0
        rows += self._steps()
        if rows:
            rows += self._settle(rows[-1])
            try:
                self.store.append(self.run_id, rows)
            except BaseException:
                self._kept = rows + self._kept
                raise

    def _batch_due(self) -> None:
        # On the loop, a period after the batch began: write it, unless the
        # run ended or failed to write meanwhile.
        if self._due is not None and self._write_error is None:
            try:
                with self.batch_lock:
                    self._write_batch()
            except BaseException as error:  # told to the next write, and at the run's end
                self._write_error = error

    def write(self, rows: list[Checkpoint]) -> None:
        """Write rows now (as the run's durability says), after any queued ones."""
        if self._write_error is not None:
            raise self._write_error
        if self._pending or self._queued:
            rows = self._take_pending() + rows
        if rows:
            self._hand(rows)

    def hand_over(self) -> None:
        """The queued items go on their way now (before ``post`` uses their
        results): in the store, under ``sync``."""
        if self._pending or self._queued:
            self.write([])

    def sync(self) -> None:
        """Everything so far in the store now, whatever the run's durability
        (for a node that asks for ``durability="sync"``).

        Raises:
            StoreError: If it cannot be written.
        """
        self.check_written()
        rows = self._take_pending() if self._pending or self._queued else []
        if self.mode == "sync":
            if rows:
                self.store.append(self.run_id, rows)
            return
        with self.batch_lock:
            self._kept += self._steps()
            self._kept += rows
            self._write_batch()

    def flush(self) -> None:
        """Write what is queued (or kept) now, and wait until it is in the
        store (the run is ending).

        Raises:
            StoreError: If they cannot be written.
        """
        error, self._write_error = self._write_error, None
        if error is not None and not (self._pending or self._queued or self._kept):
            raise error
        self.sync()
