"""Typed shared state that `mypy --strict` must accept (tests/test_typed_state_mypy.py).

Not collected by pytest: no test_ prefix. Nodes are typed against a
TypedDict, a dataclass and a pydantic model; no cast anywhere.
"""

from dataclasses import dataclass, field
from typing import Annotated, TypedDict

import pydantic

from braidflow import AsyncFlow, AsyncNode, BatchNode, Flow, Node, merge


class Research(TypedDict):
    question: str
    notes: Annotated[list[str], merge.extend]
    searches: Annotated[int, merge.add]


class Ask(Node[str, str, Research]):
    def prep(self, shared: Research) -> str:
        return shared["question"]

    def exec(self, prep_res: str) -> str:
        return prep_res.upper()

    def post(self, shared: Research, prep_res: str, exec_res: str) -> str | None:
        shared["notes"].append(exec_res)
        shared["searches"] += 1
        return None


class Words(BatchNode[str, int, Research]):
    def prep(self, shared: Research) -> list[str]:
        return shared["question"].split()

    def exec(self, prep_res: str) -> int:
        return len(prep_res)

    def post(self, shared: Research, prep_res: object, exec_res: list[int]) -> str | None:
        shared["searches"] += sum(exec_res)
        return None


@dataclass
class Draft:
    topic: str
    paragraphs: Annotated[list[str], merge.extend] = field(default_factory=list)


class Write(AsyncNode[str, str, Draft]):
    async def prep_async(self, shared: Draft) -> str:
        return shared.topic

    async def exec_async(self, prep_res: str) -> str:
        return f"About {prep_res}."

    async def post_async(self, shared: Draft, prep_res: str, exec_res: str) -> str | None:
        shared.paragraphs.append(exec_res)
        return "done"


class Order(pydantic.BaseModel):
    sku: str
    quantity: int = 1


class Price(Node[int, float, Order]):
    def prep(self, shared: Order) -> int:
        return shared.quantity

    def exec(self, prep_res: int) -> float:
        return prep_res * 2.5

    def post(self, shared: Order, prep_res: int, exec_res: float) -> str | None:
        shared.quantity = int(exec_res)
        return None


class Untyped(Node[str, str]):  # the state type may be left out: Any
    def prep(self, shared: dict[str, str]) -> str:
        return shared["anything"]


ask = Ask()
ask >> Words()
research = Flow(start=ask, state=Research)
drafting = AsyncFlow(start=Write(), state=Draft)
pricing = Flow(start=Price(), state=Order, validate=True)
