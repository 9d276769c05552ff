"""The http adapter against the real simulator process, on both clients.

Every test that talks to the simulator runs twice: on the aiohttp transport (the
default) and on httpx's own pool (``client: httpx``, the escape hatch), so the two
behave the same for runbooks.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import pytest

from cutbook.errors import PermanentError, TransientError
from cutbook.testing import AdapterContract, make_call, make_context, run
from cutbook_adapters.http import HttpAdapter, HttpConfig
from cutbook_simulator.process import SimulatorProcess, free_port

pytestmark = pytest.mark.usefixtures("fresh_estate")

CLIENTS = ["aiohttp", "httpx"]


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """The target's ``client`` option: each test runs on both connection pools."""
    value: str = request.param
    return value


def adapter(
    sim: SimulatorProcess, client: str, secrets: Iterable[str] = (), **options: Any
) -> HttpAdapter:
    config = HttpConfig.model_validate({"base_url": sim.url, "client": client, **options})
    return HttpAdapter(config, make_context(secrets))


async def act(a: HttpAdapter, action: str, args: Mapping[str, Any], **kw: Any) -> Any:
    phase = kw.pop("phase", "apply")
    try:
        return await getattr(a, phase)(make_call(HttpAdapter, action, args, phase=phase, **kw))
    finally:
        await a.aclose()


def calls(sim: SimulatorProcess) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{sim.url}/admin/calls").json()
    return [c for c in result if not c["path"].startswith("/admin")]


class TestHttpContract(AdapterContract):
    adapter_class = HttpAdapter
    apply_is_safe = True

    @pytest.fixture(autouse=True)
    def _sim(self, sim: SimulatorProcess, client: str) -> None:
        self.sim = sim
        self.client = client

    def target_options(self) -> Mapping[str, Any]:
        return {"base_url": self.sim.url, "headers": {"X-Operator": "test"}, "client": self.client}

    def snapshot(self) -> Any:
        """The estate's state, without the intake queue: it fills with the wall clock
        (2 a second) whatever the adapter does, so a slow moment is not a change."""
        state: dict[str, Any] = httpx.get(f"{self.sim.url}/admin/state").json()
        state["intake"].pop("queue", None)
        return state

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "get", {"path": "/vnaccs/intake", "expect": {"json": {"state": "open"}}}
        yield "post", {"path": "/vnaccs/intake/stop"}
        yield "put", {"path": "/satellites/e-cargo/config", "json": {"org_model": "2025"}}
        yield "patch", {"path": "/catalogue/offices/13A2", "json": {"name": "Hải quan Hà Nội"}}
        yield "delete", {"path": "/portal/units/13A2", "expect": {"status": [200, 404]}}


def test_post_sends_idempotency_key_and_reports_change(sim: SimulatorProcess, client: str) -> None:
    args = {"path": "/vnaccs/intake/stop", "expect": {"json": {"state": "stopped"}}}
    first = run(act(adapter(sim, client), "post", args, idempotency_key="run1:stop:-"))
    assert first.changed and first.output["status"] == 200
    assert first.output["json"]["state"] == "stopped"
    assert first.summary.startswith('POST /vnaccs/intake/stop → 200 {"state":"stopped"')
    again = run(act(adapter(sim, client), "post", args, idempotency_key="run1:stop:-"))
    assert again.output.get("replayed") is True
    counts = httpx.get(f"{sim.url}/admin/idempotency").json()
    assert counts["run1:stop:-"] == {"applied": 1, "replayed": 1}
    # A fresh key on an already-stopped intake: succeeds, reports no change.
    third = run(act(adapter(sim, client), "post", args, idempotency_key="run2:stop:-"))
    assert third.changed is False


def test_get_sends_no_idempotency_key_and_changes_nothing(
    sim: SimulatorProcess, client: str
) -> None:
    result = run(act(adapter(sim, client), "get", {"path": "/vnaccs/intake"}))
    assert result.changed is False and result.output["json"]["state"] == "open"
    assert calls(sim)[-1]["idempotency_key"] is None


def test_check_describes_mutation_without_sending(sim: SimulatorProcess, client: str) -> None:
    before = len(calls(sim))
    args = {"path": "/catalogue/offices/13A2", "json": {"name": "New"}, "params": {"dry": 1}}
    result = run(act(adapter(sim, client), "patch", args, phase="check"))
    assert result.changed and result.summary.startswith("would PATCH /catalogue/offices/13A2?dry=1")
    assert '{"name":"New"}' in result.summary
    # Only a HEAD probe reached the target (reachable, credentials accepted), no change.
    assert [c["method"] for c in calls(sim)[before:]] == ["HEAD"]
    assert result.ok and result.output["probe_status"] is not None


def test_check_blocks_when_the_target_refuses_or_is_gone(
    sim: SimulatorProcess, client: str
) -> None:
    rule = {"path": "/vnaccs/intake/stop", "status": 401, "error_rate": 1, "times": 1}
    httpx.post(f"{sim.url}/admin/faults", json=rule).raise_for_status()
    refused = run(act(adapter(sim, client), "post", {"path": "/vnaccs/intake/stop"}, phase="check"))
    assert not refused.ok and "credentials refused (401)" in refused.summary
    gone = HttpAdapter(
        HttpConfig.model_validate(
            {"base_url": f"http://127.0.0.1:{free_port()}", "client": client}
        ),
        make_context(()),
    )
    down = run(act(gone, "post", {"path": "/vnaccs/intake/stop"}, phase="check"))
    assert not down.ok and "target unreachable" in down.summary


def test_expect_mismatch_raises_in_apply_and_fails_verify(
    sim: SimulatorProcess, client: str
) -> None:
    args = {"path": "/vnaccs/intake", "expect": {"json": {"state": "stopped"}}}
    with pytest.raises(PermanentError, match=r"expected \$\.state"):
        run(act(adapter(sim, client), "get", args))
    verified = run(act(adapter(sim, client), "get", args, phase="verify"))
    assert verified.ok is False and "$.state" in verified.summary


def test_verify_of_mutating_action_does_not_resend(sim: SimulatorProcess, client: str) -> None:
    before = len(calls(sim))
    result = run(act(adapter(sim, client), "post", {"path": "/vnaccs/intake/stop"}, phase="verify"))
    assert result.ok and len(calls(sim)) == before


def test_client_errors_are_permanent(sim: SimulatorProcess, client: str) -> None:
    with pytest.raises(PermanentError, match="404"):
        run(act(adapter(sim, client), "get", {"path": "/catalogue/offices/NOPE"}))
    accepted = run(
        act(
            adapter(sim, client),
            "get",
            {"path": "/catalogue/offices/NOPE", "expect": {"status": [404]}},
        )
    )
    assert accepted.output["status"] == 404


def test_503_with_retry_after_is_transient(sim: SimulatorProcess, client: str) -> None:
    rule = {"path": "/vnaccs/intake/stop", "status": 503, "retry_after": 7, "error_rate": 1}
    httpx.post(f"{sim.url}/admin/faults", json={**rule, "times": 1}).raise_for_status()
    with pytest.raises(TransientError) as info:
        run(act(adapter(sim, client), "post", {"path": "/vnaccs/intake/stop"}))
    assert info.value.retry_after == 7
    # The fault consumed nothing: the retry with the same key applies once.
    assert run(act(adapter(sim, client), "post", {"path": "/vnaccs/intake/stop"})).changed


def test_hang_times_out_as_transient(sim: SimulatorProcess, client: str) -> None:
    rule = {"path": "/vnaccs/intake", "hang": 1, "hang_s": 10, "times": 1}
    httpx.post(f"{sim.url}/admin/faults", json=rule).raise_for_status()
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"timed out after 0\.5s"):
        run(act(adapter(sim, client), "get", {"path": "/vnaccs/intake"}, timeout=0.5))
    assert time.monotonic() - started < 3


def test_connection_refused_is_transient(client: str) -> None:
    config = HttpConfig.model_validate(
        {"base_url": f"http://127.0.0.1:{free_port()}", "client": client}
    )
    with pytest.raises(TransientError, match="ConnectError"):
        run(act(HttpAdapter(config, make_context()), "get", {"path": "/x"}))


def test_secrets_and_credentials_scrubbed(sim: SimulatorProcess, client: str) -> None:
    token = "tok-abcdefgh-1234"
    a = adapter(sim, client, auth={"bearer": token})
    result = run(act(a, "get", {"path": "/vnaccs/intake", "params": {"t": token}}))
    assert token not in result.summary and "t=***" in result.summary
    declared = "declared-secret-99"
    a = adapter(sim, client, [declared])
    with pytest.raises(PermanentError) as info:
        run(act(a, "get", {"path": f"/catalogue/offices/{declared}"}))
    assert declared not in str(info.value)


def test_large_bodies_are_truncated(sim: SimulatorProcess, client: str) -> None:
    result = run(
        act(adapter(sim, client, max_body_bytes=512), "get", {"path": "/catalogue/offices"})
    )
    assert result.output["json"] is None
    assert len(result.output["text"]) < 600 and "more]" in result.output["text"]


def test_config_model_is_strict() -> None:
    from pydantic import ValidationError

    for bad in (
        {"base_url": "ftp://x"},
        {
            "base_url": "http://x",
            "auth": {"bearer": "a", "basic": {"username": "u", "password": "p"}},
        },
        {"base_url": "http://x", "timeout": "soon"},
        {"base_url": "http://x", "verify": False},
        {"base_url": "http://x", "client": "requests"},
    ):
        with pytest.raises(ValidationError):
            HttpConfig.model_validate(bad)
    cfg = HttpConfig.model_validate({"base_url": "https://x", "timeout": "2m"})
    assert cfg.timeout.total_seconds() == 120
    assert cfg.client == "aiohttp"
    with pytest.raises(ValidationError):
        HttpAdapter.actions["post"].args.model_validate({"path": "/", "json": {}, "data": "x"})


BENT_CODES = [
    "../../../vnaccs/intake/start#",
    "../../../vnaccs/intake/start",
    "%2e%2e/%2E%2E/%2e%2e/vnaccs/intake/start",
    "x#",
    "",
]


@pytest.mark.parametrize("code", BENT_CODES)
@pytest.mark.parametrize("phase", ["check", "apply"])
def test_templated_value_cannot_bend_the_path(
    sim: SimulatorProcess, client: str, code: str, phase: str
) -> None:
    """A data value rendered into 'path' must not reach another endpoint (red-team finding)."""
    from cutbook.templating import render

    run(act(adapter(sim, client), "post", {"path": "/vnaccs/intake/stop"}))
    before = len(calls(sim))
    path = render("/catalogue/offices/{{ item.old_code }}/close", {"item": {"old_code": code}})
    with pytest.raises(PermanentError, match="not sent"):
        run(act(adapter(sim, client), "post", {"path": path}, phase=phase))
    assert len(calls(sim)) == before
    assert httpx.get(f"{sim.url}/vnaccs/intake").json()["state"] == "stopped"


def test_plain_paths_and_full_urls_still_pass(sim: SimulatorProcess, client: str) -> None:
    result = run(act(adapter(sim, client), "get", {"path": f"{sim.url}/vnaccs/intake"}))
    assert result.output["status"] == 200
    result = run(
        act(adapter(sim, client), "get", {"path": "vnaccs/intake", "params": {"a": "../x#"}})
    )
    assert result.output["status"] == 200
