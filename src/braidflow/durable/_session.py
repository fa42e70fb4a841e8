"""Opening and closing a durable run: record it, or claim it to resume; record how it ended.

Starting, the run is recorded with its graph and initial ``shared``;
resuming, it is claimed from the store after the checks that it fits the
flow (same graph, input only for a run that waits for it). When the run
ends, its last items are written and its end is recorded: completed,
waiting for input (`Suspended` is raised), failed or interrupted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from .._budget import OverBudget
from .._errors import Drained, ResumeError, StoreError, Suspended, add_note, describe_error
from .._questions import QUESTIONS_KEY
from .._usage import Usage
from ..stores._base import Store
from ..stores._owners import this_owner
from ._asking import answer_questions, keep_questions, suspend
from ._drain import DRAIN_KEY
from ._graph import ANOTHER_FLOW, describe_graph
from ._history import (
    BUDGET_KEY,
    EVENTS_KEY,
    RENAMED_KEY,
    RESUMED_KEY,
    USAGE_KEY,
    apply_renames,
)
from ._interrupt import NO_ANSWER, Interrupted
from ._lax import expand
from ._run import DurableRun
from ._run_codec import marked_metadata, run_codec
from ._tracking import TrackingDict
from ._travel import compared_graph, migrated

__all__ = ["claim_run", "close_run", "start_run"]

_STOPPED = "stopped (Ctrl-C)"  # what a run a KeyboardInterrupt stopped is stored with


def _resume_call(run_id: str, answer: str = "") -> str:
    """How to resume ``run_id`` from where the run was started: plain code, or
    inside async code, where ``resume`` of an async flow gives an awaitable."""
    if asyncio._get_running_loop() is None:
        return f"flow.resume({run_id!r}, store=...{answer})"
    return f"await flow.resume_async({run_id!r}, store=...{answer})"


def start_run(
    store: Store,
    node: Any,
    shared: dict[Any, Any],
    run_id: str | None,
    metadata: Any,
    durability: str = "sync",
) -> tuple[DurableRun, TrackingDict]:
    """Record a new run of ``node`` on ``shared``; return its durable side and
    the tracking copy of ``shared`` it works on."""
    durable = DurableRun(store, run_id or uuid.uuid4().hex, durability)
    tracked = TrackingDict(shared)
    initial = durable.initial(tracked, node._display_name())
    metadata = marked_metadata(metadata, durable.codec.kind)  # so its readers read it as it is
    store.create_run(
        durable.run_id, node._display_name(), describe_graph(node), initial, this_owner(), metadata
    )
    return durable, tracked


def claim_run(
    store: Store,
    node: Any,
    run_id: str,
    answer: Any,
    migrate: Callable[[dict[Any, Any]], Any] | None = None,
    rename: dict[str, str] | None = None,
    durability: str = "sync",
    answers: dict[str, Any] | None = None,
    check: Callable[[TrackingDict], None] | None = None,
) -> tuple[DurableRun, TrackingDict]:
    """Claim a stored run to resume it with ``node``; return its durable side
    and ``shared`` as the finished steps left it (then ``migrate``-d, then
    ``check``-ed: a typed flow checks it against its state type).

    ``rename`` maps nodes renamed since (old name: new); it is kept with
    the run for its later resumes. ``answer`` answers the run's only open
    question; ``answers``, any of them by id.

    Raises:
        ResumeError: If the run was recorded with other names or wiring, or
            answers do not fit the run's open questions (see
            `answer_questions`). The run is then left as it was.
        StoreError: If the run's data cannot be decoded with the serializer
            it was written with (see `run_codec`); the run is left as it was.
        StateError: If ``check`` finds ``shared`` does not fit the flow's
            state type (a ``migrate`` to write); the run is left as it was.
    """
    name = node._display_name()
    graph = describe_graph(node)
    try:
        record, recorded_graph, initial, rows = store.claim(run_id, this_owner())
    except StoreError as error:
        if error.run_id == run_id and _holds_no_run(store):
            add_note(
                error,
                f"{store!r} holds no run at all: is its path right? (a store opened where "
                "there is none starts empty)",
            )
        raise
    rows = expand(rows)
    try:
        # Written on as it was written, whatever the store object's serializer.
        durable = DurableRun(
            store, run_id, durability, run_codec(store, run_id, record.metadata, initial)
        )
        renamed, keep_root, difference = compared_graph(
            recorded_graph, record.metadata, graph, rename
        )
        if difference is not None:
            raise ResumeError(
                f"run {run_id!r} was recorded with another graph: {difference}. "
                + (
                    "No node of the run is in the flow given: resume with the flow the run "
                    f"was started with (flow {record.flow!r}); if every node was renamed, "
                    "resume with rename={'old name': 'new name'} for each"
                    if difference.startswith(ANOTHER_FLOW)
                    else "A resume needs the names and wiring the run had (a node's code may "
                    "change): if a node was renamed, resume with rename={'old name': 'new "
                    "name'}; else resume with the flow as it was"
                ),
                node=name,
            )
        shared = durable.rebuild(initial, apply_renames(rows, renamed, keep_root))
        durable.renamed(renamed, keep_root)
        # Nothing is written until all is known to hold: the migration, the
        # state type, the answers (each checked before its rows are made).
        update = migrated(durable, shared, migrate, rows, node) if migrate is not None else None
        if check is not None:
            check(shared)
        if answer is not NO_ANSWER or answers is not None:
            answer_questions(durable, record, answer, answers, name)
        if update is not None:
            durable.write([update])
            durable.recorded.wrote(update)  # the latest change, if a flow's prep runs again
        durable.record_events = record.metadata.get(EVENTS_KEY) is True
        kept = record.metadata.get(USAGE_KEY)
        if isinstance(kept, dict):  # what the run spent before counts on
            durable.spent_before = Usage.from_dict(kept)
        resumed = [*record.metadata.get(RESUMED_KEY, ()), time.time()]
        # A drain asked of the run's last part is done with: this part runs on.
        store.set_metadata(
            run_id,
            {
                RESUMED_KEY: resumed,
                RENAMED_KEY: renamed or None,
                QUESTIONS_KEY: None,
                DRAIN_KEY: None,
                BUDGET_KEY: None,
                # A pickle run recorded before runs were marked (read through
                # a pickle store object) is marked now, for every reader.
                **marked_metadata({}, durable.codec.kind),
            },
        )
    except BaseException:
        # Nothing ran: the run is left as it was, to be resumed properly.
        store.finish(
            run_id,
            record.status,
            node=record.node,
            error=record.error,
            prompt=record.prompt,
            ended=record.ended,
        )
        raise
    return durable, shared


def close_run(durable: DurableRun, error: BaseException | None) -> None:
    """Write what is queued and record how the run ended; then this process
    runs the run no more (for the store's owner check), however that went:
    even if recording the end failed, the run can be resumed here once the
    store works.

    A ``KeyboardInterrupt`` (Ctrl-C) as the end is recorded ends the run
    as ``interrupted``, whatever was recorded before it, and is raised.

    Raises:
        Suspended: If the run stopped at an ``interrupt``: it now waits for input.
        Drained: If a drain stopped it.
    """
    try:
        durable.usage.ended()  # (the end writes it all)
        _record_end(durable, error)
    except KeyboardInterrupt as late:
        if late is not error:  # what was not written is done again on resume
            try:
                durable.store.finish(
                    durable.run_id, "interrupted", node=durable.where_failed(late), error=_STOPPED
                )
            except Exception:  # the store failing: released, the run resumes once it works
                pass
        raise
    finally:
        try:
            durable.drain.close()
        finally:
            release = getattr(durable.store, "release", None)  # a store that keeps owners here
            if callable(release):
                release(durable.run_id)


def _record_end(durable: DurableRun, error: BaseException | None) -> None:
    store, run_id = durable.store, durable.run_id
    if isinstance(error, Interrupted | OverBudget):  # the questions go with the rest, after it
        durable.write([durable.ask_row(question) for question in error.asked])
    try:
        durable.flush()  # items that finished last (all the run's rows, under "exit")
    except Exception:
        if error is None or isinstance(error, Interrupted):
            raise
    spend = durable.spend
    if spend is not None and spend.total.calls:
        store.set_metadata(run_id, {USAGE_KEY: spend.total.as_dict()})
    if isinstance(error, OverBudget):
        at: str = durable.where_failed(error) or error.error.node or ""
        reason = str(error.error)
        store.set_metadata(run_id, {BUDGET_KEY: True})
        # Questions other branches or items asked before the stop wait too.
        listed = keep_questions(durable, error.asked) if error.asked else ()
        store.finish(run_id, "waiting", node=at, prompt={"budget": reason})
        also = ""
        if listed:
            ids = ", ".join(repr(question.id) for question in listed)
            also = f" (and on {len(listed)} question{'s' if len(listed) > 1 else ''}: {ids})"
        raise Suspended(
            f"run {run_id!r} is waiting for a higher budget at {at!r}{also}: {reason}; "
            f"resume it with {_resume_call(run_id, ', budget=Budget(...)')}",
            run_id=run_id,
            node=at,
            prompt={"budget": reason},
            questions=listed,
            reason="budget",
        ) from error.error
    if error is None:
        store.finish(run_id, "completed")
        return
    if isinstance(error, Interrupted):
        suspend(durable, error, _resume_call(run_id, "{answer}"))
    where = durable.where_failed(error)
    if durable.drain.stopped_by(error):
        store.finish(run_id, "drained", node=where)
        raise Drained(
            f"run {run_id!r} was drained at {where!r}: it stopped at a safe point and "
            f"everything that finished is stored in {store!r}; resume it with "
            f"{_resume_call(run_id)}",
            run_id=run_id,
            node=where,
        ) from None
    status = "failed" if isinstance(error, Exception) else "interrupted"
    if isinstance(error, KeyboardInterrupt):
        said = _STOPPED
    elif isinstance(error, asyncio.CancelledError):  # what Ctrl-C is inside asyncio.run too
        said = "cancelled (Ctrl-C, or its task was cancelled)"
    else:
        said = describe_error(error, whole=True)
    store.finish(run_id, status, node=where, error=said)
    if isinstance(error, Exception):
        add_note(
            error,
            # (the command line, which says its own, leaves this note out)
            f"run {run_id!r} is stored as {status} in {store!r}; fix the cause and resume "
            f"it with {_resume_call(run_id)}",
        )


def _holds_no_run(store: Store) -> bool:
    """Whether ``store`` holds no run (a mistyped path makes such a store)."""
    try:
        return not store.runs()
    except Exception:
        return False
