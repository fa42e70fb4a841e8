"""The checkpoint writer of a durable run: rows to the store, items by group commit.

Steps, branches and answers are written at once. Finished batch items are
queued and written together at the event loop's next turn (a group commit),
those of one batch as one row, before any other row; a sync batch writes
each item as it finishes.

How far "written" goes is the run's durability: ``sync`` (the store has
the row before the run goes on), ``async`` (a thread of the writer hands
rows to the store in order, off the run's path; a crash loses the last few)
or ``exit`` (rows are kept here and written when the run stops, however it
stops but a kill). In every mode the store holds a prefix of the run's rows,
in order, so a resume always finds a consistent run.
"""

from __future__ import annotations

import asyncio
import threading
from time import time
from typing import Any

from ..stores._base import Checkpoint, Store
from ._codec import Codec

__all__ = ["CheckpointWriter"]


class CheckpointWriter:
    """Writes one run's checkpoint rows to its store, in order."""

    def __init__(self, store: Store, run_id: str, codec: Codec, mode: str = "sync") -> None:
        self.store = store
        self.run_id = run_id
        self.codec = codec
        self.mode = mode  # the run's durability= (see _options.DURABILITY)
        self._kept: list[Checkpoint] = []  # exit: every row, until the run stops
        self._background: _Background | None = None  # async: the thread that writes
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
            self._kept += rows
        else:
            background = self._background
            if background is None:
                background = self._background = _Background(self.store, self.run_id)
            background.put(rows)

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
        if self.mode == "exit":
            rows, self._kept = self._kept + rows, []
        elif self._background is not None:
            self._background.drain()
        if rows:
            self.store.append(self.run_id, rows)

    def flush(self) -> None:
        """Write what is queued (or kept) now, and wait until it is in the
        store (the run is ending).

        Raises:
            StoreError: If they cannot be written.
        """
        error, self._write_error = self._write_error, None
        if error is not None and not (self._pending or self._queued or self._kept):
            raise error
        try:
            self.sync()
        finally:
            if self._background is not None:
                self._background.stop()
                self._background = None


class _Background:
    """The thread that writes an ``async`` run's rows: every `PERIOD` seconds
    (or once `BATCH` rows wait), all of them in one append, in the order
    they came. After a failed append it writes no more (the store keeps a
    prefix of the run); the run's next write, or its end, raises the error."""

    PERIOD = 0.05  # seconds between writes: what a crash may lose, at most
    BATCH = 1024  # rows that make it write at once

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.rows: list[Checkpoint] = []  # waiting to be written, in order
        self.writing = 0  # rows being written now
        self.failed: list[Checkpoint] = []  # what could not be written, in order
        self.error: BaseException | None = None
        self.stopping = False  # the run ends: write what is left, then stop
        self.urgent = False  # someone waits for what is put to be written
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="braidflow-writer", daemon=True)
        self.thread.start()

    def put(self, rows: list[Checkpoint]) -> None:
        if self.error is not None:
            raise self.error
        with self.changed:
            self.rows += rows
            if len(self.rows) >= self.BATCH:
                self.changed.notify_all()

    def _run(self) -> None:
        changed = self.changed
        while True:
            with changed:
                changed.wait_for(
                    lambda: self.stopping or self.urgent or len(self.rows) >= self.BATCH,
                    self.PERIOD,
                )
                rows, self.rows = self.rows, []
                self.writing = len(rows)
                stopping = self.stopping
            if rows:
                if self.error is None:
                    try:
                        self.store.append(self.run_id, rows)
                    except BaseException as error:
                        self.error = error
                        self.failed += rows
                else:
                    self.failed += rows
            with changed:
                self.writing = 0
                changed.notify_all()
                if stopping and not self.rows:
                    return

    def drain(self) -> None:
        """Wait until every row put is written (or kept as failed).

        Raises:
            StoreError: The error of a failed append, if the rows it kept
                cannot be written now either.
        """
        with self.changed:
            self.urgent = True  # write now, not at the next period
            self.changed.notify_all()
            self.changed.wait_for(lambda: not self.rows and not self.writing)
            self.urgent = False
            if self.error is None:
                return
            # Once more, in order, here: the thread takes no row while this
            # holds the lock, so none can overtake them.
            error, rows = self.error, self.failed
            try:
                self.store.append(self.run_id, rows)
            except BaseException:
                raise error from None
            self.error, self.failed = None, []

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
        self.thread.join()
