"""The Prefect flow: one flow run per runbook run, one task run per step.

The flow's parameters describe the run completely
(:mod:`~cutbook.engine.prefect.parameters`). ``cutbook run`` hands the flow a
session it has already prepared (so a problem with secrets or adapters is
reported before any flow run exists); a flow run started from a deployment
builds the same session from the parameters, and the hash check guarantees
it runs the same text.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, tags
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed

from cutbook.engine.prefect.bridge import PrefectBridge
from cutbook.engine.prefect.parameters import FlowParameters, run_tags, to_parameters, to_settings
from cutbook.engine.prefect.secrets import PrefectSecrets
from cutbook.engine.prefect.server import ui_url
from cutbook.engine.session import Session
from cutbook.errors import RunbookError
from cutbook.validation import load

_PREPARED: dict[str, Session] = {}
"""Sessions handed over in-process, by run id; the flow takes each one exactly once."""


@flow(
    name="cutover",
    flow_run_name="{runbook_name} {window_start}",
    persist_result=False,
    validate_parameters=False,
    log_prints=False,
    retries=0,
)
async def cutover(
    runbook_name: str,
    window_start: str,
    runbook_path: str,
    runbook_sha256: str,
    runbook_text: str,
    variables: dict[str, Any],
    run_id: str,
    settings: dict[str, Any],
) -> State[Any]:
    session = _PREPARED.pop(run_id, None)
    if session is None:
        session = await session_from_parameters(
            FlowParameters(
                runbook_name=runbook_name,
                window_start=window_start,
                runbook_path=runbook_path,
                runbook_sha256=runbook_sha256,
                runbook_text=runbook_text,
                variables=variables,
                run_id=run_id,
                settings=settings,
            )
        )
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    assert flow_run_id is not None
    bridge = PrefectBridge(flow_run_id, session.clock, session.run_id)
    runner = session.runner_for(bridge)
    session.attach_flow_run(str(flow_run_id), _ui(flow_run_id))
    outcome = None
    try:
        outcome = await runner.run()
    finally:
        await bridge.close(runner.state)
        await session.finish(outcome)
    if outcome == "succeeded":
        return Completed(message=f"{runbook_name}: completed")
    return Failed(message=f"{runbook_name}: {outcome}: {runner.failure or 'steps failed'}")


async def run_in_process(session: Session) -> None:
    """Run a prepared session as a flow run of this process, tagged so it can be found."""
    rb = session.loaded.runbook
    resumed = session.recovered is not None
    settings = replace(session.settings, run_id=session.run_id)
    params = to_parameters(session.loaded, settings, resumed=resumed)
    _PREPARED[session.run_id] = session
    try:
        with tags(*run_tags(rb.name, session.run_id, resumed=resumed)):
            await cutover(**params, return_state=True)
    finally:
        _PREPARED.pop(session.run_id, None)


async def session_from_parameters(params: FlowParameters) -> Session:
    """What a flow run started from a deployment runs: the session ``cutbook run`` would."""
    path = params["runbook_path"]
    loaded = load(Path(path), overrides=params["variables"])
    if loaded.sha256 != params["runbook_sha256"]:
        got = hashlib.sha256(loaded.text.encode()).hexdigest()[:12]
        raise RunbookError(f"{path} changed since the run was submitted (sha256 {got}…)")
    session = Session(loaded, to_settings(params), secret_store=PrefectSecrets())
    await session.prepare()
    return session


def _ui(flow_run_id: UUID) -> str | None:
    api = os.environ.get("PREFECT_API_URL")
    return ui_url(api, flow_run_id) if api else None
