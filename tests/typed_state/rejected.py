"""Typed shared state that `mypy --strict` must reject (tests/test_typed_state_mypy.py).

Not collected by pytest. Each marked line is a mistake: the test checks
that mypy reports an error on exactly the lines with an "error" comment.
"""

from dataclasses import dataclass
from typing import TypedDict

from braidflow import AsyncNode, Node


class Research(TypedDict):
    question: str
    notes: list[str]


class WrongKeyInPrep(Node[str, str, Research]):
    def prep(self, shared: Research) -> str:
        return shared["questoin"]  # error: a key Research does not have


class WrongKeyInPost(Node[str, str, Research]):
    def post(self, shared: Research, prep_res: str, exec_res: str) -> str | None:
        shared["answer"] = exec_res  # error: a key Research does not have
        return None


class WrongTypeInPost(Node[str, int, Research]):
    def post(self, shared: Research, prep_res: str, exec_res: int) -> str | None:
        shared["question"] = exec_res  # error: an int where Research says str
        return None


class WrongItemInPost(Node[str, int, Research]):
    def post(self, shared: Research, prep_res: str, exec_res: int) -> str | None:
        shared["notes"].append(exec_res)  # error: an int in a list[str]
        return None


@dataclass
class Draft:
    topic: str


class WrongAttributeInPrep(AsyncNode[str, str, Draft]):
    async def prep_async(self, shared: Draft) -> str:
        return shared.topik  # error: an attribute Draft does not have


class WrongTypeOfAttribute(AsyncNode[str, int, Draft]):
    async def post_async(self, shared: Draft, prep_res: str, exec_res: int) -> str | None:
        shared.topic = exec_res  # error: an int where Draft says str
        return None


class PrepTypedAgainstAnotherState(Node[str, str, Research]):
    def prep(self, shared: Draft) -> str:  # error: not the node's state type
        return shared.topic
