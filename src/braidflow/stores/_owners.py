"""Owners of runs: which process runs a stored run, and whether it still does.

An owner is ``host:pid:start`` (start: the process's start time, against pid
reuse). On Linux the host is ``name@place``: the place tells apart what a
host name does not, the machine's boot and the process's PID and time
namespaces (containers sharing a node's name each count their own pids). A
store marks a run with its owner while it runs; a run whose owner no longer
runs it can be resumed by another process (or this one).

Whether an owner still runs a run is decided from the surest evidence there is:

1. **This process** runs a run only while it holds it in its in-process
   record (`hold` when a durable run opens, `release` when it closes, however
   it closes), per store location. A run this process opened and that ended
   with its store failing is no longer held, so it can be resumed here once
   the store works. A child made by ``os.fork`` holds none of its parent's.
2. **Another process on this host** (the same host name and place) whose pid
   is gone (or now names another process, by its start time) is dead, at
   once. Only there does its pid name it: an owner of another place, or of no
   place (written before owners had one), or any owner when this process's
   place cannot be read, is left to rule 3.
3. **Otherwise** the run's *lease* decides: the owning process renews it while
   the run runs (a heartbeat) and stops when the run ends or the process
   dies, so a run whose lease expired is no longer run by anyone, on any host.
   A store that keeps no leases (``lease=None``) cannot tell for a process on
   another host, which then counts as alive.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
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
    "this_host",
    "this_owner",
]


def process_start(pid: int) -> str:
    """The start time of process ``pid`` as the kernel gives it, or ``"?"``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def _this_place() -> str | None:
    """Where this process's pids and start times mean what they say: on Linux
    a digest of the machine's boot id and the process's PID and time
    namespaces, ``None`` if they cannot be read (or ``/proc`` is another
    namespace's); elsewhere ``""`` (no namespaces: the host name tells)."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            parts = [boot.read().strip()]
        if os.readlink("/proc/self") != str(os.getpid()):
            return None
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
        try:  # a kernel before 5.6 has no time namespaces
            parts.append(str(os.stat("/proc/self/ns/time").st_ino))
        except FileNotFoundError:
            pass
    except (OSError, ValueError):
        return None
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


_PLACE = _this_place()


def this_host() -> str:
    """This host as owners name it: ``name@place`` (``name@?`` if its place
    cannot be read), or the host name alone where there are no namespaces."""
    if _PLACE == "":
        return socket.gethostname()
    return f"{socket.gethostname()}@{_PLACE or '?'}"


_THIS_OWNER = f"{this_host()}:{os.getpid()}:{process_start(os.getpid())}"


def this_owner() -> str:
    """``host:pid:start`` of this process."""
    host = this_host()
    if not _THIS_OWNER.startswith(f"{host}:{os.getpid()}:"):  # forked since
        return f"{host}:{os.getpid()}:{process_start(os.getpid())}"
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
    thread that held the lock is not there; the owner is this process (in
    the namespace it was forked into)."""
    global _PLACE, _THIS_OWNER, _HELD_LOCK
    _PLACE = _this_place()
    _THIS_OWNER = f"{this_host()}:{os.getpid()}:{process_start(os.getpid())}"
    _HELD_LOCK = threading.Lock()
    _HELD.clear()


call_in_children(_forked)


def holds(location: str, run_id: str) -> bool:
    """Whether this process runs ``run_id`` of the store at ``location``."""
    with _HELD_LOCK:
        runs = _HELD.get(location)
        return runs is not None and run_id in runs and runs[run_id]() is not None


def _pid_gone(host: str, pid_text: str, started: str) -> bool:
    """Whether the owner is a process of this host (and place) that is surely gone."""
    if _PLACE is None or host != this_host():
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
