"""The commands that run nothing and show: a flow's graph (``graph``), the runs in a
store (``runs``) and one stored run drawn as an HTML timeline (``timeline``).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from ._console import UsageError, print_table, say
from ._places import place_of, stored
from ._store import chosen_store, known_run, open_store
from ._target import load_target

__all__ = ["command_graph", "command_runs", "command_timeline"]


def command_graph(args: argparse.Namespace) -> int:
    flow = load_target(args.target)
    observed = None
    if args.run is not None:  # the keys each step of that run changed join the table
        from .. import StoreError
        from ..durable._graph import describe_graph
        from ..durable._travel import compared_graph

        store_path = chosen_store(args)
        store = open_store(store_path, create=False, serializer=args.serializer)
        known_run(store, args.run, store_path)
        run = stored(store, args.run, decoded=True)  # what its steps changed is decoded
        _, _, difference = compared_graph(run.graph, run.record.metadata, describe_graph(flow))
        if difference is not None:  # its steps would be read as another flow's
            raise UsageError(
                f"run {args.run!r} was recorded with another graph: {difference}; give the "
                f"TARGET it was made with, or a run of {args.target}"
            )
        try:
            observed = run.history()
        except StoreError as error:  # a step's data damaged
            raise UsageError(str(error)) from error
    if args.format == "markdown":
        from ..viz import to_markdown

        print(to_markdown(flow, observed), end="")
    else:
        print(flow.to_mermaid(observed=observed))
    return 0


def command_runs(args: argparse.Namespace) -> int:
    store_path = chosen_store(args)
    store = open_store(store_path, create=False, serializer=args.serializer)
    records = store.runs(status=args.status)
    if not records:
        say(f"no {args.status + ' ' if args.status else ''}runs in {store_path}")
        return 0
    rows: list[tuple[str, ...]] = [
        ("RUN ID", "STATUS", "FLOW", "STARTED", "ENDED", "AT", "ERROR OR PROMPT")
    ]
    spent = any(record.spent != (None, None) for record in records)
    if spent:  # what the runs' LLM calls used, where any reported it
        rows[0] = (*rows[0][:6], "TOKENS", "COST", rows[0][6])
    for record in records:
        at = record.node or ""
        if at.startswith(f"{record.flow}/"):  # inside the run's flow, as `show` says it
            at = at[len(record.flow) + 1 :]
        if record.status != "completed":  # where it is, and how far its batch got
            at = place_of(stored(store, record.run_id)) or at
        info = record.error or _asked(record)
        row: tuple[str, ...] = (
            record.run_id,
            record.status,
            record.flow,
            _when(record.started),
            "" if record.ended is None else _when(record.ended),
            at,
        )
        if spent:
            used, paid = record.spent
            tokens = "" if used is None else f"{used:,}"
            cost = "" if paid is None else f"{paid:.4g}"
            row = (*row, tokens, cost)
        rows.append((*row, info if len(info) <= 60 else info[:57] + "..."))
    print_table(rows)
    return 0


def _asked(record: Any) -> str:
    """What a waiting run asks: its prompt, or its questions' when it waits on several."""
    questions = record.questions
    if len(questions) > 1:
        prompts = "; ".join(json.dumps(question.prompt, default=repr) for question in questions)
        return f"{len(questions)} questions: {prompts}"
    return "" if record.prompt is None else json.dumps(record.prompt)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _default_page(run_id: str) -> str:
    """``RUN_ID.html`` in the current directory, the id made a safe file name."""
    name = re.sub(r"[^\w.-]+", "_", run_id).strip("._-") or "run"
    return f"{name}.html"


def command_timeline(args: argparse.Namespace) -> int:
    from .. import recorded_events
    from ..tracing import Timeline

    store_path = chosen_store(args)
    store = open_store(store_path, create=False, serializer=args.serializer)
    known_run(store, args.run_id, store_path)
    events = recorded_events(store, args.run_id)
    if not events:
        raise UsageError(
            f"run {args.run_id!r} has no recorded events: runs started or resumed by this "
            "command keep them, as do runs given record_events=True"
        )
    output = args.output or _default_page(args.run_id)
    elsewhere = "" if args.output else "; -o FILE.html writes it elsewhere"
    try:
        page = Timeline(output)
        page.write(events)
    except ValueError as error:  # a path that cannot be written; events with no start
        raise UsageError(f"{error}{elsewhere}") from error
    except OSError as error:
        raise UsageError(f"cannot write {output!r} ({error.strerror}){elsewhere}") from error
    say(f"wrote {output}")
    _say_what_was_not_recorded(args.run_id, events, store.get(args.run_id))
    return 0


# The statuses a run can be stored with after a part that ended so.
_STATUSES_AFTER = {
    "completed": ("completed",),
    "failed": ("failed",),
    "waiting": ("waiting",),
    "cancelled": ("interrupted", "failed"),
    "drained": ("drained",),
    "interrupted": ("running", "interrupted"),  # its process died, or is still running
}
_ENDED = {
    "completed": "completed",
    "failed": "failed",
    "waiting": "stopped to wait for input",
    "cancelled": "was cancelled",
    "drained": "was drained",
    "interrupted": "has no end recorded",
}


def _say_what_was_not_recorded(run_id: str, events: list[Any], record: Any) -> None:
    """Say so if parts of the run were not recorded: one before its first
    recorded part (started from Python without ``record_events=True``, then
    resumed with it), or after its last (resumed with ``record_events=False``);
    they are not drawn."""
    from ..durable._history import RESUMED_KEY
    from ..tracing._timeline import last_part_ended

    status = record.status
    parts = 1 + len(record.metadata.get(RESUMED_KEY, ()))
    drawn = sum(1 for event in events if event.kind == "run_start")
    ended = last_part_ended(events)
    if status in _STATUSES_AFTER[ended] and drawn < parts:  # parts before those recorded
        say(
            f"note: run {run_id!r} ran in {parts} parts, and its recorded events hold "
            f"{drawn}: it was started (or resumed) without record_events=True before the "
            "parts recorded, and the page draws only what was recorded"
        )
    if status not in _STATUSES_AFTER[ended]:
        say(
            f"note: run {run_id!r} is {status} now, but its recorded events end with a part "
            f"that {_ENDED[ended]}: it went on without recording its events (resumed "
            "with record_events=False), and the page draws only what was recorded"
        )
