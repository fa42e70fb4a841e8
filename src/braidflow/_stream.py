"""``flow.stream(shared)``: a run's events as an async iterator, while it goes.

The run goes on in a task of its own; an observer hands each event to the
consumer through a queue (from whatever thread it happened on). Leaving the
iterator early cancels the run and waits for it to stop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from ._events import Event
from ._run import observers_of

__all__ = ["stream_events"]


async def stream_events(node: Any, shared: Any, options: dict[str, Any]) -> AsyncIterator[Event]:
    """Yield the events of ``node.run_async(shared, **options)`` as they happen.

    Raises:
        InvalidParameterError: For an observer that is neither callable nor
            has an ``on_event`` method, before the run starts.
        Exception: The run's own error, after its ``run_end`` event.
    """
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()  # None: the run is over

    def deliver(event: Event) -> None:
        if threading.get_ident() == loop_thread:
            queue.put_nowait(event)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, event)

    # Checked as run() checks them: one observer or many, each callable or with on_event.
    observers = [observer for observer, _ in observers_of(options.pop("observers", None), node)]
    run = loop.create_task(node.run_async(shared, observers=[*observers, deliver], **options))
    run.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        await run  # raises the run's error, if it failed
    finally:
        if not run.done():
            run.cancel()
            try:
                await run
            except BaseException:  # the consumer left; how the run ended is moot
                pass
