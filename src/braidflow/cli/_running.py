"""Running a flow and resuming a stored run (``run``, ``resume``), and how a run's end
is reported: ``shared`` on stdout, or what went wrong on stderr, and the exit code.

Exit codes: 0 done, 1 the run failed, 2 bad input, 3 the run waits for
input, 74 its store failed, 75 drained, 130 stopped by Ctrl-C. The command
tells errors apart by their class, by the store (is the run there? can it be
read?) and by its own observer of the run (`_Watch`), never by their text.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._errors import describe_error
from ..durable._run_codec import marked_metadata
from ._address import StoreAddress
from ._console import UsageError, prompt_lines, read_json, say, shown_json, suggested
from ._run_options import budget_given, resume_options
from ._store import (
    PLACEHOLDER_TARGET,
    RESUMABLE,
    chosen_store,
    known_run,
    open_store,
    refuse_another_graph,
    remember_target,
    remembered_target,
    resume_command,
    stored_run,
    target_metadata,
    unread_resume_command,
)
from ._target import load_target

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_STORE",
    "EXIT_WAITING",
    "command_resume",
    "command_run",
    "resume_options",
    "resume_stored",
]

EXIT_FAILED, EXIT_WAITING, EXIT_INTERRUPTED = 1, 3, 130
EXIT_STORE = 74  # sysexits' EX_IOERR: the store failed the run, to be resumed once it works
EXIT_DRAINED = 75  # sysexits' EX_TEMPFAIL: stopped on purpose, to be resumed


class _Watch:
    """The command's own observer of a run: whether it began (``run_start``,
    when it says ``announce``, if given), and how many notes its error had
    when it ended (``run_end``)."""

    def __init__(self, announce: str | None = None) -> None:
        self.announce = announce
        self.started = False
        self.drain_said = False  # the first SIGTERM was told
        self.notes_at_end: int | None = None

    def on_event(self, event: Any) -> None:
        if event.kind == "run_start":
            self.started = True
            if self.announce:
                say(self.announce)
        elif event.kind == "run_end" and event.error is not None:
            self.notes_at_end = len(getattr(event.error, "__notes__", ()))


class _Job:
    """A run or resume as the command carries it out: where it is stored
    (``store`` is ``None`` for a run that is not durable), the TARGET given
    on the command line, the run's metadata as last known (what it starts
    with, or its record's read before it resumes), and the command's
    observer of it."""

    def __init__(
        self,
        watch: _Watch,
        store: Any = None,
        store_path: StoreAddress | None = None,
        run_id: str | None = None,
        *,
        resuming: bool = False,
        target: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.watch = watch
        self.store = store
        self.store_path = store_path
        self.run_id = run_id
        self.resuming = resuming
        self.target = target
        self.metadata = metadata or {}

    def record(self) -> Any:
        """The run's record in the store, or ``None`` (not durable, not stored)."""
        if self.store is None or self.run_id is None:
            return None
        return stored_run(self.store, self.run_id)

    def resume_command(self) -> str | None:
        """The command line that resumes the run, if it is stored and resumable;
        if its store cannot be read now (it failed), the one that resumes it
        as last known, once the store works, for a run that is in it."""
        from .. import StoreError

        if self.store is None or self.run_id is None or self.store_path is None:
            return None
        try:
            record = self.store.get(self.run_id)
        except StoreError:  # no such run, or a store that cannot say
            if not self.in_store():
                return None
            return unread_resume_command(self.run_id, self.metadata, self.store_path, self.target)
        if record.status not in RESUMABLE:
            return None
        return resume_command(record, self.store_path, self.target)

    def in_store(self) -> bool:
        """Tell whether the run is in its store, as far as the command knows
        without reading it: a stored run resumed (or a fork made), or a new
        run that began."""
        return self.store is not None and (self.resuming or self.watch.started)

    def stopped_by_store(self, error: BaseException) -> bool:
        """Tell whether ``error`` is a store's failing a run that is in its
        store: a `StoreError` once the run began, or, resuming a stored run,
        one after which its store cannot be read (a resume the store refused,
        the store working, is bad input)."""
        from .. import StoreError

        if self.store is None or not isinstance(error, StoreError):
            return False
        if self.began():
            return True
        if not self.resuming:
            return False  # a new run refused or not recorded: run it again
        try:
            self.store.get(self.run_id)
        except StoreError:
            return True
        return False

    def began(self) -> bool:
        """Tell whether the run began: a new durable run is in its store once
        it began (it is recorded before any node runs); any other run said so
        by its ``run_start``."""
        if self.watch.started:
            return True
        return self.store is not None and not self.resuming and self.record() is not None


def _observers(args: argparse.Namespace, watch: _Watch) -> list[Any]:
    observers: list[Any] = []
    if args.progress:
        try:
            from ..tracing import Progress

            observers.append(Progress())
        except ImportError as error:
            raise UsageError(str(error)) from error
    from ..tracing import JSONLTrace, Timeline

    try:
        if args.trace:
            observers.append(JSONLTrace(args.trace))
        if args.timeline:
            observers.append(Timeline(args.timeline))
    except ValueError as error:  # a file that cannot be written there
        raise UsageError(str(error)) from error
    observers.append(watch)
    return observers


def _finish(args: argparse.Namespace, run: Callable[[], Any], job: _Job) -> int:
    """Carry out a run (or resume) and report it: stdout gets ``shared``.
    SIGTERM drains the run while it goes on; once it ended, the report
    (its output too) is made whole (`_drain_on_sigterm`)."""
    with _drain_on_sigterm(job, args.drain_timeout):
        return _run_and_report(args, run, job)


def _run_and_report(args: argparse.Namespace, run: Callable[[], Any], job: _Job) -> int:
    from .. import BraidflowError, CheckpointError, Drained, NotDurableError, Suspended

    try:
        shared = run()
    except Drained as drained:
        hint = job.resume_command() or suggested(
            "resume", drained.run_id, options=[("--store", "PATH")]
        )
        say(
            f"run {drained.run_id!r} was drained at {drained.node}: everything that finished "
            f"is stored; resume it with: {hint}"
        )
        return EXIT_DRAINED
    except Suspended as waiting:
        if waiting.reason == "budget":
            say(f"run {waiting.run_id!r} reached its budget at {waiting.node}:")
            print(f"  {waiting.prompt['budget']}", file=sys.stderr)  # type: ignore[index]
            more = job.resume_command()
            if more is None:
                more = suggested("resume", waiting.run_id, options=[("--budget-tokens", "N")])
            say(f"resume it with a higher budget: {more} (or --budget-cost X)")
            return EXIT_WAITING
        questions = waiting.questions
        if len(questions) > 1:
            say(f"run {waiting.run_id!r} is waiting on {len(questions)} questions:")
            for question in questions:
                print(f"  {question.id} at {question.where}:", file=sys.stderr)
                for line in prompt_lines(question.prompt):
                    print(f"    {line}", file=sys.stderr)
            how = [("--answer", f"{question.id}=JSON") for question in questions]
            answer = job.resume_command() or suggested("resume", waiting.run_id, options=how)
            say(f"answer some or all with: {answer}")
            return EXIT_WAITING
        say(f"run {waiting.run_id!r} is waiting for input at {waiting.node}:")
        for line in prompt_lines(waiting.prompt):
            print(f"  {line}", file=sys.stderr)
        answer = job.resume_command() or suggested(
            "resume", waiting.run_id, options=[("--input", "JSON")]
        )
        say(f"answer with: {answer}")
        return EXIT_WAITING
    except KeyboardInterrupt:
        stopped = job.resume_command()
        say(f"stopped; resume with: {stopped}" if stopped else "stopped")
        return EXIT_INTERRUPTED
    except Exception as error:
        if isinstance(error, NotDurableError) and job.store is None:
            raise UsageError(
                "the flow asks for input (braidflow.interrupt), so it must be able to wait: "
                "run it with --store PATH"
            ) from error
        if job.stopped_by_store(error):
            return _store_failed(args, error, job)
        if isinstance(error, BraidflowError) and not job.began():
            # Refused before anything ran or was stored (the wrong run for
            # this flow, a shared that cannot be stored...): bad input.
            if isinstance(error, CheckpointError):  # its advice is for Python callers
                where = "a value" if error.key is None else f"shared[{error.key!r}]"
                if getattr(args, "serializer", None) == "pickle":
                    raise UsageError(
                        f"the run cannot start: {where} cannot be pickled, which a run with "
                        "--serializer pickle needs; keep picklable values in shared"
                    ) from error
                instead = _pickle_instead(args, job, error, same_id=True)
                raise UsageError(
                    f"the run cannot start: {where} is not plain JSON data, which a durable "
                    "run keeps"
                    + (f"; keep plain data, or store pickles instead: {instead}" if instead else "")
                ) from error
            message = str(error)
            raise UsageError((message.splitlines() or [""])[0] or message) from error
        return _failed(args, error, job)
    text = shown_json(shared)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write {args.out!r} ({error.strerror})") from error
    else:
        print(text)
        sys.stdout.flush()  # all of it out while SIGTERM cannot end the command
    return 0


@contextmanager
def _drain_on_sigterm(job: _Job, timeout: float) -> Iterator[None]:
    """While a durable run goes on, SIGTERM drains it (`braidflow.drain`):
    no new step or item, what runs finishes within ``timeout`` seconds. A
    second SIGTERM stops what still runs at once. A run that is not durable,
    or has not begun, stops at once, as on Ctrl-C; once the run ended,
    SIGTERM is let go: the command reports how it ended, as it would have."""
    from .. import drain

    if job.store is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        asked = drain(timeout=timeout)
        if not asked:
            if job.watch.started:  # the run ended (it is a durable run going on once begun)
                return
            raise KeyboardInterrupt  # nothing durable is going on yet: nothing to wait for
        if job.watch.drain_said:
            say("SIGTERM again: stopping what still runs now (it runs again on resume)")
            return
        job.watch.drain_said = True
        say(
            f"SIGTERM: draining run {asked[0]!r}: no new step or item starts, and what "
            f"is running gets {timeout:g} s to finish (SIGTERM again stops it at once)"
        )

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failed(args: argparse.Namespace, error: Exception, job: _Job) -> int:
    """Report a run that failed: the error and braidflow's notes on where, on
    stderr, then how to resume it if it can be."""
    if args.debug:
        traceback.print_exc()
    else:
        say(f"the run failed: {describe_error(error)}")
        notes = list(getattr(error, "__notes__", ()))
        if job.watch.notes_at_end is not None:
            # A note added once the run had ended is the durable package's word
            # to Python callers on how to resume; the command says its own.
            notes = notes[: job.watch.notes_at_end]
        for note in notes:
            print(f"  {note}", file=sys.stderr)
    hint = job.resume_command()
    if hint:
        say(f"fix the cause, then: {hint}")
    instead = _pickle_instead(args, job, error, same_id=False)
    if instead:
        say(f"or, to keep such values, start it anew storing pickles: {instead}")
    return EXIT_FAILED


def _store_failed(args: argparse.Namespace, error: Exception, job: _Job) -> int:
    """Report a run its store stopped (it could not be written or read, the
    server went away...): the store's error on one line, then how to resume
    the run once the store works, whether or not the store can be read now."""
    if args.debug:
        traceback.print_exc()
    else:
        said = " ".join(describe_error(error, whole=True).splitlines())
        say(f"run {job.run_id!r} stopped on a store error: {said}")
    hint = job.resume_command()
    if hint:
        say(f"once the store works again, resume it with: {hint}")
    return EXIT_STORE


def _pickle_instead(args: argparse.Namespace, job: _Job, error: Exception, same_id: bool) -> str:
    """The command line that starts a ``run`` anew with ``--serializer pickle``,
    for a durable run that JSON stopped (a `CheckpointError` for a value, a
    key or an item's result: not for an action, which is JSON in any run);
    ``""`` for any other. ``same_id``: with its ``--run-id`` (none was stored)."""
    from .. import CheckpointError

    if (
        not isinstance(error, CheckpointError)
        or args.command != "run"
        or job.store_path is None
        or args.serializer == "pickle"
        # A value, key or result the codec refused (an action's is raised from None).
        or (error.key is None and error.__cause__ is None)
    ):
        return ""
    options = [("--store", str(job.store_path))]
    if args.shared is not None:
        options.append(("--shared", args.shared))
    if same_id and args.run_id is not None:
        options.append(("--run-id", args.run_id))
    if args.durability:
        options.append(("--durability", args.durability))
    return suggested("run", args.target, options=[*options, ("--serializer", "pickle")])


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that cannot be written before anything runs."""
    from ..tracing._files import writable_path

    if args.out:
        try:
            writable_path(args.out, "--out")
        except ValueError as error:
            raise UsageError(str(error)) from error


def _has_successors(node: Any) -> bool:
    return any(successor is not None for successor in node.successors.values())


def command_run(args: argparse.Namespace) -> int:
    if args.run_id is not None and not args.run_id.strip():
        raise UsageError("--run-id is empty; give an id, or leave it out for a new one")
    _check_out(args)
    # Every option checked before TARGET's file is imported (its code runs then).
    shared = read_json(args.shared, "--shared") if args.shared is not None else {}
    if not isinstance(shared, dict):
        source = f" (in {args.shared[1:]!r})" if args.shared.startswith("@") else ""
        raise UsageError(
            f"--shared must be a JSON object{source}, got {type(shared).__name__}; "
            'such as {"topic": "tides"}'
        )
    durable = bool(args.store or args.run_id or args.durability or args.serializer)
    budget = budget_given(args, durable)
    flow = load_target(args.target)
    watch = _Watch()
    options: dict[str, Any] = {"observers": _observers(args, watch)}
    job = _Job(watch)
    if budget is not None:
        options["budget"] = budget
    if durable:
        store_path = chosen_store(args)
        store = open_store(store_path, create=True, serializer=args.serializer or "json")
        run_id = args.run_id or _new_run_id()
        record = stored_run(store, run_id)
        if record is not None:
            raise UsageError(_id_taken(record, store_path))
        options.update(
            store=store,
            run_id=run_id,
            record_events=True,
            metadata=target_metadata(args.target),
        )
        if args.durability:
            options["durability"] = args.durability
        known = marked_metadata(options["metadata"], args.serializer or "json")
        job = _Job(watch, store, store_path, run_id, metadata=known)
        watch.announce = f"run {run_id!r} (stored in {store_path})"
    quiet = _has_successors(flow)

    def run() -> Any:
        with warnings.catch_warnings():
            if quiet:
                # TARGET names a node with successors: the command runs what
                # TARGET names, that node alone (docs/cli.md), so the engine's
                # warning to the caller of run() (this module) that successors
                # will not run is the command's business, not its user's.
                warnings.filterwarnings(
                    "ignore", category=UserWarning, module=re.escape(__name__) + "$"
                )
            flow.run(shared, **options)
        return shared

    return _finish(args, run, job)


def _id_taken(record: Any, store_path: StoreAddress) -> str:
    taken = f"run id {record.run_id!r} is already used in {str(store_path)!r}"
    if record.status in RESUMABLE:
        return (
            f"{taken} by a run that is {record.status}; choose another, or resume that run: "
            f"{resume_command(record, store_path)}"
        )
    return f"{taken} by a run that is {record.status}; choose another, or leave --run-id out"


def _new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def command_resume(args: argparse.Namespace) -> int:
    store_path = chosen_store(args)
    store = open_store(store_path, create=False, serializer=args.serializer)
    run_id = args.run_id
    record = known_run(store, run_id, store_path)
    if record.status == "completed":
        raise UsageError(f"run {run_id!r} has completed; there is nothing to resume")
    if record.status == "running":
        raise UsageError(
            f"run {run_id!r} is running in a live process ({record.owner}); wait for it to "
            "end (or stop it) before resuming"
        )
    if args.input is not None and args.answer:
        raise UsageError(
            "give --input JSON (the answer to a run's only question) or --answer ID=JSON "
            "(by question, repeated), not both"
        )
    given = "--input" if args.input is not None else "--answer" if args.answer else None
    if given is not None and record.status != "waiting":
        raise UsageError(
            f"run {run_id!r} is {record.status}, not waiting for input; resume it without "
            f"{given}: {resume_command(record, store_path, args.target)}"
        )
    remembered = remembered_target(record)
    if args.target is None and remembered is None:
        again = [("--store", str(store_path))]  # the options given, to give again
        if args.serializer is not None:
            again.append(("--serializer", args.serializer))
        if args.input is not None:
            again.append(("--input", args.input))
        again += [("--answer", pair) for pair in args.answer or ()]
        line = suggested("resume", run_id, PLACEHOLDER_TARGET, options=again)
        raise UsageError(
            f"run {run_id!r} has no TARGET remembered (it was started from Python, or by an "
            f"older braidflow command); give its TARGET: {line}"
        )
    _check_out(args)
    options = resume_options(args)  # checked before TARGET's file is imported
    if args.target is not None:
        flow = load_target(args.target)
    else:
        assert remembered is not None
        flow = load_target(*remembered)
    refuse_another_graph(store, record, flow, options.get("rename"), store_path, args.target)
    return resume_stored(args, store, store_path, run_id, flow, options, record.metadata)


def resume_stored(
    args: argparse.Namespace,
    store: Any,
    store_path: StoreAddress,
    run_id: str,
    flow: Any,
    given: dict[str, Any],
    metadata: dict[str, Any],
) -> int:
    """Resume stored run ``run_id`` with ``flow`` (for ``resume`` and ``fork``)
    and the options ``given`` (`resume_options`), saying first what it takes
    over. ``metadata``: the run's, as last read (to suggest its resume if its
    store then fails)."""
    from ..durable._history import StoredRun
    from ._places import reused

    watch = _Watch()
    options: dict[str, Any] = {
        "observers": _observers(args, watch),
        "record_events": True,
        **given,
    }
    job = _Job(
        watch, store, store_path, run_id, resuming=True, target=args.target, metadata=metadata
    )

    def run() -> Any:
        # Read here, where a store that fails is reported as any failure of the run's store.
        watch.announce = f"resuming run {run_id!r}: reusing {reused(StoredRun(store, run_id))}"
        try:
            return flow.resume(run_id, store=store, **options)
        finally:
            if args.target is not None and watch.started:  # TARGET fits the run
                remember_target(store, run_id, args.target)

    return _finish(args, run, job)
