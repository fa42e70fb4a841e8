"""Going back in time: fork a stored run at a step, and change a run's ``shared``
between two steps (a fork's update, a resume's migration).

A fork is a new run that starts with the rows of the run it comes from, up
to the step chosen, and an ``update`` row with what the fork changes; it is
then resumed like any stored run. The run it comes from is only read. A
migration is an ``update`` row too, so a later resume finds ``shared`` as
the migration left it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from time import time
from typing import Any

from .._errors import ResumeError, StoreError
from .._questions import QUESTIONS_KEY, question_id
from ..stores._base import Checkpoint, Store
from ..stores._owners import this_owner
from ._asking import check_answers, chosen_answers, open_questions
from ._codec import Codec, encode_key_value
from ._graph import describe_graph, first_difference, renamed_graph, same_root
from ._history import (
    BUDGET_KEY,
    FORKED_KEY,
    RENAMED_KEY,
    RESUMED_KEY,
    USAGE_KEY,
    StoredRun,
    apply_renames,
)
from ._interrupt import NO_ANSWER
from ._recorded import Recorded
from ._run import DurableRun, answer_payload
from ._run_codec import marked_metadata
from ._tracking import TrackingDict

__all__ = [
    "compared_graph",
    "composed_renames",
    "fork_run",
    "migrated",
    "update_row",
    "values_run_uses",
]


def composed_renames(kept: Any, given: dict[str, str] | None) -> dict[str, str]:
    """The renames a run keeps, followed by those ``given`` now (old: new):
    a node renamed twice maps from its first name to its last."""
    if given is not None and (
        not isinstance(given, dict)
        or not all(isinstance(old, str) and isinstance(new, str) for old, new in given.items())
    ):
        raise ResumeError(f"rename={given!r} must map old node names to new ones (strings)")
    renamed = {str(old): str(new) for old, new in (kept or {}).items()}
    given = given or {}
    renamed = {old: given.get(new, new) for old, new in renamed.items()}
    for old, new in given.items():
        renamed.setdefault(old, new)
    return {old: new for old, new in renamed.items() if old != new}


def compared_graph(
    recorded: str, metadata: dict[str, Any], graph: str, rename: dict[str, str] | None = None
) -> tuple[dict[str, str], bool, str | None]:
    """How a flow whose graph is ``graph`` stands to a run recorded with
    ``recorded`` (its record's ``metadata`` keep its renames; ``rename``:
    those given now): the renames in all, whether the flow keeps the run's
    root name, and the first difference (``None``: it is the run's flow)."""
    renamed = composed_renames(metadata.get(RENAMED_KEY), rename)
    keep_root = same_root(recorded, graph)
    return renamed, keep_root, first_difference(renamed_graph(recorded, renamed, keep_root), graph)


def update_row(
    codec: Codec,
    before: dict[Any, Any],
    after: dict[Any, Any],
    where: Checkpoint | None,
    node: str,
    given: str,
) -> Checkpoint | None:
    """The ``update`` row that takes ``shared`` from ``before`` to ``after``,
    placed after the row ``where`` (``None``: before the first step);
    ``None`` if nothing changes. ``given`` names what made ``after``
    (``"update"`` or ``"migrate"``: see `encode_key_value`).

    Raises:
        CheckpointError: If a new value cannot be stored.
    """
    changes: list[tuple[Any, bytes | None]] = []
    for key, value in after.items():
        data = encode_key_value(codec, key, value, node, given)
        if key not in before or encode_key_value(codec, key, before[key], node, given) != data:
            changes.append((key, data))
    changes += [(key, None) for key in before if key not in after]
    if not changes:
        return None
    frame, position, name = ("", 0, "") if where is None else _place(where)
    payload = codec.pack(changes)
    return Checkpoint("update", frame, position, name, "", None, payload, None, time())


def values_run_uses(node: Any, values: dict[Any, Any]) -> dict[Any, Any]:
    """``values``, the ``shared`` a fork or a migration makes, as a run of
    ``node`` uses them: of a typed flow, checked against its state type as
    its resume checks them, and what the type makes of them (under
    ``validate=True``, a model's values are pydantic's: ``"7"`` for an
    ``int`` is ``7``, a dict for a model is the model), as a run's start
    makes them. So the ``update`` row records the values the run goes on
    with, and the next step does not seem to change them. Keys with a
    default that ``values`` lacks are not added (the resume fills them in).

    Raises:
        StateError: If ``values`` do not fit the flow's state type.
    """
    state = getattr(node, "_bf_state", None)
    if state is None:
        return values
    store = state.store_of(dict(values), node)[0]
    state.check(store, node)
    return {key: store[key] for key in values}


def _place(row: Checkpoint) -> tuple[str, int, str]:
    """Where an update after ``row`` stands: that of the step it follows."""
    return row.frame, row.position, row.node


def migrated(
    durable: DurableRun,
    shared: TrackingDict,
    migrate: Callable[[dict[Any, Any]], Any],
    rows: list[Checkpoint],
    node: Any,
) -> Checkpoint | None:
    """Run ``migrate`` on a copy of the rebuilt ``shared`` (it changes the copy,
    or returns the new dict) and make ``shared`` what it gives; return the
    row that records what it changed (``None``: nothing), for the caller to
    write once the resume is sure to go on, so a later resume finds
    ``shared`` as it left it.

    ``node`` is the flow resumed: of a typed flow, what ``migrate`` gives
    is checked and recorded as the run uses it (`values_run_uses`).

    Raises:
        ResumeError: If ``migrate`` gives something other than a dict.
        StateError: If it gives values that do not fit the flow's state type.
        CheckpointError: If it gives values that cannot be stored.
    """
    name = node._display_name()
    before = dict(dict.items(shared))
    copy = dict(before)
    result = migrate(copy)
    after = copy if result is None else result
    if not isinstance(after, dict):
        raise ResumeError(
            f"migrate= returned a {type(after).__name__}; it must change the dict it is given "
            "(and return None) or return the new dict",
            node=name,
        )
    after = values_run_uses(node, after)
    steps = [row for row in rows if row.kind == "step" or row.kind == "update"]
    row = update_row(durable.codec, before, after, steps[-1] if steps else None, name, "migrate")
    if row is None:
        return None
    dict.clear(shared)
    dict.update(shared, after)
    shared._bf_last = {key: durable.codec.encode(value) for key, value in after.items()}
    return row


def fork_run(
    store: Store,
    node: Any,
    source: str,
    at: int | None,
    run_id: str | None,
    update: dict[Any, Any] | None,
    answer: Any = NO_ANSWER,
    answers: dict[str, Any] | None = None,
) -> str:
    """Record a new run of ``node`` that starts where run ``source`` was after
    step ``at`` (its latest, for ``None``), with ``update`` applied to
    ``shared``; return its id. Nothing of ``source`` is written. ``answer``
    and ``answers`` are those the resume of the new run is to give (as
    `resume` takes them): they are only checked here, against the questions
    the new run waits on, so that a fork they do not fit is not made.

    Raises:
        ResumeError: For a step that did not finish or does not exist, a
            flow whose names or wiring differ from the run's, or answers
            that do not fit the new run's open questions (see
            `chosen_answers`).
        InvalidParameterError: For both ``answer`` and ``answers``, or
            ``answers`` that is not a non-empty dict of ids.
        CheckpointError: If ``update`` holds a value that cannot be stored.
        StoreError: For an unknown run, one whose data cannot be decoded
            with the serializer it was written with, or a new run id that
            is taken.
    """
    name = node._display_name()
    check_answers(answer, answers, node)
    if update is not None and not isinstance(update, dict):
        raise ResumeError(f"update={update!r} must be a dict of keys of shared", node=name)
    stored = StoredRun(store, source)
    through = stored.rows_through(at)
    graph = describe_graph(node)
    renamed, keep_root, difference = compared_graph(stored.graph, stored.record.metadata, graph)
    if difference is not None:
        raise ResumeError(
            f"run {source!r} was recorded with another graph: {difference}; fork it with "
            "the flow as it was (a node's code may change, not its name or wiring)",
            node=name,
        )
    rows = apply_renames(through, renamed, keep_root)
    copied = len(rows)
    merged = _branch_keys(stored.codec, rows) & update.keys() if update else set()
    if merged:
        keys = ", ".join(repr(key) for key in update or () if key in merged)
        raise ResumeError(
            f"step {at} of run {source!r} is inside parallel branches (or isolated "
            f"parameter sets) not joined yet, which changed {keys}: an update of it there "
            "cannot be told from what the branches did when they are joined; fork with "
            "update= at the step before they began or at the join's, or update other keys",
            node=name,
        )
    before = stored.state(at)
    # As its resume will check it (before the fork is made), and as the run uses it.
    forked = values_run_uses(node, {**before, **(update or {})})
    row = update_row(stored.codec, before, forked, _last_step(rows), name, "update")
    if row is not None:
        rows.append(row)
    number = at if at is not None else len(stored._rows_of)
    metadata = {
        key: value
        for key, value in stored.record.metadata.items()
        if key not in (RESUMED_KEY, RENAMED_KEY, FORKED_KEY, USAGE_KEY, BUDGET_KEY)
    }
    metadata[FORKED_KEY] = {"run": source, "step": number, "rows": copied}
    # Its rows are the source's: written as they were (and so marked, if need be).
    metadata = marked_metadata(metadata, stored.codec.kind)
    kinds = [row.kind for row in rows if row.kind != "state"]
    waiting = bool(kinds) and kinds[-1] == "ask"
    if not waiting:  # the questions it waits on were asked after that step
        metadata.pop(QUESTIONS_KEY, None)
    if answer is not NO_ANSWER or answers is not None:
        # Checked as the resume of the new run will check them, before it is made.
        asked = Recorded()
        asked.rebuild(stored.codec, stored.initial, rows)
        # (Its rows carry the nodes' names now, and it keeps no renames.)
        same = lambda key: key  # noqa: E731
        questions = open_questions(asked.asked, same, stored.record.questions) if waiting else {}
        place = "its latest step" if at is None else f"step {at}"
        run = f"a fork of run {source!r} after {place}"
        chosen = chosen_answers(
            questions,
            answer,
            answers,
            run_id=source,
            run=run,
            status=None,
            verb="fork",
            name=name,
        )
        for asked_row, value in chosen:  # each one its store can keep
            ident = question_id(asked_row.frame, asked_row.position)
            answer_payload(stored.codec, run, asked_row, ident, value)
    run_id = _created(store, node, graph, stored.initial, metadata, source, run_id)
    try:
        store.append(run_id, rows)
    finally:
        store.finish(
            run_id,
            "waiting" if waiting else "interrupted",
            node=stored.record.node if waiting else None,
            prompt=stored.record.prompt if waiting else None,
        )
    return run_id


def _branch_keys(codec: Any, rows: list[Checkpoint]) -> set[Any]:
    """The keys that the branches at work at the end of ``rows`` (those
    after its last step of a walk, not joined yet) changed so far."""
    keys: set[Any] = set()
    for row in reversed(rows):
        if row.kind == "step" or row.kind == "update":
            break
        if (row.kind == "view_step" or row.kind == "branch") and row.payload:
            keys.update(key for key, _ in codec.unpack(row.payload))
    return keys


def _last_step(rows: list[Checkpoint]) -> Checkpoint | None:
    for row in reversed(rows):
        if row.kind == "step" or row.kind == "update":
            return row
    return None


def _created(
    store: Store,
    node: Any,
    graph: str,
    initial: bytes,
    metadata: dict[str, Any],
    source: str,
    run_id: str | None,
) -> str:
    """Record the fork's run; its id: ``run_id``, else ``SOURCE-fork-N`` for
    the first N not taken."""
    name = node._display_name()
    if run_id is not None:
        store.create_run(run_id, name, graph, initial, this_owner(), metadata)
        return run_id
    for number in range(1, 1000):
        candidate = f"{source}-fork-{number}"
        try:
            store.create_run(candidate, name, graph, initial, this_owner(), metadata)
        except StoreError:
            if not _exists(store, candidate):
                raise  # not a taken id: the store failed
            continue
        return candidate
    candidate = f"{source}-fork-{uuid.uuid4().hex[:8]}"
    store.create_run(candidate, name, graph, initial, this_owner(), metadata)
    return candidate


def _exists(store: Store, run_id: str) -> bool:
    try:
        store.get(run_id)
    except StoreError:
        return False
    return True
