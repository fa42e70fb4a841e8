"""The command line read (its parser, with a TARGET given after ``resume``'s options)
and `main`, which hands it to its command and turns what escapes into an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from ._console import EXIT_USAGE, UsageError, say
from ._history import command_fork, command_show
from ._running import EXIT_INTERRUPTED, command_resume, command_run
from ._store import DEFAULT_STORE, close_stores
from ._target import forget_paths
from ._ui import DEFAULT_PORT, command_ui
from ._views import command_graph, command_runs, command_timeline

__all__ = ["build_parser", "main"]


def _warning_line(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"braidflow: {category.__name__}: {message}\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad input: one line, as every other (the usage is in --help)."""
        say(f"{message}; see '{self.prog} --help'")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    store = _Parser(add_help=False)
    store.add_argument(
        "--store",
        metavar="PATH|URL",
        help="the store: a SQLite file, or a PostgreSQL database as a postgresql:// URL "
        f"(default: $BRAIDFLOW_STORE, else {DEFAULT_STORE})",
    )
    store.add_argument(
        "--serializer",
        choices=["json", "pickle"],
        help="json (the default: plain data) or pickle (any picklable value: sets, datetimes, "
        "objects): how a new durable run stores shared, and whether runs stored with pickle "
        "may be read (unpickling runs code: only for a store you trust)",
    )
    watch = _Parser(add_help=False)
    watch.add_argument("--out", metavar="FILE", help="write the final shared here, not stdout")
    watch.add_argument("--progress", action="store_true", help="show progress (needs rich)")
    watch.add_argument("--trace", metavar="FILE.jsonl", help="write every event as JSON lines")
    watch.add_argument("--timeline", metavar="FILE.html", help="write a timeline of the run")
    watch.add_argument(
        "--budget-tokens",
        metavar="N",
        type=int,
        help="stop before a call once the run has used N tokens (a durable run waits)",
    )
    watch.add_argument(
        "--budget-cost",
        metavar="X",
        type=float,
        help="stop before a call once the run's calls cost X (a durable run waits)",
    )
    watch.add_argument(
        "--durability",
        choices=["sync", "async", "exit"],
        help="when a durable run's checkpoints are written: before it goes on (sync, the "
        "default), in batches every 50 ms (async), when it stops (exit); see docs/durable.md",
    )
    watch.add_argument(
        "--drain-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="on SIGTERM a durable run drains: no new step or item, and what is running "
        "gets this long to finish (default 30); exit code 75, resume it later",
    )

    parser = _Parser(
        prog="braidflow",
        description="Run braidflow flows, draw them, and list, show, resume, fork and draw "
        "stored runs, or look at them all in the browser (ui).",
        epilog="Exit codes: 0 done, 1 the run failed, 2 bad input, 3 waiting for input, "
        "74 the store failed (resume once it works), 75 drained (SIGTERM), 130 stopped "
        "(Ctrl-C). 'braidflow COMMAND --help' describes a command.",
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
        "--run-id) the run is durable: stored as it goes (as --durability says), so that it "
        "can be resumed. A TARGET that names a node (not a flow) runs that node alone.",
    )
    run.add_argument("target", metavar="TARGET", help="path/to/file.py:name or package.module:name")
    run.add_argument("--shared", metavar="JSON", help="the initial shared: JSON, or @file.json")
    run.add_argument("--run-id", metavar="ID", help="the durable run's id (default: a new one)")
    run.set_defaults(handler=command_run)

    graph = commands.add_parser(
        "graph",
        parents=[common, store],
        help="print a flow's graph (mermaid)",
        description="Print the graph of the flow TARGET names as a mermaid flowchart, to "
        "paste into Markdown or a mermaid viewer, with the table of its state's keys (as "
        "mermaid comments) if it has a state type, or if --run names a stored run of it "
        "(the keys each step changed count as written); --format markdown prints a "
        "Markdown mermaid block and the table. Nothing runs.",
    )
    graph.add_argument(
        "target", metavar="TARGET", help="path/to/file.py:name or package.module:name"
    )
    graph.add_argument("--format", choices=["mermaid", "markdown"], default="mermaid")
    graph.add_argument(
        "--run", metavar="RUN_ID", help="a stored run of the flow: what its steps changed"
    )
    graph.set_defaults(handler=command_graph)

    runs = commands.add_parser(
        "runs",
        parents=[common, store],
        help="list stored runs",
        description="List the runs in a store, oldest first: id, status, flow, when it "
        "started and ended, the node it is at, and its error or prompt.",
    )
    runs.add_argument(
        "--status",
        choices=["running", "completed", "failed", "waiting", "interrupted", "drained"],
    )
    runs.set_defaults(handler=command_runs)

    resume = commands.add_parser(
        "resume",
        parents=[common, store, watch],
        help="resume a stored run where it stopped",
        description="Resume a failed, interrupted, drained or waiting run. TARGET (before or "
        "after the options) defaults to the one the run remembers: the one that started it "
        "with this command, or the one last given to resume it.",
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "target", metavar="TARGET", nargs="?", help="path/to/file.py:name or package.module:name"
    )
    resume.add_argument(
        "--input", metavar="JSON", help="the answer, for a run waiting on one question"
    )
    resume.add_argument(
        "--answer",
        metavar="ID=JSON",
        action="append",
        help="the answer to question ID (as `show` lists them), for a run waiting on several; "
        "repeat to answer more at once",
    )
    resume.add_argument(
        "--rename",
        metavar="OLD=NEW",
        action="append",
        help="a node renamed since the run was recorded (as rename= in Python); repeat for more",
    )
    resume.set_defaults(handler=command_resume)

    show = commands.add_parser(
        "show",
        parents=[common, store],
        help="show a stored run's steps, or its shared after a step",
        description="Show a stored run: its record and its steps in the order they finished "
        "(what each changed, how long it took, how far a batch got), then where it is or "
        "ended. Works while the run goes on, and on a killed run; changes nothing.",
    )
    show.add_argument("run_id", metavar="RUN_ID")
    show.add_argument(
        "--at",
        metavar="STEP",
        type=_step_number,
        help="print shared as it was after step STEP (a number from the list; 0: at the start)",
    )
    show.add_argument("--diff", action="store_true", help="show what each step changed")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=command_show)

    fork = commands.add_parser(
        "fork",
        parents=[common, store, watch],
        help="start a new run from a stored run's state after a step",
        description="Start a new durable run from the state of run RUN_ID after step STEP "
        "(see 'braidflow show'), with --set changes to shared, and run it on from the step "
        "that followed; print its final shared. RUN_ID is left as it was. TARGET defaults to "
        "the one the run remembers.",
    )
    fork.add_argument("run_id", metavar="RUN_ID")
    fork.add_argument(
        "target", metavar="TARGET", nargs="?", help="path/to/file.py:name or package.module:name"
    )
    fork.add_argument(
        "--at",
        metavar="STEP",
        type=_step_number,
        help="the step to fork after (default: the last that finished)",
    )
    fork.add_argument(
        "--set",
        metavar="KEY=JSON",
        action="append",
        help="set shared[KEY] in the fork (repeat for more keys)",
    )
    fork.add_argument(
        "--run-id",
        dest="run_id_new",
        metavar="ID",
        help="the new run's id (default: RUN_ID-fork-N)",
    )
    fork.add_argument("--input", metavar="JSON", help="the answer, for a run waiting for input")
    fork.add_argument(
        "--answer",
        metavar="ID=JSON",
        action="append",
        help="the answer to question ID, for a run waiting on several (repeat for more)",
    )
    fork.set_defaults(handler=command_fork)

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

    ui = commands.add_parser(
        "ui",
        parents=[common, store],
        help="look at the stored runs in the browser, and act on them",
        description="Serve a dashboard of the store's runs (needs braidflow[ui]): the runs, "
        "each run's timeline, steps, shared after each step, events and error; answer, resume "
        "and fork runs from it. It reads the store without writing; only an action taken on "
        "the page writes. Served on 127.0.0.1 unless --host says otherwise; any other address "
        "needs the token the command prints.",
    )
    ui.add_argument(
        "--target",
        metavar="TARGET",
        help="the flow of runs that remember no TARGET (path/to/file.py:name or "
        "package.module:name), for the page's actions",
    )
    ui.add_argument("--host", default="127.0.0.1", help="the address to serve on (127.0.0.1)")
    ui.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the port (default {DEFAULT_PORT}; 0: any free one)",
    )
    ui.add_argument(
        "--token",
        help="the token every request must carry (16+ letters, digits, - or _); default: "
        "none on 127.0.0.1, a new one printed for any other address",
    )
    ui.set_defaults(handler=command_ui)
    for command in (run, graph, runs, resume, show, fork, timeline, ui):
        command.set_defaults(parser=command)  # what says an option it does not know
    return parser


def _step_number(text: str) -> int:
    """A step's number, as ``show`` lists it (0: the state the run started with)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step number; 'braidflow show RUN_ID' lists the steps"
        ) from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{number} is not a step number (0 or more)")
    return number


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and args.command in ("resume", "fork")
        and args.target is None
        and len(extra) == 1
        and not extra[0].startswith("-")
    ):
        # `resume RUN_ID --store PATH TARGET`: argparse fills RUN_ID and the
        # optional TARGET from the words before the options, so a TARGET
        # given after them is left over. It is the TARGET.
        args.target, extra = extra[0], []
    if extra:  # said by the command's own parser: its --help lists its options
        said_by = args.parser if args.command is not None else parser
        said_by.error(f"unrecognized arguments: {' '.join(extra)}")
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
        say(
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
        say(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("stopped")
        return EXIT_INTERRUPTED
    finally:
        warnings.formatwarning = shown
        forget_paths()
        close_stores()
    return code


def _seconds(text: str) -> float:
    """A number of seconds, 0 or more (``--drain-timeout``)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds (0 or more)")
    return seconds
