"""PocketFlow 0.0.3: each workload as its docs write it (where it can)."""

import _pocketflow_programs as programs
import pocketflow

LABEL = "PocketFlow"
PACKAGE = "pocketflow"


def chain(n):
    return programs.chain(pocketflow, n)


def _items(n):
    return list(range(n))  # PocketFlow gathers a list: no lazy input


def fanout(n):
    return programs.batch(pocketflow, programs.sleep_50ms, lambda shared: _items(n))


def items(n):
    return programs.batch(pocketflow, programs.at_once, lambda shared: _items(n))


def bounded(n):
    raise NotImplementedError("PocketFlow has no concurrency bound (it gathers every item)")


def subflows(n):
    return programs.subflows(pocketflow, n)


def fork(n):
    raise NotImplementedError("PocketFlow cannot run different nodes at the same time")


def checkpointed(n):
    raise NotImplementedError("PocketFlow has no persistence")
