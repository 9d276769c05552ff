"""The pki adapter against the simulator's real certificate authority."""

from __future__ import annotations

import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from cutbook.errors import PermanentError
from cutbook.testing import CANARY, AdapterContract, make_call, make_context, run
from cutbook_adapters.pki import PkiAdapter, PkiConfig
from cutbook_simulator.process import SimulatorProcess

UNIT = "13A2"
OWNER = f"org:{UNIT}"
NEW_NAME = "Chi cục Hải quan khu vực I"


pytestmark = pytest.mark.usefixtures("fresh_estate")


def adapter(sim: SimulatorProcess, secrets: Iterable[str] = (), **options: Any) -> PkiAdapter:
    config = PkiConfig.model_validate({"ca_url": f"{sim.url}/edoc", **options})
    return PkiAdapter(config, make_context(secrets))


async def act(a: PkiAdapter, action: str, args: Mapping[str, Any], **kw: Any) -> Any:
    phase = kw.pop("phase", "apply")
    return await getattr(a, phase)(make_call(PkiAdapter, action, args, phase=phase, **kw))


def owner(sim: SimulatorProcess, name: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{sim.url}/edoc/owners/{name}").json()
    return result


def cert(sim: SimulatorProcess, serial: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{sim.url}/edoc/certificates/{serial}").json()
    return result


class TestPkiContract(AdapterContract):
    adapter_class = PkiAdapter
    apply_is_safe = True

    @pytest.fixture(autouse=True)
    def _sim(self, sim: SimulatorProcess) -> None:
        self.sim = sim

    def target_options(self) -> Mapping[str, Any]:
        return {"ca_url": f"{self.sim.url}/edoc"}

    def snapshot(self) -> Any:
        return httpx.get(f"{self.sim.url}/admin/state").json()["edoc"]

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "reissue", {"owner": OWNER, "subject": {"O": NEW_NAME}}
        yield "reissue_unit", {"unit": "14B3", "subject": {"O": "Hải quan Hòa Bình", "C": "VN"}}


def test_reissue_verify_rollback_roundtrip(sim: SimulatorProcess) -> None:
    old = owner(sim, OWNER)
    args = {"owner": OWNER, "subject": {"O": NEW_NAME, "OU": "Edoc"}}

    async def go() -> None:
        a = adapter(sim)
        try:
            checked = await act(a, "reissue", args, phase="check")
            assert checked.changed and checked.output["pending"][0]["owner"] == OWNER
            result = await act(a, "reissue", args)
            assert result.changed
            out = result.output
            assert out["previous_serial"] == old["current_serial"]
            assert out["subject"] == f"CN={OWNER},OU=Edoc,O={NEW_NAME}"
            now = owner(sim, OWNER)
            assert now["current_serial"] == out["serial"] and now["organization"] == NEW_NAME
            pem = cert(sim, out["serial"])["certificate"]
            assert (
                x509.load_pem_x509_certificate(pem.encode()).subject.rfc4514_string()
                == (out["subject"])
            )
            assert "PRIVATE" not in str(out) + result.summary
            verified = await act(a, "reissue", args, phase="verify", prior=result)
            assert verified.ok, verified.summary
            # Applying again finds the new name and issues nothing.
            again = await act(a, "reissue", args)
            assert again.changed is False or again.output["serial"] == out["serial"]
            recheck = await act(a, "reissue", args, phase="check")
            assert recheck.changed is False
            undone = await act(a, "reissue", args, phase="rollback", prior=result)
            assert undone.changed
            assert owner(sim, OWNER)["current_serial"] == old["current_serial"]
            assert cert(sim, out["serial"])["status"] == "revoked"
            after = await act(a, "reissue", args, phase="verify", prior=result)
            assert not after.ok and "O=" in after.summary
        finally:
            await a.aclose()

    run(go())


def test_reissue_unit_covers_every_owner(sim: SimulatorProcess) -> None:
    owners = httpx.get(f"{sim.url}/edoc/owners", params={"unit": UNIT}).json()
    args = {"unit": UNIT, "subject": {"O": NEW_NAME}}

    async def go() -> None:
        a = adapter(sim, key_type="rsa-2048")
        try:
            result = await act(a, "reissue_unit", args)
            entries = result.output["certificates"]
            assert [e["owner"] for e in entries] == [o["owner"] for o in owners]
            assert all(e["changed"] for e in entries)
            assert (await act(a, "reissue_unit", args, phase="verify", prior=result)).ok
            undone = await act(a, "reissue_unit", args, phase="rollback", prior=result)
            assert len(undone.output["restored"]) == len(owners)
        finally:
            await a.aclose()

    run(go())
    for o in owners:
        assert owner(sim, o["owner"])["current_serial"] == o["current_serial"]


def test_partial_failure_is_retried_idempotently_and_rolled_back(sim: SimulatorProcess) -> None:
    owners = httpx.get(f"{sim.url}/edoc/owners", params={"unit": UNIT}).json()
    # The second "make current" fails with a permanent error, once.
    rule = {"path": "/edoc/owners/*/current", "status": 500, "nth": 2, "error_rate": 0}
    httpx.post(f"{sim.url}/admin/faults", json=rule).raise_for_status()
    args = {"unit": UNIT, "subject": {"O": NEW_NAME}}

    async def go() -> None:
        a = adapter(sim)
        try:
            with pytest.raises(PermanentError, match="500"):
                await act(a, "reissue_unit", args)
            # The engine retries (or resumes): the first owner is not re-issued again.
            result = await act(a, "reissue_unit", args)
            entries = result.output["certificates"]
            assert all(e["changed"] for e in entries)
            issued = httpx.get(f"{sim.url}/edoc/certificates", params={"owner": OWNER}).json()
            assert len(issued) == 2  # the seeded one and exactly one new one
            # A rollback with no prior (apply failed) still undoes what was done.
            undone = await act(a, "reissue_unit", args, phase="rollback")
            assert len(undone.output["restored"]) == len(owners)
        finally:
            await a.aclose()

    run(go())
    assert owner(sim, OWNER)["current_serial"] == owners[0]["current_serial"]


def test_key_dir_keeps_keys_private_and_replays(sim: SimulatorProcess, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    args = {"owner": OWNER, "subject": {"O": NEW_NAME}}
    result = run(act(adapter(sim, key_dir=str(keys)), "reissue", args, idempotency_key="k1"))
    key_file = Path(result.output["key_file"])
    assert key_file.parent == keys
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert all(v["applied"] == 1 for v in counts.values())


def test_wrong_cn_is_rejected_permanently(sim: SimulatorProcess) -> None:
    args = {"owner": OWNER, "subject": {"O": NEW_NAME, "CN": "someone-else"}}
    with pytest.raises(PermanentError, match="422"):
        run(act(adapter(sim), "reissue", args))
    assert owner(sim, OWNER)["organization"] != NEW_NAME


def test_unknown_owner_is_permanent_and_secrets_scrubbed(sim: SimulatorProcess) -> None:
    args = {"owner": f"org:{CANARY}", "subject": {"O": NEW_NAME}}
    with pytest.raises(PermanentError) as info:
        run(act(adapter(sim, [CANARY]), "reissue", args, phase="check"))
    assert "404" in str(info.value) and CANARY not in str(info.value)


def test_a_resumed_apply_gets_back_what_rollback_needs(sim: SimulatorProcess) -> None:
    """A process re-issued the unit and died before journalling the result; the resumed
    process (a new adapter, the same key) gets each previous serial back from the CA's
    stored replies, issues nothing, and its rollback restores the originals."""
    owners = httpx.get(f"{sim.url}/edoc/owners", params={"unit": UNIT}).json()
    args = {"unit": UNIT, "subject": {"O": NEW_NAME}}

    async def go() -> None:
        first = adapter(sim)
        try:
            lost = await act(first, "reissue_unit", args, idempotency_key="k-unit")
            assert "replayed" not in lost.output
        finally:
            await first.aclose()
        resumed = adapter(sim)
        try:
            again = await act(resumed, "reissue_unit", args, idempotency_key="k-unit")
            assert again.output["replayed"] is True
            assert again.output["certificates"] == lost.output["certificates"]
            undone = await act(resumed, "reissue_unit", args, phase="rollback", prior=again)
            assert len(undone.output["restored"]) == len(owners)
        finally:
            await resumed.aclose()
        # A change that did not make the current certificate says it changed nothing.
        other = adapter(sim)
        try:
            once = await act(other, "reissue", {"owner": OWNER, "subject": {"O": NEW_NAME}})
            fresh = adapter(sim)
            try:
                unrelated = await act(
                    fresh,
                    "reissue",
                    {"owner": OWNER, "subject": {"O": NEW_NAME}},
                    idempotency_key="another-change",
                )
            finally:
                await fresh.aclose()
            assert once.changed and not unrelated.changed
            assert unrelated.output["previous_serial"] is None
        finally:
            await other.aclose()

    run(go())
    for o in owners[1:]:
        assert owner(sim, o["owner"])["current_serial"] == o["current_serial"]
    for o in owners:
        issued = httpx.get(f"{sim.url}/edoc/certificates", params={"owner": o["owner"]}).json()
        assert len(issued) == (3 if o["owner"] == OWNER else 2)
