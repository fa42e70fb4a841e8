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
- A record is *stuck* if a request nested in it is *dead*: it can never be
  served. A request is dead if the slots that stuck records hold leave too few
  for what it waits for (every other holder could give its slots back and it
  would still be too full): its own slots, or, while it waits its turn in the
  limiter's queue, those of the heaviest request ahead of it there (it is
  served after them). Slots are units for a weighted limiter (a `Claim` holds
  its units; a plain acquisition, one): with one slot a request, "too few" is
  "none". The dead requests are the greatest fixed point of the two rules. It
  is computed when a request registers (and when a bound is lowered), the
  only events that can close a cycle (a request served or gone only shortens
  a queue and frees records), so a deadlock is refused as it forms, in the
  waiter that closes it.
- A cycle that runs through queue order (each request in it would be served,
  but waits behind a heavier one that waits for the units the cycle holds)
  is not refused: its requests go ahead of their queues instead (`block`
  returns them); the heavier requests they pass could not be served before
  them anyway.

Slots held by code that recorded nothing (a user's ``async with limiter:``,
an attempt that has ended, a thread abandoned to a timeout) count as slots
that will be given back, so only a wait that can never be served is refused.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import Any

from ._after_fork import call_in_children
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
# the attempt whose code asks), the records counting its wait, whether the head
# is its own, and whether it waits its turn in the limiter's queue (else it goes
# ahead of it). (A limiter is any object with a bound, its holders' slots and a
# queue: a `Limiter`, which imports this module; it is typed as such here
# without an import.)
Limiter = Any
Entry = tuple[Limiter, Record, list[Record], bool, bool]

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


def _forked() -> None:
    """In a child made by ``os.fork``: the requests registered were the
    parent's threads and tasks (each limiter drops them from its queue too:
    `braidflow.Limiter._after_fork`), and a thread that held the lock is not there."""
    global _lock
    _lock = threading.Lock()
    for _limiter, _head, path, _own, _queued in _blocked.values():
        for record in path:
            record[_WAITS] = None  # exposed no more: no request nested in it waits
    _blocked.clear()
    _exposed.clear()


call_in_children(_forked)


def block(
    limiter: Limiter,
    waiter: Any,
    holding: Record | None,
    taken: tuple[Limiter, ...],
    node: Any,
    index: int | None,
    queued: bool,
) -> list[tuple[Limiter, Any]]:
    """Register ``waiter``, which must wait for ``limiter`` while its context
    holds ``holding`` (and, if it is an attempt taking its node's limiters,
    ``taken`` already: limiters, or claims of weighted ones), until
    `unblock`. ``queued``: it waits its turn at the back of the limiter's
    queue (it is there already), else it goes ahead. Called under the
    limiter's lock.

    Returns:
        The registered waiters to let ahead of their queues (``waiter``, maybe)
        and their limiters: the wait closed a cycle through queue order, which
        ends once they go ahead (see `braidflow.Limiter._let_ahead`). Usually none.

    Raises:
        LimiterDeadlock: If the wait could never end; nothing is registered then.
    """
    own = node is not None or bool(taken)
    head = [taken, node, index, holding, True, None] if own else holding
    assert head is not None
    with _lock:
        path = _expose(head, limiter)
        _blocked[waiter] = (limiter, head, path, own, queued)
        dead, ahead = _deadlocked(waiter)
        if waiter not in dead:
            return ahead
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
    fail the latest of them with `LimiterDeadlock` (its failure unwinds the
    cycle), or let them ahead of their queues if that is enough."""
    victim = None
    with _lock:
        if not _blocked:
            return
        dead, ahead = _deadlocked(None)
        victim = next((waiter for waiter in reversed(_blocked) if waiter in dead), None)
        if victim is not None:
            error = _refusal(victim, dead)
            limiter = _blocked[victim][0]
    if victim is not None:
        limiter._refuse(victim, error)
    for queue, waiter in ahead:
        queue._let_ahead(waiter)


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
        for waiter, (limiter, head, path, own, queued) in list(_blocked.items()):
            for position, step in enumerate(path):
                if step is record:
                    _conceal(path[position:], limiter)
                    _blocked[waiter] = (limiter, head, path[:position], own, queued)
                    break


def _base(held: Any) -> Limiter:
    """The limiter a record holds: itself, or a weighted one's (a `Claim`'s)."""
    return getattr(held, "limiter", held)


def _bases(record: Record) -> set[Limiter]:
    return {_base(held) for held in record[_LIMITERS]}


def _slots(record: Record, limiter: Limiter) -> float:
    """The slots (units) of ``limiter`` that ``record`` holds."""
    return sum(getattr(held, "units", 1) for held in record[_LIMITERS] if _base(held) is limiter)


def _units(waiter: Any) -> float:
    """The slots a waiter asks for: 1, or its claim's units."""
    claim = waiter.claim
    return 1 if claim is None else claim.units


def _measure(limiter: Limiter, waiters: list[Any], needs: dict[Any, float]) -> None:
    """Note in ``needs`` what each of ``waiters`` (registered for ``limiter``)
    waits for: its own slots, or, while it waits its turn in the queue, as many
    as the heaviest request queued ahead of it asks (it is served after them)."""
    queued = set()
    for waiter in waiters:
        needs[waiter] = _units(waiter)
        if _blocked[waiter][4]:
            queued.add(waiter)
    if not queued or not limiter._counts_units:  # one slot each: no one ahead asks more
        return
    # A copy, made at once: the queue may be another limiter's, whose lock is
    # not held. A request that leaves it meanwhile can only make a need look
    # larger, which lets waiters ahead (see _deadlocked), never refuses one.
    heaviest = 0.0
    for other in limiter._waiters.copy():
        if other.gone or other.failure is not None:
            continue
        if other in queued and heaviest > needs[other]:
            needs[other] = heaviest
        units = _units(other)
        if units > heaviest:
            heaviest = units


def _may_die(limiter: Limiter, waiting: dict[Limiter, list[Any]], needs: dict[Any, float]) -> bool:
    """Whether a waiter of ``limiter`` could be dead: the slots its live exposed
    holders hold leave too few for what one of its registered waiters waits
    for (with one slot each: they hold every slot). Notes their ``needs``."""
    bound = limiter._max
    holders = _exposed.get(limiter)
    waiters = waiting.get(limiter)
    if bound is None or holders is None or not waiters:
        return False
    _measure(limiter, waiters, needs)
    held = sum(_slots(record, limiter) for record in holders.values() if record[_LIVE])
    return bool(held + max(needs[waiter] for waiter in waiters) > bound + 1e-9)


def _stuck(dead: set[Any]) -> dict[int, Record]:
    """The live records that ``dead`` waiters are nested in, by id."""
    return {
        id(record): record for waiter in dead for record in _blocked[waiter][2] if record[_LIVE]
    }


def _fixed_point(dead: set[Any], needs: dict[Any, float]) -> set[Any]:
    """The greatest subset of ``dead`` whose every waiter waits for more slots
    of its limiter than the records the subset's waiters are nested in leave."""
    while dead:
        held: dict[Limiter, float] = {}
        for record in _stuck(dead).values():
            for item in record[_LIMITERS]:
                limiter = _base(item)
                held[limiter] = held.get(limiter, 0) + getattr(item, "units", 1)
        keep = set()
        for waiter in dead:
            limiter = _blocked[waiter][0]
            if held.get(limiter, 0) + needs[waiter] > limiter._max + 1e-9:
                keep.add(waiter)
        if len(keep) == len(dead):
            break
        dead = keep
    return dead


def _deadlocked(asked: Any) -> tuple[set[Any], list[tuple[Limiter, Any]]]:
    """The registered waiters that can never be served (the greatest fixed
    point of "it waits for more slots than the records of dead waiters
    leave"), and the waiters to let ahead of their queues, once that is
    enough for none to be dead.

    A dead waiter that waits behind a heavier request, and that would not be
    dead if it went ahead, goes ahead: the heavier request waits for the
    units the cycle holds, so it could not be served before the cycle ends,
    and the cycle ends once its waiters go ahead. Only a cycle of waiters
    that are dead though they go ahead is returned as dead.

    With ``asked`` (a waiter just registered): only the waiters it depends on,
    none unless it is dead, found at once if it cannot be (the usual answer:
    nothing holds its limiter while waiting). Without (a bound was lowered): all.
    """
    if asked is not None:
        start = _blocked[asked][0]
        if start._max is None or start not in _exposed:
            return set(), []
    waiting: dict[Limiter, list[Any]] = {}
    for waiter, entry in _blocked.items():
        waiting.setdefault(entry[0], []).append(waiter)
    needs: dict[Any, float] = {}
    if asked is None:
        reached = [limiter for limiter in waiting if _may_die(limiter, waiting, needs)]
    else:
        # The limiters that the holders of `start` wait for, transitively, whose
        # waiters could be dead: no other can be in its cycle.
        reached = []
        todo = [start]
        seen = {start}
        while todo:
            limiter = todo.pop()
            if not _may_die(limiter, waiting, needs):
                continue
            reached.append(limiter)
            for record in _exposed[limiter].values():
                if record[_LIVE]:
                    for waited in record[_WAITS]:
                        if waited not in seen:
                            seen.add(waited)
                            todo.append(waited)
        if start not in reached:
            return set(), []
    dead = _fixed_point({waiter for limiter in reached for waiter in waiting[limiter]}, needs)
    if asked is not None and asked not in dead:
        return set(), []
    behind = [waiter for waiter in dead if needs[waiter] > _units(waiter)]
    if not behind:
        return dead, []
    for waiter in behind:
        needs[waiter] = _units(waiter)
    dead = _fixed_point(dead, needs)
    if dead:  # dead though they went ahead: not a matter of queue order
        return dead, []
    ahead = []
    for waiter in behind:
        limiter, head, path, own, _ = _blocked[waiter]
        _blocked[waiter] = (limiter, head, path, own, False)
        ahead.append((limiter, waiter))
    return set(), ahead


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
    _, head, _, own, _ = entry
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


def _refusal(waiter: Any, dead: set[Any]) -> LimiterDeadlock:
    """The error for a registered ``waiter`` among the ``dead`` ones."""
    entry = _blocked[waiter]
    asked, head, path, own, _ = entry
    stuck = _stuck(dead)
    order = sorted({_blocked[other][0] for other in dead}, key=lambda limiter: limiter._order)
    holders: list[Record] = []
    lines = []
    for limiter in order:
        records = sorted(
            (r for r in _exposed[limiter].values() if id(r) in stuck),
            key=lambda r: (_name(r) or "", -1 if r[_INDEX] is None else r[_INDEX]),
        )
        lines.append(f"  {limiter!r} is held by:")
        for record in records:
            if not any(record is known for known in holders):
                holders.append(record)
            # A dead request nested in it (the asking one first).
            inside = next(
                other
                for other in (entry, *(_blocked[other] for other in dead))
                if any(step is record for step in other[2])
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
    own_holders = [r for r in _exposed[asked].values() if id(r) in stuck]
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
