"""Shared test helpers."""

import socket
import subprocess
import sys


def dead_owner():
    """The owner string (as stores keep it) of a process that has ended."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"{socket.gethostname()}:{child.stdout.strip()}:?"


class Gauge:
    """Counts work in flight exactly (no clock): call enter() and leave() around it."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self):
        self.now -= 1


def checkpoint_row(position, kind="step"):
    """A checkpoint row for store tests: its fields tell it apart by position
    (an odd one has no action and no start time)."""
    from braidflow.stores import Checkpoint

    return Checkpoint(
        kind,
        "0:flow",
        position,
        f"node{position}",
        "Node",
        None if position % 2 else '"next"',
        f"payload {position}".encode(),
        None if position % 2 else 1_800_000_000.25 + position,
        1_800_000_000.5 + position,
    )
