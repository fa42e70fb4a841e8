"""The cost of one write to ``shared`` in a typed flow, for bench/run.py.

A node's ``post`` writes one key ``size`` times, timed inside ``post``:
into an untyped flow's dict, through a dataclass state's view (by
attribute), and validated (``validate=True``) for a TypedDict and for a
pydantic model. Microseconds per write, median of 20 runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, TypedDict

RUNS = 20


class Counted(TypedDict):
    count: int


@dataclass
class CountedData:
    count: int = 0


def state_writes(impl: str, size: int) -> dict[str, float]:
    if impl != "braidflow":
        raise NotImplementedError("state types are braidflow's")
    import braidflow

    try:
        import pydantic
    except ModuleNotFoundError:  # the pydantic figure needs braidflow[pydantic]
        pydantic = None

    timings: list[float] = []

    class Writes(braidflow.Node):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            started = time.perf_counter()
            for value in range(size):
                shared["count"] = value
            timings.append(time.perf_counter() - started)

    class WritesByAttribute(Writes):
        def post(self, shared: Any, prep_res: Any, exec_res: Any) -> None:
            started = time.perf_counter()
            for value in range(size):
                shared.count = value
            timings.append(time.perf_counter() - started)

    def per_write(flow: Any, make: Any) -> float:
        timings.clear()
        for _ in range(RUNS):
            flow.run(make())
        return statistics.median(timings) / size * 1e6

    figures = {
        "dict_us": per_write(braidflow.Flow(start=Writes()), lambda: {"count": 0}),
        "typeddict_us": per_write(
            braidflow.Flow(start=Writes(), state=Counted), lambda: {"count": 0}
        ),
        "dataclass_us": per_write(
            braidflow.Flow(start=WritesByAttribute(), state=CountedData), CountedData
        ),
        "typeddict_valid_us": per_write(
            braidflow.Flow(start=Writes(), state=Counted, validate=True), lambda: {"count": 0}
        ),
    }
    if pydantic is not None:

        class CountedModel(pydantic.BaseModel):
            count: int = 0

        figures["model_valid_us"] = per_write(
            braidflow.Flow(start=WritesByAttribute(), state=CountedModel, validate=True),
            CountedModel,
        )
    return figures
