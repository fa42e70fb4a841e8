"""Owners of runs: which process runs a stored run, and whether it still lives.

An owner is ``host:pid:start`` (start: the process's start time, against pid
reuse). A store marks a run with its owner while it runs; a run whose owner
is gone can be resumed by another process.
"""

from __future__ import annotations

import os
import socket

__all__ = ["owner_alive", "process_start", "this_owner"]


def process_start(pid: int) -> str:
    """The start time of process ``pid`` as the kernel gives it, or ``"?"``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


_THIS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"


def this_owner() -> str:
    """``host:pid:start`` of this process."""
    if not _THIS_OWNER.startswith(f"{socket.gethostname()}:{os.getpid()}:"):  # forked since
        return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"
    return _THIS_OWNER


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by ``owner`` is still running. An owner on
    another host cannot be checked and counts as alive."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return started in ("?", process_start(pid))
