"""Checking an output path before a run starts, for the observers that write files."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import InvalidParameterError

__all__ = ["writable_path"]


def writable_path(path: str | os.PathLike[str], who: str) -> Path:
    """Return ``path`` as a Path if a file can be written there, else raise.

    Raises:
        InvalidParameterError: If its directory does not exist, or the file
            or its directory is not writable; said before any run starts.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise InvalidParameterError(
            f"{who}: cannot write {str(target)!r}: the directory {str(directory)!r} does not "
            "exist; create it first or choose another path"
        )
    if target.is_dir():
        raise InvalidParameterError(f"{who}: {str(target)!r} is a directory, not a file path")
    if target.exists() and not os.access(target, os.W_OK):
        raise InvalidParameterError(f"{who}: {str(target)!r} exists and is not writable")
    if not target.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidParameterError(
            f"{who}: cannot write {str(target)!r}: the directory {str(directory)!r} is not writable"
        )
    return target
