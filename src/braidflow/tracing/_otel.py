"""OpenTelemetry: a run as nested spans, run > flow > node > item."""

from __future__ import annotations

import threading
import time
from typing import Any

from .._errors import describe_error, message_of
from .._events import Event
from .._usage import Usage
from ._stops import stop_of

__all__ = ["OpenTelemetry"]

_NONE = Usage(calls=0)


class OpenTelemetry:
    """An observer that records a run as OpenTelemetry spans.

    One span for the run, one per node step (flows included, nested as the
    graph is), one per batch item (and per parameter set of a batch flow,
    which parents its sub-flow's steps). Retries and limiter waits become span
    events, errors are recorded on their span with an error status. Spans carry
    ``braidflow.node``, ``braidflow.path``, ``braidflow.item``,
    ``braidflow.attempts`` and ``braidflow.outcome`` (ok, error, or a stop:
    waiting, drained, cancelled, which is no error, in recorded events too);
    a node or item whose result came from a result cache has
    ``braidflow.cache_hit`` set to true. Usage a node reports
    (``report_usage``) sets the GenAI semantic convention's
    ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens`` (and
    ``braidflow.cost`` when known, and ``gen_ai.response.model`` when its
    calls all used one model, set as the span ends) on the item's or node's
    span, summed over its calls, and the run's totals on the run's span.
    The run's span is a child of the span current where the run started.

    Args:
        tracer_provider: Where spans go; default: the global provider.

    Raises:
        ImportError: If ``opentelemetry-api`` is not installed
            (``pip install 'braidflow[tracing]'``).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as missing:
            raise ImportError(
                "braidflow.tracing.OpenTelemetry needs opentelemetry-api: "
                "pip install 'braidflow[tracing]'"
            ) from missing
        self._trace = trace
        self._tracer = trace.get_tracer("braidflow", tracer_provider=tracer_provider)
        self._lock = threading.Lock()
        self._runs: dict[str, _RunSpans] = {}

    def __repr__(self) -> str:
        return "OpenTelemetry()"

    def on_event(self, event: Event) -> None:
        """Take one event of a run (the observer protocol)."""
        with self._lock:
            spans = self._runs.get(event.run_id)
            if spans is None:
                if event.kind != "run_start":
                    return
                spans = self._runs[event.run_id] = _RunSpans(self._trace, self._tracer, event)
            spans.handle(event)
            if event.kind == "run_end":
                del self._runs[event.run_id]


class _RunSpans:
    """The open spans of one run, found by path (and item)."""

    def __init__(self, trace: Any, tracer: Any, start: Event) -> None:
        self.trace = trace
        self.tracer = tracer
        # Event times are monotonic; spans want nanoseconds since the epoch.
        self.offset = time.time_ns() - int(time.monotonic() * 1e9)
        self.run = tracer.start_span(
            f"braidflow run {start.node}",
            start_time=self.ns(start.time),
            attributes={"braidflow.run_id": start.run_id, "braidflow.node": start.node},
        )
        self.nodes: dict[tuple[str, ...], list[Any]] = {}
        self.items: dict[tuple[tuple[str, ...], int], Any] = {}
        self.sub_flows: dict[tuple[str, ...], Any] = {}  # ("a", "sets[3]") -> item span
        self.attempts: dict[int, int] = {}
        self.usage: dict[int, Usage] = {}  # by span, what its calls reported so far

    def ns(self, monotonic: float) -> int:
        return self.offset + int(monotonic * 1e9)

    def parent_of(self, path: tuple[str, ...]) -> Any:
        prefix = path[:-1]
        if not prefix:
            return self.run
        return self.sub_flows.get(prefix) or (self.nodes.get(prefix) or [self.run])[-1]

    def child(self, name: str, parent: Any, event: Event, attributes: dict[str, Any]) -> Any:
        context = self.trace.set_span_in_context(parent)
        return self.tracer.start_span(
            name, context=context, start_time=self.ns(event.time), attributes=attributes
        )

    def target(self, event: Event) -> Any:
        if event.item is not None:
            span = self.items.get((event.path, event.item))
            if span is not None:
                return span
        stack = self.nodes.get(event.path)
        return stack[-1] if stack else self.run

    def finish(self, span: Any, event: Event) -> None:
        error = event.error
        status = self.trace.Status
        code = self.trace.StatusCode
        attempts = self.attempts.pop(id(span), 0) + 1
        span.set_attribute("braidflow.attempts", attempts)
        stop = stop_of(error)  # (read back from a store too: a stand-in of its class)
        if error is None:
            span.set_attribute("braidflow.outcome", "ok")
        elif stop is not None:  # a stop, no failure: no error status
            span.set_attribute("braidflow.outcome", stop)
        else:
            span.set_attribute("braidflow.outcome", "error")
            try:
                span.record_exception(error)
            except Exception:  # its __str__ raises (the SDK's record takes str(error))
                span.add_event(
                    "exception",
                    {
                        "exception.type": type(error).__qualname__,
                        "exception.message": message_of(error),
                    },
                )
            span.set_status(status(code.ERROR, describe_error(error, whole=True)))
        total = self.usage.pop(id(span), None)
        if total is not None and total.model is not None:  # one model for all its calls
            span.set_attribute("gen_ai.response.model", total.model)
        span.end(end_time=self.ns(event.time))

    def handle(self, event: Event) -> None:
        kind, path = event.kind, event.path
        attributes: dict[str, Any] = {
            "braidflow.node": event.node,
            "braidflow.path": "/".join(path),
        }
        if kind in ("node_start", "branch_start"):
            title = event.node if kind == "node_start" else f"branch {event.node}"
            span = self.child(title, self.parent_of(path), event, attributes)
            self.nodes.setdefault(path, []).append(span)
        elif kind in ("node_end", "branch_end"):
            stack = self.nodes.get(path)
            if stack:
                self.finish(stack.pop(), event)
        elif kind == "item_start" and event.item is not None:
            parent = (self.nodes.get(path) or [self.run])[-1]
            attributes["braidflow.item"] = event.item
            span = self.child(f"{event.node}[{event.item}]", parent, event, attributes)
            self.items[(path, event.item)] = span
            self.sub_flows[(*path[:-1], f"{event.node}[{event.item}]")] = span
        elif kind == "item_end" and event.item is not None:
            span = self.items.pop((path, event.item), None)
            self.sub_flows.pop((*path[:-1], f"{event.node}[{event.item}]"), None)
            if span is not None:
                self.finish(span, event)
        elif kind == "retry":
            span = self.target(event)
            self.attempts[id(span)] = self.attempts.get(id(span), 0) + 1
            span.add_event(
                "retry",
                {
                    "braidflow.attempt": event.attempt or 0,
                    "braidflow.delay": float((event.data or {}).get("delay", 0)),
                    "exception.type": type(event.error).__name__,
                    "exception.message": "" if event.error is None else message_of(event.error),
                },
                timestamp=self.ns(event.time),
            )
        elif kind == "limiter_wait":
            self.target(event).add_event(
                "limiter_wait",
                {
                    "braidflow.duration": float(event.duration or 0),
                    "braidflow.limiters": ", ".join((event.data or {}).get("limiters", [])),
                },
                timestamp=self.ns(event.time),
            )
        elif kind == "usage":
            usage = Usage.from_dict(event.data)
            spans = [self.run]
            if self.target(event) is not self.run:
                spans.append(self.target(event))
            for span in spans:
                total = self.usage[id(span)] = self.usage.get(id(span), _NONE) + usage
                span.set_attribute("gen_ai.usage.input_tokens", total.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", total.output_tokens)
                if total.cost is not None:
                    span.set_attribute("braidflow.cost", total.cost)
        elif kind == "cache_hit":  # exec did not run: its result came from a cache
            self.target(event).set_attribute("braidflow.cache_hit", True)
        elif kind == "run_end":
            self.finish(self.run, event)
