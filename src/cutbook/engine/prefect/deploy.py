"""Scheduled cutovers: one Prefect deployment per runbook, one flow run per night.

``cutbook schedule`` freezes a runbook into a flow run's parameters (its
text and sha256, its data files' sha256, the variables; never a secret) and
schedules it on a process work pool. ``cutbook serve`` is a Prefect process
worker on that pool, so a team's own ``prefect worker start --pool NAME``
runs the same deployments with nothing cutbook-specific. The worker picks a
run up :data:`PREFETCH_S` early, so its process is up before the moment;
Prefect holds the flow in Pending until the scheduled time and the engine's
window boundary holds every step until exactly then.

The data directory is not frozen: a scheduled run journals into the data
directory of the worker that runs it (``CUTBOOK_DATA_DIR`` in its environment,
which ``cutbook serve`` sets), not the scheduling laptop's path, so each worker
near its targets keeps the journals of the nights it ran (docs/deploying.md).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import Cancelled, Scheduled
from prefect.workers.process import ProcessWorker

from cutbook.engine.prefect.flow import cutover
from cutbook.engine.prefect.parameters import is_rehearsal, run_tags, to_parameters
from cutbook.engine.prefect.server import ui_url
from cutbook.engine.session import RunSettings
from cutbook.errors import EngineError, UsageError
from cutbook.validation import LoadedRunbook

DEFAULT_POOL = "cutbook"
ENTRYPOINT = "flows/cutover.py:cutover"
TAG = "cutbook"
"""Every scheduled cutover's flow run carries it (``cutbook run``'s own runs do not)."""
PREFETCH_S = 60.0
"""How early ``cutbook serve`` starts a run's process: a cold start takes a few seconds."""
POLL_S = 5.0
"""How often ``cutbook serve`` asks for runs (Prefect's default is 10 s)."""
WAITING = (StateType.SCHEDULED, StateType.PENDING)
UPCOMING = (*WAITING, StateType.RUNNING, StateType.PAUSED)


@dataclass(frozen=True)
class ScheduledCutover:
    """One scheduled cutover as ``cutbook schedules`` shows it."""

    id: str
    runbook: str
    at: datetime | None
    """The flow run's scheduled time, in the runbook's zone (its offset at the window)."""
    sha256: str
    state: str
    pool: str | None
    url: str | None
    run_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runbook": self.runbook,
            "at": self.at.isoformat() if self.at else None,
            "sha256": self.sha256,
            "state": self.state,
            "pool": self.pool,
            "url": self.url,
            "run_id": self.run_id,
        }


def project_dir() -> Path:
    """The checkout holding ``flows/cutover.py``: the flow-run process runs from there."""
    given = os.environ.get("CUTBOOK_PROJECT_DIR")
    root = Path(given) if given else Path(__file__).resolve().parents[4]
    if not (root / ENTRYPOINT.split(":")[0]).is_file():
        raise EngineError(
            f"{root} has no {ENTRYPOINT.split(':')[0]}: set CUTBOOK_PROJECT_DIR to the "
            "cutbook checkout the worker should run from"
        )
    return root


def deployment_spec(pool: str, root: Path) -> dict[str, Any]:
    """Where and how a worker runs the flow: the same for every runbook."""
    return {
        "entrypoint": ENTRYPOINT,
        "work_pool_name": pool,
        "path": str(root),
        # Without pull steps Prefect copies ``path`` into a temporary directory first.
        "pull_steps": [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}
        ],
        "job_variables": {"working_dir": str(root)},
        "parameter_openapi_schema": cutover.parameters.model_dump(exclude_unset=True),
        "enforce_parameter_schema": False,
    }


async def schedule(
    loaded: LoadedRunbook, settings: RunSettings, at: datetime, pool: str
) -> ScheduledCutover:
    """Create or update the runbook's deployment and one flow run scheduled for ``at``."""
    rb = loaded.runbook
    root = project_dir()
    params = to_parameters(loaded, settings)
    params["settings"].pop("data_dir", None)  # the worker's, not this machine's
    async with get_client() as client:
        await _ensure_pool(client, pool)
        flow_id = await client.create_flow_from_name(cutover.name)
        deployment_id = await client.create_deployment(
            flow_id,
            name=rb.name,
            description=f"{rb.description or rb.name} (cutbook schedule)",
            tags=[TAG, rb.name],
            **deployment_spec(pool, root),
        )
        flow_run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters=dict(params),
            state=Scheduled(scheduled_time=at.astimezone(UTC)),
            name=f"{params['runbook_name']} {params['window_start']}",
            tags=[
                TAG,
                "scheduled",
                *run_tags(rb.name, params["run_id"], rehearsal=is_rehearsal(settings)),
            ],
        )
    return _describe(flow_run)


async def _ensure_pool(client: Any, pool: str) -> None:
    try:
        await client.read_work_pool(pool)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        # Another schedule or a worker may create it at the same moment: theirs is as good.
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )


async def upcoming() -> list[ScheduledCutover]:
    """Scheduled cutovers that have not ended, soonest first."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[TAG]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(UPCOMING))),
                deployment_id=FlowRunFilterDeploymentId(is_null_=False),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return [_describe(r) for r in runs]


async def cancel(prefix: str) -> ScheduledCutover:
    """Cancel the scheduled cutover whose flow run id is ``prefix`` or starts with it."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[TAG]),
                deployment_id=FlowRunFilterDeploymentId(is_null_=False),
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
        found = [r for r in runs if str(r.id).startswith(prefix.lower())]
        if not found:
            raise UsageError(f"no scheduled cutover {prefix!r}: see cutbook schedules")
        if len(found) > 1:
            ids = ", ".join(str(r.id)[:8] for r in found[:5])
            raise UsageError(f"{prefix!r} is ambiguous ({ids}…): give more of the id")
        run = found[0]
        if run.state is None or run.state.type not in WAITING:
            state = (run.state.name if run.state else None) or "unknown"
            raise UsageError(
                f"{run.id} is {state}, not waiting: only a cutover that has not started can be "
                "unscheduled (a running one is stopped like any run: SIGINT, then resume)"
            )
        message = f"unscheduled by {os.environ.get('USER', 'someone')}@{platform.node()}"
        await client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
        done = await client.read_flow_run(run.id)
    return _describe(done)


async def serve(pool: str, say: Callable[[str], None], prefetch: float = PREFETCH_S) -> None:
    """Run the pool's scheduled cutovers on this machine until stopped (a process worker)."""
    worker = ProcessWorker(
        work_pool_name=pool,
        name=f"cutbook {platform.node()} {os.getpid()}",
        prefetch_seconds=prefetch,
        create_pool_if_not_found=True,
    )
    await worker.start(printer=say)


def _describe(run: FlowRun) -> ScheduledCutover:
    params = run.parameters or {}
    when = run.expected_start_time
    if when is None and run.state is not None:
        when = run.state.state_details.scheduled_time
    window = str(params.get("window_start", "")).split(" ")[0]
    if when is not None and window:
        with contextlib.suppress(ValueError):  # shown in UTC then
            when = when.astimezone(datetime.fromisoformat(window).tzinfo)
    api = os.environ.get("PREFECT_API_URL")
    return ScheduledCutover(
        id=str(run.id),
        runbook=str(params.get("runbook_name", run.name)),
        at=when,
        sha256=str(params.get("runbook_sha256", "")),
        state=(run.state.name if run.state else None) or "unknown",
        pool=run.work_pool_name,
        url=ui_url(api, run.id) if api else None,
        run_id=str(params.get("run_id", "")),
    )
