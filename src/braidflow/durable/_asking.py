"""A run's open questions: recorded when it suspends (one per branch or item
that asked), listed with the run, and answered, one or several, on resume.

Each question is an ``ask`` checkpoint row (its step and call), written
before the run is marked ``waiting``; the record's metadata lists them with
their prompts (`QUESTIONS_KEY`) so ``runs()`` shows them. An answer is an
``answer`` row, written when the resume claims the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NoReturn

from .._errors import InvalidParameterError, ResumeError, Suspended
from .._questions import QUESTIONS_KEY, Interrupted, Question, item_of, question_id
from ..stores._base import Checkpoint, RunRecord, prompt_text
from ._interrupt import NO_ANSWER
from ._run import DurableRun

__all__ = [
    "answer_questions",
    "check_answers",
    "chosen_answers",
    "open_questions",
    "suspend",
]


def check_answers(answer: Any, answers: Any, node: Any) -> None:
    """Check ``answers=`` (and that it comes without ``input=``) before a
    resume claims anything.

    Raises:
        InvalidParameterError: For answers that are not a non-empty dict of
            question ids, or given with ``input=`` too.
    """
    if answers is None:
        return
    if answer is not NO_ANSWER:
        raise InvalidParameterError(
            f"{node._describe()}: give input= (the answer to a run's only question) or "
            "answers= ({question_id: answer, ...}), not both",
            node=node._display_name(),
        )
    if not isinstance(answers, dict) or not answers or not all(type(k) is str for k in answers):
        raise InvalidParameterError(
            f"{node._describe()}: answers={answers!r} must be a dict of question ids to "
            "answers, {question_id: answer, ...}, with at least one; the ids are in "
            "Suspended.questions, RunRecord.questions or `braidflow show RUN`",
            node=node._display_name(),
        )


def suspend(durable: DurableRun, asked: Interrupted, resume_call: str) -> NoReturn:
    """Record that the run waits on the questions ``asked`` carries (their
    rows are in the store already) and raise `Suspended` listing them, in
    the order of the graph.
    ``resume_call``: how the caller resumes it, ``{answer}`` left to fill."""
    first = min(asked.asked, key=_in_graph_order)  # the run's node and prompt
    listed = keep_questions(durable, asked.asked)
    store, run_id = durable.store, durable.run_id
    store.finish(run_id, "waiting", node=first.where, prompt=first.prompt)
    if len(listed) == 1:
        message = (
            f"run {run_id!r} is waiting for input at {first.where!r}: {first.prompt!r}; "
            f"resume it with {resume_call.replace('{answer}', ', input=answer')}"
        )
    else:
        example = ", ".join(f"{question.id!r}: ..." for question in listed[:2])
        message = (
            f"run {run_id!r} is waiting on {len(listed)} questions: {_listing(listed)}; "
            "answer any of them, the others keep waiting: "
            f"{resume_call.replace('{answer}', f', answers={{{example}}}')}"
        )
    raise Suspended(
        message, run_id=run_id, node=first.where, prompt=first.prompt, questions=listed
    ) from None


def keep_questions(durable: DurableRun, asked: tuple[Interrupted, ...]) -> tuple[Question, ...]:
    """Keep, with the run's record, the questions ``asked`` that it waits on
    (their rows are in the store already), in the order of the graph; return them."""
    questions: dict[str, Question] = {}
    for one in sorted(asked, key=_in_graph_order):
        prompt = json.loads(prompt_text(one.prompt))  # as the store keeps it
        ident = question_id(durable.first_key(one.key), one.call)
        found = Question(ident, one.where, item_of(one.key), prompt)
        questions.setdefault(found.id, found)
    listed = tuple(questions.values())
    durable.store.set_metadata(
        durable.run_id, {QUESTIONS_KEY: [question.as_json() for question in listed]}
    )
    return listed


def _in_graph_order(asked: Interrupted) -> tuple[Any, ...]:
    """Questions listed in the order of the graph (a fork's branches in
    order, a batch's items by index), not as they happened to be asked."""
    parts = re.split(r"(\d+)", asked.key)
    return (*(int(part) if part.isdigit() else part for part in parts), asked.call)


_LISTED = 5  # questions a message lists; the rest are counted


def _listing(questions: tuple[Question, ...] | list[Question]) -> str:
    """The questions as a line: ``id at where: prompt``, separated by ``;``
    (the first few, and how many more)."""
    listed = "; ".join(
        f"{question.id!r} at {question.where!r}: {question.prompt!r}"
        for question in questions[:_LISTED]
    )
    more = len(questions) - _LISTED
    return listed if more <= 0 else f"{listed}; and {more} more (Suspended.questions has all)"


def open_questions(
    asked: list[Checkpoint], first_key: Callable[[str], str], listed: tuple[Question, ...]
) -> dict[str, tuple[Checkpoint, Question]]:
    """The questions a waiting run waits on, by id, each with its ``ask`` row:
    ``asked``, the rows of those no resume answered yet; ``first_key``, a
    step key under the names its nodes had when the run began (a question's
    id is made of it); ``listed``, the questions as its record lists them
    (for their prompts, and their order: the graph's, as `show` lists them)."""
    known = {question.id: question for question in listed}
    found: dict[str, tuple[Checkpoint, Question]] = {}
    for row in asked:
        ident = question_id(first_key(row.frame), row.position)
        found[ident] = (
            row,
            known.get(ident) or Question(ident, row.node, item_of(row.frame), None),
        )
    rank = {ident: at for at, ident in enumerate(known)}
    return dict(sorted(found.items(), key=lambda pair: rank.get(pair[0], len(rank))))


def chosen_answers(
    questions: dict[str, tuple[Checkpoint, Question]],
    answer: Any,
    answers: dict[str, Any] | None,
    *,
    run_id: str,
    run: str,
    status: str | None,
    verb: str,
    name: str,
) -> list[tuple[Checkpoint, Any]]:
    """The answers given (``input=`` for a run's only question, or
    ``answers=`` by id), each with the ``ask`` row of the open question it
    answers; writes nothing. ``questions``: the open ones (`open_questions`;
    none for a run not waiting); ``run``: the run as a message names it
    (``run_id`` for short), ``status`` its status if it waits on none;
    ``verb``: what answers it (``resume``, ``fork``); ``name``: the node.

    Raises:
        ResumeError: If the run waits for no input, ``input=`` is given to a
            run that waits on several questions, or an id is not one of its
            open questions.
    """
    if not questions:
        given = "input=" if answers is None else "answers="
        raise ResumeError(
            f"{run} is {f'{status}, ' if status else ''}not waiting for input; "
            f"{verb} it without {given}",
            node=name,
        )
    if answers is None:
        if len(questions) > 1:
            example = ", ".join(f"{ident!r}: ..." for ident in list(questions)[:2])
            raise ResumeError(
                f"{run} waits on {len(questions)} questions, so input= cannot say "
                f"which it answers: {_listing(_asked(questions))}; answer them by id, "
                f"some or all at once: flow.{verb}({run_id!r}, store=..., "
                f"answers={{{example}}}) (on the command line: --answer ID=JSON, repeated)",
                node=name,
            )
        answers = {next(iter(questions)): answer}
    unknown = [ident for ident in answers if ident not in questions]
    if unknown:
        raise ResumeError(
            f"{run} has no open question {unknown[0]!r}; it waits on "
            f"{_listing(_asked(questions))}; answer those ids (an answered question "
            "is not asked again)",
            node=name,
        )
    return [(questions[ident][0], value) for ident, value in answers.items()]


def _asked(questions: dict[str, tuple[Checkpoint, Question]]) -> list[Question]:
    return [question for _, question in questions.values()]


def answer_questions(
    durable: DurableRun, record: RunRecord, answer: Any, answers: dict[str, Any] | None, name: str
) -> None:
    """Record the answers a resume gives (``input=`` for a run's only
    question, or ``answers=`` by id) before the run goes on.

    Raises:
        ResumeError: If the answers do not fit the run's open questions (see
            `chosen_answers`). Nothing is written then.
    """
    run_id = durable.run_id
    waiting = record.status == "waiting"
    questions = (
        open_questions(durable.asked, durable.first_key, record.questions) if waiting else {}
    )
    chosen = chosen_answers(
        questions,
        answer,
        answers,
        run_id=run_id,
        run=f"run {run_id!r}",
        status=record.status,
        verb="resume",
        name=name,
    )
    durable.answer(chosen)
