"""The store the command opens, and what it keeps in a run's metadata to resume it:
its TARGET, where it started, and the command line that resumes it.

The command keeps them through the store's public API, under the keys
`TARGET_KEY` and `DIRECTORY_KEY`. Every command line it suggests is built
from what is true of the run (`resume_command`), quoted for a shell, and
works as printed once its placeholders (``JSON``, ``path/to/file.py:name``)
are filled in; tests/test_cli.py follows each one. A store's URL is shown with
its password as the placeholder ``PASSWORD`` (see ``_address``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..durable._run_codec import SERIALIZER_KEY
from ._address import StoreAddress
from ._console import UsageError, suggested
from ._target import is_path

__all__ = [
    "DEFAULT_STORE",
    "DIRECTORY_KEY",
    "PLACEHOLDER_TARGET",
    "RESUMABLE",
    "TARGET_KEY",
    "chosen_store",
    "close_stores",
    "known_run",
    "open_store",
    "refuse_another_graph",
    "remember_target",
    "remembered_target",
    "resume_command",
    "stored_run",
    "target_metadata",
    "unread_resume_command",
]

DEFAULT_STORE = "braidflow.db"
# The keys of a run's metadata where the command keeps what it needs to resume it.
TARGET_KEY = "braidflow.target"  # TARGET, a file's path made absolute
DIRECTORY_KEY = "braidflow.directory"  # where the run started; a module TARGET is found there
RESUMABLE = ("failed", "interrupted", "waiting", "drained")
PLACEHOLDER_TARGET = "path/to/file.py:name"
_OPENED: list[Any] = []  # the stores `open_store` opened, for `close_stores`


def chosen_store(args: argparse.Namespace) -> StoreAddress:
    """Where the store is: ``--store``, else ``$BRAIDFLOW_STORE``, else
    `DEFAULT_STORE`; a SQLite file's path or a ``postgresql://`` URL."""
    return StoreAddress(args.store or os.environ.get("BRAIDFLOW_STORE") or DEFAULT_STORE)


def open_store(address: StoreAddress, *, create: bool, serializer: str | None = None) -> Any:
    """The store at ``address``; a file that is not there (or is empty) is made
    only if ``create``; the runs it starts are written with ``serializer``
    (see `StoreAddress.open`). `close_stores` closes it when the command ends."""
    store = address.open(create=create, serializer=serializer or "json")
    _OPENED.append(store)
    return store


def close_stores() -> None:
    """Close the stores the command opened, once it is done with them (its
    run ended, its report made): a SQLite file's write-ahead log
    (``x.db-wal``) is then folded into the file, which alone holds the runs,
    to be copied or moved as one file."""
    while _OPENED:
        store = _OPENED.pop()
        try:
            store.close()
        except Exception:
            # A store failing as it closes (a full disk) keeps what is written
            # in its log, which SQLite reads on next open; the command's own
            # outcome, said already, stands.
            pass


def target_metadata(target: str) -> dict[str, str]:
    """What the command keeps in a run's metadata to resume it: TARGET (a
    file's path made absolute) and the directory it ran from."""
    where, _, name = target.rpartition(":")
    if is_path(where):
        target = f"{Path(where).resolve()}:{name}"
    return {TARGET_KEY: target, DIRECTORY_KEY: os.getcwd()}


def remembered_target(record: Any) -> tuple[str, str | None] | None:
    """The TARGET (and directory) a run's metadata holds, or ``None``."""
    target = record.metadata.get(TARGET_KEY)
    if not isinstance(target, str):
        return None
    directory = record.metadata.get(DIRECTORY_KEY)
    return target, directory if isinstance(directory, str) else None


def remember_target(store: Any, run_id: str, target: str) -> None:
    """Keep the TARGET a resume was given, for the next resume."""
    from .. import StoreError

    try:
        store.set_metadata(run_id, target_metadata(target))
    except StoreError:
        pass  # a convenience: a hint printed later names TARGET itself then


def stored_run(store: Any, run_id: str) -> Any:
    """The store's record of the run, or ``None`` if it has no such run."""
    from .. import StoreError

    try:
        return store.get(run_id)
    except StoreError:
        return None


def known_run(store: Any, run_id: str, address: StoreAddress) -> Any:
    """The store's record of the run; bad input if the store has no such run."""
    record = stored_run(store, run_id)
    if record is None:
        listing = suggested("runs", options=[("--store", str(address))])
        raise UsageError(f"no run {run_id!r} in {str(address)!r} ({listing} lists them)")
    return record


def pickle_option(record: Any) -> list[tuple[str, str]]:
    """``--serializer pickle`` for a run stored with pickle (only so may it
    be read: see docs/cli.md), nothing for another."""
    return _pickle_option(record.metadata)


def _pickle_option(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    if metadata.get(SERIALIZER_KEY) == "pickle":
        return [("--serializer", "pickle")]
    return []


def resume_command(record: Any, address: StoreAddress, target: str | None = None) -> str:
    """The command line that resumes a stored run: with its TARGET unless the
    run remembers it (``target``, else a placeholder to fill in), and with
    ``--input`` for a run waiting for input (``--answer ID=JSON`` for each
    question of one that waits on several, ``--budget-tokens`` for one
    waiting for a higher budget)."""
    options: list[tuple[str, str]] = []
    if record.status == "waiting" and record.metadata.get("braidflow.waits_for_budget"):
        options.append(("--budget-tokens", "N"))
    elif record.status == "waiting":
        questions = record.questions
        if len(questions) > 1:
            options += [("--answer", f"{question.id}=JSON") for question in questions]
        else:
            options.append(("--input", "JSON"))
    return _resume_line(record.run_id, record.metadata, address, target, options)


def unread_resume_command(
    run_id: str, metadata: dict[str, Any], address: StoreAddress, target: str | None = None
) -> str:
    """The command line that resumes a run whose record cannot be read now
    (its store failed), made as `resume_command` makes it from ``metadata``,
    the run's as last known (what it started with, or its record read before
    it resumed). It answers nothing: a run that waits asks again."""
    return _resume_line(run_id, metadata, address, target, [])


def _resume_line(
    run_id: str,
    metadata: dict[str, Any],
    address: StoreAddress,
    target: str | None,
    options: list[tuple[str, str]],
) -> str:
    arguments = [run_id]
    if not isinstance(metadata.get(TARGET_KEY), str):  # not remembered: give it
        arguments.append(target or PLACEHOLDER_TARGET)
    given = [("--store", str(address)), *_pickle_option(metadata)]  # a URL's password: PASSWORD
    return suggested("resume", *arguments, options=given + options)


def refuse_another_graph(
    store: Any,
    record: Any,
    flow: Any,
    rename: dict[str, str] | None,
    address: StoreAddress,
    target: str | None,
) -> None:
    """Refuse, in the command's words, to resume ``record``'s run with a
    ``flow`` whose names or wiring are not the run's (a resume refuses it in
    Python's): ``--rename`` for a renamed node, and, for a TARGET that has
    none of the run's nodes, no rename but the line that resumes it with its
    own flow. A run that cannot be read is left for the resume to report."""
    from .. import ResumeError, StoreError
    from ..durable._graph import ANOTHER_FLOW, describe_graph
    from ..durable._travel import compared_graph

    read = getattr(store, "read", None)
    if not callable(read):
        return
    try:
        graph = read(record.run_id)[1]
        difference = compared_graph(graph, record.metadata, describe_graph(flow), rename)[2]
    except (StoreError, ResumeError):
        return
    if difference is None:
        return
    said = f"run {record.run_id!r} was recorded with another graph: {difference}"
    renamed = "resume with --rename 'old name=new name' (rename= in Python)"
    if target is not None and difference.startswith(ANOTHER_FLOW):
        remembered = remembered_target(record)
        line = resume_command(record, address)
        if remembered is None:
            raise UsageError(
                f"{said}. No node of the run is in {target}: give the TARGET the run was "
                f"started with: {line}; if every node was renamed, {renamed} for each"
            )
        if remembered[0] != target_metadata(target)[TARGET_KEY]:
            raise UsageError(
                f"{said}. {target} is another flow than the run's ({remembered[0]}): leave "
                f"TARGET out, the run remembers its flow: {line}"
            )
    raise UsageError(
        f"{said}. A resume needs the names and wiring the run had (a node's code may "
        f"change): if a node was renamed, {renamed}; else resume with the flow as it was"
    )
