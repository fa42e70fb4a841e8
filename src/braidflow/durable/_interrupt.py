"""``interrupt(prompt)``: stop a durable run to ask for input; the answer comes on resume.

A node's calls are matched to answers by the step (and item) that asks and
the order of its calls; a retried ``exec`` gets the answers its failed
attempt got.
"""

from __future__ import annotations

from typing import Any

from .._context import ATTEMPT, REMOTE, RUN, STEP, current_item
from .._errors import NotDurableError
from .._questions import Interrupted
from ..stores._base import step_path

__all__ = ["NO_ANSWER", "Interrupted", "interrupt"]

NO_ANSWER: Any = object()  # resume() without input=


def interrupt(prompt: Any) -> Any:
    """Stop the run to ask a human (or any caller) for input; return the answer.

    Call it from any phase of any node of a durable run (one given a
    ``store=``). The first time, the run stops: it is stored as ``waiting``
    with ``prompt``, and ``run``/``run_async`` raise `Suspended`. When
    the run is resumed with ``flow.resume(run_id, store=..., input=answer)``,
    the node runs again from ``prep`` and this call returns ``answer``. A node
    may ask several times: its calls are matched to answers in the order they
    are made, each answer given by its own resume; a retried ``exec`` gets
    the answers its failed attempt got. An interrupt is never retried nor
    handed to a fallback.

    In a parallel branch or a parallel batch's item, only that branch or
    item stops: the others run on to their end (or to their own questions),
    what they finish is recorded, and then the run suspends with every open
    question (`Suspended.questions`); ``resume(..., answers={id: answer})``
    answers several at once, and what finished is never run again.

    Args:
        prompt: What to ask; stored with the run (JSON, or its repr).

    Raises:
        NotDurableError: If the run has no store, so it could never be resumed
            (a `RunError`).
    """
    run = RUN.get()
    durable = run.durable if run is not None else None
    remote = REMOTE.get()
    if durable is None and remote is not None:
        raise NotDurableError(
            f"braidflow.interrupt() was called in an exec that runs in {remote.where}, away "
            "from its run, which it cannot stop there to ask; ask in prep or post (they run "
            "where the run does), or run this node without the executor"
        )
    if durable is None:
        raise NotDurableError(
            "braidflow.interrupt() needs a durable run, one that can be resumed: run the flow "
            "with a store, e.g. flow.run(shared, store=SQLiteStore('runs.db'))"
        )
    item = current_item()
    step = STEP.get().key
    key = step if item is None else f"{step}#{item}"
    call = durable.calls.get(key, 0)
    attempt = ATTEMPT.get()
    if attempt is not None:  # in exec: a retry makes its calls again, with the same answers
        seen = durable.attempts.get(key)
        if seen is None or seen[0] is not attempt.loop:  # the first call of this exec
            durable.attempts[key] = (attempt.loop, attempt.attempt, call)
        elif seen[1] != attempt.attempt:  # the first call of a retry
            call = seen[2]
            durable.attempts[key] = (attempt.loop, attempt.attempt, call)
    durable.calls[key] = call + 1
    answer = durable.answers.get(key, {}).get(call, NO_ANSWER)
    if answer is not NO_ANSWER:
        return answer
    raise Interrupted(prompt, key, call, step_path(key))
