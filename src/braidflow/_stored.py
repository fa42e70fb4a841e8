"""A node's stored runs: resume one, look into one (its history, its state at a
step) and fork one, as methods of every node and flow (`BaseNode` has them).

A stored run is read through its store; resuming or forking one runs this
node on it, as `run` would, with the run rebuilt from its checkpoints.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from ._budget import Budget
from ._clock import Clock
from ._errors import InvalidParameterError
from ._own_loop import run_on_new_loop
from ._run import PendingRun, RunScope, run_top_async, run_top_sync
from .durable import NO_ANSWER
from .durable._asking import check_answers
from .durable._history import StepRecord, StoredRun
from .durable._travel import fork_run
from .stores._base import Store

__all__ = ["StoredRuns", "history", "stored_state"]


class StoredRuns:
    """The methods of every node and flow for its stored runs (see the module)."""

    if TYPE_CHECKING:  # what BaseNode gives them
        _bf_async: ClassVar[bool]

        def _describe(self) -> str: ...
        def _display_name(self) -> str: ...

    def resume(
        self,
        run_id: str,
        *,
        store: Store,
        input: Any = NO_ANSWER,
        answers: dict[str, Any] | None = None,
        migrate: Callable[[dict[Any, Any]], Any] | None = None,
        rename: dict[str, str] | None = None,
        observers: Any = None,
        record_events: bool | None = None,
        clock: Clock | None = None,
        durability: str | None = None,
        budget: Budget | None = None,
    ) -> Any:
        """Resume a stored run of this flow; return its final ``shared``.

        ``shared`` is rebuilt from the store; every step, batch item and branch
        that finished is skipped, and the run goes on from where it stopped
        (a batch in progress runs only its missing items; its ``prep`` runs
        again to get them). For a run waiting at an ``interrupt``, ``input`` is
        what that ``interrupt(...)`` call returns this time. A run waiting on
        several questions (branches or parallel items that each asked) is
        answered by id: ``answers={question.id: answer, ...}`` (ids in
        `Suspended.questions` or `RunRecord.questions`), some or all at once;
        the answered ones go on, the others ask again and keep waiting.
        Returns an awaitable inside a running event loop, as `run` does.

        The flow must have the names and wiring the run had; a node's code
        may change. ``rename`` maps nodes renamed since (``{"old": "new"}``,
        kept with the run). ``budget=`` is the resumed run's budget (a higher
        one, for a run its budget suspended); what the run spent before
        counts against it. ``migrate(shared)`` upgrades the rebuilt
        ``shared`` before the run goes on (renamed keys, reshaped values):
        it changes the dict it is given, or returns a new one.
        ``record_events`` keeps the resumed part's events in the store; by
        default, if the run was started with ``record_events=True``. The run
        is read and written on with the serializer it was started with,
        whatever ``store``'s own ``serializer`` (that of new runs).

        Raises:
            StoreError: For an unknown or completed run, one that another
                live process is running, or one whose data cannot be decoded
                with the serializer it was written with (a pickle run from
                an earlier braidflow, read through a JSON store object).
            ResumeError: If the flow's names or wiring changed since the run
                was recorded, a batch's ``prep`` gives other items than it did,
                or the answers do not fit the run's open questions (``input=``
                for a run waiting on several, an id it does not wait on).
            InvalidParameterError: For both ``input=`` and ``answers=``, or
                ``answers`` that is not a non-empty dict of ids.
            Suspended: If the run stops again at an ``interrupt`` (or its budget).
            BudgetExceeded: If the run reaches its budget (before a call).
        """
        scope = self._resume_scope(
            run_id,
            store,
            (input, answers),
            observers,
            record_events,
            clock,
            migrate,
            rename,
            durability,
            budget,
        )
        if self._bf_async:
            if asyncio._get_running_loop() is None:
                return run_on_new_loop(lambda: self._resume_top_async(scope))
            return PendingRun(self, lambda: self._resume_top_async(scope))
        run_top_sync(self, scope)
        return dict(dict.items(scope.working))

    async def resume_async(
        self,
        run_id: str,
        *,
        store: Store,
        input: Any = NO_ANSWER,
        answers: dict[str, Any] | None = None,
        migrate: Callable[[dict[Any, Any]], Any] | None = None,
        rename: dict[str, str] | None = None,
        observers: Any = None,
        record_events: bool | None = None,
        clock: Clock | None = None,
        durability: str | None = None,
        budget: Budget | None = None,
    ) -> Any:
        """Resume a stored run inside a running event loop; see `resume`."""
        scope = self._resume_scope(
            run_id,
            store,
            (input, answers),
            observers,
            record_events,
            clock,
            migrate,
            rename,
            durability,
            budget,
        )
        return await self._resume_top_async(scope)

    def _resume_scope(
        self,
        run_id: Any,
        store: Any,
        answer: tuple[Any, dict[str, Any] | None],
        observers: Any,
        record_events: bool | None,
        clock: Clock | None,
        migrate: Any = None,
        rename: Any = None,
        durability: str | None = None,
        budget: Budget | None = None,
    ) -> RunScope:
        self._need_store(store, "resume()")
        check_answers(*answer, self)
        return RunScope(
            self,
            None,
            observers,
            store=store,
            run_id=run_id,
            record_events=record_events,
            clock=clock,
            resuming=True,
            answer=answer[0],
            answers=answer[1],
            migrate=migrate,
            rename=rename,
            durability=durability,
            budget=budget,
        )

    def _need_store(self, store: Any, what: str) -> None:
        if store is None:
            raise InvalidParameterError(
                f"{self._describe()}: {what} needs the store the run was recorded in",
                node=self._display_name(),
            )

    # -- looking into stored runs, and time travel --------------------------------------

    def history(self, run_id: str, *, store: Store) -> list[StepRecord]:
        """The steps of stored run ``run_id``, in the order they finished, then
        the step it is at (or stopped at) if it has not completed: see
        `StepRecord`. Reads the store and changes nothing, so it works while
        the run goes on in another process, and on a killed run.

        Raises:
            StoreError: For an unknown run, or one whose data cannot be
                decoded with the serializer it was written with.
        """
        self._need_store(store, "history()")
        return history(run_id, store=store)

    def state(self, run_id: str, *, store: Store, at: int | None = None) -> dict[Any, Any]:
        """``shared`` of stored run ``run_id`` as it was after step ``at`` (a
        `StepRecord.number`; ``0``: as the run started; ``None``: after its
        latest finished step). Changes nothing.

        Raises:
            StoreError: For an unknown run, or one whose data cannot be
                decoded with the serializer it was written with.
            ResumeError: For a step that does not exist or did not finish.
        """
        self._need_store(store, "state()")
        return stored_state(run_id, store=store, at=at)

    def fork(
        self,
        source: str,
        /,
        *,
        store: Store,
        at: int | None = None,
        run_id: str | None = None,
        update: dict[Any, Any] | None = None,
        input: Any = NO_ANSWER,
        answers: dict[str, Any] | None = None,
        observers: Any = None,
        record_events: bool | None = None,
        clock: Clock | None = None,
        durability: str | None = None,
    ) -> Any:
        """Start a new durable run from stored run ``source`` as it was after
        step ``at`` (as `state` reads it; ``None``: its latest), with
        ``update`` applied to ``shared``, and run it on from the step that
        followed; return its final ``shared``, as `resume` does.

        The new run is ``run_id`` (else ``SOURCE-fork-N``, the first N not
        taken); its record's metadata names the run and step it came from
        (``braidflow.forked_from``), and its history starts with the steps
        it took over. ``source`` is only read. Forking a run that waits at
        an ``interrupt`` (at its latest step) and giving ``input`` (or
        ``answers``, as for `resume`) answers it differently. The new run
        is written with the serializer ``source`` was written with, whatever
        ``store``'s own ``serializer``.

        Raises:
            StoreError: For an unknown run, one whose data cannot be decoded
                with the serializer it was written with, or a ``run_id`` that
                is taken.
            ResumeError: For a step that does not exist or did not finish, a
                flow whose names or wiring differ from the run's, or answers
                that do not fit the questions the new run waits on (as for
                `resume`); no run is made then.
            InvalidParameterError: For both ``input=`` and ``answers=``, or
                ``answers`` that is not a non-empty dict of ids.
            CheckpointError: If ``update`` holds a value the store cannot keep.
            Suspended: If the new run stops at an ``interrupt``.
        """
        self._need_store(store, "fork()")
        new = fork_run(store, self, source, at, run_id, update, input, answers)
        return self.resume(
            new,
            store=store,
            input=input,
            answers=answers,
            observers=observers,
            record_events=record_events,
            clock=clock,
            durability=durability,
        )

    async def _resume_top_async(self, scope: RunScope) -> Any:
        await run_top_async(self, scope)
        return dict(dict.items(scope.working))


def history(run_id: str, *, store: Store) -> list[StepRecord]:
    """The steps of stored run ``run_id``, in the order they finished, then
    the step it is at (or stopped at) if it has not completed: see
    `StepRecord`. Reads the store and changes nothing, so it works while the
    run goes on in another process, and on a killed run. (``flow.history``
    is the same, from a flow.)

    Raises:
        InvalidParameterError: If ``store`` is not a store.
        StoreError: For an unknown run, or one whose data cannot be decoded
            with the serializer it was written with (which the run keeps:
            ``store``'s own ``serializer`` does not matter).
    """
    _check_store(store, "history")
    return StoredRun(store, run_id).history()


def stored_state(run_id: str, *, store: Store, at: int | None = None) -> dict[Any, Any]:
    """``shared`` of stored run ``run_id`` as it was after step ``at`` (a
    `StepRecord.number`; ``0``: as the run started; ``None``: after its latest
    finished step). Changes nothing. (``flow.state`` is the same, from a flow.)

    Raises:
        InvalidParameterError: If ``store`` is not a store.
        StoreError: For an unknown run, or one whose data cannot be decoded
            with the serializer it was written with (which the run keeps:
            ``store``'s own ``serializer`` does not matter).
        ResumeError: For a step that does not exist, did not finish, or whose
            state was not stored (``durability="async"`` or ``"exit"``).
    """
    _check_store(store, "stored_state")
    return StoredRun(store, run_id).state(at)


def _check_store(store: Any, what: str) -> None:
    """Refuse what is not a store at all (none, or a path); any object with
    the methods a look needs is one (StoredRun says which it lacks)."""
    if store is None or isinstance(store, str | os.PathLike):
        raise InvalidParameterError(
            f"braidflow.{what}(): store={store!r} is not a braidflow Store; pass the store "
            "the run was recorded in (SQLiteStore(path), PostgresStore(url), MemoryStore())"
        )
