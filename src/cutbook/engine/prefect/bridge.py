"""Prefect as the on-call engineer sees it: task runs, pause forms and artifacts.

Prefect is for watching; the journal is the record. So everything here is
best-effort presentation except :meth:`PrefectBridge.ask`, which is how a
person answers a gate from the UI or from ``cutbook approve``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.states import Completed, Failed, Running

from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.prefect.artifacts import Artifacts
from cutbook.engine.prefect.gates import FailureAnswer, GateAnswer, human_timeout, pause_key
from cutbook.engine.state import Answer, Decision, Question, RunState, StepReport


class PrefectBridge:
    """The engine's :class:`~cutbook.engine.state.Bridge` inside a Prefect flow run."""

    def __init__(self, flow_run_id: UUID, clock: RealClock | VirtualClock, run_id: str) -> None:
        self.flow_run_id = flow_run_id
        self.clock = clock
        self.run_id = run_id
        self._pauses = 0
        self.artifacts = Artifacts(run_id)

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport:
        holder: list[StepReport] = []

        async def step() -> object:
            report = await body()
            holder.append(report)
            message = (report.summary or report.status)[:500]
            if report.status == "failed":
                return Failed(message=(report.error or "failed")[:500])
            return Completed(message=message)

        prefect_task = task(
            name=name,
            task_run_name=name,
            retries=0,
            persist_result=False,
            cache_policy=NO_CACHE,
            log_prints=False,
        )(step)
        state = prefect_task(return_state=True)
        if inspect.isawaitable(state):
            await state
        if not holder:
            return StepReport(name, "failed", error="Prefect refused to start the task run")
        return holder[0]

    async def ask(self, question: Question) -> Answer:
        self._pauses += 1
        model: type[RunInput] = FailureAnswer if question.kind == "failure" else GateAnswer
        who = ", ".join(question.approvers) or "any operator"
        text = (
            f"### {question.title}\n\n{question.instructions}\n\n"
            f"Approvers: {who}. From a terminal: "
            f"`cutbook approve {self.run_id} {question.step_id} --by NAME [--reject] "
            f"[--comment TEXT]`"
        )
        form = model.with_initial_data(description=text, approver="")
        real_timeout = max(2, int(human_timeout(self.clock, question.timeout_s)))
        try:
            answer = await apause_flow_run(
                wait_for_input=form,
                timeout=real_timeout,
                poll_interval=1,
                key=pause_key(question.step_id, self._pauses),
            )
        except FlowPauseTimeout:
            await self._force_running()
            minutes = round(question.timeout_s / 60)
            return Answer(by="timeout", approved=False, comment=f"no answer within {minutes} min")
        decision = str(getattr(answer, "decision", "approve"))
        by = str(getattr(answer, "approver", "")) or "unknown"
        comment = str(getattr(answer, "comment", ""))
        if question.kind == "failure":
            chosen: Decision = (
                "retry" if decision == "retry" else "skip" if decision == "skip" else "rollback"
            )
            return Answer(by=by, approved=chosen != "rollback", comment=comment, decision=chosen)
        return Answer(by=by, approved=decision == "approve", comment=comment)

    async def _force_running(self) -> None:
        """A timed-out pause leaves the run Paused, which would refuse the rollback's tasks."""
        async with get_client() as client:
            await client.set_flow_run_state(self.flow_run_id, Running(), force=True)

    def publish(self, run: RunState) -> None:
        self.artifacts.changed(run)

    async def close(self, run: RunState) -> None:
        await self.artifacts.close(run)
