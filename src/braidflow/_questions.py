"""The questions a run asks with ``interrupt()``: `Question`, as users see one, and
`Interrupted`, which carries the open ones up to the run (a ground-floor module).

A branch or parallel item that asks stops alone: its stage keeps the
`Interrupted` while the siblings run on, then raises all its questions at
once (`asked_together`), so the run suspends with every open question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from hashlib import sha1
from typing import Any

__all__ = ["QUESTIONS_KEY", "Interrupted", "Question", "asked_together", "item_of", "question_id"]

QUESTIONS_KEY = "braidflow.questions"  # a waiting run's open questions, in its metadata

# ...items#3 (an item), ...flow[3]/... (a parameter set)
_INNER_ITEM = re.compile(r"(?:#|\[)(\d+)\]?(?=/|$)")


def question_id(key: str, call: int) -> str:
    """The id of the ``call``-th question of the step (and item) ``key``: short,
    the same on every resume (the same step asks the same question again)."""
    return sha1(f"{key}\0{call}".encode()).hexdigest()[:8]


def item_of(key: str) -> int | None:
    """The innermost batch item (or parameter set) on a step's key, if any."""
    found = _INNER_ITEM.findall(key)
    return int(found[-1]) if found else None


@dataclass(frozen=True, slots=True)
class Question:
    """A question a waiting run asked with ``interrupt(prompt)``, open until answered.

    A run waits on one question per branch or parallel item that asked:
    `Suspended.questions` and `RunRecord.questions` list them, and
    ``resume(run_id, store=..., answers={question.id: answer, ...})``
    answers any of them (``input=answer`` answers the only one).

    Attributes:
        id: What names it in ``answers=`` and in ``braidflow resume --answer
            ID=JSON``: the same on every resume, until it is answered.
        where: The step that asked, as people read it (``flow/review``,
            ``flow/fork/ask``).
        item: The index of the batch item (or parameter set) that asked, or
            ``None`` for a step that is not an item's.
        prompt: What it asked (as stored: JSON, or the repr of what is not).
    """

    id: str
    where: str
    item: int | None
    prompt: Any

    def as_json(self) -> dict[str, Any]:
        """The question as a dict of JSON values (how a store keeps it)."""
        return {"id": self.id, "where": self.where, "item": self.item, "prompt": self.prompt}


class Interrupted(BaseException):
    """Raised by ``interrupt`` to stop a durable run for input. A
    ``BaseException``, so no ``except Exception``, retry or fallback catches it.
    A parallel stage holds its items' and branches' until they have all
    stopped, then raises one that carries them all (`asked`).

    Attributes:
        prompt: What was asked.
        key: The step (and item) that asked, as checkpoints name it.
        call: Which of that step's ``interrupt`` calls it is (0 for the first).
        where: The step as people read it (``flow/review``, ``flow/items#3``).
        asked: Every question this one stands for, in the order asked
            (itself alone, unless a parallel stage gathered several).
    """

    def __init__(self, prompt: Any, key: str, call: int, where: str) -> None:
        super().__init__(prompt)
        self.prompt = prompt
        self.key = key
        self.call = call
        self.where = where
        self.asked: tuple[Interrupted, ...] = (self,)

    @property
    def question_id(self) -> str:
        return question_id(self.key, self.call)


def asked_together(asked: list[Interrupted]) -> Interrupted:
    """One `Interrupted` for the questions a parallel stage's items asked
    (each may carry several, from a stage nested in it): the first stands
    for them all, in the order asked."""
    if len(asked) == 1:
        return asked[0]
    first = asked[0]
    together = Interrupted(first.prompt, first.key, first.call, first.where)
    together.asked = tuple(question for one in asked for question in one.asked)
    return together
