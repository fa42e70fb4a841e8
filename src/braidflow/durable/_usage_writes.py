"""A durable run's usage in its record while it goes on, not only at its end.

`UsageWrites` keeps what the run's calls used so far in its metadata: the
first report at once, then at most once a `USAGE_PERIOD` (a report in
between is written when the period ends, by a timer), so a killed run loses
at most that much of it; the run's end writes it all.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import Any

from ..stores._base import Store
from ._history import USAGE_KEY

__all__ = ["USAGE_PERIOD", "UsageWrites"]

USAGE_PERIOD = 1.0  # seconds: how often a run's usage is written while it goes on


class UsageWrites:
    """Writes one run's usage so far to its metadata (see the module)."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self._due = 0.0  # when the usage reported may be written again
        # What was reported since, and the timer that writes it then (it ends
        # with the run: `ended`).
        self._pending: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def so_far(self, total: Any) -> None:
        """Keep ``total`` (a `Usage`), now or when the period ends. A store
        that fails here is told at the run's end, not to the call."""
        with self._lock:
            now = monotonic()
            if now < self._due:
                self._pending = total
                if self._timer is None:
                    timer = self._timer = threading.Timer(self._due - now, self._later)
                    timer.daemon = True
                    timer.start()
                return
            self._due = now + USAGE_PERIOD
        self._write(total)

    def _later(self) -> None:
        with self._lock:
            self._timer = None
            total, self._pending = self._pending, None
            self._due = monotonic() + USAGE_PERIOD
        if total is not None:
            self._write(total)

    def _write(self, total: Any) -> None:
        try:
            self.store.set_metadata(self.run_id, {USAGE_KEY: total.as_dict()})
        except Exception:
            pass

    def ended(self) -> None:
        """The run ends (and writes all its usage): no timer is left."""
        with self._lock:
            timer, self._timer = self._timer, None
            self._pending = None
        if timer is not None:
            timer.cancel()
            if timer is not threading.current_thread():
                timer.join()
