"""Idempotency keys: one string for what a durable run's code is doing now.

A side effect that must not happen twice (an email, a payment, a write to
another system) can be sent with a key that the other side deduplicates
on, or recorded under it before the effect and checked after a resume. The
key names the run, the step (its place in its walk, so each visit of a
loop has its own) and the batch item, and nothing else: a retry and a
resume get the same key, every other step or item another, and a fork,
being another run, its own.
"""

from __future__ import annotations

from hashlib import sha256

from .._context import REMOTE, RUN, STEP, current_item
from .._errors import NotDurableError

__all__ = ["idempotency_key"]


def idempotency_key() -> str:
    """A key for what the calling code is doing now, in a durable run: the
    same for the same run, step and batch item across retries and resumes,
    different for every other step and item, and for a fork.

    It is ``bf-`` and 40 hex digits, which every provider's idempotency
    header takes. Call it from a node's ``prep``, ``exec`` or ``post``, or
    from code they call (in braidflow's threads too; not from code sent to
    another process by an executor).

    Raises:
        NotDurableError: Outside a durable run (one given a ``store=``): a
            run that cannot be resumed has no step to come back to; and in
            an exec an executor runs away from its run (a Ray task), which
            cannot see the run's step.
    """
    run = RUN.get()
    if run is None or run.durable is None:
        remote = REMOTE.get()
        if remote is not None:
            raise NotDurableError(
                f"braidflow.idempotency_key() was called in an exec that runs in {remote.where}, "
                "away from its run, whose step it cannot see there; read it in prep (which "
                "runs where the run does) and hand it over with the items, e.g. key = "
                "idempotency_key(); return [(f'{key}-{n}', item) for n, item in "
                "enumerate(items)]"
            )
        raise NotDurableError(
            "braidflow.idempotency_key() names a step of a durable run, one that can be "
            "resumed: run the flow with a store, e.g. flow.run(shared, store=SQLiteStore("
            "'runs.db'))"
        )
    item = current_item()
    durable = run.durable
    step = durable.first_key(STEP.get().key)  # (the same across a rename)
    where = f"{durable.run_id}\x00{step}\x00{'' if item is None else item}"
    return f"bf-{sha256(where.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"
