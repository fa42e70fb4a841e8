"""Ready-made observers: a JSONL trace, a live progress display, OpenTelemetry
spans and a self-contained HTML timeline of a run.

Pass them to a run: ``flow.run(shared, observers=[JSONLTrace("run.jsonl")])``.
``JSONLTrace`` and ``Timeline`` need only the standard library; ``Progress``
needs ``rich`` and ``OpenTelemetry`` needs ``opentelemetry-api``, both in the
``braidflow[tracing]`` extra. Each is imported only when first used, so
``import braidflow`` (and this package) stays free of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._jsonl import JSONLTrace as JSONLTrace
    from ._otel import OpenTelemetry as OpenTelemetry
    from ._progress import Progress as Progress
    from ._timeline import Timeline as Timeline

__all__ = ["JSONLTrace", "OpenTelemetry", "Progress", "Timeline"]

_WHERE = {
    "JSONLTrace": "._jsonl",
    "OpenTelemetry": "._otel",
    "Progress": "._progress",
    "Timeline": "._timeline",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'braidflow.tracing' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
