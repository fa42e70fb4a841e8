"""The engine: how a node and a flow run, each behaviour written once, driven twice.

Vocabulary (the words the engine's code and comments use):

- **run**: one call of ``run``/``run_async``/``resume`` at the top, with
  everything nested inside it; its state is one `braidflow._context.Run`.
- **step**: one node's turn in a flow's walk: a fresh copy of the node runs
  its phases once. A flow is a node, so a nested flow is one step of its parent.
- **phase**: ``prep``, ``exec`` or ``post`` (and the hooks around them).
- **stage**: a step's exec stage, between ``prep`` and ``post``: one item's
  attempts, a batch's items, a flow's walk or a fork's branches.
- **item**: one unit of a stage that runs many: a batch node's item, a batch
  flow's parameter set, a fork's branch. Items have an index.
- **attempt**: one try of ``exec`` for one item; retries make more.
- **path**: the display names from the outermost flow down to the running
  node (``("ingest", "fetch")``), as events carry it.
- **checkpoint position**: where a durable run's checkpoint belongs: the key
  of a step (``0:job/2:review``), of a batch flow's parameter set
  (``...[3]``) or of a branch (``.../b1:name``).
- **effect**: what the shared code asks its driver to do (call user code,
  await, wait for limiters, sleep, run items at once...), as a tuple.
- **driver**: what carries out effects: the sync driver (``_sync``, no event
  loop) or the async driver (``_async``, on the loop).
- **fast path**: a driver's own way to run a plain node (no hooks, no batch)
  under no policy, without effects: the one place a behaviour is written
  per driver, each with its measured saving in a comment.

The layers, each importing only those below: ``_effects`` and ``_observe``
(events); ``_attempts`` (limits, timeout, retry, fallback); ``_around_items``
(an item's events and checkpoint); ``_items``
(a batch's items: sequential, parallel, observed, checkpointed);
``_lifecycle`` (hooks, prep, the stage, post); ``_walk`` and ``_fork``
(flows and branches); the drivers. The public classes (``_node``,
``_flow``, ``_branches``) choose their stage and call the drivers.
"""

from ._async import drive as drive_async
from ._async import run_node as run_node_async
from ._fork import fork_join
from ._items import default_thread_count
from ._lifecycle import lifecycle, node_stage
from ._sync import drive as drive_sync
from ._sync import node_step as node_step_sync
from ._sync import run_node as run_node_sync
from ._walk import flow_stage, typed_stage, walk

__all__ = [
    "default_thread_count",
    "drive_async",
    "drive_sync",
    "flow_stage",
    "fork_join",
    "lifecycle",
    "node_stage",
    "node_step_sync",
    "run_node_async",
    "run_node_sync",
    "typed_stage",
    "walk",
]
