"""The merge rules of a join inside a typed flow: those its state type declares.

`join_rules` gives a join (a fork's, an isolated batch flow's) the rules
of the state type it runs in, its own ``merge=`` first; `join_advice` says
to declare a missing rule on the type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._context import STATE
from .._merge import Rule

__all__ = ["join_advice", "join_rules"]


def join_rules(own: dict[str, Rule]) -> dict[str, Rule]:
    """The rules of a join: those of the state type it runs in, each
    replaced by the join's own ``merge=`` where it has one for that key."""
    state = STATE.get()
    if state is None or not state.rules:
        return own
    return {**state.rules, **own}


def join_advice(advice: Callable[[Any, str], str]) -> Callable[[Any, str], str]:
    """How a conflict at a join is told to give a key a rule: on the state
    type, if the join runs in a typed flow and the key is one of its keys."""
    state = STATE.get()
    if state is None:
        return advice

    def typed(key: Any, rule: str) -> str:
        told: str = state.rule_advice(key, rule, advice(key, rule))
        return told

    return typed
