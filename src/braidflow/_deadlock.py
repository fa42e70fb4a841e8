"""Hold-and-wait deadlocks among limiters: found when they form, and refused.

An exec attempt holds its node's limiters while its ``exec`` runs, and code
nested in that ``exec`` (a sub-flow, a parallel batch, ``async with``) may ask
a limiter for a slot meanwhile. When every slot that could serve the request
is held by attempts that are themselves waiting, through their nested code,
the wait can never end: this module sees that and refuses it.

- The engine records what each attempt holds with `hold` and `unhold`: a
  *holding record* in `HELD` (the limiters, the node, the item, and the record
  of the attempt it runs inside), which nested code inherits with its context.
- A request that must wait while its context holds slots (hold and wait: the
  only path that pays for any of this) registers until it is served,
  cancelled or refused. The records it runs inside are *exposed*: each counts
  the limiters that requests nested in it wait for.
- A record is *stuck* if a request nested in it waits for a dead limiter; a
  limiter is *dead* if the slots that stuck records hold leave too few for
  the smallest request waiting for it (every other holder could give its
  slots back and it would still be too full). Slots are units for a weighted
  limiter (a `Claim` holds its units; a plain acquisition, one): with one
  slot a request, "too few" is "none". The dead limiters are the greatest
  fixed point of the two rules. It is computed when a request registers (and
  when a bound is lowered), the only events that can close a cycle, so a
  deadlock is refused as it forms, in the waiter that closes it.

Slots held by code that recorded nothing (a user's ``async with limiter:``,
an attempt that has ended, a thread abandoned to a timeout) count as slots
that will be given back, so only a wait that can never be served is refused.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

from ._context import HELD
from ._errors import LimiterDeadlock

__all__ = ["block", "hold", "holds", "refuse_dead_waits", "unblock", "unhold"]

# A holding record is a list, the cheapest mutable record to make, once per
# attempt: [limiters held, node, item index, parent record, live, waits]. A
# weighted limiter is held as the attempt's `Claim` of it (its ``limiter``
# and its ``units``).
# ``waits`` (None until a request nested in it registers) counts, per limiter,
# the registered requests nested in the record that wait for it.
_LIMITERS, _NODE, _INDEX, _PARENT, _LIVE, _WAITS = range(6)
Record = list[Any]
# A registered request: the limiter it waits for, its head record (its own, or
# the attempt whose code asks), the records counting its wait, whether the head is its own.
# (A limiter is any object with a bound and its holders' slots: a `Limiter`,
# which imports this module; it is typed as such here without an import.)
Limiter = Any
Entry = tuple[Limiter, Record, list[Record], bool]

_get = HELD.get
_set = HELD.set
_reset = HELD.reset


def hold(limiters: tuple[Limiter, ...], node: Any, index: int | None) -> Token[Any]:
    """Record that the running attempt of ``node`` (on item ``index``) holds a
    slot of each of ``limiters``, until `unhold`.

    Call it once the limiters are all taken and before the attempt's code runs:
    that code, and everything nested in it, sees the record. Returns the token
    to pass to `unhold`.
    """
    return _set([limiters, node, index, _get(), True, None])


def holds(limiter: Limiter, record: Record | None = None) -> bool:
    """Whether an attempt this code runs inside holds a slot of ``limiter``
    (``record``: the innermost attempt's holding record, if known already)."""
    if record is None:
        record = _get()
    while record is not None:
        if record[_LIVE] and any(_base(held) is limiter for held in record[_LIMITERS]):
            return True
        record = record[_PARENT]
    return False


def unhold(token: Token[Any]) -> None:
    """End the record `hold` made (call it before the limiters are released),
    in the context that made it: its slots no longer count as held by it."""
    record: Record = _get()  # type: ignore[assignment]  # hold() set it here
    record[_LIVE] = False
    if record[_WAITS] is not None:  # requests nested in it still wait: they outlive it
        _ended(record)
    _reset(token)


# -- the registry of requests waiting while they hold (under _lock) ---------------

# Lock order: a limiter's lock, then this one; never two limiters' locks at once.
_lock = threading.Lock()
# waiter -> its request
_blocked: dict[Any, Entry] = {}
# limiter -> the exposed records that hold a slot of it, by id
_exposed: dict[Limiter, dict[int, Record]] = {}


def block(
    limiter: Limiter,
    waiter: Any,
    holding: Record | None,
    taken: tuple[Limiter, ...],
    node: Any,
    index: int | None,
) -> None:
    """Register ``waiter``, which must wait for ``limiter`` while its context
    holds ``holding`` (and, if it is an attempt taking its node's limiters,
    ``taken`` already: limiters, or claims of weighted ones), until
    `unblock`. Called under the limiter's lock.

    Raises:
        LimiterDeadlock: If the wait could never end; nothing is registered then.
    """
    own = node is not None or bool(taken)
    head = [taken, node, index, holding, True, None] if own else holding
    assert head is not None
    with _lock:
        path = _expose(head, limiter)
        _blocked[waiter] = (limiter, head, path, own)
        dead = _dead(limiter)
        if limiter not in dead:
            return
        try:
            error = _refusal(waiter, dead)
        finally:
            del _blocked[waiter]
            _conceal(path, limiter)
    raise error


def unblock(waiter: Any) -> None:
    """Forget a waiter `block` registered: it was served, cancelled or failed.
    Called under the limiter's lock."""
    with _lock:
        entry = _blocked.pop(waiter, None)
        if entry is not None:
            _conceal(entry[2], entry[0])


def refuse_dead_waits() -> None:
    """After a bound was lowered: if registered waiters can now never be served,
    fail the latest of them with `LimiterDeadlock` (its failure unwinds the cycle)."""
    with _lock:
        if not _blocked:
            return
        dead = _dead(None)
        victim = next(
            (waiter for waiter, entry in reversed(_blocked.items()) if entry[0] in dead), None
        )
        if victim is None:
            return
        error = _refusal(victim, dead)
        limiter = _blocked[victim][0]
    limiter._refuse(victim, error)


def _expose(head: Record, limiter: Limiter) -> list[Record]:
    """Count a wait for ``limiter`` in ``head`` and the records it runs inside,
    up to the first that has ended; return those records."""
    path = []
    record: Record | None = head
    while record is not None:
        waits = record[_WAITS]
        if waits is None:
            waits = record[_WAITS] = {}
            # Written before _LIVE is read: an `unhold` racing with this sees it.
            if not record[_LIVE]:
                record[_WAITS] = None
                break
            for held in _bases(record):
                _exposed.setdefault(held, {})[id(record)] = record
        elif not record[_LIVE]:
            break
        waits[limiter] = waits.get(limiter, 0) + 1
        path.append(record)
        record = record[_PARENT]
    return path


def _conceal(path: list[Record], limiter: Limiter) -> None:
    """Undo `_expose` for ``path``."""
    for record in path:
        waits = record[_WAITS]
        count = waits[limiter] - 1
        if count:
            waits[limiter] = count
            continue
        del waits[limiter]
        if not waits:
            record[_WAITS] = None
            for held in _bases(record):
                holders = _exposed[held]
                del holders[id(record)]
                if not holders:
                    del _exposed[held]


def _ended(record: Record) -> None:
    """An attempt ended while requests nested in it are still registered (code
    it started and did not wait for): they no longer keep it, or the attempts
    it ran inside, from giving slots back."""
    with _lock:
        for waiter, (limiter, head, path, own) in list(_blocked.items()):
            for position, step in enumerate(path):
                if step is record:
                    _conceal(path[position:], limiter)
                    _blocked[waiter] = (limiter, head, path[:position], own)
                    break


def _stuck(record: Record, dead: set[Limiter]) -> bool:
    """Whether a live exposed record has a request nested in it waiting for a dead limiter."""
    return bool(record[_LIVE]) and not record[_WAITS].keys().isdisjoint(dead)


def _base(held: Any) -> Limiter:
    """The limiter a record holds: itself, or a weighted one's (a `Claim`'s)."""
    return getattr(held, "limiter", held)


def _bases(record: Record) -> set[Limiter]:
    return {_base(held) for held in record[_LIMITERS]}


def _slots(record: Record, limiter: Limiter) -> float:
    """The slots (units) of ``limiter`` that ``record`` holds."""
    return sum(getattr(held, "units", 1) for held in record[_LIMITERS] if _base(held) is limiter)


def _needs() -> dict[Limiter, float]:
    """The smallest request registered for each limiter: 1 slot, or a claim's units."""
    needs: dict[Limiter, float] = {}
    for waiter, entry in _blocked.items():
        claim = waiter.claim
        units = 1 if claim is None else claim.units
        limiter = entry[0]
        if units < needs.get(limiter, units + 1):
            needs[limiter] = units
    return needs


def _too_full(limiter: Limiter, records: Any, needs: dict[Limiter, float]) -> bool:
    """Whether what ``records`` hold of ``limiter`` leaves too few slots for
    the smallest request for it (with one slot each: they hold every slot)."""
    bound = limiter._max
    if bound is None:
        return False
    held = sum(_slots(record, limiter) for record in records)
    return bool(held + needs.get(limiter, 1) > bound + 1e-9)


def _full(limiter: Limiter, holders: dict[int, Record], needs: dict[Limiter, float]) -> bool:
    """Whether the live records among ``holders`` leave too few slots of ``limiter``."""
    return _too_full(limiter, (r for r in holders.values() if r[_LIVE]), needs)


def _dead(asked: Limiter | None) -> set[Limiter]:
    """The dead limiters: the greatest fixed point of "its bound is reached by
    slots of records stuck on dead limiters". With ``asked``, only those it
    depends on, and at once nothing if it cannot be dead (the usual answer,
    found in time linear in its exposed holders)."""
    needs = _needs()
    if asked is None:
        dead = {limiter for limiter, holders in _exposed.items() if _full(limiter, holders, needs)}
    else:
        # The limiters that the holders of `asked` wait for, transitively, that
        # stuck holders alone could fill: no other can be in its cycle.
        dead = set()
        reached = [asked]
        seen = {asked}
        while reached:
            limiter = reached.pop()
            holders = _exposed.get(limiter)
            if holders is None or not _full(limiter, holders, needs):
                continue
            dead.add(limiter)
            for record in holders.values():
                if record[_LIVE]:
                    for waited in record[_WAITS]:
                        if waited not in seen:
                            seen.add(waited)
                            reached.append(waited)
        if asked not in dead:
            return set()
    while dead:
        keep = set()
        for limiter in dead:
            stuck = (r for r in _exposed[limiter].values() if _stuck(r, dead))
            if _too_full(limiter, stuck, needs):
                keep.add(limiter)
        if keep == dead:
            break
        dead = keep
    return dead


# -- the error ----------------------------------------------------------------------


def _where(record: Record) -> str:
    """``node 'Items' item 0``: an attempt, by its node and item."""
    node = record[_NODE]
    text = node._describe() if node is not None else "an attempt"
    if record[_INDEX] is not None:
        text += f" item {record[_INDEX]}"
    return text


def _label(limiter: Limiter) -> str:
    return repr(limiter.name) if limiter.name else repr(limiter)


def _waiting(entry: Entry) -> Record | None:
    """The record naming who waits: the request's own (an attempt taking its
    node's limiters), else the innermost attempt whose code asks."""
    _, head, _, own = entry
    if own and head[_NODE] is not None:
        return head
    return head[_PARENT] if own else head


def _who(entry: Entry) -> str:
    """Who waits, for a registered request: a node, or the code of an attempt."""
    record = _waiting(entry)
    if record is None:
        return "code"
    if entry[3] and record is entry[1]:
        return _where(record)
    return f"code in the exec of {_where(record)}"


def _refusal(waiter: Any, dead: set[Limiter]) -> LimiterDeadlock:
    """The error for a registered ``waiter`` whose limiter is dead."""
    entry = _blocked[waiter]
    asked, head, path, own = entry
    order = sorted(dead, key=lambda limiter: limiter._order)
    holders: list[Record] = []
    lines = []
    for limiter in order:
        stuck = sorted(
            (r for r in _exposed[limiter].values() if _stuck(r, dead)),
            key=lambda r: (_name(r) or "", -1 if r[_INDEX] is None else r[_INDEX]),
        )
        lines.append(f"  {limiter!r} is held by:")
        for record in stuck:
            if not any(record is known for known in holders):
                holders.append(record)
            # A request nested in it that waits for a dead limiter (the asking one first).
            inside = next(
                other
                for other in (entry, *_blocked.values())
                if other[0] in dead and any(step is record for step in other[2])
            )
            if inside[1] is record:
                lines.append(f"    {_where(record)}, which waits for {_label(inside[0])}")
            else:
                lines.append(
                    f"    {_where(record)}, in which {_who(inside)} waits for {_label(inside[0])}"
                )
    who = _who(entry)
    outer = head[_PARENT] if own else None
    if own and outer is not None:
        who += f" inside {_where(outer)}"
    own_holders = [r for r in _exposed[asked].values() if _stuck(r, dead)]
    if order == [asked] and all(any(r is step for step in path) for r in own_holders):
        claim = waiter.claim
        if claim is None:
            asks, held = "a slot", f"all {asked._max} of its slots"
        else:  # a weighted limiter: units
            taken = sum(_slots(record, asked) for record in own_holders)
            asks, held = f"{claim.units:g} units", f"{taken:g} of its {asked._max} units"
        message = (
            f"{asked!r} is asked for {asks} by {who}, but the attempts it runs inside hold "
            f"{held}: it would wait for itself forever; do not ask for it again inside "
            "(give it to the outer or the inner node only), or raise max_concurrent"
        )
    else:
        names = ", ".join(_label(limiter) for limiter in order)
        message = (
            f"{who} would wait forever for a slot of {asked!r}: every slot that could "
            "serve it is held by an attempt whose nested code waits for a slot too "
            "(a deadlock of nested limiter holders)\n"
            + "\n".join(lines)
            + "\nEach holder keeps its slots until its exec returns, and its exec waits "
            f"for slots that only the others could give back. Raise max_concurrent of {names} "
            "above the number of attempts that hold a slot while code nested in them asks "
            "for one (or bound the outer batch's max_concurrency below it), or give each "
            "limiter to the outer or the inner node only."
        )
    waiting = _waiting(entry)
    return LimiterDeadlock(
        message,
        node=_name(waiting),
        item_index=waiting[_INDEX] if waiting is not None else None,
        limiter=asked,
        limiters=tuple(order),
        holders=tuple((_name(record), record[_INDEX]) for record in holders),
    )


def _name(record: Record | None) -> str | None:
    node = record[_NODE] if record is not None else None
    return node._display_name() if node is not None else None
