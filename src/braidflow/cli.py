"""The ``braidflow`` command: run a flow, draw it, list, resume and draw stored runs.

    braidflow run path/to/file.py:flow --shared '{"topic": "owls"}' --store runs.db
    braidflow runs --store runs.db
    braidflow resume RUN_ID --store runs.db --input '"yes"'
    braidflow timeline RUN_ID --store runs.db -o run.html
    braidflow graph path/to/file.py:flow

The final ``shared`` goes to stdout as JSON; everything else to stderr.
Exit codes: 0 done, 1 the run failed, 2 bad input (a one-line message;
``--debug`` shows the traceback), 3 the run waits for input, 130 stopped by
Ctrl-C. ``import braidflow`` never imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import math
import os
import shlex
import sqlite3
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._errors import describe_error
from .durable import RESUME_HINT

__all__ = ["main"]

DEFAULT_STORE = "braidflow.db"
EXIT_FAILED, EXIT_USAGE, EXIT_WAITING, EXIT_INTERRUPTED = 1, 2, 3, 130


class UsageError(Exception):
    """Bad input to the command: said in one line, exit code 2."""


# -- finding the flow ---------------------------------------------------------------


def load_target(spec: str) -> Any:
    """The flow that ``path/to/file.py:name`` or ``package.module:name`` names
    (a flow or node, or a function of no arguments that returns one)."""
    from . import BaseNode

    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise UsageError(f"TARGET {spec!r} should be path/to/file.py:name or package.module:name")
    module = _load_module(where)
    shown = where if _is_path(where) else f"module {where}"
    if not hasattr(module, name):
        nodes = {
            attr: value
            for attr, value in vars(module).items()
            if not attr.startswith("_") and isinstance(value, BaseNode)
        }
        flows = sorted(attr for attr, value in nodes.items() if value._bf_is_flow)
        if flows:
            hint = f"; its flows: {', '.join(flows)}"
        elif nodes:
            hint = f"; its nodes: {', '.join(sorted(nodes))}"
        else:
            hint = ""
        raise UsageError(f"{shown} has no {name!r}{hint}")
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


def _is_path(where: str) -> bool:
    """Tell whether TARGET's part before the colon is a file (else a module)."""
    return where.endswith(".py") or "/" in where or os.sep in where


def _load_module(where: str) -> Any:
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
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as error:
        if error.name is not None and where.startswith(error.name):
            raise UsageError(f"no module {where!r} (from {os.getcwd()})") from error
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


# -- the store, and which target started each run -----------------------------------


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


def remember_target(path: Path, run_id: str, target: str) -> None:
    """Keep which TARGET started a run, in the store's file, for ``resume``."""
    where, _, name = target.rpartition(":")
    if _is_path(where):
        target = f"{Path(where).resolve()}:{name}"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS braidflow_cli_targets "
            "(run_id TEXT PRIMARY KEY, target TEXT NOT NULL, directory TEXT NOT NULL)"
        )
        db.execute(
            "INSERT OR REPLACE INTO braidflow_cli_targets VALUES (?, ?, ?)",
            (run_id, target, os.getcwd()),
        )
    db.close()


def remembered_target(path: Path, run_id: str) -> str | None:
    with sqlite3.connect(path) as db:
        try:
            row = db.execute(
                "SELECT target, directory FROM braidflow_cli_targets WHERE run_id=?", (run_id,)
            ).fetchone()
        except sqlite3.OperationalError:  # no run was started by this command
            row = None
    db.close()
    if row is None:
        return None
    target, directory = row
    if not _is_path(target.rpartition(":")[0]):
        os.chdir(directory)  # a module target is found from where it was run
    return str(target)


# -- running --------------------------------------------------------------------------


def _observers(args: argparse.Namespace) -> list[Any]:
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
    return observers


def _finish(args: argparse.Namespace, run: Any, store_path: Path | None, run_id: str | None) -> int:
    """Carry out a run (or resume) and report it: stdout gets ``shared``."""
    from . import ResumeError, RunError, StoreError, Suspended

    resume_hint = f"braidflow resume {run_id} --store {store_path}" if run_id else None
    try:
        shared = run()
    except Suspended as waiting:
        _say(f"run {waiting.run_id!r} is waiting for input at {waiting.node}:")
        for line in _prompt_lines(waiting.prompt):
            print(f"  {line}", file=sys.stderr)
        _say(f"answer with: {resume_hint} --input JSON")
        return EXIT_WAITING
    except KeyboardInterrupt:
        if resume_hint:
            _say(f"stopped; resume with: {resume_hint}")
        else:
            _say("stopped")
        return EXIT_INTERRUPTED
    except (StoreError, ResumeError) as error:  # the wrong run, or the wrong flow for it
        message = str(error)
        raise UsageError((message.splitlines() or [""])[0] or message) from error
    except RunError as error:
        if str(error).startswith("braidflow.interrupt() needs a durable run"):
            raise UsageError(
                "the flow asks for input (braidflow.interrupt), so it must be able to wait: "
                "run it with --store PATH"
            ) from error
        return _failed(args, error, resume_hint)
    except Exception as error:
        return _failed(args, error, resume_hint)
    text = shown_json(shared)
    if args.out:
        try:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write {args.out!r} ({error.strerror})") from error
    else:
        print(text)
    return 0


def _failed(args: argparse.Namespace, error: Exception, resume_hint: str | None) -> int:
    """Report a run that failed: the error and braidflow's notes on where, on
    stderr (the Python way to resume left out: the command says its own)."""
    if args.debug:
        traceback.print_exc()
    else:
        _say(f"the run failed: {describe_error(error)}")
        for note in getattr(error, "__notes__", ()):
            if RESUME_HINT not in note:
                print(f"  {note}", file=sys.stderr)
    if resume_hint:
        _say(f"fix the cause, then: {resume_hint}")
    return EXIT_FAILED


def _check_out(args: argparse.Namespace) -> None:
    """Refuse an --out that cannot be written before anything runs."""
    from .tracing._files import writable_path

    if args.out:
        try:
            writable_path(args.out, "--out")
        except ValueError as error:
            raise UsageError(str(error)) from error


def command_run(args: argparse.Namespace) -> int:
    if args.run_id is not None and not args.run_id.strip():
        raise UsageError("--run-id is empty; give an id, or leave it out for a new one")
    _check_out(args)
    flow = load_target(args.target)
    shared = read_json(args.shared, "--shared") if args.shared is not None else {}
    if not isinstance(shared, dict):
        raise UsageError(f"--shared must be a JSON object, got {type(shared).__name__}")
    observers = _observers(args)
    options: dict[str, Any] = {"observers": observers}
    store_path = run_id = None
    if args.store or args.run_id:
        store_path = _store_path(args)
        store = open_store(store_path, create=True)
        run_id = args.run_id or _new_run_id()
        if _stored_run(store, run_id) is not None:
            raise UsageError(
                f"run id {run_id!r} is already used in {str(store_path)!r}; choose another, "
                f"or resume it: braidflow resume {run_id} --store {store_path}"
            )
        remember_target(store_path, run_id, args.target)
        options.update(store=store, run_id=run_id, record_events=True)
        _say(f"run {run_id!r} (stored in {store_path})")

    def run() -> Any:
        flow.run(shared, **options)
        return shared

    return _finish(args, run, store_path, run_id)


def _new_run_id() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def command_resume(args: argparse.Namespace) -> int:
    store_path = _store_path(args)
    store = open_store(store_path, create=False)
    record = _known_run(store, args.run_id, store_path)
    target = args.target or remembered_target(store_path, args.run_id)
    if target is None:
        raise UsageError(
            f"run {args.run_id!r} was not started by the braidflow command; give its TARGET: "
            f"braidflow resume {args.run_id} --store {store_path} path/to/file.py:name"
        )
    _check_out(args)
    flow = load_target(target)
    options: dict[str, Any] = {"observers": _observers(args), "record_events": True}
    if args.input is not None:
        options["input"] = read_json(args.input, "--input")
        if record.status != "waiting":
            raise UsageError(
                f"run {args.run_id!r} is {record.status}, not waiting for input; resume it "
                "without --input"
            )

    def run() -> Any:
        return flow.resume(args.run_id, store=store, **options)

    return _finish(args, run, store_path, args.run_id)


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
        raise UsageError(f"no run {run_id!r} in {str(path)!r} (braidflow runs lists them)")
    return record


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


def command_timeline(args: argparse.Namespace) -> int:
    from . import recorded_events
    from .tracing import Timeline

    store_path = _store_path(args)
    store = open_store(store_path, create=False)
    _known_run(store, args.run_id, store_path)
    events = recorded_events(store, args.run_id)
    if not events:
        raise UsageError(
            f"run {args.run_id!r} has no recorded events: runs started by this command keep "
            "them, as do runs given record_events=True"
        )
    try:
        page = Timeline(args.output)
    except ValueError as error:
        raise UsageError(str(error)) from error
    page.write(events)
    _say(f"wrote {args.output}")
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
        "130 stopped (Ctrl-C).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        parents=[common, store, watch],
        help="run a flow; print the final shared as JSON",
        description="Run a flow once. With --store (or --run-id) the run is durable: "
        "stored as it goes, so that it can be resumed.",
    )
    run.add_argument("target", metavar="TARGET", help="path/to/file.py:name or package.module:name")
    run.add_argument("--shared", metavar="JSON", help="the initial shared: JSON, or @file.json")
    run.add_argument("--run-id", metavar="ID", help="the durable run's id (default: a new one)")
    run.set_defaults(handler=command_run)

    graph = commands.add_parser("graph", parents=[common], help="print a flow's graph (mermaid)")
    graph.add_argument("target", metavar="TARGET")
    graph.add_argument("--format", choices=["mermaid"], default="mermaid")
    graph.set_defaults(handler=command_graph)

    runs = commands.add_parser("runs", parents=[common, store], help="list stored runs")
    runs.add_argument(
        "--status", choices=["running", "completed", "failed", "waiting", "interrupted"]
    )
    runs.set_defaults(handler=command_runs)

    resume = commands.add_parser(
        "resume",
        parents=[common, store, watch],
        help="resume a stored run where it stopped",
        description="Resume a failed, interrupted or waiting run. TARGET defaults to the one "
        "that started the run, if the braidflow command started it.",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("target", metavar="TARGET", nargs="?")
    resume.add_argument("--input", metavar="JSON", help="the answer a waiting run asked for")
    resume.set_defaults(handler=command_resume)

    timeline = commands.add_parser(
        "timeline", parents=[common, store], help="draw a stored run as an HTML timeline"
    )
    timeline.add_argument("run_id", metavar="RUN_ID")
    timeline.add_argument("-o", "--output", metavar="FILE.html", required=True)
    timeline.set_defaults(handler=command_timeline)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    args = build_parser().parse_args(argv)
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
    return code


if __name__ == "__main__":
    sys.exit(main())
