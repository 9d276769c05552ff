"""Prefect as the on-call engineer sees it: task runs, pause forms and artifacts.

Prefect is for watching; the journal is the record. So a step's body runs
here directly, on time, and its task run is *mirrored*: the desired state
goes to the :class:`~cutbook.engine.prefect.reporter.Reporter`, which tells
the server when it can. Only :meth:`PrefectBridge.ask` waits on the API,
because a person answers through it; even then the question's deadline holds
when the server is gone, and the operator is told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import structlog
from prefect.client.orchestration import PrefectClient
from prefect.input import RunInput
from prefect.input.run_input import Keyset, keyset_from_paused_state
from prefect.states import Completed, Crashed, Failed, Paused, Running
from pydantic import ValidationError

from cutbook.clock import RealClock, VirtualClock
from cutbook.durations import format_duration
from cutbook.engine.prefect.artifacts import Artifacts
from cutbook.engine.prefect.gates import FailureAnswer, GateAnswer, human_timeout, pause_key
from cutbook.engine.prefect.reporter import Reporter, Unreachable
from cutbook.engine.state import Answer, Decision, Question, RunState, StepReport

log = structlog.get_logger("cutbook.prefect")

POLL_S = 1.0
CALL_S = 5.0


class PrefectBridge:
    """The engine's :class:`~cutbook.engine.state.Bridge` over a Prefect flow run."""

    def __init__(self, reporter: Reporter, clock: RealClock | VirtualClock, run_id: str) -> None:
        self.reporter = reporter
        self.clock = clock
        self.run_id = run_id
        self._pauses = 0
        self.artifacts = Artifacts(reporter)
        self.refused: list[str] = []
        """Refusals so far (the run's), the newest shown on the next form."""

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport:
        """Run the body now; its task run follows when the server can take it."""
        task_run = self.reporter.task_state(None, name, Running())
        try:
            report = await body()
        except BaseException:
            self.reporter.task_state(task_run, name, Crashed(message="stopped"))
            raise
        if report.status == "failed":
            self.reporter.task_state(task_run, name, Failed(message=(report.error or "")[:500]))
        else:
            message = (report.summary or report.status)[:500]
            self.reporter.task_state(task_run, name, Completed(message=message))
        return report

    async def ask(self, question: Question) -> Answer:
        """Pause the flow run for a form; the question's deadline holds whatever the API does."""
        self._pauses += 1
        model: type[RunInput] = FailureAnswer if question.kind == "failure" else GateAnswer
        form = model.with_initial_data(
            description=_form_text(question, self.run_id, self.refused),
            runbook_sha256=question.runbook_sha256,
        )
        real_timeout = max(2, int(human_timeout(self.clock, question.timeout_s)))
        key = pause_key(question.step_id, self._pauses)
        try:
            answer = await self._wait_for_answer(question, form, key, real_timeout)
        except asyncio.CancelledError:
            # The engine stopped asking (the guard's deadline, a hard stop): a flow run
            # left paused would refuse the task runs that follow.
            self.reporter.force_running()
            raise
        if answer is None:
            minutes = round(question.timeout_s / 60)
            return Answer(by="timeout", approved=False, comment=f"no answer within {minutes} min")
        if isinstance(answer, str):
            return Answer(by="", approved=False, problem=answer, via="prefect")
        decision = str(getattr(answer, "decision", ""))
        common: dict[str, Any] = {
            "by": str(getattr(answer, "approver", "")).strip(),
            "comment": str(getattr(answer, "comment", "")),
            "runbook_sha256": str(getattr(answer, "runbook_sha256", "")) or None,
            "signature": str(getattr(answer, "signature", "")) or None,
            "signed_at": str(getattr(answer, "signed_at", "")) or None,
            "via": "prefect",
        }
        if question.kind == "failure":
            chosen: Decision = (
                "retry" if decision == "retry" else "skip" if decision == "skip" else "rollback"
            )
            return Answer(approved=chosen != "rollback", decision=chosen, **common)
        if decision not in ("approve", "reject"):
            return Answer(approved=False, problem="no decision: approve or reject", **common)
        return Answer(approved=decision == "approve", **common)

    async def _wait_for_answer(
        self, question: Question, form: type[RunInput], key: str, timeout: int
    ) -> RunInput | str | None:
        """Pause, then poll until answered or the deadline; ``None``: no answer in time."""
        deadline = time.monotonic() + timeout
        keyset: Keyset | None = None
        warned = False
        while time.monotonic() < deadline:
            flow_run_id = self.reporter.flow_run_id
            try:
                if flow_run_id is None:
                    raise Unreachable("no flow run yet")
                if keyset is None:
                    keyset = await self._pause(flow_run_id, form, key, timeout)
                else:
                    answer = await self._answered(flow_run_id, form, keyset)
                    if answer is not None:
                        return answer
            except Unreachable:
                if not warned:
                    warned = True
                    left = max(0.0, deadline - time.monotonic())
                    log.warning(
                        f"the Prefect UI cannot take the answer to {question.step_id!r}: its API "
                        f"is unreachable. Unless it comes back, the question times out in "
                        f"{format_duration(left)} and counts as no-go",
                        step=question.step_id,
                    )
            await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
        if keyset is not None:
            self.reporter.force_running()  # a timed-out pause would refuse later task runs
        return None

    async def _pause(
        self, flow_run_id: UUID, form: type[RunInput], key: str, timeout: int
    ) -> Keyset | None:
        """Put the flow run in Paused with the form; ``None`` if the server refused."""
        state: Any = Paused(timeout_seconds=timeout, reschedule=False, pause_key=key)
        keyset = keyset_from_paused_state(state)
        state.state_details.run_input_keyset = keyset

        async def pause(client: PrefectClient) -> bool:
            result = await client.set_flow_run_state(flow_run_id, state)
            if result.state is None or not result.state.is_paused():
                return False
            await form.asave(keyset, flow_run_id=flow_run_id)
            return True

        if await self.reporter.call(pause, CALL_S * 2):
            log.info("paused for an answer in the Prefect UI", key=key)
            return keyset
        log.warning("Prefect refused to pause the flow run; asking again shortly", key=key)
        return None

    async def _answered(
        self, flow_run_id: UUID, form: type[RunInput], keyset: Keyset
    ) -> RunInput | str | None:
        """The answer; a string says why what arrived is no answer (it bypassed the form)."""

        async def read(client: PrefectClient) -> RunInput | str | None:
            flow_run = await client.read_flow_run(flow_run_id)
            if flow_run.state is None or not flow_run.state.is_running():
                return None
            try:
                loaded: RunInput = await form.aload(keyset, flow_run_id=flow_run_id)
            except ValidationError as exc:
                fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"]) or "it"
                return f"the answer is not a complete form ({fields} missing or invalid)"
            return loaded

        return await self.reporter.call(read, CALL_S)

    def publish(self, run: RunState) -> None:
        self.refused = run.refusals
        self.artifacts.changed(run)

    def close(self, run: RunState) -> None:
        self.artifacts.close(run)


def _form_text(question: Question, run_id: str, refused: list[str]) -> str:
    """What the Prefect UI shows above the form: what is decided, by whom, on what."""
    who = ", ".join(question.approvers) or "any operator, by name"
    lines = [f"### {question.title}", "", question.instructions, ""]
    if question.kind == "gate" and question.quorum > 1:
        so_far = ", ".join(question.approved_by) or "nobody yet"
        lines.append(f"Needs go from {question.quorum} distinct approvers; so far: {so_far}.")
    lines.append(f"Approvers: {who}." + (" Signed answers only." if question.signed else ""))
    lines.append(f"Runbook sha256: `{question.runbook_sha256}`.")
    if question.forecast:
        lines.append(f"Now: {question.forecast}.")
    if refused:
        lines.append(f"Last refused: {refused[-1]}.")
    command = f"cutbook approve {run_id} {question.step_id} --by NAME"
    if question.kind == "failure":
        command += " --decision retry|skip|rollback"
    else:
        command += " --approve|--reject"
    if question.signed:
        command += " --key FILE"
    lines += ["", f"From a terminal: `{command} [--comment TEXT]`"]
    return "\n".join(lines)
