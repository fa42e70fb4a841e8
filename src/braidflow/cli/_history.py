"""Looking into a stored run from the command line (``show``), where each run is and how
far its batch got (for ``runs`` and ``resume``), and forking a run at a step (``fork``).

All of it reads the store through `StoredRun`, which changes nothing; ``fork``
records a new run and runs it, as ``resume`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

from ._console import UsageError, print_table, read_json, say, shown_json
from ._places import progress, stored
from ._store import chosen_store, known_run, open_store, remembered_target

__all__ = ["command_fork", "command_show"]


# -- show ---------------------------------------------------------------------------------


def command_show(args: argparse.Namespace) -> int:
    from .. import ResumeError, StoreError

    store_path = chosen_store(args)
    store = open_store(store_path, create=False, serializer=args.serializer)
    known_run(store, args.run_id, store_path)
    run = stored(store, args.run_id, decoded=True)  # with its own serializer
    try:
        return _show(args, run, store_path)
    except (StoreError, ResumeError) as error:  # no such step; a step's data damaged
        raise UsageError(str(error)) from error


def _show(args: argparse.Namespace, run: Any, store_path: Any) -> int:
    if args.at is not None:
        print(shown_json(run.state(args.at)))
        return 0
    steps = run.history()
    if args.json:
        print(json.dumps(_as_json(run, steps, args.diff), indent=2, default=repr))
        return 0
    _show_record(run.record, store_path)
    if not steps:
        say("no step has finished yet")
        return 0
    if args.diff:
        _show_changes(run, steps)
    else:
        _show_table(steps)
    _show_where(run, steps)
    return 0


def _when(seconds: float | None) -> str:
    return "" if seconds is None else time.strftime("%H:%M:%S", time.localtime(seconds))


def _took(step: Any) -> str:
    if step.started is None or step.ended is None:
        return ""
    seconds = step.ended - step.started
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _show_record(record: Any, store_path: Any) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started))
    print(f"run {record.run_id} of {record.flow}: {record.status}, started {started}")
    forked = record.metadata.get("braidflow.forked_from")
    if isinstance(forked, dict):
        print(f"forked from run {forked.get('run')} after its step {forked.get('step')}")
    resumed = record.metadata.get("braidflow.resumed") or []
    if isinstance(forked, dict):
        resumed = resumed[1:]  # the first: the fork's own start
    if resumed:
        times = ", ".join(_when(at) for at in resumed)
        print(f"resumed {len(resumed)} time{'' if len(resumed) == 1 else 's'}: {times}")
    usage = record.usage
    if usage is not None:  # what its LLM calls reported
        cost = "" if usage.cost is None else f", cost {usage.cost:.4g}"
        print(
            f"used {usage.tokens:,} tokens ({usage.input_tokens:,} in, "
            f"{usage.output_tokens:,} out) in {usage.calls:,} calls{cost}"
        )
    elif record.spent != (None, None):  # recorded by hand: what can be read of it
        tokens, cost = record.spent
        said = [] if tokens is None else [f"used {tokens:,} tokens"]
        said += [] if cost is None else [f"cost {cost:.4g}"]
        print(", ".join(said))
    print()


def _show_table(steps: list[Any]) -> None:
    header = ("#", "STEP", "STATUS", "ACTION", "STARTED", "TOOK", "ITEMS", "CHANGED")
    rows = [header]
    for step in steps:
        name = step.path if step.kind == "step" else f"{step.path} ({step.kind})"
        if step.run_id != steps[-1].run_id and step.status == "finished":
            name += f" [run {step.run_id}]"
        changed = ", ".join(str(key) for key in step.changed)
        rows.append(
            (
                str(step.number),
                name,
                step.status,
                "" if step.action is None else str(step.action),
                _when(step.started),
                _took(step),
                progress(step, "{}"),
                changed if len(changed) <= 40 else changed[:37] + "...",
            )
        )
    print_table(rows)


def _show_changes(run: Any, steps: list[Any]) -> None:
    before = run.state(0)
    for step in steps:
        print(f"{step.number}  {step.path} ({step.status})")
        if step.status != "finished" or not step.changed:
            continue  # (under durability="async" or "exit", a step records no changes)
        after = run.state(step.number) if step.kind in ("step", "update") else before
        for key in step.changed:
            if step.kind not in ("step", "update"):
                print(f"    ~ {key} (in the branch's view)")
            elif key not in after:
                print(f"    - {key}")
            elif key not in before:
                print(f"    + {key}: {_short(after[key])}")
            else:
                print(f"    ~ {key}: {_short(before[key])} -> {_short(after[key])}")
        before = after


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 70 else text[:67] + "..."


def _show_where(run: Any, steps: list[Any]) -> None:
    record = run.record
    print()
    if record.status == "completed":
        took = "" if record.ended is None else f" in {record.ended - record.started:.1f} s"
        print(f"completed{took}")
        return
    step = run.here()
    if step is None:
        print(f"{record.status}")
        return
    done = progress(step, ": {} done")
    if record.status == "failed":
        print(f"failed at {step.path}{done}: {record.error}")
    elif record.status == "waiting" and record.metadata.get("braidflow.waits_for_budget"):
        print(f"waiting at {step.path} for a higher budget: {record.prompt.get('budget')}")
    elif record.status == "waiting" and len(record.questions) > 1:
        print(f"waiting on {len(record.questions)} questions (answer with --answer ID=JSON):")
        for question in record.questions:
            print(
                f"  {question.id} at {question.where}: {json.dumps(question.prompt, default=repr)}"
            )
    elif record.status == "waiting":
        ids = [question.id for question in record.questions]
        asked = f" (question {ids[0]})" if ids else ""
        print(f"waiting at {step.path} for input{asked}: {json.dumps(record.prompt, default=repr)}")
    elif record.status == "running":
        print(f"running at {step.path}{done}")
    elif record.status == "drained":
        print(f"drained at {step.path}{done} (stopped on purpose; resume it to go on)")
    else:
        print(f"interrupted at {step.path}{done} (the process that ran it is gone)")


def _as_json(run: Any, steps: list[Any], diff: bool) -> dict[str, Any]:
    record = dataclasses.asdict(run.record)
    shown = []
    before = run.state(0) if diff else None
    for step in steps:
        entry = dataclasses.asdict(step)
        entry["changed"] = [str(key) if not isinstance(key, str) else key for key in step.changed]
        if diff and step.status == "finished" and step.kind in ("step", "update") and step.changed:
            after = run.state(step.number)
            entry["changes"] = {
                str(key): after.get(key) if key in after else None for key in step.changed
            }
            before = after
        shown.append(entry)
    del before
    return {"run": record, "steps": shown}


# -- fork ---------------------------------------------------------------------------------


def command_fork(args: argparse.Namespace) -> int:
    from .. import CheckpointError, ResumeError, StoreError
    from ..durable import NO_ANSWER
    from ..durable._travel import fork_run
    from ._run_options import resume_options
    from ._running import resume_stored
    from ._target import load_target

    store_path = chosen_store(args)
    store = open_store(store_path, create=False, serializer=args.serializer)
    record = known_run(store, args.run_id, store_path)
    remembered = remembered_target(record)
    if args.target is None and remembered is None:
        raise UsageError(
            f"run {args.run_id!r} has no TARGET remembered (it was started from Python); give "
            "the flow to run the fork with: braidflow fork RUN_ID TARGET --at STEP"
        )
    update = _updates(args.set or [])
    given = resume_options(args)  # checked before TARGET's file is imported
    answering = "--input" if "input" in given else "--answer" if "answers" in given else None
    if answering is not None and (record.status != "waiting" or args.at is not None):
        # An answer is for the question the run waits on, which only a fork
        # where it waits (no --at) carries over; nothing is forked then.
        raise UsageError(
            f"{answering} answers the question run {args.run_id!r} waits on, which a fork "
            + (
                f"after step {args.at} asks again when it gets there: fork it without "
                f"{answering} (and answer the fork's question when it asks), or leave --at "
                "out to fork where the run waits"
                if record.status == "waiting"
                else f"cannot carry: the run is {record.status}; fork it without {answering}"
            )
        )
    flow = load_target(args.target) if args.target is not None else load_target(*remembered)  # type: ignore[misc]
    try:
        new = fork_run(  # answers that do not fit are refused before the fork is made
            store,
            flow,
            args.run_id,
            args.at,
            args.run_id_new,
            update,
            given.get("input", NO_ANSWER),
            given.get("answers"),
        )
    except (ResumeError, CheckpointError, StoreError) as error:
        raise UsageError(str(error)) from error
    say(
        f"forked run {args.run_id!r} after "
        f"{f'step {args.at}' if args.at is not None else 'its last step'}"
        f" as run {new!r}"
    )
    return resume_stored(args, store, store_path, new, flow, given, record.metadata)


def _updates(pairs: list[str]) -> dict[str, Any]:
    update: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"--set {pair!r}: give KEY=JSON, e.g. --set 'topic=\"owls\"'")
        update[key] = read_json(text, f"--set {key}")
    return update
