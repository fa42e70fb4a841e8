"""Shared test helpers."""


class Gauge:
    """Counts work in flight exactly (no clock): call enter() and leave() around it."""

    def __init__(self):
        self.now = 0
        self.peak = 0

    def enter(self):
        self.now += 1
        self.peak = max(self.peak, self.now)

    def leave(self):
        self.now -= 1
