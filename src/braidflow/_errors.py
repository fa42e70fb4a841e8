"""The exception tree of braidflow, and how failures get labelled with their node.

Every exception braidflow raises derives from `BraidflowError`::

    BraidflowError
    ├── SetupError                 a node, flow or limiter was built wrong;
    │   │                          raised when it is built or wired, before running
    │   ├── InvalidParameterError  (also ValueError, TypeError) a bad option
    │   ├── WiringError            (also TypeError) a bad action or successor
    │   └── NodeDefinitionError    (also TypeError) a node class that cannot run
    ├── RunError                   (also RuntimeError) a run cannot go on
    │   ├── AsyncUsageError        async work entered through a sync door
    │   ├── BudgetExceeded         the run's budget of tokens or cost is spent
    │   ├── CheckpointError        a durable run could not save a value
    │   ├── CacheError             a result cache could not key or keep a result
    │   ├── ResumeError            a stored run does not fit the flow resuming it
    │   ├── BatchItemsError        (also TypeError) prep gave no usable items
    │   ├── MergeConflict          branches changed one key, with no rule to combine
    │   ├── LimiterDeadlock        nested holders of limiters would wait for each other
    │   ├── NodeCancelledError     a node's own code raised CancelledError
    │   └── NotDurableError        interrupt() in a run with no store to resume it from
    ├── NodeTimeoutError           (also TimeoutError) an exec attempt ran too long
    ├── StateError                 (also TypeError, ValueError) shared does not fit the
    │                              flow's state type: at the start, or a validated write
    ├── StoreError                 a store cannot do what was asked (unknown run, ...)
    ├── Suspended                  a durable run stopped to wait for input (interrupt)
    └── Drained                    a durable run stopped on purpose, at a safe point (drain)

    UserWarning
    └── WiringWarning              wiring that runs, but not as it reads
                                   (``Flow(start=p >> a)``, ``a - "x"`` never completed)

Exceptions raised by user code (``prep``, ``exec``, ``post`` ...) are never
wrapped, so ``except ValueError`` keeps working; instead braidflow adds a
PEP 678 note naming the node, item and attempt, which tracebacks show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._questions import Question

__all__ = [
    "AsyncUsageError",
    "BatchItemsError",
    "BraidflowError",
    "BudgetExceeded",
    "CacheError",
    "CheckpointError",
    "Drained",
    "Failure",
    "InvalidParameterError",
    "LimiterDeadlock",
    "MergeConflict",
    "NodeCancelledError",
    "NodeDefinitionError",
    "NodeTimeoutError",
    "NotDurableError",
    "ResumeError",
    "RunError",
    "SetupError",
    "StateError",
    "StoreError",
    "Suspended",
    "WiringError",
    "WiringWarning",
]

_NOTE_PREFIX = "braidflow: "


class BraidflowError(Exception):
    """Base class of every error braidflow raises itself.

    Attributes:
        node: The name of the node or flow concerned, or ``None``.
    """

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class SetupError(BraidflowError):
    """A node, flow or limiter was configured or wired incorrectly."""


class InvalidParameterError(SetupError, ValueError, TypeError):
    """An option has a value or type that cannot work: ``max_retries=0``,
    ``limits=[3]``. Catchable as ``ValueError`` or ``TypeError``."""


class WiringError(SetupError, TypeError):
    """An action or successor has the wrong type, or a flow has no start node."""


class WiringWarning(UserWarning):
    """Wiring that PocketFlow accepts, and so braidflow runs, but that does not
    do what it reads as: ``Flow(start=p >> a)`` starts at ``a`` (``>>`` gives
    back its right-hand node, so ``p`` never runs), and ``a - "x"`` never
    completed with ``>> node`` wires nothing. Given where the mistake is made.
    PocketFlow's own warnings ("Overwriting successor", "Flow ends", "Node
    won't run successors") stay plain ``UserWarning``, as PocketFlow has them."""


class NodeDefinitionWarning(UserWarning):
    """A node class that PocketFlow accepts, and so braidflow runs, but that
    does not do what it reads as: a synchronous ``Node`` with an
    ``exec_async`` (or ``prep_async``, ``post_async``,
    ``exec_fallback_async``) of its own, which nothing calls: its ``exec``
    runs instead; a method named as a phase with a letter wrong
    (``exec_asnyc``), which nothing calls either. Given when the class
    statement executes."""


class NodeDefinitionError(SetupError, TypeError):
    """A node class is written in a way that cannot run, such as ``async def exec``
    on a synchronous ``Node``: raised when the class statement executes. Also
    raised when a subclass's ``__init__`` returns without having called
    ``super().__init__()``, when such a node is made."""


class RunError(BraidflowError, RuntimeError):
    """A run cannot continue for a reason that is not the user code's exception."""


class AsyncUsageError(RunError):
    """Async work was started from a synchronous entry point that cannot run it.

    Raised by ``node.run(shared)`` on an async node while an event loop is
    already running, and by a synchronous ``Flow`` that reaches an async node.
    """


class BudgetExceeded(RunError):
    """The run's ``budget=`` is spent: the node was about to start an exec
    attempt (a call) with the budget reached, so the run stopped before it.
    Calls already in flight finished first, and count in ``spent``.

    Attributes:
        node: The node that was about to call.
        item_index: Its batch item, or ``None``.
        spent: The run's `braidflow.Usage` so far (of its earlier parts too,
            for a resumed run).
        budget: The `braidflow.Budget` it reached.
    """

    def __init__(
        self, message: str, *, node: str, item_index: int | None, spent: Any, budget: Any
    ) -> None:
        super().__init__(message, node=node)
        self.item_index = item_index
        self.spent = spent
        self.budget = budget


class BatchItemsError(RunError, TypeError):
    """A batch node's ``prep`` returned something that is not a collection of items.

    Attributes:
        item_index: For batch flows, the position of the bad parameter set.
    """

    def __init__(self, message: str, *, node: str | None = None, item_index: int | None = None):
        super().__init__(message, node=node)
        self.item_index = item_index


class MergeConflict(RunError):
    """Parallel branches changed one key of ``shared`` and no merge rule says how
    to combine their values (or the rule given cannot).

    Attributes:
        key: The key of the shared store.
        branches: The names of the branches that changed it, in branch order.
    """

    def __init__(
        self, message: str, *, key: object, branches: list[str], node: str | None = None
    ) -> None:
        super().__init__(message, node=node)
        self.key = key
        self.branches = branches


class LimiterDeadlock(RunError):
    """A wait for a limiter that could never end, refused when it would begin.

    An exec attempt holds its node's limiters until its ``exec`` returns. When
    code nested in it (a sub-flow, a parallel batch, ``async with limiter:``)
    asks for a slot that only attempts waiting the same way hold, none of them
    can go on: say ``Limiter(2)`` held by two batch items whose nested nodes
    each want a slot of it too. The request that closes such a cycle raises
    this; it then fails its node like any error. Slots held by code that
    braidflow did not record (your own ``async with limiter:``) count as slots
    that will be given back, so a wait that can be served is never refused.
    A cycle through queue order only (a request that would fit waits its turn
    behind a heavier one, which waits for units held by attempts that wait for
    the request) is not refused either: its requests go ahead of the queue.

    Attributes:
        node: The name of the waiting node (or of the node whose ``exec`` asks).
        item_index: The waiting node's item, or ``None``.
        limiter: The limiter asked for.
        limiters: Every limiter of the cycle, in the order they are acquired.
        holders: ``(node name, item index)`` of each attempt that holds a slot of
            them while code nested in it waits.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        item_index: int | None = None,
        limiter: Any,
        limiters: tuple[Any, ...],
        holders: tuple[tuple[str | None, int | None], ...],
    ) -> None:
        super().__init__(message, node=node)
        self.item_index = item_index
        self.limiter = limiter
        self.limiters = limiters
        self.holders = holders


class NodeCancelledError(RunError):
    """A node's own code raised ``CancelledError`` while its run was not cancelled.

    Only cancelling the run itself ends a run as cancelled. A ``CancelledError``
    that comes out of a node by itself (a cancelled future it awaited, an
    explicit ``raise``) is that node's, or that batch item's, failure: it is
    retried and reaches the fallback like any error, and ``on_error="collect"``
    collects it. The original ``CancelledError`` is the ``__cause__``.

    Attributes:
        item_index: The batch item's position, or ``None`` for a plain node.
    """

    def __init__(self, message: str, *, node: str | None = None, item_index: int | None = None):
        super().__init__(message, node=node)
        self.item_index = item_index


class NotDurableError(RunError):
    """A node called ``braidflow.interrupt(prompt)`` in a run that has no
    store: such a run could never be resumed with the answer. Run the flow
    with a store (``flow.run(shared, store=SQLiteStore("runs.db"))``, or
    ``braidflow run ... --store PATH``)."""


class NodeTimeoutError(BraidflowError, TimeoutError):
    """One exec attempt of a node ran longer than the node's ``timeout``.

    It is an ordinary failure: it goes through retries and the fallback.

    Attributes:
        timeout: The limit in seconds.
        attempt: The 0-based attempt that timed out.
        item_index: The batch item's position, or ``None`` for a plain node.
    """

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        timeout: float,
        attempt: int,
        item_index: int | None = None,
    ) -> None:
        super().__init__(message, node=node)
        self.timeout = timeout
        self.attempt = attempt
        self.item_index = item_index


class StateError(BraidflowError, TypeError, ValueError):
    """``shared`` does not fit the state type its flow declares (``state=``):
    raised when the run (or the typed flow) starts, for a key the type
    requires that is missing, a key it does not have, or a value of another
    type; and, in a flow made with ``validate=True``, when a node writes a
    value that does not fit. Catchable as ``TypeError`` or ``ValueError``.

    Attributes:
        key: The key of ``shared`` concerned (the first one, if several are).
    """

    def __init__(self, message: str, *, node: str | None = None, key: object = None) -> None:
        super().__init__(message, node=node)
        self.key = key


class CheckpointError(RunError):
    """A durable run could not save a value: it cannot be serialized (JSON by
    default), or a key of ``shared`` is not a string. The run stops there, so
    nothing is silently lost.

    Attributes:
        key: The key of ``shared`` (or ``None`` for a batch item's result).
    """

    def __init__(self, message: str, *, node: str | None = None, key: object = None) -> None:
        super().__init__(message, node=node)
        self.key = key


class CacheError(RunError):
    """A node's result cache (``cache=``) could not do its work: an input it
    cannot make a key of, an exec result its store cannot keep (JSON by
    default), a run with no store for ``cache=True``. The node fails there:
    its message says what to give instead.

    Attributes:
        item_index: The batch item concerned, or ``None``.
    """

    def __init__(self, message: str, *, node: str | None = None, item_index: int | None = None):
        super().__init__(message, node=node)
        self.item_index = item_index


class ResumeError(RunError):
    """A stored run cannot be resumed by this flow: its graph changed since the
    run was recorded, or a batch's items are not the ones recorded."""


class StoreError(BraidflowError):
    """A store cannot do what was asked: an unknown run id, a completed run, a
    run id already used, a run another live process is resuming, a file that
    is not a braidflow store (or from a newer version).

    Attributes:
        run_id: The run concerned, or ``None``.
    """

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


class Suspended(BraidflowError):
    """A durable run stopped to wait: for input (a node called
    ``braidflow.interrupt(prompt)``), or for a higher budget (its
    ``Budget(..., on_exceed="suspend")`` was reached: resume it with
    ``budget=``). The run is stored as ``waiting``; resume it with
    ``flow.resume(run_id, store=..., input=answer)``, or, when it waits on
    several questions (parallel branches or items that asked), answer any of
    them by id: ``flow.resume(run_id, store=..., answers={id: answer})``.

    Attributes:
        run_id: The run to resume.
        node: The node that asked, or was about to call (its path,
            ``/``-joined); the first question's when there are several.
        prompt: What it asked (the first question's when there are several;
            for a budget: ``{"budget": reason}``).
        questions: Every open question (`braidflow.Question`: ``id``,
            ``where``, ``item``, ``prompt``), in the graph's order (branch
            by branch, item by item).
        reason: ``"input"`` or ``"budget"``: what the run waits for.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str,
        node: str,
        prompt: object,
        questions: tuple[Question, ...] = (),
        reason: str = "input",
    ) -> None:
        super().__init__(message, node=node)
        self.run_id = run_id
        self.prompt = prompt
        self.questions = questions
        self.reason = reason


class Drained(BraidflowError):
    """A durable run stopped on purpose (`braidflow.drain`, or SIGTERM to
    the command) at a safe point: it started no new step or item, what was
    running finished (or, past the grace period, was stopped and will run
    again), and everything that finished is stored. The run is stored as
    ``drained``; resume it with ``flow.resume(run_id, store=...)``.

    Attributes:
        run_id: The run to resume.
        node: Where it stopped (its path, ``/``-joined), if known.
    """

    def __init__(self, message: str, *, run_id: str, node: str | None = None) -> None:
        super().__init__(message, node=node)
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class Failure:
    """Stands in a result list, under ``on_error="collect"``, for an item that failed.

    Attributes:
        error: The exception the item ended with, after retries and fallback.
        item: The item (for batch flows: the parameter set; for branches:
            the branch's name) that failed.
        index: Its position in the input.
    """

    error: BaseException
    item: Any
    index: int


def describe_error(error: BaseException | None, *, whole: bool = False) -> str:
    """An error as ``Type: message`` (just ``Type`` when it has no message; ``""``
    for ``None``): the message's first line, or all of it with ``whole=True``."""
    if error is None:
        return ""
    message = message_of(error)
    if message and not whole:
        message = message.splitlines()[0]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def message_of(error: BaseException) -> str:
    """``str(error)``, or a stand-in naming its class when its ``__str__``
    raises: what braidflow says of an error must not fail in its place."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose str() fails>"


def add_note(error: BaseException, text: str) -> None:
    """Attach a braidflow note to ``error`` unless the same note is already there."""
    note = _NOTE_PREFIX + text
    notes = getattr(error, "__notes__", None)
    if notes is None or note not in notes:
        error.add_note(note)


def has_note(error: BaseException) -> bool:
    """Tell whether braidflow already labelled ``error`` with a node."""
    notes = getattr(error, "__notes__", None)
    return notes is not None and any(n.startswith(_NOTE_PREFIX) for n in notes)
