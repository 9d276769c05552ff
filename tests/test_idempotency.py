"""One change, one effect: retries and resumes of a change reuse one idempotency key,
and the pki adapter sends the CA nothing that differs between attempts.

Against the simulator's real CA: a flaky CA that fails after it issued (the
"make current" call fails) must not leave an owner with a second certificate,
in one process (engine retries) or across processes (a resume).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from cutbook.adapter import Result
from cutbook.errors import TransientError
from cutbook.testing import make_call, make_context
from cutbook_adapters.pki import PkiAdapter, PkiConfig
from cutbook_simulator.faults import PROFILES
from cutbook_simulator.process import SimulatorProcess

UNIT = "13A2"
NEW_NAME = "Chi cục Hải quan khu vực I"
ARGS = {"unit": UNIT, "subject": {"O": NEW_NAME}}

pytestmark = pytest.mark.usefixtures("fresh_estate")


def pki(sim: SimulatorProcess, **options: Any) -> PkiAdapter:
    config = PkiConfig.model_validate({"ca_url": f"{sim.url}/edoc", **options})
    return PkiAdapter(config, make_context())


def faults(sim: SimulatorProcess, rules: list[dict[str, Any]], seed: int | None = 7) -> None:
    httpx.post(f"{sim.url}/admin/faults", json={"rules": rules, "seed": seed}).raise_for_status()


def owners(sim: SimulatorProcess) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{sim.url}/edoc/owners", params={"unit": UNIT}).json()
    return result


def certificates(sim: SimulatorProcess, owner: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(
        f"{sim.url}/edoc/certificates", params={"owner": owner}
    ).json()
    return result


async def apply_until_done(a: PkiAdapter, key: str, attempts: int = 60) -> Result:
    """What the engine does: the same call again after every transient failure."""
    call = make_call(PkiAdapter, "reissue_unit", ARGS, idempotency_key=key, item_key=UNIT)
    for _ in range(attempts):
        try:
            return await a.apply(call)
        except TransientError:
            continue
    raise AssertionError(f"no success in {attempts} attempts")


def assert_one_new_certificate_each(
    sim: SimulatorProcess, seeded: Mapping[str, str | None]
) -> None:
    for owner, old in seeded.items():
        certs = certificates(sim, owner)
        new = [c for c in certs if c["serial"] != old]
        assert len(new) == 1, f"{owner}: {[(c['serial'], c['status']) for c in new]}"
        assert new[0]["status"] == "current" and new[0]["organization"] == NEW_NAME
        assert not [c for c in certs if c["status"] == "issued"], f"{owner}: an orphan is left"


def test_a_flaky_ca_failing_after_issue_leaves_one_certificate_per_owner(
    sim: SimulatorProcess,
) -> None:
    seeded = {o["owner"]: o["current_serial"] for o in owners(sim)}
    rules = [
        *PROFILES["flaky"].rules,
        # After the CA issued: making it current fails half the time.
        {
            "name": "current-flaky",
            "method": "POST",
            "path": "/edoc/owners/*/current",
            "error_rate": 0.5,
            "status": 503,
        },
    ]
    faults(sim, rules)

    async def go() -> None:
        a = pki(sim)
        try:
            await apply_until_done(a, "run:reissue:13A2:apply")
        finally:
            await a.aclose()

    asyncio.run(go())
    assert_one_new_certificate_each(sim, seeded)


@pytest.mark.parametrize("key_dir", [False, True], ids=["keys-in-memory", "key_dir"])
def test_a_resumed_process_does_not_issue_a_second_certificate(
    sim: SimulatorProcess, tmp_path: Path, key_dir: bool
) -> None:
    seeded = {o["owner"]: o["current_serial"] for o in owners(sim)}
    options = {"key_dir": str(tmp_path / "keys")} if key_dir else {}
    key = "run:reissue:13A2:apply"
    # The first process: the CA issues, then "make current" keeps failing; it dies.
    faults(
        sim, [{"method": "POST", "path": "/edoc/owners/*/current", "error_rate": 1, "status": 503}]
    )

    async def first() -> None:
        a = pki(sim, **options)
        try:
            with pytest.raises(TransientError):
                await a.apply(make_call(PkiAdapter, "reissue_unit", ARGS, idempotency_key=key))
        finally:
            await a.aclose()

    asyncio.run(first())
    first_owner = next(iter(seeded))
    assert [c["status"] for c in certificates(sim, first_owner)].count("issued") == 1
    httpx.delete(f"{sim.url}/admin/faults").raise_for_status()

    # The resumed process: a new adapter instance, the same run, step and item: the same key.
    async def resumed() -> None:
        a = pki(sim, **options)
        try:
            await apply_until_done(a, key)
        finally:
            await a.aclose()

    asyncio.run(resumed())
    assert_one_new_certificate_each(sim, seeded)
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert all(v["applied"] == 1 for v in counts.values())


def test_engine_keys_name_the_change_not_the_attempt() -> None:
    """calls.key: run, step, item and phase; nothing per attempt or per process."""
    from types import SimpleNamespace

    from cutbook.engine.calls import Calls

    def key(run_id: str, step: str, item: str, phase: str) -> str:
        calls = Calls.__new__(Calls)
        calls.run = SimpleNamespace(opts=SimpleNamespace(run_id=run_id))  # type: ignore[assignment]
        return calls.key(SimpleNamespace(id=step), SimpleNamespace(key=item), phase)  # type: ignore[arg-type]

    assert key("r1", "s", "13A2", "apply") == key("r1", "s", "13A2", "apply")
    assert key("r1", "s", "13A2", "apply") != key("r1", "s", "13A2", "rollback")
    assert key("r1", "s", "13A2", "apply") != key("r1", "s", "14B3", "apply")
    assert key("r1", "s", "13A2", "apply") != key("r2", "s", "13A2", "apply")


def test_a_flaky_night_through_the_engine_leaves_no_orphans(
    sim: SimulatorProcess, tmp_path: Path
) -> None:
    """The engine's own retries over a flaky CA (the run that left 59 orphans)."""
    from cutbook.engine.local import LocalBridge
    from cutbook.engine.session import RunSettings, Session
    from cutbook.validation import load

    everyone = httpx.get(f"{sim.url}/edoc/owners").json()
    units = sorted({o["unit"] for o in everyone})[:3]
    seeded = {o["owner"]: o["current_serial"] for o in everyone if o["unit"] in units}
    path = tmp_path / "rb.yaml"
    path.write_text(
        f"""
apiVersion: cutbook/v1
name: flaky-pki
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
defaults: {{retries: {{attempts: 100, backoff: fixed, delay: 1s}}}}
targets:
  edoc: {{adapter: pki, ca_url: "{sim.url}/edoc"}}
steps:
  - id: reissue
    target: edoc
    action: reissue_unit
    for_each: {units}
    item_key: "{{{{ item }}}}"
    with: {{unit: "{{{{ item }}}}", subject: {{O: "{NEW_NAME}"}}}}
""",
        encoding="utf-8",
    )
    faults(
        sim,
        [
            *PROFILES["flaky"].rules,
            {"method": "POST", "path": "/edoc/owners/*/current", "error_rate": 0.5, "status": 503},
        ],
    )
    session = Session(
        # Speed 60, not 3600: today's rehearsal clock multiplies real I/O time too, and at
        # 3600 a hundred real retries of 0.1 s would "use up" the six-hour window.
        load(path),
        RunSettings(data_dir=tmp_path / "data", clock="virtual", speed=60),
    )

    async def go() -> str:
        await session.prepare()
        outcome = await session.runner_for(LocalBridge()).run()
        await session.finish(outcome)
        return str(outcome)

    assert asyncio.run(go()) == "succeeded"
    assert session.journal is not None
    from cutbook.journal import read_records

    retried = [r for r in read_records(session.journal.path) if r["event"] == "step.attempt"]
    assert retried, "the CA was meant to fail some calls"
    for owner, old in seeded.items():
        certs = certificates(sim, owner)
        new = [c for c in certs if c["serial"] != old]
        assert [c["status"] for c in new] == ["current"], (owner, new)
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert all(v["applied"] == 1 for v in counts.values())
