"""The Prefect flow: one flow run per runbook run, one task run per step.

The flow's parameters describe the run completely
(:mod:`~cutbook.engine.prefect.parameters`). ``cutbook run`` does not run
inside Prefect's flow engine: it creates the flow run through the
:class:`~cutbook.engine.prefect.reporter.Reporter` and mirrors the night into
it, so a slow or dead server never delays a step nor the exit. A flow run
started from a deployment is already inside the flow engine: it builds the
same session from the parameters (the hash check guarantees it runs the same
text) and mirrors its steps the same way, but the flow engine itself still
talks to the API when the run starts and ends (see
docs/operating-a-cutover.md, "When the Prefect server is slow or gone").
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from prefect import flow
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.logging.handlers import APILogHandler
from prefect.states import Completed, Failed

from cutbook.engine.prefect.artifacts import artifact_key
from cutbook.engine.prefect.bridge import PrefectBridge
from cutbook.engine.prefect.parameters import (
    FlowParameters,
    is_rehearsal,
    run_tags,
    sha256_of,
    to_parameters,
    to_settings,
)
from cutbook.engine.prefect.reporter import FlowRunSpec, Reporter
from cutbook.engine.prefect.secrets import PrefectSecrets
from cutbook.engine.prefect.server import ui_url
from cutbook.engine.session import Session
from cutbook.engine.state import Outcome
from cutbook.errors import RunbookError
from cutbook.logs import LOGGER_NAME
from cutbook.validation import load

log = structlog.get_logger("cutbook.prefect")

START_WAIT_S = 3.0
"""How long the first step may wait for the flow run to exist (a healthy server: ~50 ms)."""
FINAL_WAIT_S = 10.0
"""How long the process waits at the end for Prefect to hear the outcome."""


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
    data_sha256: dict[str, str],
    variables: dict[str, Any],
    run_id: str,
    settings: dict[str, Any],
) -> State[Any]:
    session = await session_from_parameters(
        FlowParameters(
            runbook_name=runbook_name,
            window_start=window_start,
            runbook_path=runbook_path,
            runbook_sha256=runbook_sha256,
            runbook_text=runbook_text,
            data_sha256=data_sha256,
            variables=variables,
            run_id=run_id,
            settings=settings,
        )
    )
    ctx = FlowRunContext.get()
    flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
    assert flow_run_id is not None
    reporter = Reporter(_api(), artifact_key(session.run_id), flow_run_id=flow_run_id)
    outcome = await _mirrored(session, reporter, final=False)
    return _final_state(session, outcome)


async def run_in_process(session: Session) -> None:
    """Run a prepared session, mirrored into a new flow run tagged so it can be found."""
    rb = session.loaded.runbook
    resumed = session.recovered is not None
    settings = replace(session.settings, run_id=session.run_id)
    params = to_parameters(session.loaded, settings, resumed=resumed)
    spec = FlowRunSpec(
        flow=cutover,
        name=f"{params['runbook_name']} {params['window_start']}",
        parameters=dict(params),
        tags=list(
            run_tags(rb.name, session.run_id, resumed=resumed, rehearsal=is_rehearsal(settings))
        ),
    )
    reporter = Reporter(_api(), artifact_key(session.run_id), create=spec)
    await _mirrored(session, reporter, final=True)


async def _mirrored(session: Session, reporter: Reporter, *, final: bool) -> Outcome | None:
    """Run the night with Prefect watching from the reporter's thread, never in the way.

    ``final``: the reporter sets the flow run's final state (no flow engine does).
    """
    cutbook_logger = logging.getLogger(LOGGER_NAME)
    prefects = [h for h in cutbook_logger.handlers if isinstance(h, APILogHandler)]
    for handler in prefects:  # its worker waits on the API at exit: the reporter ships instead
        cutbook_logger.removeHandler(handler)
    cutbook_logger.addHandler(reporter.handler)
    reporter.start()
    outcome: Outcome | None = None
    runner = None
    try:
        flow_run_id = await asyncio.to_thread(reporter.wait_ready, START_WAIT_S)
        if flow_run_id is None:
            log.warning("the Prefect flow run is not created yet: the UI is behind")
        bridge = PrefectBridge(reporter, session.clock, session.run_id)
        runner = session.runner_for(bridge)
        session.attach_flow_run(
            str(flow_run_id) if flow_run_id else None, _ui(flow_run_id) if flow_run_id else None
        )
        try:
            outcome = await runner.run()
        finally:
            bridge.close(runner.state)
            reporter.finish(_final_state(session, outcome) if final else None)
            await session.finish(outcome)
    finally:
        told = await asyncio.to_thread(reporter.close, FINAL_WAIT_S if runner else 1.0)
        if not told and final and runner is not None:
            log.warning(
                "Prefect was not told the outcome: the UI may show this run as still running; "
                "the journal has it"
            )
        for handler in prefects:
            cutbook_logger.addHandler(handler)
    return outcome


def _final_state(session: Session, outcome: Outcome | None) -> State[Any]:
    name = session.loaded.runbook.name
    if outcome == "succeeded":
        return Completed(message=f"{name}: completed")
    failure = session.runner.failure if session.runner else None
    return Failed(message=f"{name}: {outcome}: {failure or 'steps failed'}")


async def session_from_parameters(params: FlowParameters) -> Session:
    """What a flow run started from a deployment runs: the session ``cutbook run`` would,
    refused before anything acts if the runbook or a data file differs from what was frozen."""
    path = Path(params["runbook_path"])
    changed = frozen_changes(params)
    if changed:
        at = (params.get("settings") or {}).get("start") or params["window_start"]
        raise RunbookError(
            f"refusing to run {params['runbook_name']!r}: it changed since it was scheduled "
            f"({'; '.join(changed)}). Nothing was run. Review the change, then schedule it "
            f"again: cutbook schedule {path} --at {at}"
        )
    loaded = load(path, overrides=params["variables"])
    if loaded.sha256 != params["runbook_sha256"]:  # changed between the check and the load
        raise RunbookError(f"{path} changed while the run was starting; nothing was run")
    session = Session(loaded, to_settings(params), secret_store=PrefectSecrets())
    await session.prepare()
    return session


def frozen_changes(params: FlowParameters) -> list[str]:
    """Each file that differs from what was frozen: which one, frozen sha256 vs now."""
    path = Path(params["runbook_path"])
    frozen = {str(path): (path, params["runbook_sha256"])}
    for rel, digest in (params.get("data_sha256") or {}).items():
        frozen[rel] = ((path.parent / rel).resolve(), digest)
    changes = []
    for name, (file, digest) in frozen.items():
        now = sha256_of(file)
        if now != digest:
            changes.append(f"{name}: frozen sha256 {digest[:12]}, now {now[:12]}")
    return changes


def _api() -> str | None:
    return os.environ.get("PREFECT_API_URL")


def _ui(flow_run_id: UUID) -> str | None:
    api = _api()
    return ui_url(api, flow_run_id) if api else None
