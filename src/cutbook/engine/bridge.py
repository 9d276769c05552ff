"""Prefect as the on-call engineer sees it: task runs, pause forms and artifacts.

Prefect is for watching; the journal is the record. So everything here is
best-effort presentation except :meth:`PrefectBridge.ask`, which is how a
person answers a gate from the UI or from ``cutbook approve``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal
from uuid import UUID

import structlog
from prefect import task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from prefect.states import Completed, Failed, Running

from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.runner import Answer, Decision, Question, StepReport

if TYPE_CHECKING:
    from cutbook.engine.runner import Runner

log = structlog.get_logger("cutbook.engine")


class GateAnswer(RunInput):
    """The form shown in the Prefect UI for a go/no-go gate or a manual step."""

    approver: str
    decision: Literal["approve", "reject"] = "approve"
    comment: str = ""


class FailureAnswer(RunInput):
    """The form shown when a step with ``on_failure: pause`` fails."""

    approver: str
    decision: Literal["retry", "skip", "rollback"] = "rollback"
    comment: str = ""


HUMAN_FLOOR_S = 120.0


def human_timeout(clock: RealClock | VirtualClock, timeout_s: float) -> float:
    """Real seconds a person gets to answer.

    A rehearsal compresses every wait, but a person rehearsing a go/no-go call
    still needs time to read and answer: never less than two real minutes (or
    the gate's own timeout, if that is shorter).
    """
    compressed = clock.real_seconds(timeout_s)
    if clock.kind == "virtual":
        return max(compressed, min(HUMAN_FLOOR_S, timeout_s))
    return compressed


def pause_key(step_id: str, n: int) -> str:
    return f"cutbook-{step_id}-{n}"


class PrefectBridge:
    def __init__(self, flow_run_id: UUID, clock: RealClock | VirtualClock, run_id: str) -> None:
        self.flow_run_id = flow_run_id
        self.clock = clock
        self.run_id = run_id
        self._pauses = 0
        self._progress_id: UUID | None = None
        self._last_publish = 0.0
        self._publishing: asyncio.Task[None] | None = None
        self._dirty = False
        self.artifact_key = "cutover-" + "".join(c if c.isalnum() else "-" for c in run_id.lower())

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

    # -- artifacts -----------------------------------------------------------
    def publish(self, runner: Runner) -> None:
        """Coalesce updates: at most one artifact write in flight, about one a second."""
        self._dirty = True
        if self._publishing is not None and not self._publishing.done():
            return
        self._publishing = asyncio.get_running_loop().create_task(self._publish_soon(runner))

    async def _publish_soon(self, runner: Runner) -> None:
        while self._dirty:
            wait = 1.0 - (time.monotonic() - self._last_publish)
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty = False
            self._last_publish = time.monotonic()
            await self.flush(runner)

    async def flush(self, runner: Runner) -> None:
        from cutbook.engine.view import markdown_table, progress

        try:
            await acreate_markdown_artifact(
                markdown=markdown_table(runner),
                key=self.artifact_key,
                description="Planned versus actual, updated as steps finish",
            )
            pct = progress(runner) * 100
            if self._progress_id is None:
                self._progress_id = await acreate_progress_artifact(
                    progress=pct, key=self.artifact_key + "-progress"
                )
            else:
                await aupdate_progress_artifact(self._progress_id, pct)
        except (OSError, RuntimeError, ValueError) as exc:
            log.warning(f"could not update the Prefect artifact: {exc}")

    async def close(self, runner: Runner) -> None:
        if self._publishing is not None:
            await asyncio.gather(self._publishing, return_exceptions=True)
        await self.flush(runner)
