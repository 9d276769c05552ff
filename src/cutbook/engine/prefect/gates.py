"""Answering a paused run: the forms the Prefect UI shows and ``cutbook approve``'s side.

Both sides agree here on the forms' fields and on the pause key, the one
place where a paused flow run says which step it waits at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput

from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.prefect.parameters import run_tag
from cutbook.engine.state import Choice
from cutbook.errors import EngineError, UsageError


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
ANSWER_TIMEOUT_S = 10.0
"""``cutbook approve`` waits no longer than this for each call to the server."""


def human_timeout(clock: RealClock | VirtualClock, timeout_s: float) -> float:
    """Real seconds a person gets to answer.

    A rehearsal skips waiting, but a person rehearsing a go/no-go call still
    needs time to read and answer: the timeout at full speed, never less than
    two real minutes (or the gate's own timeout, if that is shorter). Meanwhile
    the rehearsal clock counts the question as waiting up to its deadline.
    """
    compressed = clock.real_seconds(timeout_s)
    if clock.rehearsal:
        return max(compressed, min(HUMAN_FLOOR_S, timeout_s))
    return compressed


_PAUSE_PREFIX = "cutbook-"


def pause_key(step_id: str, n: int) -> str:
    """Unique per question (Prefect refuses a key it has seen), and names the step."""
    return f"{_PAUSE_PREFIX}{step_id}-{n}"


def step_of_pause_key(key: str) -> str:
    return key.removeprefix(_PAUSE_PREFIX).rsplit("-", 1)[0]


def answer_gate(run_id: str, step: str, *, choice: Choice, by: str, comment: str = "") -> str:
    """Resume the paused flow run of ``run_id`` with an answer for ``step``.

    A dead or stalled server is one clear line, not a traceback or a minutes-long wait:
    the run's question then times out to no-go at its deadline.
    """
    try:
        return _answer(run_id, step, choice=choice, by=by, comment=comment)
    except httpx.HTTPError as exc:
        raise EngineError(
            f"the Prefect server does not answer ({type(exc).__name__}): the answer was not "
            "given; unless the server comes back, the question times out as no-go"
        ) from None


def _answer(run_id: str, step: str, *, choice: Choice, by: str, comment: str) -> str:
    with get_client(sync_client=True, httpx_settings={"timeout": ANSWER_TIMEOUT_S}) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[run_tag(run_id)])),
            limit=10,
        )
    paused = [r for r in runs if r.state is not None and r.state.is_paused()]
    if not runs:
        raise UsageError(f"no run {run_id!r} is known to the Prefect server")
    if not paused:
        raise EngineError(f"run {run_id!r} is not waiting for an answer")
    flow_run = max(paused, key=lambda r: r.start_time or datetime.min)
    assert flow_run.state is not None
    waiting_for = step_of_pause_key(flow_run.state.state_details.pause_key or "")
    if waiting_for != step:
        raise UsageError(f"run {run_id!r} is waiting at step {waiting_for!r}, not {step!r}")
    try:
        resume_flow_run(
            flow_run.id, run_input={"approver": by, "decision": choice, "comment": comment}
        )
    except (RuntimeError, ValueError) as exc:
        hint = (
            " (a failed step takes --decision retry|skip|rollback)"
            if choice in ("approve", "reject")
            else ""
        )
        raise EngineError(f"the answer was refused: {exc}{hint}") from None
    return f"{step}: {choice} by {by}"
