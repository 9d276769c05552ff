"""A bridge without Prefect: steps run as plain coroutines, questions go to a callback.

Used by the engine's own tests and by embedding code that wants the same
semantics without an orchestrator.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cutbook.engine.state import Answer, Question, RunState, StepReport


class LocalBridge:
    def __init__(self, answer: Callable[[Question], Awaitable[Answer]] | None = None) -> None:
        self._answer = answer
        self.questions: list[Question] = []
        self.tasks: list[str] = []

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport:
        self.tasks.append(name)
        return await body()

    async def ask(self, question: Question) -> Answer:
        self.questions.append(question)
        if self._answer is None:
            return Answer(by="nobody", approved=False, comment="no operator channel")
        return await self._answer(question)

    def publish(self, run: RunState) -> None:
        return None
