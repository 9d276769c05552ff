"""The Prefect flow: one flow run per runbook run, one task run per step.

The runbook's text, hash and variables are flow-run parameters so the UI
shows exactly what ran. In-process runs (``cutbook run``) hand over a
prepared :class:`Session`; a deployment that calls the flow directly gets one
built from the parameters, and the hash check guarantees it is the same text.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed

from cutbook.engine.bridge import PrefectBridge
from cutbook.engine.session import RunSettings, Session
from cutbook.errors import RunbookError
from cutbook.validation import load

PREPARED: dict[str, Session] = {}


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
    session = PREPARED.pop(run_id, None)
    if session is None:
        session = await _session_from_parameters(
            runbook_path, runbook_sha256, variables, run_id, settings
        )
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    assert flow_run_id is not None
    bridge = PrefectBridge(flow_run_id, session.clock, session.run_id)
    runner = session.runner_for(session.watch(bridge))
    session.attach_flow_run(str(flow_run_id), session.flow_run_url(flow_run_id))
    outcome = None
    try:
        outcome = await runner.run()
    finally:
        await bridge.close(runner)
        await session.finish(outcome)
    if outcome == "succeeded":
        return Completed(message=f"{runbook_name}: completed")
    return Failed(message=f"{runbook_name}: {outcome}: {runner.failure or 'steps failed'}")


async def _session_from_parameters(
    path: str, sha256: str, variables: dict[str, Any], run_id: str, settings: dict[str, Any]
) -> Session:
    loaded = load(Path(path), overrides=variables)
    if loaded.sha256 != sha256:
        got = hashlib.sha256(loaded.text.encode()).hexdigest()[:12]
        raise RunbookError(f"{path} changed since the run was submitted (sha256 {got}…)")
    chosen = RunSettings(
        data_dir=Path(settings.get("data_dir", ".cutbook")),
        clock=settings.get("clock", "real"),
        speed=float(settings.get("speed", 360)),
        dry_run=bool(settings.get("dry_run", False)),
        run_id=run_id,
    )
    session = Session(loaded, chosen)
    await session.prepare()
    return session
