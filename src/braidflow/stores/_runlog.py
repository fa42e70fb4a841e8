"""A run's log: the checkpoint rows a store writes for a run, appended to a
file as they come and folded into the database in batches.

One ``write`` per append hands the rows to the operating system before the
engine goes on, so a killed process loses none; it costs a system call,
where a database commit costs ten times as much. The log is a file of
records, each a batch of rows appended at once: a header (a CRC-32 of the
body, its length, and the record's rank: how many records came before it
in the run) and the body. A fold puts the records written since the last
one into the database as one row of kind ``packed`` (the same encoding),
so its cost hardly grows with the rows. The database keeps how many
records it holds, so folding a log again after a crash adds nothing twice;
a record torn by a power cut fails its check and ends the log.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

from ._base import Checkpoint, row_path

__all__ = ["RunLog", "decode", "read_log", "unpack"]

_HEADER = struct.Struct("<IIQ")  # crc32 of the body, its length, the record's rank
_ROW = struct.Struct("<qIIIIII")  # position, then the lengths of the other fields
_NONE = 0xFFFFFFFF  # the length that stands for an action of None
# A row's times (started, ended; NaN for None) follow its header when the
# length of its kind has this bit: rows written before rows had times lack it.
_TIMED = 0x80000000
_TIMES = struct.Struct("<dd")
_ROW_SIZE, _TIMES_SIZE = _ROW.size, _TIMES.size
_NAN = float("nan")


def _encode(rows: list[Checkpoint]) -> bytes:
    parts: list[bytes] = []
    for kind, frame, position, node, node_class, action, payload, started, ended in rows:
        texts = (kind.encode(), frame.encode(), node.encode(), node_class.encode())
        said = b"" if action is None else action.encode()
        parts.append(
            _ROW.pack(
                position,
                len(texts[0]) | _TIMED,
                len(texts[1]),
                len(texts[2]),
                len(texts[3]),
                _NONE if action is None else len(said),
                len(payload),
            )
        )
        parts.append(
            _TIMES.pack(_NAN if started is None else started, _NAN if ended is None else ended)
        )
        parts += texts
        parts.append(said)
        parts.append(payload)
    return b"".join(parts)


def decode(body: bytes) -> list[Checkpoint]:
    """The rows of a record's body (what `_encode` made), in order."""
    rows: list[Checkpoint] = []
    append = rows.append
    read_row, read_times = _ROW.unpack_from, _TIMES.unpack_from
    make = tuple.__new__  # Checkpoint's fields, made directly: rows come by thousands
    at, end = 0, len(body)
    while at < end:
        position, kind_n, frame_n, node_n, class_n, action_n, payload_n = read_row(body, at)
        at += _ROW_SIZE
        started = ended = None
        if kind_n & _TIMED:
            kind_n &= ~_TIMED
            started, ended = read_times(body, at)
            at += _TIMES_SIZE
            if started != started:  # NaN: None
                started = None
            if ended != ended:
                ended = None
        kind = body[at : at + kind_n].decode()
        at += kind_n
        frame = body[at : at + frame_n].decode()
        at += frame_n
        node = body[at : at + node_n].decode()
        at += node_n
        node_class = body[at : at + class_n].decode()
        at += class_n
        action = None
        if action_n != _NONE:
            action = body[at : at + action_n].decode()
            at += action_n
        payload = body[at : at + payload_n]
        at += payload_n
        append(
            make(
                Checkpoint,
                (kind, frame, position, node, node_class, action, payload, started, ended),
            )
        )
    return rows


class RunLog:
    """The log of one run this process is writing.

    Attributes:
        path: The file (a name of its own for each owner of the run).
        rank: How many records the run has, folded or not.
        records: Those written since the last fold: (body, its number of
            rows, its last row) each.
        count: How many rows they hold.
        size: The bytes written since the last fold.
        end: How long the file is.
        folded_at: When the rows last went to the database (``time.monotonic()``).
        broken: A write failed: no record may follow.
    """

    __slots__ = ("broken", "count", "end", "fd", "folded_at", "path", "rank", "records", "size")

    def __init__(self, path: Path, rank: int) -> None:
        self.path = path
        self.rank = rank
        self.records: list[tuple[bytes, int, Checkpoint]] = []
        self.count = 0
        self.size = 0
        self.end = 0
        self.broken = False
        self.folded_at = time.monotonic()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def write(self, rows: list[Checkpoint]) -> None:
        """Append ``rows`` as one record (all or none of them will be read back).

        Raises:
            OSError: If the file cannot be written; the rows are then not
                kept. The file is cut back to where it was, if it can be.
        """
        body = _encode(rows)
        record = _HEADER.pack(zlib.crc32(body), len(body), self.rank) + body
        try:
            if os.write(self.fd, record) != len(record):
                raise OSError(f"a short write to {str(self.path)!r}: the disk may be full")
        except OSError:
            try:
                os.ftruncate(self.fd, self.end)  # no torn record left to end the log
            except OSError:
                pass
            raise
        self.end += len(record)
        self.rank += 1
        self.size += len(record)
        self.records.append((body, len(rows), rows[-1]))
        self.count += len(rows)

    def packed(self, largest: int) -> list[Checkpoint]:
        """The rows written since the last fold, as rows of kind ``packed`` of
        at most ``largest`` bytes each (the node of each: where the last of
        its rows was made); a record larger than that, as its own rows."""
        rows: list[Checkpoint] = []
        group: list[tuple[bytes, int, Checkpoint]] = []
        size = 0
        for record in self.records:
            body = record[0]
            if group and size + len(body) > largest:
                rows.append(_pack(group))
                group, size = [], 0
            if len(body) > largest:
                rows += decode(body)
                continue
            group.append(record)
            size += len(body)
        if group:
            rows.append(_pack(group))
        return rows

    def folded(self) -> None:
        """The rows are in the database now: the file can start over."""
        self.records = []
        self.count = 0
        self.size = 0
        self.folded_at = time.monotonic()
        try:
            os.ftruncate(self.fd, 0)
            self.end = 0
        except OSError:  # the records stay, and are skipped as folded when read
            pass

    def close(self, remove: bool = True) -> None:
        """Close the file, and remove it (its rows are in the database);
        ``remove=False`` leaves it for whoever resumes the run (the run's
        record names it: its rows are not all in the database)."""
        try:
            os.close(self.fd)
        except OSError:  # closed already
            pass
        if not remove:
            return
        try:
            os.unlink(self.path)
        except OSError:  # left behind, it is never read: no run names it
            pass


def _pack(records: list[tuple[bytes, int, Checkpoint]]) -> Checkpoint:
    """Records as one row of kind ``packed``: its position is how many rows it
    holds, its node where the last of them was made."""
    last = records[-1][2]
    return Checkpoint(
        "packed",
        "",
        sum(record[1] for record in records),
        row_path(last.kind, last.frame, last.node),
        "",
        None,
        b"".join(record[0] for record in records),
    )


def unpack(row: Checkpoint) -> list[Checkpoint]:
    """The rows a ``packed`` row holds; any other row, as it is."""
    return decode(row.payload) if row.kind == "packed" else [row]


def read_log(path: Path, folded: int) -> tuple[list[Checkpoint], int]:
    """The rows in the log at ``path`` not yet in the database (which holds its
    first ``folded`` records), and the number of records after them. A record
    that is torn or fails its check ends the log (a power cut hit it while it
    was written: its rows were never reported written)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], folded
    rows: list[Checkpoint] = []
    at = 0
    count = folded
    while at + _HEADER.size <= len(data):
        crc, length, rank = _HEADER.unpack_from(data, at)
        body = data[at + _HEADER.size : at + _HEADER.size + length]
        if len(body) < length or zlib.crc32(body) != crc or rank > count:
            break
        at += _HEADER.size + length
        if rank == count:  # ranks below are folded already
            rows += decode(body)
            count += 1
    return rows, count
