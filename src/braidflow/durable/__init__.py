"""Durable runs: checkpoints as work finishes, replay of what finished on resume.

With a store, the engine records a finished node step (with the keys of
``shared`` it changed), a finished batch item (with its result) and a
finished branch (with its changes) as soon as each finishes. To resume, the
flow runs again from the top on the rebuilt ``shared``; every recorded step,
item and branch is skipped (its effects taken from the record) and the rest
runs. ``interrupt(prompt)`` suspends a run until it is resumed with input.

The parts: the codec (``_codec``) and which one a stored run was written
with (``_run_codec``), which keys each step touched
(``_tracking``), the graph described (``_graph``), ``interrupt``
(``_interrupt``), the checkpoint writer with its group commit (``_writer``),
what a stored run did (``_recorded``), the durable side of a run (``_run``),
opening and closing it (``_session``), its recorded events (``_recorder``),
looking into a stored run (``_history``), forking or migrating one (``_travel``), idempotency
keys (``_keys``) and stopping one on purpose (``_drain``).
The engine uses them; nothing here runs a node.
"""

from ._drain import drain as drain
from ._history import StepRecord as StepRecord
from ._interrupt import NO_ANSWER as NO_ANSWER
from ._interrupt import Interrupted as Interrupted
from ._interrupt import interrupt as interrupt
from ._keys import idempotency_key as idempotency_key
from ._recorder import EventRecorder as EventRecorder
from ._recorder import RecordedError as RecordedError
from ._recorder import recorded_events as recorded_events
from ._run import DurableRun as DurableRun
from ._session import claim_run as claim_run
from ._session import close_run as close_run
from ._session import start_run as start_run
from ._tracking import TrackingDict as TrackingDict

__all__ = [
    "NO_ANSWER",
    "DurableRun",
    "EventRecorder",
    "Interrupted",
    "RecordedError",
    "StepRecord",
    "TrackingDict",
    "claim_run",
    "drain",
    "close_run",
    "idempotency_key",
    "interrupt",
    "recorded_events",
    "start_run",
]
