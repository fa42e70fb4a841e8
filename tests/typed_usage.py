"""How type checkers see generic nodes; `make test` runs mypy on this file.

Not collected by pytest. Each `# type: ignore[override]` marks a mistake that
mypy must report: strict mode flags an ignore that is no longer needed, so
this file fails the type check if the generics stop catching these mistakes.
"""

from typing import Any

from braidflow import (
    AsyncNode,
    AsyncParallelBatchNode,
    BatchNode,
    Flow,
    MemoryStore,
    Node,
    Parallel,
    Question,
    Suspended,
)

Shared = dict[str, Any]


class Greet(Node[str, str]):
    def prep(self, shared: Shared) -> str:
        return str(shared["name"])

    def exec(self, prep_res: str) -> str:
        return f"Hello, {prep_res}"

    def post(self, shared: Shared, prep_res: str, exec_res: str) -> str | None:
        shared["greeting"] = exec_res
        return None


class ExecTakesTheWrongType(Node[str, str]):
    def exec(self, prep_res: int) -> str:  # type: ignore[override]
        return str(prep_res)


class Lengths(BatchNode[str, int]):
    def prep(self, shared: Shared) -> list[str]:
        return list(shared["words"])

    def exec(self, prep_res: str) -> int:
        return len(prep_res)

    def post(self, shared: Shared, prep_res: Any, exec_res: list[int]) -> str | None:
        shared["lengths"] = exec_res
        return None


class PostExpectsTheWrongResults(BatchNode[str, int]):
    def post(  # type: ignore[override]
        self, shared: Shared, prep_res: Any, exec_res: list[str]
    ) -> str | None:
        return None


class Fetch(AsyncParallelBatchNode[str, bytes]):
    async def prep_async(self, shared: Shared) -> list[str]:
        return list(shared["urls"])

    async def exec_async(self, prep_res: str) -> bytes:
        return prep_res.encode()


class AsyncExecTakesTheWrongType(AsyncNode[int, int]):
    async def exec_async(self, prep_res: str) -> int:  # type: ignore[override]
        return len(prep_res)


greet = Greet()
chained: Greet = greet >> Greet()  # >> returns its right operand, typed
flow = Flow(start=greet)
join: Parallel = greet >> [Greet(), Greet()]  # a fan-out returns its join point
after_join: Greet = join >> Greet()
on_action: Parallel = greet - "both" >> [Greet(), Greet()]


def answer_all(waiting: Suspended, answer: str) -> dict[Any, Any]:
    """Answering every open question by id: the ids and prompts are typed."""
    questions: tuple[Question, ...] = waiting.questions
    answers = {question.id: f"{answer} to {question.prompt}" for question in questions}
    items: list[int | None] = [question.item for question in questions]
    assert len(items) == len(answers)
    resumed: dict[Any, Any] = flow.resume(waiting.run_id, store=MemoryStore(), answers=answers)
    return resumed
