"""Where batch items' ``exec`` runs: in this process (the default), or on a Ray cluster.

Give a batch node (or a flow, for every batch node inside it) an executor::

    from braidflow.executors import RayExecutor

    with RayExecutor() as ray_cluster:            # starts or joins a local Ray instance
        flow = AsyncFlow(start=Embed(executor=ray_cluster, max_concurrency=64))
        flow.run(shared)

Only each item's ``exec`` moves: ``prep``, ``post``, hooks, events, limiters,
retries, fallbacks, timeouts and checkpoints stay in the driver, so a batch
behaves the same wherever its items run.

An executor is anything with a ``prepare(node, method)`` method (see
`Executor`). `RayExecutor` needs the ``braidflow[ray]`` extra and is imported
only when first used, so ``import braidflow`` never imports ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Dispatch, DispatchTimeout, Executor, InProcessExecutor, still_running

if TYPE_CHECKING:
    from ._ray import RayExecutor as RayExecutor

__all__ = [
    "Dispatch",
    "DispatchTimeout",
    "Executor",
    "InProcessExecutor",
    "RayExecutor",
    "still_running",
]


def __getattr__(name: str) -> Any:
    if name != "RayExecutor":
        raise AttributeError(f"module 'braidflow.executors' has no attribute {name!r}")
    from ._ray import RayExecutor

    globals()[name] = RayExecutor
    return RayExecutor


def __dir__() -> list[str]:
    return sorted(__all__)
