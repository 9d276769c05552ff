"""The simulated customs estate, driven over loopback in a real child process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cutbook_simulator import SimulatorProcess, check_final_state
from cutbook_simulator.seed import (
    default_seed_csv,
    pre_reorg_budget_code,
    pre_reorg_treasury_account,
    pre_reorg_treasury_code,
    read_offices,
)

CSV = default_seed_csv()
"""The customs office list: runbooks/data's under the repository root, else the packaged copy."""
_, ROWS = read_offices(CSV)
RENAMED = next(r for r in ROWS if r.status == "renamed")
CEASED = next(r for r in ROWS if r.status == "ceased")
SATELLITES = ["e-manifest", "e-cargo", "risk-management", "tax-accounting", "e-payment"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    state = tmp_path_factory.mktemp("sim") / "state.sqlite"
    with SimulatorProcess(state, seed_csv=CSV) as process:
        yield process


@pytest.fixture
def client(sim: SimulatorProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        assert c.post("/admin/reset").status_code == 200
        yield c


def csr_pem(owner: str, organisation: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, owner),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# -- seeded state and endpoint groups ---------------------------------------------


def test_seeded_state_is_the_pre_reorganisation_estate(client: httpx.Client) -> None:
    state = client.get("/admin/state").json()
    assert state["intake"]["state"] == "open"
    assert state["catalogue_version"] == "2024"
    assert [s["name"] for s in state["satellites"]] == SATELLITES
    assert all(
        s["intake"] == "on" and s["config"] == {"org_model": "2020"} for s in state["satellites"]
    )
    assert len(state["offices"]) == len(ROWS)
    office = client.get(f"/catalogue/offices/{RENAMED.old_code}").json()
    assert office == {
        "code": RENAMED.old_code,
        "name": RENAMED.old_name,
        "status": "active",
        "budget_code": pre_reorg_budget_code(RENAMED.budget_code),
        "treasury_account": pre_reorg_treasury_account(RENAMED.treasury_account),
        "treasury_code": pre_reorg_treasury_code(RENAMED.treasury_code),
        "region": RENAMED.region,
    }
    for field in ("budget_code", "treasury_account", "treasury_code"):
        assert office[field] != getattr(RENAMED, field)
    assert state["portal"] == {"units": [], "notices": []}
    owners = client.get("/edoc/owners", params={"unit": RENAMED.old_code}).json()
    assert [o["owner"] for o in owners] == [
        f"org:{RENAMED.old_code}",
        f"person:{RENAMED.old_code}:1",
        f"person:{RENAMED.old_code}:2",
    ]
    assert all(o["organization"] == RENAMED.old_name for o in owners)
    assert len(state["edoc"]["certificates"]) == 3 * len(ROWS)


def test_vnaccs_intake_queue_grows_then_drains(client: httpx.Client) -> None:
    first = client.get("/vnaccs/intake").json()
    assert first["state"] == "open" and first["queue"] >= 120
    stopped = client.post("/vnaccs/intake/stop").json()
    assert stopped["changed"] is True and stopped["state"] == "stopped"
    assert stopped["before"]["state"] == "open"
    again = client.post("/vnaccs/intake/stop").json()
    assert again["changed"] is False
    time.sleep(0.5)
    assert client.get("/vnaccs/intake").json()["queue"] < stopped["queue"]
    assert client.post("/vnaccs/intake/start").json()["state"] == "open"

    code = CEASED.old_code
    assert client.get(f"/vnaccs/offices/{code}/intake").json() == {"code": code, "state": "open"}
    reply = client.post(f"/vnaccs/offices/{code}/intake/stop").json()
    assert reply["changed"] and reply["after"] == {"code": code, "state": "stopped"}
    assert client.get(f"/vnaccs/offices/{code}/intake").json()["state"] == "stopped"
    missing = client.get("/vnaccs/offices/XXXX/intake")
    assert missing.status_code == 404 and "XXXX" in missing.json()["error"]


def test_satellites(client: httpx.Client) -> None:
    assert client.get("/satellites/e-cargo").json()["intake"] == "on"
    assert client.post("/satellites/e-cargo/intake/stop").json()["intake"] == "off"
    reply = client.put("/satellites/e-cargo/config", json={"org_model": "2025", "x": 1}).json()
    assert reply["changed"] is True
    assert reply["before"]["config"] == {"org_model": "2020"}
    assert reply["after"]["config"] == {"org_model": "2025", "x": 1}
    same = client.put("/satellites/e-cargo/config", json={"x": 1, "org_model": "2025"}).json()
    assert same["changed"] is False
    assert client.post("/satellites/e-cargo/intake/start").json()["changed"] is True
    assert client.get("/satellites/nope").status_code == 404


def test_catalogue(client: httpx.Client) -> None:
    code = RENAMED.old_code
    reply = client.patch(f"/catalogue/offices/{code}", json={"name": RENAMED.new_name}).json()
    assert reply["changed"] and reply["before"]["name"] == RENAMED.old_name
    assert reply["name"] == RENAMED.new_name
    assert (
        client.patch(f"/catalogue/offices/{code}", json={"name": RENAMED.new_name}).json()[
            "changed"
        ]
        is False
    )
    bad = client.patch(f"/catalogue/offices/{code}", json={"code": "01R1"})
    assert bad.status_code == 422 and "error" in bad.json()
    assert client.patch(f"/catalogue/offices/{code}", json={}).status_code == 422
    assert client.post(f"/catalogue/offices/{code}/close").json()["status"] == "closed"
    assert client.post(f"/catalogue/offices/{code}/close").json()["changed"] is False
    assert client.post(f"/catalogue/offices/{code}/reopen").json()["status"] == "active"
    assert client.get("/catalogue/version").json() == {"version": "2024"}
    assert client.put("/catalogue/version", json={"version": "2025"}).json()["changed"] is True
    assert client.get("/catalogue/version").json() == {"version": "2025"}
    assert len(client.get("/catalogue/offices").json()) == len(ROWS)


def test_portal(client: httpx.Client) -> None:
    body = {"old_name": CEASED.old_name, "new_code": CEASED.new_code, "new_name": CEASED.new_name}
    reply = client.put(f"/portal/units/{CEASED.old_code}", json=body).json()
    assert reply["changed"] and reply["before"] is None
    assert client.put(f"/portal/units/{CEASED.old_code}", json=body).json()["changed"] is False
    assert client.get("/portal/units").json() == [{"old_code": CEASED.old_code, **body}]
    assert client.delete(f"/portal/units/{CEASED.old_code}").json()["changed"] is True
    assert client.delete(f"/portal/units/{CEASED.old_code}").json()["changed"] is False
    assert client.get(f"/portal/units/{CEASED.old_code}").status_code == 404
    notice = client.post("/portal/notices", json={"title": "Cutover", "body": "Tonight"})
    assert notice.status_code == 201 and notice.json()["id"] == 1
    assert [n["title"] for n in client.get("/portal/notices").json()] == ["Cutover"]


def test_certificate_issue_current_revoke(client: httpx.Client) -> None:
    owner = f"org:{RENAMED.old_code}"
    before = client.get(f"/edoc/owners/{owner}").json()
    ca = x509.load_pem_x509_certificate(client.get("/edoc/ca").json()["certificate"].encode())

    issued = client.post(
        "/edoc/certificates", json={"owner": owner, "csr": csr_pem(owner, RENAMED.new_name)}
    )
    assert issued.status_code == 201
    serial = issued.json()["serial"]
    cert = x509.load_pem_x509_certificate(issued.json()["certificate"].encode())
    assert cert.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert orgs[0].value == RENAMED.new_name
    assert client.get(f"/edoc/certificates/{serial}").json()["status"] == "issued"
    assert client.get(f"/edoc/owners/{owner}").json()["current_serial"] == before["current_serial"]

    current = client.post(f"/edoc/owners/{owner}/current", json={"serial": serial}).json()
    assert current["changed"] and current["before"]["current_serial"] == before["current_serial"]
    assert client.get(f"/edoc/certificates/{serial}").json()["status"] == "current"
    old = client.get(f"/edoc/certificates/{before['current_serial']}").json()
    assert old["status"] == "superseded"
    assert client.get(f"/edoc/owners/{owner}").json()["organization"] == RENAMED.new_name
    assert len(client.get("/edoc/certificates", params={"owner": owner}).json()) == 2

    # Rollback: the superseded one can come back; the new one is then superseded.
    back = client.post(f"/edoc/owners/{owner}/current", json={"serial": before["current_serial"]})
    assert back.json()["changed"] is True
    assert client.get(f"/edoc/certificates/{serial}").json()["status"] == "superseded"

    assert client.post(f"/edoc/certificates/{serial}/revoke").json()["status"] == "revoked"
    assert client.post(f"/edoc/certificates/{serial}/revoke").json()["changed"] is False
    refused = client.post(f"/edoc/owners/{owner}/current", json={"serial": serial})
    assert refused.status_code == 409
    other = client.get(f"/edoc/owners/person:{RENAMED.old_code}:1").json()["current_serial"]
    assert client.post(f"/edoc/owners/{owner}/current", json={"serial": other}).status_code == 409


def test_certificate_requests_are_checked(client: httpx.Client) -> None:
    owner = f"org:{RENAMED.old_code}"
    wrong_cn = client.post(
        "/edoc/certificates", json={"owner": owner, "csr": csr_pem("someone", "X")}
    )
    assert wrong_cn.status_code == 422 and "CN" in wrong_cn.json()["error"]
    garbage = client.post("/edoc/certificates", json={"owner": owner, "csr": "not a csr"})
    assert garbage.status_code == 422
    unknown = client.post(
        "/edoc/certificates", json={"owner": "org:NOPE", "csr": csr_pem("org:NOPE", "X")}
    )
    assert unknown.status_code == 404


# -- idempotency ------------------------------------------------------------------


def test_idempotent_replay_returns_first_answer_and_applies_once(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "notice-1"}
    first = client.post("/portal/notices", json={"title": "t", "body": "b"}, headers=headers)
    second = client.post("/portal/notices", json={"title": "t", "body": "b"}, headers=headers)
    assert first.headers["Idempotent-Replayed"] == "false"
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.status_code == first.status_code == 201
    assert second.json() == first.json()
    assert len(client.get("/portal/notices").json()) == 1
    assert client.get("/admin/idempotency").json() == {"notice-1": {"applied": 1, "replayed": 1}}
    misuse = client.post("/portal/notices", json={"title": "other", "body": "b"}, headers=headers)
    assert misuse.status_code == 422
    calls = client.get("/admin/calls").json()
    assert [c["replayed"] for c in calls if c["idempotency_key"] == "notice-1"] == [
        False,
        True,
        False,
    ]


def test_concurrent_replays_apply_once(sim: SimulatorProcess, client: httpx.Client) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as ac:
            return await asyncio.gather(
                *(
                    ac.post(
                        "/portal/notices",
                        json={"title": "once", "body": "only"},
                        headers={"Idempotency-Key": "burst"},
                    )
                    for _ in range(24)
                )
            )

    replies = asyncio.run(burst())
    assert {r.status_code for r in replies} == {201}
    assert len({r.json()["id"] for r in replies}) == 1
    assert sum(r.headers["Idempotent-Replayed"] == "false" for r in replies) == 1
    assert len(client.get("/portal/notices").json()) == 1
    assert client.get("/admin/idempotency").json()["burst"] == {"applied": 1, "replayed": 23}

    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: httpx.post(
                    f"{sim.url}/vnaccs/intake/stop", headers={"Idempotency-Key": "threads"}
                ).json()["changed"],
                range(16),
            )
        )
    assert statuses == [True] * 16  # every replay repeats the first answer
    assert client.get("/admin/idempotency").json()["threads"] == {"applied": 1, "replayed": 15}


def test_restart_keeps_state_and_keys(sim: SimulatorProcess, client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "before-restart"}
    client.post(f"/catalogue/offices/{CEASED.old_code}/close", headers=headers)
    client.put("/catalogue/version", json={"version": "2025"})
    ca_before = client.get("/edoc/ca").json()
    port = sim.port
    sim.restart()
    assert sim.port == port
    assert f"simulator listening on {sim.url} (faults: calm)" in sim.log_tail()
    with httpx.Client(base_url=sim.url, timeout=10) as c:
        assert c.get(f"/catalogue/offices/{CEASED.old_code}").json()["status"] == "closed"
        assert c.get("/catalogue/version").json()["version"] == "2025"
        replay = c.post(f"/catalogue/offices/{CEASED.old_code}/close", headers=headers)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["changed"] is True
        c.post("/admin/reset")
        assert c.get(f"/catalogue/offices/{CEASED.old_code}").json()["status"] == "active"
        assert c.get("/edoc/ca").json() == ca_before  # the CA survives reset


# -- faults -----------------------------------------------------------------------


def add_faults(client: httpx.Client, payload: Any) -> dict[str, Any]:
    reply = client.post("/admin/faults", json=payload)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def test_error_rate_is_reproducible_with_a_seed(client: httpx.Client) -> None:
    rule = {"name": "half", "method": "PUT", "path": "/catalogue/version", "error_rate": 0.5}

    def run() -> list[int]:
        add_faults(client, {"seed": 11, "rules": [rule]})
        return [
            client.put("/catalogue/version", json={"version": str(i)}).status_code
            for i in range(30)
        ]

    first = run()
    client.post("/admin/reset")
    assert run() == first
    assert set(first) == {200, 503}
    assert client.get("/catalogue/version").status_code == 200  # GET not matched
    described = client.get("/admin/faults").json()["rules"][0]
    assert described["matched"] == 30 and described["injected"] == first.count(503)


def test_faulted_mutation_applies_nothing_and_keeps_the_key(client: httpx.Client) -> None:
    add_faults(client, {"method": "POST", "path": "/vnaccs/intake/*", "nth": 1, "status": 500})
    headers = {"Idempotency-Key": "stop-1"}
    failed = client.post("/vnaccs/intake/stop", headers=headers)
    assert failed.status_code == 500 and failed.headers["X-Cutbook-Fault"] == "rule-1"
    assert client.get("/vnaccs/intake").json()["state"] == "open"
    assert client.get("/admin/idempotency").json() == {}
    retried = client.post("/vnaccs/intake/stop", headers=headers)
    assert retried.status_code == 200 and retried.headers["Idempotent-Replayed"] == "false"
    assert client.get("/vnaccs/intake").json()["state"] == "stopped"


def test_nth_call_fails_once(client: httpx.Client) -> None:
    add_faults(client, {"method": "GET", "path": "/catalogue/offices", "nth": 3, "status": 500})
    statuses = [client.get("/catalogue/offices").status_code for _ in range(5)]
    assert statuses == [200, 200, 500, 200, 200]


def test_outage_then_recovery(client: httpx.Client) -> None:
    future = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 3600))
    add_faults(
        client,
        [
            {"name": "down", "path": "/satellites*", "outage": {"start": 0, "duration": 1.0}},
            {"name": "later", "path": "/portal/*", "outage": {"start": future, "duration": 60}},
        ],
    )
    down = client.get("/satellites")
    assert down.status_code == 503 and int(down.headers["Retry-After"]) >= 1
    assert client.get("/portal/units").status_code == 200
    time.sleep(1.1)
    assert client.get("/satellites").status_code == 200


def test_permanent_failures_never_recover(client: httpx.Client) -> None:
    add_faults(
        client,
        {"method": "POST", "path": "/catalogue/offices/*/close", "permanent": True, "status": 409},
    )
    code = CEASED.old_code
    for _ in range(4):
        reply = client.post(f"/catalogue/offices/{code}/close", headers={"Idempotency-Key": "c"})
        assert reply.status_code == 409
    assert client.get(f"/catalogue/offices/{code}").json()["status"] == "active"

    client.delete("/admin/faults")
    add_faults(
        client,
        {"seed": 1, "rules": [{"method": "GET", "path": "/catalogue/offices/*", "permanent": 0.5}]},
    )
    paths = [f"/catalogue/offices/{row.old_code}" for row in ROWS[:12]]
    first = [client.get(p).status_code for p in paths]
    assert [client.get(p).status_code for p in paths] == first  # same call, same fate
    assert set(first) == {200, 422}


def test_latency_and_times(client: httpx.Client) -> None:
    add_faults(
        client,
        [
            {
                "method": "GET",
                "path": "/catalogue/version",
                "latency": {"min_ms": 200, "max_ms": 250},
            },
            {"method": "PUT", "path": "/catalogue/version", "error_rate": 1, "times": 2},
        ],
    )
    started = time.monotonic()
    client.get("/catalogue/version")
    assert time.monotonic() - started >= 0.2
    statuses = [
        client.put("/catalogue/version", json={"version": "x"}).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 200]


def test_hang_is_cut_by_client_timeout_and_blocks_no_one(
    sim: SimulatorProcess, client: httpx.Client
) -> None:
    add_faults(
        client, {"name": "stuck", "method": "GET", "path": "/catalogue/version", "hang": True}
    )
    outcome: dict[str, Any] = {}

    def hang() -> None:
        try:
            httpx.get(f"{sim.url}/catalogue/version", timeout=1.0)
        except httpx.TimeoutException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert client.get("/vnaccs/intake").status_code == 200
    assert client.post("/satellites/e-cargo/intake/stop").status_code == 200
    assert time.monotonic() - started < 0.5
    thread.join(5)
    assert isinstance(outcome.get("error"), httpx.TimeoutException)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        hung = [c for c in client.get("/admin/calls").json() if c["fault"] == "stuck"]
        if hung and hung[0]["status"] == 499:
            break
        time.sleep(0.1)
    assert hung and hung[0]["status"] == 499  # the server noticed the client leave


def test_bad_fault_rules_are_refused(client: httpx.Client) -> None:
    for bad in (
        {"path": "/x", "eror_rate": 0.5},
        {"error_rate": 2},
        {"status": 200, "error_rate": 1},
        {"outage": {"start": 5}},
        {"latency": {"min_ms": 10, "max_ms": 1}},
    ):
        reply = client.post("/admin/faults", json=bad)
        assert reply.status_code == 422, bad
        assert "error" in reply.json()
    assert client.get("/admin/faults").json()["rules"] == []


def test_hostile_profile_survives_bounded_load(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "hostile.sqlite", faults="hostile", seed_csv=CSV) as hostile:
        paths = ["/vnaccs/intake", "/catalogue/offices", "/satellites", "/edoc/owners?unit=13A2"]
        codes = [row.old_code for row in ROWS]

        def worker(n: int) -> list[int | str]:
            out: list[int | str] = []
            with httpx.Client(base_url=hostile.url, timeout=1.5) as c:
                for i in range(n, 300, 8):
                    try:
                        if i % 3 == 0:
                            code = codes[i % len(codes)]
                            r = c.post(
                                f"/catalogue/offices/{code}/close",
                                headers={"Idempotency-Key": f"load-{i}"},
                            )
                        else:
                            r = c.get(paths[i % len(paths)])
                        out.append(r.status_code)
                    except httpx.TimeoutException:
                        out.append("timeout")
            return out

        with ThreadPoolExecutor(8) as pool:
            results = [s for chunk in pool.map(worker, range(8)) for s in chunk]
        assert len(results) == 300
        assert results.count(200) > 150
        assert {s for s in results if s != "timeout"} <= {200, 409, 422, 502, 503, 504}
        with httpx.Client(base_url=hostile.url, timeout=5) as c:
            assert c.get("/healthz").json() == {"ok": True, "faults": "hostile"}
            assert c.get("/admin/state").status_code == 200
            counts = c.get("/admin/idempotency").json()
            assert all(v["applied"] == 1 for v in counts.values())


# -- the expected final state -----------------------------------------------------


def drive_cutover(c: httpx.Client) -> None:
    """Every change the runbook makes, by hand, each with an idempotency key."""

    def ok(reply: httpx.Response) -> dict[str, Any]:
        assert reply.is_success, reply.text
        body: dict[str, Any] = reply.json()
        return body

    n = 0

    def key() -> dict[str, str]:
        nonlocal n
        n += 1
        return {"Idempotency-Key": f"cutover-{n}"}

    ok(c.post("/vnaccs/intake/stop", headers=key()))
    for name in SATELLITES:
        ok(c.post(f"/satellites/{name}/intake/stop", headers=key()))
    for row in ROWS:
        code = row.old_code
        if row.status == "ceased":
            ok(c.post(f"/vnaccs/offices/{code}/intake/stop", headers=key()))
            ok(c.post(f"/catalogue/offices/{code}/close", headers=key()))
        else:
            patch = {
                "name": row.new_name,
                "budget_code": row.budget_code,
                "treasury_account": row.treasury_account,
                "treasury_code": row.treasury_code,
            }
            ok(c.patch(f"/catalogue/offices/{code}", json=patch, headers=key()))
        unit = {"old_name": row.old_name, "new_code": row.new_code, "new_name": row.new_name}
        ok(c.put(f"/portal/units/{code}", json=unit, headers=key()))
        for owner in c.get("/edoc/owners", params={"unit": code}).json():
            issued = ok(
                c.post(
                    "/edoc/certificates",
                    json={"owner": owner["owner"], "csr": csr_pem(owner["owner"], row.new_name)},
                    headers=key(),
                )
            )
            ok(
                c.post(
                    f"/edoc/owners/{owner['owner']}/current",
                    json={"serial": issued["serial"]},
                    headers=key(),
                )
            )
    ok(c.put("/catalogue/version", json={"version": "2025"}, headers=key()))
    for name in SATELLITES:
        ok(c.put(f"/satellites/{name}/config", json={"org_model": "2025"}, headers=key()))
        ok(c.post(f"/satellites/{name}/intake/start", headers=key()))
    ok(c.post("/portal/notices", json={"title": "Reorganised", "body": "Done"}, headers=key()))
    ok(c.post("/vnaccs/intake/start", headers=key()))


def test_final_state_is_reachable_over_http(client: httpx.Client) -> None:
    seeded = check_final_state(client.get("/admin/state").json(), CSV)
    assert "VNACCS intake is 'open', expected 'open'" not in seeded
    assert any("catalogue version" in p for p in seeded)
    assert any(p.startswith(f"office {CEASED.old_code}: status") for p in seeded)
    assert any(p.startswith(f"portal: unit {RENAMED.old_code}") for p in seeded)
    assert any(f"org:{RENAMED.old_code} certificate" in p for p in seeded)

    drive_cutover(client)
    assert check_final_state(client.get("/admin/state").json(), CSV) == []
    assert client.get("/admin/check").json() == {"ok": True, "problems": []}

    client.post(f"/vnaccs/offices/{RENAMED.old_code}/intake/stop")
    assert check_final_state(client.get("/admin/state").json(), CSV.read_text()) == [
        f"office {RENAMED.old_code}: per-office intake 'stopped', expected 'open'"
    ]


# -- command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "nope"], "neither a profile"),
        (["--port", "70000"], "--port must be between"),
        (["--seed", "/nonexistent.csv"], "no such file"),
        (["--faults", "BADYAML"], "not valid YAML"),
        (["--faults", "BADRULE"], "unknown key"),
    ],
)
def test_cli_usage_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.yaml").write_text("rules: [\n", encoding="utf-8")
    (tmp_path / "rule.yaml").write_text("rules:\n  - path: /x\n    oops: 1\n", encoding="utf-8")
    files = {"BADYAML": str(tmp_path / "bad.yaml"), "BADRULE": str(tmp_path / "rule.yaml")}
    args = [files.get(a, a) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "cutbook_simulator", "--state", str(tmp_path / "s.sqlite"), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
