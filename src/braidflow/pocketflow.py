"""Run a PocketFlow program on braidflow without changing a line of it.

``python -m braidflow.pocketflow program.py [args ...]`` runs ``program.py`` as
``python program.py [args ...]`` would, except that its ``import pocketflow``
and ``from pocketflow import Node, Flow`` (and those of every module it
imports) give braidflow. ``python -m braidflow.pocketflow -m module [args
...]`` does the same for ``python -m module`` (``-m unittest``, ``-m pytest``).

The program runs in this process, as ``__main__``, with ``sys.argv`` and
``sys.path[0]`` set as Python sets them. Installed beforehand, the alias wins
over a ``pocketflow`` package that is installed or next to the program: that
one is never imported. In a program of your own, `install` does the same
for the imports that follow it.
"""

from __future__ import annotations

import os
import runpy
import sys

import braidflow

__all__ = ["install", "main"]

_USAGE = """\
usage: python -m braidflow.pocketflow program.py [args ...]
       python -m braidflow.pocketflow -m module [args ...]

Run a PocketFlow program unchanged: its `import pocketflow` and
`from pocketflow import ...` give braidflow."""


def install() -> None:
    """Make ``import pocketflow`` give braidflow in this process from now on.

    Modules that imported the real ``pocketflow`` before keep it; call this
    first.
    """
    sys.modules["pocketflow"] = braidflow


def main(argv: list[str] | None = None) -> None:
    """Run a program (``program.py`` or ``-m module``, then its arguments)
    with ``pocketflow`` installed as braidflow; the command's entry point.

    Raises:
        SystemExit: With status 2 and a usage line for no program; else
            whatever the program exits with.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help") or args == ["-m"]:
        print(_USAGE, file=sys.stderr if not args or args == ["-m"] else sys.stdout)
        raise SystemExit(0 if args and args[0] in ("-h", "--help") else 2)
    install()
    if args[0] == "-m":
        module, rest = args[1], args[2:]
        sys.argv = [module, *rest]  # run_module sets argv[0] to the module's file
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    program, rest = args[0], args[1:]
    if not os.path.exists(program):
        print(f"python -m braidflow.pocketflow: can't open file {program!r}", file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [program, *rest]
    # As `python program.py` does: the program's directory first on the path.
    sys.path[0] = os.path.dirname(os.path.realpath(program))
    runpy.run_path(program, run_name="__main__")


if __name__ == "__main__":
    main()
