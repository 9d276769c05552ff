"""Deployment parity: a flow run started from a Prefect deployment gets exactly the
settings ``cutbook run`` would use, because the flow's parameters describe them all.

In-process and server-free: the parameters are plain JSON, and the entrypoint
script is loaded by file path in a child process, the way a deployment's worker
loads it (so this test process never imports Prefect).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, fields, replace
from datetime import datetime
from pathlib import Path

from cutbook import paths
from cutbook.engine.prefect.parameters import (
    SETTINGS_CODECS,
    FlowParameters,
    is_rehearsal,
    run_tags,
    to_parameters,
    to_settings,
)
from cutbook.engine.session import RunSettings
from cutbook.validation import LoadedRunbook, load
from e2e_support import REPO

RUNBOOK = """
apiVersion: cutbook/v1
name: parity
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T05:00"}
vars: {estate_url: "http://127.0.0.1:1"}
steps:
  - {id: go-no-go, approval: {approvers: [ops-lead]}}
"""


def loaded_runbook(tmp_path: Path) -> LoadedRunbook:
    path = tmp_path / "parity.yaml"
    path.write_text(RUNBOOK, encoding="utf-8")
    return load(path, overrides={"estate_url": "http://127.0.0.1:2"})


def unusual_settings(tmp_path: Path, loaded: LoadedRunbook) -> RunSettings:
    """Every field away from its default, so a field the parameters drop cannot pass."""
    chosen = RunSettings(
        data_dir=tmp_path / "data",
        clock="virtual",
        speed=90.5,
        start=datetime(2025, 3, 21, 22, 30, tzinfo=loaded.runbook.zone),
        dry_run=True,
        preflight=True,
        auto_approve=True,
        run_id="parity-night-1",
        started_by="ops-lead@bastion",
        executor="night-operator",
        audit_store="postgresql+asyncpg://cutbook@audit-db.example:5432/audit",
    )
    defaults = RunSettings(data_dir=Path(".cutbook"))
    same = [
        f.name for f in fields(RunSettings) if getattr(chosen, f.name) == getattr(defaults, f.name)
    ]
    assert same == [], f"give these a non-default value: {same}"
    return chosen


def test_every_setting_survives_the_flow_parameters(tmp_path: Path) -> None:
    loaded = loaded_runbook(tmp_path)
    chosen = unusual_settings(tmp_path, loaded)
    params = to_parameters(loaded, chosen)
    stored = json.loads(json.dumps(params))  # what Prefect keeps and a deployment sends back
    assert to_settings(stored) == chosen
    assert {f.name for f in fields(RunSettings)} == set(SETTINGS_CODECS) | {"run_id"}
    assert stored["runbook_sha256"] == loaded.sha256
    assert stored["variables"] == {"estate_url": "http://127.0.0.1:2"}
    # Named after the moved window, and marked: a rehearsal is never mistaken for the night.
    assert stored["window_start"] == "2025-03-21T22:30+07:00 REHEARSAL"
    assert "rehearsal" in run_tags("parity", "parity-night-1", rehearsal=is_rehearsal(chosen))
    real = to_parameters(loaded, replace(chosen, clock="real", dry_run=False))
    assert real["window_start"] == "2025-03-21T22:30+07:00"


def test_missing_settings_take_the_defaults_cutbook_run_would(tmp_path: Path) -> None:
    loaded = loaded_runbook(tmp_path)
    params = dict(to_parameters(loaded, RunSettings(data_dir=Path(".cutbook"), run_id="r-1")))
    params["settings"] = {}
    assert to_settings(params) == RunSettings(data_dir=paths.data_dir(), run_id="r-1")


ENTRYPOINT_PROBE = """
import asyncio, dataclasses, inspect, json, sys
from prefect.flows import load_flow_from_entrypoint
from cutbook.engine.prefect.flow import cutover, session_from_parameters
flow = load_flow_from_entrypoint(sys.argv[1], use_placeholder_flow=False)
params = json.loads(sys.argv[2])
inspect.signature(flow.fn).bind(**params)  # a deployment's parameters fit the function
session = asyncio.run(session_from_parameters(params))  # what a deployment's flow run runs
print(json.dumps({
    "name": flow.name,
    "same_flow": flow is cutover,
    "properties": list(flow.parameters.properties),
    "required": sorted(flow.parameters.required or []),
    "settings": dataclasses.asdict(session.settings),
    "run_id": session.run_id,
    "clock": [session.clock.kind, session.clock.speed],
}, default=str))
"""


def test_the_entrypoint_script_exposes_the_same_flow_and_session(tmp_path: Path) -> None:
    loaded = loaded_runbook(tmp_path)
    chosen = unusual_settings(tmp_path, loaded)
    params = to_parameters(loaded, chosen)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CUTBOOK_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            ENTRYPOINT_PROBE,
            f"{REPO / 'flows' / 'cutover.py'}:cutover",
            json.dumps(params),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    assert seen["name"] == "cutover" and seen["same_flow"]
    assert seen["properties"] == list(FlowParameters.__annotations__) == list(params)
    assert seen["required"] == sorted(params)
    # Started from a deployment, the flow run prepares the session `cutbook run` would.
    assert seen["settings"] == json.loads(json.dumps(asdict(chosen), default=str))
    assert seen["run_id"] == chosen.run_id and seen["clock"] == ["virtual", chosen.speed]
