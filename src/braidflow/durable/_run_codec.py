"""Which serializer a stored run was written with: the mark a new run keeps in its
metadata, and the codec every reader of the run (resume, fork, history) decodes it with.

A run written with pickle says so in its metadata, under `SERIALIZER_KEY`;
one written with JSON, the default, says nothing, so that runs and stores
made before runs were marked are read as they were. A store object's own
``serializer`` says only how the runs it starts are written: a run is read
with its own serializer, whatever the store object that reads it says.
"""

from __future__ import annotations

import pickle
from typing import Any

from .._errors import BraidflowError, StoreError, describe_error
from ._codec import Codec

__all__ = ["SERIALIZER_KEY", "marked_metadata", "run_codec", "undecodable"]

SERIALIZER_KEY = "braidflow.serializer"  # a run's serializer; absent: "json"
_CODECS = {"json": Codec("json"), "pickle": Codec("pickle")}  # (a codec keeps no state)
# A pickle (protocol 2 or later: braidflow writes the highest) starts with this
# byte; a JSON payload is ASCII text, and braidflow's start with "[".
_PICKLE_START = b"\x80"
# What decoding data that is not what its codec reads raises (a JSON payload
# read as pickle, pickle read as JSON, a payload cut short).
_UNDECODABLE = (ValueError, EOFError, pickle.UnpicklingError)


def marked_metadata(metadata: Any, serializer: str) -> Any:
    """The metadata a new run is recorded with (``metadata`` as the caller
    gave it): with the mark of its ``serializer``, unless that is JSON, whose
    runs keep no mark (a mark given for one is dropped: it would misname it)."""
    if serializer == "json":
        if isinstance(metadata, dict) and SERIALIZER_KEY in metadata:
            return {key: value for key, value in metadata.items() if key != SERIALIZER_KEY}
        return metadata
    if metadata is None:
        return {SERIALIZER_KEY: serializer}
    if isinstance(metadata, dict):
        return {**metadata, SERIALIZER_KEY: serializer}
    return metadata  # not a dict: refused where it is checked


def run_codec(store: Any, run_id: str, metadata: dict[str, Any], initial: bytes) -> Codec:
    """The codec of stored run ``run_id``, from its ``metadata`` and its
    ``initial`` state as stored: the serializer its mark names, JSON if
    none. A run whose data is pickle is read only through a store opened
    with ``serializer="pickle"`` (the reader's word that it trusts the
    store: unpickling runs code), and refused through any other.

    Raises:
        StoreError: If the run's data is not what its mark names, or is
            pickle that ``store`` was not opened to read: one line, naming
            the run and the serializer to read it with.
    """
    found = "pickle" if initial[:1] == _PICKLE_START else "json"
    marked = metadata.get(SERIALIZER_KEY)
    if found == "pickle" and getattr(store, "serializer", "json") != "pickle":
        # Unpickling runs whatever code the data names: only where its reader
        # says it trusts the store, never because a run's metadata says so.
        raise StoreError(
            f"run {run_id!r} was stored with serializer='pickle', and {store!r} reads JSON: "
            "reading it unpickles its data, which can run any code, so braidflow does so "
            "only through a store opened with `serializer='pickle'` (the command: "
            "--serializer pickle); do that if you trust the store",
            run_id=run_id,
        )
    if marked is None:
        return _CODECS[found]
    if marked != found:  # a mark set by hand, or one this braidflow does not know
        raise StoreError(
            f"run {run_id!r} cannot be read as {marked!r}, the serializer its metadata names "
            f"({SERIALIZER_KEY!r}): its data is {found}; if it was written so, mark it so: "
            f"`store.set_metadata({run_id!r}, {{{SERIALIZER_KEY!r}: {found!r}}})`",
            run_id=run_id,
        )
    return _CODECS[found]


def undecodable(error: BaseException, run_id: str, codec: Codec) -> StoreError | None:
    """The error to raise for ``error``, raised decoding run ``run_id``'s data
    with ``codec``, if it says the data cannot be decoded (``None`` if it is
    another failure: braidflow's own, a class pickle cannot import)."""
    if isinstance(error, BraidflowError) or not isinstance(error, _UNDECODABLE):
        return None
    return StoreError(
        f"run {run_id!r} holds data that cannot be decoded as {codec.kind}, the serializer "
        f"it was written with ({describe_error(error)}): the store is damaged",
        run_id=run_id,
    )
