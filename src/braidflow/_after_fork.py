"""Objects in a child made by ``os.fork``: the child inherits their memory but
none of their threads, so what they keep of their process is made anew there.

A store object keeps connections, a heartbeat thread, locks and the runs it
runs; a limiter, its holders and waiters (threads and tasks of its process),
and a shared one also the slots it holds in the database and the thread
renewing them. In the child none of them is its own: the connections are
the parent's (a SQLite connection must not be used across a fork, a
PostgreSQL one is the parent's session), no thread runs the heartbeat, a
lock may have been held by a thread that is not there, and the runs, slots
and holders are the parent's. So every object that keeps such things
registers here, and its ``_after_fork()`` is called in every child, before
the child runs on; a module's own such state (a pool of threads, a registry
of runs, a lock) registers the function that remakes it, called first. The
thread that forks may be running a node of a run (its context variables say
which run, node, attempt, limits held); the child runs none of them, so the
engine's context variables are reset there.
"""

from __future__ import annotations

import contextvars
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["call_in_children", "remade_in_children", "reset_in_children", "set_aside"]


class _Remade(Protocol):
    def _after_fork(self) -> None:
        """In the child: let go of the parent's process, and be usable here."""


_CALLS: list[Callable[[], object]] = []
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()

# What a child inherited and must neither use nor close. Closing a SQLite
# connection rolls back what the parent had going on it, in the WAL index
# the two processes share; closing a PostgreSQL one ends the parent's
# session. Kept here, they are not collected (and closed) while the child runs.
_SET_ASIDE: list[object] = []

_RESET: list[contextvars.ContextVar[Any]] = []


def call_in_children(function: Callable[[], object]) -> None:
    """Have ``function()`` called in each child made by ``os.fork``, before
    the objects are remade: a module's own state (its locks, its registries,
    its pool of threads) made anew there."""
    _CALLS.append(function)


def remade_in_children(obj: _Remade) -> None:
    """Have ``obj._after_fork()`` called in each child made by ``os.fork``
    while ``obj`` lives (``multiprocessing``'s ``fork`` start method included)."""
    _LIVE.add(obj)


def reset_in_children(*variables: contextvars.ContextVar[Any]) -> None:
    """Have ``variables`` set back to their defaults, in the context the child
    made by ``os.fork`` goes on in: what the run there was is the parent's."""
    _RESET.extend(variables)


def set_aside(*inherited: object) -> None:
    """Keep what the child inherited unused and unclosed (``None`` is skipped)."""
    _SET_ASIDE.extend(each for each in inherited if each is not None)


def _in_child() -> None:
    for function in _CALLS:
        function()
    for obj in list(_LIVE):
        obj._after_fork()
    fresh = contextvars.Context()  # where each variable reads its default
    for variable in _RESET:
        variable.set(fresh.run(variable.get))


os.register_at_fork(after_in_child=_in_child)
