"""The ``braidflow`` command: run a flow, draw it, list, resume and draw stored runs.

    braidflow run path/to/file.py:flow --shared '{"topic": "owls"}' --store runs.db
    braidflow runs --store runs.db
    braidflow resume RUN_ID [TARGET] --store runs.db --input '"yes"'
    braidflow timeline RUN_ID --store runs.db -o run.html
    braidflow graph path/to/file.py:flow

The final ``shared`` goes to stdout as JSON; everything else to stderr.
Exit codes: 0 done, 1 the run failed, 2 bad input (a one-line message;
``--debug`` shows the traceback), 3 the run waits for input, 130 stopped by
Ctrl-C. ``import braidflow`` never imports this module.

What the command remembers about a run (which TARGET started it, and from
where) it keeps in the run's metadata, through the store's public API, under
the keys `TARGET_KEY` and `DIRECTORY_KEY`. It tells errors apart by their
class, by the store (is the run there?) and by its own observer of the run,
never by their text. Every command line it suggests is built from what is
true of the run (`_resume_command`), quoted for a shell, and works as
printed once its placeholders (``JSON``, ``path/to/file.py:name``) are
filled in; tests/test_cli.py follows each one.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._errors import describe_error

__all__ = ["main"]

DEFAULT_STORE = "braidflow.db"
EXIT_FAILED, EXIT_USAGE, EXIT_WAITING, EXIT_INTERRUPTED = 1, 2, 3, 130
# The keys of a run's metadata where the command keeps what it needs to resume it.
TARGET_KEY = "braidflow.target"  # TARGET, a file's path made absolute
DIRECTORY_KEY = "braidflow.directory"  # where the run started; a module TARGET is found there
RESUMABLE = ("failed", "interrupted", "waiting")
PLACEHOLDER_TARGET = "path/to/file.py:name"


class UsageError(Exception):
    """Bad input to the command: said in one line, exit code 2."""


# -- finding the flow ---------------------------------------------------------------


def load_target(spec: str, directory: str | None = None) -> Any:
    """The flow that ``path/to/file.py:name`` or ``package.module:name`` names
    (a flow or node, or a function of no arguments that returns one). A
    module is found from ``directory`` (default: the current directory)."""
    from . import BaseNode

    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        hint = ""
        if not where and _is_path(spec) and Path(spec).is_file():  # a file, with no name
            try:
                hint = _what_it_holds(_load_module(spec, directory), f"{spec}:")
            except UsageError:
                pass  # it does not import: the shape of TARGET is what to say first
        raise UsageError(
            f"TARGET {spec!r} should be path/to/file.py:name or package.module:name{hint}"
        )
    module = _load_module(where, directory)
    shown = where if _is_path(where) else f"module {where}"
    if not hasattr(module, name):
        raise UsageError(f"{shown} has no {name!r}{_what_it_holds(module)}")
    target = getattr(module, name)
    if isinstance(target, type) and issubclass(target, BaseNode):
        raise UsageError(
            f"{name!r} in {shown} is a class; point TARGET at a flow made from it (an "
            f"instance, such as flow = {name}(...)), or a function that returns one"
        )
    if not isinstance(target, BaseNode) and callable(target) and not isinstance(target, type):
        try:
            inspect.signature(target).bind()
        except TypeError as error:
            raise UsageError(
                f"{name!r} in {shown} is a function that needs arguments ({error}); point "
                "TARGET at a flow, or at a function of no arguments that returns one"
            ) from error
        except ValueError:  # no signature to read (a builtin): try it
            pass
        try:
            target = target()
        except Exception as error:
            raise UsageError(f"{name}() in {shown} failed: {describe_error(error)}") from error
    if not isinstance(target, BaseNode):
        kind = type(target).__name__
        raise UsageError(
            f"{name!r} in {shown} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not a flow; "
            "point TARGET at "
            "a Flow or AsyncFlow (or a function of no arguments that returns one)"
        )
    return target


def _what_it_holds(module: Any, prefix: str = "") -> str:
    """``"; its flows: a, b"`` (else its nodes), each name after ``prefix``."""
    from . import BaseNode

    nodes = {
        attr: value
        for attr, value in vars(module).items()
        if not attr.startswith("_") and isinstance(value, BaseNode)
    }
    flows = sorted(attr for attr, value in nodes.items() if value._bf_is_flow)
    if flows:
        return f"; its flows: {', '.join(prefix + name for name in flows)}"
    if nodes:
        return f"; its nodes: {', '.join(prefix + name for name in sorted(nodes))}"
    return ""


def _is_path(where: str) -> bool:
    """Tell whether TARGET's part before the colon is a file (else a module)."""
    return where.endswith(".py") or "/" in where or os.sep in where


def _load_module(where: str, directory: str | None) -> Any:
    if _is_path(where):
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"no file {where!r}")
        sys.path.insert(0, str(path.resolve().parent))  # its own imports work
        name = f"braidflow_target_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{where!r} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            raise UsageError(f"importing {where} failed: {describe_error(error)}") from error
        return module
    base = directory or os.getcwd()
    sys.path.insert(0, base)
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as error:
        if error.name is not None and where.startswith(error.name):
            raise UsageError(f"no module {where!r} (from {base})") from error
        raise UsageError(f"importing {where} failed: {describe_error(error)}") from error
    except Exception as error:
        raise UsageError(f"importing {where} failed: {describe_error(error)}") from error


# -- input and output -----------------------------------------------------------------


class _BadNumber(ValueError):
    """A number the command refuses to read: JSON has no NaN or Infinity, one
    too large for a float (``1e400``) would be read as infinity, and a durable
    run could store none of them."""


def _no_constant(name: str) -> Any:
    raise _BadNumber(
        f"{name} is not JSON (JSON has no NaN or Infinity); give a finite number, or null"
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(
            f"{text} is out of range: a number must lie within ±{sys.float_info.max:.1e}"
        )
    return value


def _readable_int(text: str) -> int:
    limit = sys.get_int_max_str_digits()
    digits = len(text.lstrip("-"))
    if limit and digits > limit:
        raise _BadNumber(
            f"an integer of {digits} digits is longer than Python reads ({limit} digits); "
            "give it as a string"
        )
    return int(text)


def read_json(text: str, what: str) -> Any:
    """JSON from the command line, or from a UTF-8 file for ``@path``.

    Anything that cannot be read is a `UsageError` naming the option (and
    the file): a file that is missing, unreadable or not UTF-8, text that
    is not JSON, NaN, Infinity, a number out of a float's range, JSON nested
    deeper than Python reads.
    """
    source = what
    from_file = text.startswith("@")
    if from_file:
        name = text[1:]
        source = f"{what} {text}"
        if not name:
            raise UsageError(f"{what} @ names no file; give {what} @FILE.json, or the JSON itself")
        try:
            text = Path(name).read_text(encoding="utf-8-sig")  # a BOM, if any, is dropped
        except UnicodeDecodeError as error:
            raise UsageError(
                f"{what}: cannot read {name!r}: it is not UTF-8 text (byte {error.start}: "
                f"{error.reason}); save it as UTF-8"
            ) from error
        except OSError as error:
            raise UsageError(
                f"{what}: cannot read {name!r} ({error.strerror or describe_error(error)})"
            ) from error
    try:
        return json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_readable_int,
        )
    except json.JSONDecodeError as error:
        hint = _json_hint(text, what, from_file)
        raise UsageError(f"{source} is not valid JSON ({error}){hint}") from error
    except _BadNumber as error:
        raise UsageError(f"{source}: {error}") from error
    except RecursionError as error:
        raise UsageError(f"{source} is nested too deeply to read") from error
    except ValueError as error:  # anything else the decoder refuses
        raise UsageError(f"{source} cannot be read: {describe_error(error)}") from error


def _json_hint(text: str, what: str, from_file: bool) -> str:
    """How to write what was meant, as a command line that works where it can."""
    if text.lstrip()[:1] in ("{", "["):
        example = '{"key": "value"}'
        return f"; JSON strings and keys take double quotes: {shlex.quote(example)}"
    if from_file:
        return f"; a text in JSON is written in double quotes: {json.dumps(text.strip())}"
    if what == "--shared":  # an object, never a bare text
        example = '{"key": "value"}'
        return f"; --shared takes a JSON object: --shared {shlex.quote(example)}"
    quoted = json.dumps(text, ensure_ascii=False)
    return f"; a text is quoted: {what} {shlex.quote(quoted)}"


def shown_json(shared: Any) -> str:
    """``shared`` as JSON: values JSON cannot hold shown by their ``repr``."""
    try:
        try:
            # As it is, if its keys are ones JSON can hold: no copy to recurse
            # through, so it goes as deep as the JSON it was read from.
            return json.dumps(shared, indent=2, ensure_ascii=False, default=repr)
        except TypeError:  # a key JSON cannot hold (a tuple): shown by its repr
            return json.dumps(_plain(shared), indent=2, ensure_ascii=False, default=repr)
    except ValueError:  # a value that holds itself
        return json.dumps(repr(shared))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key if isinstance(key, str | int | float | bool) or key is None else repr(key): (
                _plain(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _prompt_lines(prompt: Any) -> list[str]:
    """A prompt to read: text as it is; a dict as ``key: value`` lines (text
    of several lines indented below its key); anything else as JSON."""
    if isinstance(prompt, str):
        return prompt.splitlines() or [""]
    if isinstance(prompt, dict):
        lines = []
        for key, value in prompt.items():
            if isinstance(value, str) and "\n" in value:
                lines.append(f"{key}:")
                lines.extend(f"  {line}" for line in value.splitlines())
            else:
                shown = value if isinstance(value, str) else json.dumps(_plain(value), default=repr)
                lines.append(f"{key}: {shown}")
        return lines
    return [json.dumps(_plain(prompt), default=repr)]


def _say(text: str) -> None:
    print(f"braidflow: {text}", file=sys.stderr, flush=True)


def _suggested(*words: str) -> str:
    """A ``braidflow`` command line to suggest, quoted for a shell."""
    return shlex.join(["braidflow", *words])


# -- the store, and what it remembers of each run -------------------------------------


def _store_path(args: argparse.Namespace) -> Path:
    return Path(args.store or os.environ.get("BRAIDFLOW_STORE") or DEFAULT_STORE)


def open_store(path: Path, *, create: bool) -> Any:
    from . import SQLiteStore, StoreError

    if not create and not path.exists():
        raise UsageError(f"no store at {str(path)!r} (give --store PATH, or set BRAIDFLOW_STORE)")
    try:
        return SQLiteStore(path)
    except StoreError as error:
        raise UsageError(str(error)) from error


def _target_metadata(target: str) -> dict[str, str]:
    """What the command keeps in a run's metadata to resume it: TARGET (a
    file's path made absolute) and the directory it ran from."""
    where, _, name = target.rpartition(":")
    if _is_path(where):
        target = f"{Path(where).resolve()}:{name}"
    return {TARGET_KEY: target, DIRECTORY_KEY: os.getcwd()}


def _remembered(record: Any) -> tuple[str, str | None] | None:
    """The TARGET (and directory) a run's metadata holds, or ``None``."""
    target = record.metadata.get(TARGET_KEY)
    if not isinstance(target, str):
        return None
    directory = record.metadata.get(DIRECTORY_KEY)
    return target, directory if isinstance(directory, str) else None


def _remember(store: Any, run_id: str, target: str) -> None:
    """Keep the TARGET a resume was given, for the next resume."""
    from . import StoreError

    try:
        store.set_metadata(run_id, _target_metadata(target))
    except StoreError:
        pass  # a convenience: a hint printed later names TARGET itself then


def _stored_run(store: Any, run_id: str) -> Any:
    """The store's record of the run, or ``None`` if it has no such run."""
    from . import StoreError

    try:
        return store.get(run_id)
    except StoreError:
        return None


def _known_run(store: Any, run_id: str, path: Path) -> Any:
    record = _stored_run(store, run_id)
    if record is None:
        listing = _suggested("runs", "--store", str(path))
        raise UsageError(f"no run {run_id!r} in {str(path)!r} ({listing} lists them)")
    return record


def _resume_command(record: Any, store_path: Path, target: str | None = None) -> str:
    """The command line that resumes a stored run: with its TARGET unless the
    run remembers it (``target``, else a placeholder to fill in), and with
    ``--input`` for a run waiting for input."""
    words = ["resume", record.run_id]
    if _remembered(record) is None:
        words.append(target or PLACEHOLDER_TARGET)
    words += ["--store", str(store_path)]
    if record.status == "waiting":
        words += ["--input", "JSON"]
    return _suggested(*words)


# -- running --------------------------------------------------------------------------


class _Watch:
    """The command's own observer of a run: whether it began (``run_start``,
    when it says ``announce``, if given), and how many notes its error had
    when it ended (``run_end``)."""

    def __init__(self, announce: str | None = None) -> None:
        self.announce = announce
        self.started = False
        self.notes_at_end: int | None = None

    def on_event(self, event: Any) -> None:
        if event.kind == "run_start":
            self.started = True
            if self.announce:
                _say(self.announce)
        elif event.kind == "run_end" and event.error is not None:
            self.notes_at_end = len(getattr(event.error, "__notes__", ()))


class _Job:
    """A run or resume as the command carries it out: where it is stored
    (``store`` is ``None`` for a run that is not durable), the TARGET given
    on the command line, and the command's observer of it."""

    def __init__(
        self,
        watch: _Watch,
        store: Any = None,
        store_path: Path | None = None,
        run_id: str | None = None,
        *,
        resuming: bool = False,
        target: str | None = None,
    ) -> None:
        self.watch = watch
        self.store = store
        self.store_path = store_path
        self.run_id = run_id
        self.resuming = resuming
        self.target = target

    def record(self) -> Any:
        """The run's record in the store, or ``None`` (not durable, not stored)."""
        if self.store is None or self.run_id is None:
            return None
        return _stored_run(self.store, self.run_id)

    def resume_command(self) -> str | None:
        """The command line that resumes the run, if it is stored and resumable."""
        record = self.record()
        if record is None or record.status not in RESUMABLE or self.store_path is None:
            return None
        return _resume_command(record, self.store_path, self.target)

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
            from .tracing import Progress

            observers.append(Progress())
        except ImportError as error:
            raise UsageError(str(error)) from error
    from .tracing import JSONLTrace, Timeline

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
    """Carry out a run (or resume) and report it: stdout gets ``shared``."""
    from . import BraidflowError, CheckpointError, NotDurableError, Suspended

    try:
        shared = run()
    except Suspended as waiting:
        _say(f"run {waiting.run_id!r} is waiting for input at {waiting.node}:")
        for line in _prompt_lines(waiting.prompt):
            print(f"  {line}", file=sys.stderr)
        answer = job.resume_command() or _suggested("resume", waiting.run_id, "--input", "JSON")
        _say(f"answer with: {answer}")
        return EXIT_WAITING
    except KeyboardInterrupt:
        hint = job.resume_command()
        _say(f"stopped; resume with: {hint}" if hint else "stopped")
        return EXIT_INTERRUPTED
    except Exception as error:
        if isinstance(error, NotDurableError) and job.store is None:
            raise UsageError(
                "the flow asks for input (braidflow.interrupt), so it must be able to wait: "
                "run it with --store PATH"
            ) from error
        if isinstance(error, BraidflowError) and not job.began():
            # Refused before anything ran or was stored (the wrong run for
            # this flow, a shared that cannot be stored...): bad input.
            if isinstance(error, CheckpointError):  # its advice is for Python callers
                where = "a value" if error.key is None else f"shared[{error.key!r}]"
                raise UsageError(
                    f"the run cannot start: {where} is not plain JSON data, which a durable "
                    "run keeps"
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
    return 0


def _failed(args: argparse.Namespace, error: Exception, job: _Job) -> int:
    """Report a run that failed: the error and braidflow's notes on where, on
    stderr, then how to resume it if it can be."""
    if args.debug:
        traceback.print_exc()
    else:
        _say(f"the run failed: {describe_error(error)}")
        notes = list(getattr(error, "__notes__", ()))
        if job.watch.notes_at_end is not None:
            # A note added once the run had ended is the durable package's word
            # to Python callers on how to resume; the command says its own.
            notes = notes[: job.watch.notes_at_end]
        for note in notes:
            print(f"  {note}", file=sys.stderr)
    hint = job.resume_command()
    if hint:
        _say(f"fix the cause, then: {hint}")
    return EXIT_FAILED


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that cannot be written before anything runs."""
    from .tracing._files import writable_path

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
    flow = load_target(args.target)
    shared = read_json(args.shared, "--shared") if args.shared is not None else {}
    if not isinstance(shared, dict):
        raise UsageError(f"--shared must be a JSON object, got {type(shared).__name__}")
    watch = _Watch()
    options: dict[str, Any] = {"observers": _observers(args, watch)}
    job = _Job(watch)
    if args.store or args.run_id:
        store_path = _store_path(args)
        store = open_store(store_path, create=True)
        run_id = args.run_id or _new_run_id()
        record = _stored_run(store, run_id)
        if record is not None:
            raise UsageError(_id_taken(record, store_path))
        options.update(
            store=store,
            run_id=run_id,
            record_events=True,
            metadata=_target_metadata(args.target),
        )
        job = _Job(watch, store, store_path, run_id)
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


def _id_taken(record: Any, store_path: Path) -> str:
    taken = f"run id {record.run_id!r} is already used in {str(store_path)!r}"
    if record.status in RESUMABLE:
        return (
            f"{taken} by a run that is {record.status}; choose another, or resume that run: "
            f"{_resume_command(record, store_path)}"
        )
    return f"{taken} by a run that is {record.status}; choose another, or leave --run-id out"


def _new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def command_resume(args: argparse.Namespace) -> int:
    store_path = _store_path(args)
    store = open_store(store_path, create=False)
    run_id = args.run_id
    record = _known_run(store, run_id, store_path)
    if record.status == "completed":
        raise UsageError(f"run {run_id!r} has completed; there is nothing to resume")
    if record.status == "running":
        raise UsageError(
            f"run {run_id!r} is running in a live process ({record.owner}); wait for it to "
            "end (or stop it) before resuming"
        )
    if args.input is not None and record.status != "waiting":
        raise UsageError(
            f"run {run_id!r} is {record.status}, not waiting for input; resume it without "
            f"--input: {_resume_command(record, store_path, args.target)}"
        )
    remembered = _remembered(record)
    if args.target is None and remembered is None:
        words = ["resume", run_id, PLACEHOLDER_TARGET, "--store", str(store_path)]
        if args.input is not None:
            words += ["--input", args.input]
        raise UsageError(
            f"run {run_id!r} has no TARGET remembered (it was started from Python, or by an "
            f"older braidflow command); give its TARGET: {_suggested(*words)}"
        )
    _check_out(args)
    if args.target is not None:
        flow = load_target(args.target)
    else:
        assert remembered is not None
        flow = load_target(*remembered)
    watch = _Watch()
    options: dict[str, Any] = {"observers": _observers(args, watch), "record_events": True}
    if args.input is not None:
        options["input"] = read_json(args.input, "--input")
    job = _Job(watch, store, store_path, run_id, resuming=True, target=args.target)

    def run() -> Any:
        try:
            return flow.resume(run_id, store=store, **options)
        finally:
            if args.target is not None and watch.started:  # TARGET fits the run
                _remember(store, run_id, args.target)

    return _finish(args, run, job)


def command_graph(args: argparse.Namespace) -> int:
    flow = load_target(args.target)
    print(flow.to_mermaid())
    return 0


def command_runs(args: argparse.Namespace) -> int:
    store_path = _store_path(args)
    store = open_store(store_path, create=False)
    records = store.runs(status=args.status)
    if not records:
        _say(f"no {args.status + ' ' if args.status else ''}runs in {store_path}")
        return 0
    rows = [("RUN ID", "STATUS", "FLOW", "STARTED", "ENDED", "AT", "ERROR OR PROMPT")]
    for record in records:
        info = record.error or ("" if record.prompt is None else json.dumps(record.prompt))
        rows.append(
            (
                record.run_id,
                record.status,
                record.flow,
                _when(record.started),
                "" if record.ended is None else _when(record.ended),
                record.node or "",
                info if len(info) <= 60 else info[:57] + "...",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _default_page(run_id: str) -> str:
    """``RUN_ID.html`` in the current directory, the id made a safe file name."""
    name = re.sub(r"[^\w.-]+", "_", run_id).strip("._-") or "run"
    return f"{name}.html"


def command_timeline(args: argparse.Namespace) -> int:
    from . import recorded_events
    from .tracing import Timeline

    store_path = _store_path(args)
    store = open_store(store_path, create=False)
    _known_run(store, args.run_id, store_path)
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
    _say(f"wrote {output}")
    return 0


# -- the parser -----------------------------------------------------------------------


def _warning_line(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"braidflow: {category.__name__}: {message}\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        _say(message)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    store = _Parser(add_help=False)
    store.add_argument(
        "--store",
        metavar="PATH",
        help=f"the SQLite store (default: $BRAIDFLOW_STORE, else {DEFAULT_STORE})",
    )
    watch = _Parser(add_help=False)
    watch.add_argument("--out", metavar="FILE", help="write the final shared here, not stdout")
    watch.add_argument("--progress", action="store_true", help="show progress (needs rich)")
    watch.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    watch.add_argument("--timeline", metavar="FILE.html", help="write a timeline of the run")

    parser = _Parser(
        prog="braidflow",
        description="Run braidflow flows, draw them, and list, resume and draw stored runs.",
        epilog="Exit codes: 0 done, 1 the run failed, 2 bad input, 3 waiting for input, "
        "130 stopped (Ctrl-C). 'braidflow COMMAND --help' describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", title="commands", metavar="COMMAND", parser_class=_Parser
    )

    run = commands.add_parser(
        "run",
        parents=[common, store, watch],
        help="run a flow; print the final shared as JSON",
        description="Run a flow once and print the final shared as JSON. With --store (or "
        "--run-id) the run is durable: stored as it goes, so that it can be resumed. A TARGET "
        "that names a node (not a flow) runs that node alone.",
    )
    run.add_argument("target", metavar="TARGET", help="path/to/file.py:name or package.module:name")
    run.add_argument("--shared", metavar="JSON", help="the initial shared: JSON, or @file.json")
    run.add_argument("--run-id", metavar="ID", help="the durable run's id (default: a new one)")
    run.set_defaults(handler=command_run)

    graph = commands.add_parser(
        "graph",
        parents=[common],
        help="print a flow's graph (mermaid)",
        description="Print the graph of the flow TARGET names as a mermaid flowchart, to "
        "paste into Markdown or a mermaid viewer. Nothing runs.",
    )
    graph.add_argument(
        "target", metavar="TARGET", help="path/to/file.py:name or package.module:name"
    )
    graph.add_argument("--format", choices=["mermaid"], default="mermaid")
    graph.set_defaults(handler=command_graph)

    runs = commands.add_parser(
        "runs",
        parents=[common, store],
        help="list stored runs",
        description="List the runs in a store, oldest first: id, status, flow, when it "
        "started and ended, the node it is at, and its error or prompt.",
    )
    runs.add_argument(
        "--status", choices=["running", "completed", "failed", "waiting", "interrupted"]
    )
    runs.set_defaults(handler=command_runs)

    resume = commands.add_parser(
        "resume",
        parents=[common, store, watch],
        help="resume a stored run where it stopped",
        description="Resume a failed, interrupted or waiting run. TARGET (before or after the "
        "options) defaults to the one the run remembers: the one that started it with this "
        "command, or the one last given to resume it.",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "target", metavar="TARGET", nargs="?", help="path/to/file.py:name or package.module:name"
    )
    resume.add_argument("--input", metavar="JSON", help="the answer a waiting run asked for")
    resume.set_defaults(handler=command_resume)

    timeline = commands.add_parser(
        "timeline",
        parents=[common, store],
        help="draw a stored run as an HTML timeline",
        description="Draw a stored run as a self-contained HTML page, from its recorded "
        "events (every part of a resumed run).",
    )
    timeline.add_argument("run_id", metavar="RUN_ID")
    timeline.add_argument(
        "-o",
        "--output",
        metavar="FILE.html",
        help="where to write the page (default: RUN_ID.html in the current directory)",
    )
    timeline.set_defaults(handler=command_timeline)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and args.command == "resume"
        and args.target is None
        and len(extra) == 1
        and not extra[0].startswith("-")
    ):
        # `resume RUN_ID --store PATH TARGET`: argparse fills RUN_ID and the
        # optional TARGET from the words before the options, so a TARGET
        # given after them is left over. It is the TARGET.
        args.target, extra = extra[0], []
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as done:  # --help, --version, or bad usage, already said
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        _say(
            "give a command, e.g. braidflow run path/to/file.py:name; "
            "'braidflow COMMAND --help' describes each"
        )
        return EXIT_USAGE
    shown = warnings.formatwarning
    warnings.formatwarning = _warning_line
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`| head`): the work is done; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except UsageError as error:
        if args.debug:
            traceback.print_exc()
        _say(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("stopped")
        return EXIT_INTERRUPTED
    finally:
        warnings.formatwarning = shown
    return code


if __name__ == "__main__":
    sys.exit(main())
