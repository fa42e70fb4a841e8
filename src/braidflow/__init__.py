"""braidflow: LLM and I/O workflows as graphs of nodes.

PocketFlow's programming model (``import braidflow as pocketflow`` works, and
``python -m braidflow.pocketflow program.py`` runs a PocketFlow program as it
is) on one engine, with bounded, safe and visible concurrency.
"""

import inspect as _inspect
import sys as _sys
from types import FunctionType as _FunctionType

from . import merge as merge
from ._branches import Parallel as Parallel
from ._budget import Budget as Budget
from ._cache import Cache as Cache
from ._errors import AsyncUsageError as AsyncUsageError
from ._errors import BatchItemsError as BatchItemsError
from ._errors import BraidflowError as BraidflowError
from ._errors import BudgetExceeded as BudgetExceeded
from ._errors import CacheError as CacheError
from ._errors import CheckpointError as CheckpointError
from ._errors import Drained as Drained
from ._errors import Failure as Failure
from ._errors import InvalidParameterError as InvalidParameterError
from ._errors import LimiterDeadlock as LimiterDeadlock
from ._errors import MergeConflict as MergeConflict
from ._errors import NodeCancelledError as NodeCancelledError
from ._errors import NodeDefinitionError as NodeDefinitionError
from ._errors import NodeDefinitionWarning as NodeDefinitionWarning
from ._errors import NodeTimeoutError as NodeTimeoutError
from ._errors import NotDurableError as NotDurableError
from ._errors import ResumeError as ResumeError
from ._errors import RunError as RunError
from ._errors import SetupError as SetupError
from ._errors import StateError as StateError
from ._errors import StoreError as StoreError
from ._errors import Suspended as Suspended
from ._errors import WiringError as WiringError
from ._errors import WiringWarning as WiringWarning
from ._events import Event as Event
from ._events import Observer as Observer
from ._flow import AsyncBatchFlow as AsyncBatchFlow
from ._flow import AsyncFlow as AsyncFlow
from ._flow import AsyncParallelBatchFlow as AsyncParallelBatchFlow
from ._flow import BatchFlow as BatchFlow
from ._flow import Flow as Flow
from ._kinds import AsyncBatchNode as AsyncBatchNode
from ._kinds import AsyncNode as AsyncNode
from ._kinds import AsyncParallelBatchNode as AsyncParallelBatchNode
from ._kinds import BatchNode as BatchNode
from ._kinds import Node as Node
from ._kinds import ParallelBatchNode as ParallelBatchNode
from ._limits import Limiter as Limiter
from ._limits import LimiterStatistics as LimiterStatistics
from ._node import BaseNode as BaseNode
from ._policy import Retry as Retry
from ._questions import Question as Question
from ._run import PendingRun as PendingRun
from ._shared_limits import SharedLimiter as SharedLimiter
from ._stored import history as history
from ._stored import stored_state as stored_state
from ._threads import thread_limiter as thread_limiter
from ._usage import Usage as Usage
from ._views import MISSING as MISSING
from ._views import SharedView as SharedView
from ._weights import Weighted as Weighted
from .durable import StepRecord as StepRecord
from .durable import drain as drain
from .durable import idempotency_key as idempotency_key
from .durable import interrupt as interrupt
from .durable import recorded_events as recorded_events
from .stores import CacheEntry as CacheEntry
from .stores import CacheStore as CacheStore
from .stores import Checkpoint as Checkpoint
from .stores import MemoryStore as MemoryStore
from .stores import RunRecord as RunRecord
from .stores import SQLiteStore as SQLiteStore
from .stores import Store as Store

# Names the other seed documents use for the same classes: one line each.
BatchAsyncFlow = AsyncBatchFlow  # PocketFlow's early docs
Graph = Flow  # KayGraph
BatchGraph = BatchFlow  # KayGraph
AsyncGraph = AsyncFlow  # KayGraph
AsyncBatchGraph = AsyncBatchFlow  # KayGraph
AsyncParallelBatchGraph = AsyncParallelBatchFlow  # KayGraph

__version__ = "0.1.0"

__all__ = [
    "AsyncBatchFlow",
    "AsyncBatchGraph",
    "AsyncBatchNode",
    "AsyncFlow",
    "AsyncGraph",
    "AsyncNode",
    "AsyncParallelBatchFlow",
    "AsyncParallelBatchGraph",
    "AsyncParallelBatchNode",
    "AsyncUsageError",
    "BaseNode",
    "BatchAsyncFlow",
    "BatchFlow",
    "BatchGraph",
    "BatchItemsError",
    "BatchNode",
    "BraidflowError",
    "Budget",
    "BudgetExceeded",
    "Cache",
    "CacheEntry",
    "CacheError",
    "CacheStore",
    "Checkpoint",
    "CheckpointError",
    "Drained",
    "Event",
    "Failure",
    "Flow",
    "Graph",
    "InvalidParameterError",
    "Limiter",
    "LimiterDeadlock",
    "LimiterStatistics",
    "MISSING",
    "MemoryStore",
    "MergeConflict",
    "Node",
    "NodeCancelledError",
    "NodeDefinitionError",
    "NodeDefinitionWarning",
    "NodeTimeoutError",
    "NotDurableError",
    "Observer",
    "Parallel",
    "ParallelBatchNode",
    "PendingRun",
    "Question",
    "ResumeError",
    "Retry",
    "RunError",
    "RunRecord",
    "SQLiteStore",
    "SetupError",
    "SharedLimiter",
    "SharedView",
    "StateError",
    "StepRecord",
    "Store",
    "StoreError",
    "Suspended",
    "Usage",
    "Weighted",
    "WiringError",
    "WiringWarning",
    "drain",
    "history",
    "idempotency_key",
    "interrupt",
    "recorded_events",
    "stored_state",
    "thread_limiter",
]


def _annotations_resolved(cls: type) -> None:
    """Evaluate a class's own string annotations (``from __future__ import
    annotations``) in the module that wrote them, before the class reports
    another: ``typing.get_type_hints`` (and pydantic, for a state declaring
    ``list[Failure]``) looks names up in the module the class reports."""
    own = _inspect.get_annotations(cls)
    if not own or not any(type(hint) is str for hint in own.values()):
        return
    names = vars(_sys.modules[cls.__module__])
    resolved = {}
    for key, hint in own.items():
        try:
            resolved[key] = eval(hint, names, dict(vars(cls))) if type(hint) is str else hint
        except Exception:  # a name only the type checker sees: left as it was written
            resolved[key] = hint
    cls.__annotations__ = resolved
    for field in getattr(cls, "__dataclass_fields__", {}).values():  # (what pydantic reads)
        if type(field.type) is str and field.name in resolved:
            field.type = resolved[field.name]


# Public objects report the public module, so reprs and docs point users here.
for _name in __all__:
    _object = globals()[_name]
    if isinstance(_object, type | _FunctionType) and _object.__module__.startswith("braidflow."):
        if isinstance(_object, type):
            for _class in _object.__mro__:
                if _class.__module__.startswith("braidflow."):
                    _annotations_resolved(_class)
        _object.__module__ = "braidflow"
del _name, _object, _class
