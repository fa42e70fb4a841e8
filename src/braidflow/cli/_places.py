"""Where a stored run is, as the command says it: ``job/process (528 of
1,000 items)`` in a listing, what a resume takes over."""

from __future__ import annotations

from typing import Any

from ._console import UsageError

__all__ = ["place_of", "progress", "reused", "stored"]


def stored(store: Any, run_id: str, *, decoded: bool = False) -> Any:
    """The run as `StoredRun` reads it; bad input if it cannot be read (nor,
    if ``decoded``, decoded with its serializer: to show its ``shared``,
    not only where it is)."""
    from .. import ResumeError, StoreError
    from ..durable._history import StoredRun

    try:
        run = StoredRun(store, run_id)
        if decoded:
            run.codec  # noqa: B018 -- looked up now, to refuse a run no step of which can be read
    except (StoreError, ResumeError) as error:
        raise UsageError(str(error)) from error
    return run


def place_of(run: Any) -> str:
    """Where a run that has not completed is, for a listing: ``job/process
    (528 of 1,000 items)``; where it ended, for one that completed."""
    step = run.here()
    if step is None:
        return run.record.node or ""
    return f"{step.path}{progress(step, ' ({})')}"


def reused(run: Any) -> str:
    """What a resume of ``run`` takes over: ``3 finished steps and 528 of
    1,000 items``."""
    steps = run.finished_steps()
    said = f"{steps:,} finished step{'' if steps == 1 else 's'}"
    batches = [step for step in run.unfinished() if step.items_done]
    for step in batches:
        said += f" and {progress(step, '{}')} of {step.path}"
    return said


def progress(step: Any, form: str) -> str:
    """``528 of 1,000 items`` (``528 items`` if the total is not known) in
    ``form``; ``""`` for a step with no items."""
    if step.items_done is None:
        return ""
    if step.items_total is None:
        return form.format(f"{step.items_done:,} item{'' if step.items_done == 1 else 's'}")
    return form.format(f"{step.items_done:,} of {step.items_total:,} items")
