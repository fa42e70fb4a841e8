"""Finding the flow a TARGET names: ``path/to/file.py:name`` or ``package.module:name``,
imported, and refused in one line (what the file or module holds) when it is no flow.

A TARGET may name a flow, a node (run alone), or a function of no arguments
that returns one. A file's own directory goes on ``sys.path`` so that its
imports work; a module is found from the directory given (where a stored
run started, to resume it), else from the current one.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .._errors import describe_error
from ._console import UsageError

__all__ = ["forget_paths", "is_path", "load_target"]

# What loading TARGETs put on sys.path, for the command to take back when it ends
# (a program calling braidflow.cli.main again and again would see it grow).
_ADDED: list[str] = []


def forget_paths() -> None:
    """Take off ``sys.path`` what loading TARGETs put there."""
    while _ADDED:
        try:
            sys.path.remove(_ADDED.pop())
        except ValueError:  # taken off already
            pass


def _on_path(entry: str) -> None:
    sys.path.insert(0, entry)
    _ADDED.append(entry)


def load_target(spec: str, directory: str | None = None) -> Any:
    """The flow that ``path/to/file.py:name`` or ``package.module:name`` names
    (a flow or node, or a function of no arguments that returns one). A
    module is found from ``directory`` (default: the current directory)."""
    from .. import BaseNode

    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        hint = ""
        if not where and is_path(spec) and Path(spec).is_file():  # a file, with no name
            try:
                hint = _what_it_holds(_load_module(spec, directory), f"{spec}:")
            except UsageError:
                pass  # it does not import: the shape of TARGET is what to say first
        raise UsageError(
            f"TARGET {spec!r} should be path/to/file.py:name or package.module:name{hint}"
        )
    module = _load_module(where, directory)
    shown = where if is_path(where) else f"module {where}"
    if not hasattr(module, name):
        raise UsageError(f"{shown} has no {name!r}{_what_it_holds(module)}")
    target = getattr(module, name)
    if isinstance(target, type) and issubclass(target, BaseNode):
        if target._bf_is_flow:
            raise UsageError(
                f"{name!r} in {shown} is a flow class; point TARGET at a flow made from it "
                f"(an instance, such as flow = {name}(...)), or a function that returns one"
            )
        raise UsageError(
            f"{name!r} in {shown} is a node class; point TARGET at a node made from it "
            f"(an instance, such as node = {name}(...)), a flow that runs one, or a "
            "function that returns either"
        )
    called = False
    if not isinstance(target, BaseNode) and callable(target) and not isinstance(target, type):
        called = True
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
        what = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        said = (
            f"{name}() in {shown} returned {what}" if called else f"{name!r} in {shown} is {what}"
        )
        raise UsageError(
            f"{said}, not a flow; point TARGET at "
            "a Flow or AsyncFlow (or a function of no arguments that returns one)"
        )
    return target


def _what_it_holds(module: Any, prefix: str = "") -> str:
    """``"; its flows: a, b"`` (else its nodes), each name after ``prefix``."""
    from .. import BaseNode

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


def is_path(where: str) -> bool:
    """Tell whether TARGET's part before the colon is a file (else a module)."""
    return where.endswith(".py") or "/" in where or os.sep in where


def _load_module(where: str, directory: str | None) -> Any:
    if is_path(where):
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"no file {where!r}")
        _on_path(str(path.resolve().parent))  # its own imports work
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
    _on_path(base)
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as error:
        if error.name is not None and where.startswith(error.name):
            raise UsageError(f"no module {where!r} (from {base})") from error
        raise UsageError(f"importing {where} failed: {describe_error(error)}") from error
    except Exception as error:
        raise UsageError(f"importing {where} failed: {describe_error(error)}") from error
