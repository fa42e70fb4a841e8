"""What the command's options for a run say, read and checked: the budget
(``--budget-tokens``, ``--budget-cost``), and what ``resume`` and ``fork``
pass on (``--input``, ``--answer``, ``--rename``, ``--durability``)."""

from __future__ import annotations

import argparse
from typing import Any

from ._console import UsageError, read_json

__all__ = ["answers_given", "budget_given", "renames_given", "resume_options"]


def budget_given(args: argparse.Namespace, durable: bool) -> Any:
    """The ``Budget`` of ``--budget-tokens`` and ``--budget-cost`` (``None``:
    neither given): a durable run waits when it reaches it, another stops."""
    tokens, cost = getattr(args, "budget_tokens", None), getattr(args, "budget_cost", None)
    if tokens is None and cost is None:
        return None
    from .. import Budget, InvalidParameterError

    try:
        return Budget(tokens=tokens, cost=cost, on_exceed="suspend" if durable else "raise")
    except InvalidParameterError as error:
        raise UsageError(f"--budget-tokens/--budget-cost: {error}") from None


def answers_given(pairs: list[str]) -> dict[str, Any]:
    """``--answer ID=JSON`` options as ``answers=`` takes them."""
    answers: dict[str, Any] = {}
    for pair in pairs:
        ident, equals, text = pair.partition("=")
        if not equals or not ident:
            raise UsageError(
                f"--answer {pair!r}: give ID=JSON, a question's id (as `braidflow show RUN` "
                "lists them) and its answer, e.g. --answer '3f2a9c1d=\"yes\"'"
            )
        if ident in answers:
            raise UsageError(f"--answer {ident}: given twice; answer each question once")
        answers[ident] = read_json(text, f"--answer {ident}")
    return answers


def renames_given(pairs: list[str]) -> dict[str, str]:
    """``--rename OLD=NEW`` options as ``rename=`` takes them."""
    renamed: dict[str, str] = {}
    for pair in pairs:
        old, equals, new = pair.partition("=")
        if not equals or not old or not new:
            raise UsageError(
                f"--rename {pair!r}: give OLD=NEW, the node's name in the run and its name "
                "in the flow now, e.g. --rename 'Summarize=Summary'"
            )
        if old in renamed:
            raise UsageError(f"--rename {old}: given twice; give each node once")
        renamed[old] = new
    return renamed


def resume_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``resume`` and ``fork`` pass on from their options (``--input``,
    ``--answer``, ``--rename``, the budget, ``--durability``), checked.

    Raises:
        UsageError: For an option that does not hold.
    """
    options: dict[str, Any] = {}
    if getattr(args, "input", None) is not None:
        options["input"] = read_json(args.input, "--input")
    budget = budget_given(args, True)
    if budget is not None:
        options["budget"] = budget
    if getattr(args, "answer", None):
        options["answers"] = answers_given(args.answer)
    if getattr(args, "rename", None):
        options["rename"] = renames_given(args.rename)
    if args.durability:
        options["durability"] = args.durability
    return options
