"""Answering a paused run: the forms the Prefect UI shows and ``cutbook approve``'s side.

Both sides agree here on the forms' fields and on the pause key, the one
place where a paused flow run says which step it waits at.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import Field

from cutbook import signing
from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.prefect.parameters import run_tag
from cutbook.engine.state import Choice
from cutbook.errors import EngineError, UsageError

_NAME = Field(
    min_length=1,
    pattern=r"\S",
    description="Your name, as listed among the approvers (required: no anonymous answers)",
)
_SHA = Field(
    default="",
    description="The sha256 of the runbook you approve, as shown above; leave it as it is",
)


class GateAnswer(RunInput):
    """The form for a go/no-go gate, a manual step or the deadline guard.

    No field has a default that decides for the person: the server refuses a form
    without a name or a decision, and the engine refuses an answer that may not count.
    """

    approver: str = _NAME
    decision: Literal["approve", "reject"] = Field(description="approve: go; reject: no-go")
    comment: str = ""
    runbook_sha256: str = _SHA
    signature: str = Field(default="", description="Filled in by cutbook approve --key")
    signed_at: str = Field(default="", description="Filled in by cutbook approve --key")


class FailureAnswer(RunInput):
    """The form shown when a step with ``on_failure: pause`` fails."""

    approver: str = _NAME
    decision: Literal["retry", "skip", "rollback"] = Field(
        description="retry the step, skip it, or roll the night back"
    )
    comment: str = ""
    runbook_sha256: str = _SHA
    signature: str = Field(default="", description="Filled in by cutbook approve --key")
    signed_at: str = Field(default="", description="Filled in by cutbook approve --key")


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


def answer_gate(
    run_id: str,
    step: str,
    *,
    choice: Choice,
    by: str,
    comment: str = "",
    key_file: Path | None = None,
) -> str:
    """Resume the paused flow run of ``run_id`` with an answer for ``step``.

    The answer carries the runbook sha256 the run asks about (read from its form), and
    with ``key_file`` a signature over it. A dead or stalled server is one clear line,
    not a traceback or a minutes-long wait: the question then times out as no-go.
    """
    key = signing.load_private(key_file) if key_file is not None else None
    try:
        return _answer(run_id, step, choice=choice, by=by, comment=comment, key=key)
    except httpx.HTTPError as exc:
        raise EngineError(
            f"the Prefect server at {PREFECT_API_URL.value()} does not answer "
            f"({type(exc).__name__}): the answer was not given; unless the server comes "
            "back, the question times out as no-go"
        ) from None


def _answer(
    run_id: str,
    step: str,
    *,
    choice: Choice,
    by: str,
    comment: str,
    key: Ed25519PrivateKey | None,
) -> str:
    server = PREFECT_API_URL.value()
    with get_client(sync_client=True, httpx_settings={"timeout": ANSWER_TIMEOUT_S}) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[run_tag(run_id)])),
            limit=10,
        )
        paused = [r for r in runs if r.state is not None and r.state.is_paused()]
        if not runs:
            raise UsageError(
                f"no run {run_id!r} is known to the Prefect server at {server} "
                "(is it the server the run uses? see PREFECT_API_URL, CUTBOOK_PREFECT_PORT "
                "and --data-dir)"
            )
        if not paused:
            raise EngineError(f"run {run_id!r} is not waiting for an answer")
        flow_run = max(paused, key=lambda r: r.start_time or datetime.min)
        assert flow_run.state is not None
        details = flow_run.state.state_details
        waiting_for = step_of_pause_key(details.pause_key or "")
        if waiting_for != step:
            raise UsageError(f"run {run_id!r} is waiting at step {waiting_for!r}, not {step!r}")
        sha = _asked_sha(client, flow_run.id, details.run_input_keyset)
    answer: dict[str, str] = {
        "approver": by,
        "decision": choice,
        "comment": comment,
        "runbook_sha256": sha,
    }
    signed = ""
    if key is not None:
        signed_at = datetime.now(UTC).isoformat()
        data = signing.payload(
            run_id=run_id, step=step, decision=choice, runbook_sha256=sha, signed_at=signed_at
        )
        answer |= {"signature": signing.sign(key, data), "signed_at": signed_at}
        signed = f", signed with key {signing.fingerprint(signing.public_text(key.public_key()))}"
    try:
        resume_flow_run(flow_run.id, run_input=answer)
    except (RuntimeError, ValueError) as exc:
        hint = (
            " (a failed step takes --decision retry|skip|rollback)"
            if choice in ("approve", "reject")
            else ""
        )
        raise EngineError(f"the answer was refused: {exc}{hint}") from None
    return f"{step}: {choice} by {by} for runbook sha256 {sha[:12]}…{signed}"


def _asked_sha(client: SyncPrefectClient, flow_run_id: UUID, keyset: Any) -> str:
    """The runbook sha256 the paused run's form asks about (its field's default)."""
    if not keyset or "schema" not in keyset:
        return ""
    try:
        raw = client.read_flow_run_input(flow_run_id, keyset["schema"])
    except httpx.HTTPStatusError:
        return ""
    try:
        schema = json.loads(raw)
    except ValueError:
        return ""
    field = schema.get("properties", {}).get("runbook_sha256", {})
    default = field.get("default") if isinstance(field, dict) else None
    return default if isinstance(default, str) else ""
