"""What the command reads from its user and shows them: JSON from the command line or
a file, ``shared`` and prompts shown, one-line messages and the command lines it suggests.

Bad input is a `UsageError`: said in one line (``braidflow: ...``) on stderr,
exit code 2. The final ``shared`` goes to stdout; everything else to stderr.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import describe_error
from .._strict_json import is_json, plain

__all__ = [
    "EXIT_USAGE",
    "UsageError",
    "parse_json",
    "print_table",
    "prompt_lines",
    "read_json",
    "say",
    "shown_json",
    "suggested",
]

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input to the command: said in one line, exit code 2."""


def say(text: str) -> None:
    """Say ``text`` to the user: one line on stderr, after ``braidflow:``."""
    print(f"braidflow: {text}", file=sys.stderr, flush=True)


def suggested(command: str, *arguments: str, options: Sequence[tuple[str, str]] = ()) -> str:
    """A ``braidflow`` command line to suggest, quoted for a shell: ``command``,
    its positional ``arguments`` (a run id, TARGET), then ``options`` as
    (option, value) pairs.

    A word that starts with ``-`` would be read as an option, so that the
    line would not work as printed: such a value is given as
    ``--option=value``, and such an argument (a run id ``-r1``) after ``--``,
    the options put before it.
    """
    given = [
        word
        for option, value in options
        for word in ((f"{option}={value}",) if value.startswith("-") else (option, value))
    ]
    if any(argument.startswith("-") for argument in arguments):
        return shlex.join(["braidflow", command, *given, "--", *arguments])
    return shlex.join(["braidflow", command, *arguments, *given])


# -- reading JSON -----------------------------------------------------------------------


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
    deeper than Python reads. ``what`` is the option as messages name it:
    ``--input``, or ``--answer ID`` (``--set KEY``) for the JSON of a
    ``ID=JSON`` pair, which a hint then gives whole, as one argument.
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
        return parse_json(text, source)
    except UsageError as error:
        if isinstance(error.__cause__, json.JSONDecodeError):
            raise UsageError(f"{error}{_json_hint(text, what, from_file)}") from error.__cause__
        raise


def parse_json(text: str, source: str) -> Any:
    """Strict JSON from a text (never a file): what `read_json` reads, for input
    that does not come from the command line (the dashboard's forms).

    Raises:
        UsageError: Naming ``source``, for text that is not JSON, NaN,
            Infinity, a number out of a float's range, JSON nested deeper
            than Python reads.
    """
    try:
        return json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_readable_int,
        )
    except json.JSONDecodeError as error:
        raise UsageError(f"{source} is not valid JSON ({error})") from error
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
    if what == "--shared":  # an object, never a bare text
        example = '{"key": "value"}'
        if from_file:
            return f"; --shared takes a JSON object, such as {example}"
        return f"; --shared takes a JSON object: --shared {shlex.quote(example)}"
    if from_file:
        return f"; a text in JSON is written in double quotes: {json.dumps(text.strip())}"
    quoted = json.dumps(text, ensure_ascii=False)
    option, space, key = what.partition(" ")
    if space:  # --answer ID, --set KEY: the pair is one argument, KEY=JSON
        return f"; a text is quoted: {option} {shlex.quote(f'{key}={quoted}')}"
    return f"; a text is quoted: {what} {shlex.quote(quoted)}"


# -- showing ----------------------------------------------------------------------------


def shown_json(shared: Any) -> str:
    """``shared`` as strict JSON, which any parser reads whole: a value JSON
    cannot hold is shown by its ``repr`` (``nan`` as ``"nan"``), a key as
    `braidflow._strict_json.key_texts` says, so that no entry is lost."""
    try:
        if is_json(shared):
            # As it is: no copy to recurse through, so it goes as deep as the
            # JSON it was read from.
            return json.dumps(shared, indent=2, ensure_ascii=False, allow_nan=False, default=repr)
        return json.dumps(
            plain(shared), indent=2, ensure_ascii=False, allow_nan=False, default=repr
        )
    except (ValueError, RecursionError):  # a value that holds itself, or too deep to copy
        return json.dumps(repr(shared))


def prompt_lines(prompt: Any) -> list[str]:
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
                shown = value if isinstance(value, str) else json.dumps(plain(value), default=repr)
                lines.append(f"{key}: {shown}")
        return lines
    return [json.dumps(plain(prompt), default=repr)]


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows of text (the first, the header) as columns, on stdout: a cell
    that holds lines (an error's message) is shown on one line."""
    rows = [tuple(" ".join(cell.split()) if "\n" in cell else cell for cell in row) for row in rows]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip())
