"""What a person can do to a run from the dashboard: answer a waiting run and resume
it, resume a failed, interrupted or drained one, fork one from a step with ``shared`` edited,
drain a running one.

Only an action opens the store for writing (one store object, of the file or
the database the dashboard reads, made at the first action). Each needs the
flow: the TARGET the run remembers (the command keeps it), else the one the
dashboard was started with (``--target``); with neither, `ActionError` says
what to run instead. The run then goes on in a thread of the dashboard's
process, as ``braidflow resume`` would run it (its events recorded); the
request returns once it has begun, or with what refused it.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from .._errors import (
    BraidflowError,
    CheckpointError,
    ResumeError,
    StoreError,
    Suspended,
    describe_error,
)
from ..cli._address import StoreAddress
from ..cli._console import UsageError, parse_json, suggested
from ..cli._store import (
    PLACEHOLDER_TARGET,
    RESUMABLE,
    pickle_option,
    remembered_target,
    resume_command,
)
from ..cli._target import load_target
from ..durable._history import BUDGET_KEY
from ..stores._base import RunRecord, Store

__all__ = ["ActionError", "Actions"]

_BEGIN_WITHIN = 30.0  # seconds an action waits for its run to begin, to report a refusal


class ActionError(Exception):
    """An action refused, with what to do instead (shown on the run's page)."""


class _Begun:
    """An observer that tells when the run it watches has begun."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def on_event(self, event: Any) -> None:
        if event.kind == "run_start":
            self.event.set()


class Actions:
    """The dashboard's actions on the runs of one store.

    Args:
        location: Where the store is, a SQLite file's path or a PostgreSQL
            database's ``postgresql://`` URL; opened for writing at the first
            action.
        target: The flow for runs that remember no TARGET (``--target``).
    """

    def __init__(
        self, location: str | os.PathLike[str], target: str | None = None, serializer: str = "json"
    ) -> None:
        self.address = StoreAddress(location)
        self.target = target
        self.serializer = serializer  # as the store the pages read: pickle runs readable or not
        self._lock = threading.Lock()
        self._writer: Store | None = None
        self._flows: dict[tuple[str, str | None], Any] = {}
        self._going: dict[str, threading.Thread] = {}

    def target_of(self, record: RunRecord) -> tuple[str, str | None] | None:
        """The TARGET (and the directory it is found from) of a run's flow:
        the one it remembers, else ``--target``; ``None`` if neither."""
        remembered = remembered_target(record)
        if remembered is not None:
            return remembered
        return (self.target, None) if self.target else None

    def instead(self, record: RunRecord, action: str, step: int | None = None) -> str:
        """The command that does ``action`` (``resume`` or ``fork``) where the
        dashboard knows no TARGET for the run."""
        store = str(self.address)  # a URL's password: the placeholder PASSWORD
        if action == "fork":
            at = [] if step is None else [("--at", str(step))]
            options = [*at, ("--store", store), *pickle_option(record), ("--set", "KEY=JSON")]
            return suggested("fork", record.run_id, PLACEHOLDER_TARGET, options=options)
        return resume_command(record, self.address)

    def busy(self, run_id: str) -> bool:
        """Tell whether an action of this dashboard is running the run now."""
        with self._lock:
            thread = self._going.get(run_id)
            return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Close the store opened for actions, if one was."""
        with self._lock:
            writer, self._writer = self._writer, None
        close = getattr(writer, "close", None)
        if callable(close):
            close()

    # -- the actions ------------------------------------------------------------------

    def drain(self, record: RunRecord, timeout: float = 30.0) -> None:
        """Ask a running run to drain (`braidflow.drain`): it stops at its next
        safe point, what is running finishing within ``timeout`` seconds, and
        is stored as ``drained``. It needs no TARGET: the request goes
        through the store (or straight to the run, if this dashboard runs it).

        Raises:
            ActionError: For a run that is not running.
        """
        from ..durable._drain import drain

        if record.status != "running":
            raise ActionError(
                f"run {record.run_id!r} is {record.status}, not running: there is nothing to drain"
            )
        try:
            drain(record.run_id, store=self._store(), timeout=timeout)
        except StoreError as error:
            raise ActionError(str(error)) from error

    def resume(
        self,
        record: RunRecord,
        answer_text: str | None = None,
        answer_texts: dict[str, str] | None = None,
    ) -> None:
        """Resume a failed, interrupted, drained or waiting run. A run waiting
        on one question takes ``answer_text`` (JSON); one waiting on several
        takes ``answer_texts`` (JSON by question id), some or all of them:
        those answered go on, the others keep waiting.

        Raises:
            ActionError: For a run that cannot be resumed now, an answer that
                is not JSON, none given, no TARGET known, or a refusal from the
                engine.
        """
        if record.status not in RESUMABLE:
            raise ActionError(f"run {record.run_id!r} is {record.status}; it cannot be resumed")
        options: dict[str, Any] = {}
        if record.status == "waiting" and record.metadata.get(BUDGET_KEY):
            raise ActionError(  # (the dashboard has no budget to give)
                "the run waits for a higher budget, which the dashboard cannot give: resume it "
                f"with: {resume_command(record, self.address)}"
            )
        if record.status == "waiting" and answer_texts:
            options["answers"] = {
                key: _json(text, f"the answer to question {key}")
                for key, text in answer_texts.items()
            }
        elif record.status == "waiting":
            if answer_text is None or not answer_text.strip():
                raise ActionError("the run waits for an answer: give it as JSON")
            options["input"] = _json(answer_text, "the answer")
        flow = self._flow(record, "resume")
        self._go(record.run_id, flow, options)

    def fork(self, record: RunRecord, at: int, before: dict[Any, Any], edited: str) -> str:
        """Fork the run after step ``at`` with ``shared`` as ``edited`` (JSON of
        the whole dict, ``before`` as the step left it), and run the fork on
        (a fork made at a question waits for its answer instead); return the
        fork's id.

        Raises:
            ActionError: For JSON that is not an object, a key removed, no
                TARGET known, or a refusal from the engine or the store.
        """
        shared = _json(edited, "shared")
        if not isinstance(shared, dict):
            raise ActionError(f"shared must be a JSON object, not {type(shared).__name__}")
        removed = [key for key in before if key not in shared]
        if removed:
            raise ActionError(
                f"a fork cannot remove keys of shared ({', '.join(map(repr, removed))}); "
                "set them to null instead"
            )
        update = {
            key: value for key, value in shared.items() if _edited(before.get(key, _NONE), value)
        }
        flow = self._flow(record, "fork", at)
        from ..durable._travel import fork_run

        try:
            new = fork_run(self._store(), flow, record.run_id, at, None, update)
            status = self._store().get(new).status
        except (ResumeError, CheckpointError, StoreError) as error:
            raise ActionError(describe_error(error)) from error
        if status != "waiting":
            self._go(new, flow, {})
        return new

    # -- how they run -----------------------------------------------------------------

    def _flow(self, record: RunRecord, action: str, step: int | None = None) -> Any:
        target = self.target_of(record)
        if target is None:
            raise ActionError(
                f"the dashboard knows no TARGET for run {record.run_id!r} (it was started "
                f"from Python); run instead: {self.instead(record, action, step)} -- or start "
                "the dashboard with --target TARGET"
            )
        with self._lock:
            flow = self._flows.get(target)
            if flow is None:
                try:
                    flow = load_target(*target)
                except UsageError as error:
                    raise ActionError(f"TARGET {target[0]}: {error}") from error
                self._flows[target] = flow
            return flow

    def _store(self) -> Store:
        with self._lock:
            if self._writer is None:
                try:
                    self._writer = self.address.open(create=False, serializer=self.serializer)
                except UsageError as error:
                    raise ActionError(str(error)) from error
            return self._writer

    def _go(self, run_id: str, flow: Any, options: dict[str, Any]) -> None:
        """Resume the run in a thread (``options``: its answers, if any);
        return once it began, or raise what stopped it before."""
        store = self._store()
        begun = _Begun()
        refused: list[BaseException] = []

        def run() -> None:
            try:
                flow.resume(run_id, store=store, observers=[begun], record_events=True, **options)
            except Suspended:
                pass  # waiting again: the store says so
            except BaseException as error:  # the run's end is in the store; the caller hears
                if not begun.event.is_set():
                    refused.append(error)
            finally:
                begun.event.set()

        with self._lock:
            going = self._going.get(run_id)
            if going is not None and going.is_alive():
                raise ActionError(f"run {run_id!r} is being resumed already")
            # A daemon: stopping the dashboard stops its runs, which stay resumable.
            thread = threading.Thread(target=run, name=f"braidflow-ui-{run_id}", daemon=True)
            self._going[run_id] = thread
            thread.start()
        begun.event.wait(_BEGIN_WITHIN)
        if refused:
            error = refused[0]
            if isinstance(error, BraidflowError):
                raise ActionError(describe_error(error)) from error
            raise ActionError(f"the run could not begin: {describe_error(error)}") from error


_NONE = object()


def _json(text: str, what: str) -> Any:
    try:
        return parse_json(text, what)
    except UsageError as error:
        raise ActionError(str(error)) from error


def _edited(old: Any, new: Any) -> bool:
    """Whether ``new`` (JSON the page sent) differs from ``old``, a value of
    the run: as JSON, where ``true``, ``1`` and ``1.0`` differ (in Python they
    are equal, and an edit between them would be lost)."""
    try:
        return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)
    except (TypeError, ValueError):  # a value JSON cannot hold: not what the page sent
        return True
