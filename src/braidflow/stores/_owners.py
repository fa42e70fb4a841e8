"""Owners of runs: which process runs a stored run, and whether it still does.

An owner is ``host:pid:start`` (start: the process's start time, against pid
reuse). A store marks a run with its owner while it runs; a run whose owner
no longer runs it can be resumed by another process (or this one).

Whether an owner still runs a run is decided from the surest evidence there is:

1. **This process** runs a run only while it holds it in its in-process
   record (`hold` when a durable run opens, `release` when it closes, however
   it closes), per store location. A run this process opened and that ended
   with its store failing is no longer held, so it can be resumed here once
   the store works. A child made by ``os.fork`` holds none of its parent's.
2. **Another process on this host** whose pid is gone (or now names another
   process, by its start time) is dead, at once.
3. **Otherwise** the run's *lease* decides: the owning process renews it while
   the run runs (a heartbeat) and stops when the run ends or the process
   dies, so a run whose lease expired is no longer run by anyone, on any host.
   A store that keeps no leases (``lease=None``) cannot tell for a process on
   another host, which then counts as alive.
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from typing import Any

from .._after_fork import call_in_children

__all__ = [
    "heartbeat_idle",
    "hold",
    "hold_claimed",
    "holds",
    "owner_alive",
    "process_start",
    "release",
    "this_owner",
]


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


# The runs this process runs: by store location (a database's real path, a
# MemoryStore's own name), each run's id and the store object that holds it
# (weakly: a run whose store object is gone is run by nobody).
_HELD: dict[str, dict[str, weakref.ref[object]]] = {}
_HELD_LOCK = threading.Lock()


def hold(location: str, run_id: str, holder: object) -> None:
    """Note that this process runs ``run_id`` of the store at ``location``,
    through ``holder`` (the store object)."""
    with _HELD_LOCK:
        _HELD.setdefault(location, {})[run_id] = weakref.ref(holder)


def hold_claimed(location: str, run_id: str, holder: object, owner: str) -> bool:
    """Note, from inside the transaction that claims ``run_id`` for ``owner``
    and before it commits, that this process runs it (if ``owner`` is this
    process); return whether it was noted (to `release` if the claim fails).

    Noted only after the commit, another store object of this process on
    the same database, claiming the run between the two, would find it owned
    by this process and not held here, so not running: both would run it.
    """
    if owner != this_owner():
        return False
    hold(location, run_id, holder)
    return True


def release(location: str, run_id: str, holder: object) -> None:
    """Note that this process no longer runs ``run_id`` through ``holder``
    (another store object that took the run over since keeps it)."""
    with _HELD_LOCK:
        runs = _HELD.get(location)
        if runs is None or run_id not in runs:
            return
        if runs[run_id]() in (holder, None):
            del runs[run_id]
            if not runs:
                del _HELD[location]


def _forked() -> None:
    """In a child made by ``os.fork``: the runs held were the parent's, and a
    thread that held the lock is not there; the owner is this process."""
    global _THIS_OWNER, _HELD_LOCK
    _THIS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"
    _HELD_LOCK = threading.Lock()
    _HELD.clear()


call_in_children(_forked)


def holds(location: str, run_id: str) -> bool:
    """Whether this process runs ``run_id`` of the store at ``location``."""
    with _HELD_LOCK:
        runs = _HELD.get(location)
        return runs is not None and run_id in runs and runs[run_id]() is not None


def _pid_gone(host: str, pid_text: str, started: str) -> bool:
    """Whether the owner is a process of this host that is surely gone."""
    if host != socket.gethostname():
        return False
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):
        return False  # alive, or cannot be told
    return started not in ("?", process_start(pid))


def owner_alive(
    owner: str | None,
    *,
    held: bool,
    lease: float | None = None,
    now: float = 0.0,
) -> bool:
    """Whether ``owner`` still runs a run (see the module's rules).

    Args:
        owner: The run's owner, ``host:pid:start``, or ``None``.
        held: Whether this process holds the run (`holds`); only read when
            ``owner`` is this process.
        lease: When the run's lease expires (the store's clock), or ``None``
            for a store that keeps no leases.
        now: The store's clock now.
    """
    if not owner:
        return False
    if owner == this_owner():
        return held
    host, _, rest = owner.partition(":")
    pid_text, _, started = rest.partition(":")
    if _pid_gone(host, pid_text, started):
        return False
    if lease is None:
        return True
    return lease > now


def heartbeat_idle(holder: Any) -> bool:
    """A lease holder's ``_idle`` (see `braidflow._heartbeat`): whether it
    holds no run of this process's (its ``_held``: run id to owner), or is
    closed; if so its heartbeat is forgotten, and the next run starts one."""
    me = this_owner()
    with holder._held_lock:
        if holder._closed or me not in holder._held.values():
            holder._beat = None
            return True
    return False
