"""The wait adapter: virtual sleeps, and polling a real server on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from cutbook.errors import PermanentError
from cutbook.testing import AdapterContract, FakeClock, make_call, make_context, run
from cutbook_adapters.wait import WaitAdapter, WaitConfig
from cutbook_simulator.process import free_port


class Draining:
    """GET /queue answers {"queue": n}, one less on every poll, down to 0."""

    def __init__(self, start: int) -> None:
        self.left = start
        self.polls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.polls += 1
                body = json.dumps({"queue": outer.left, "state": "stopped"}).encode()
                outer.left = max(0, outer.left - 1)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[Draining]:
    s = Draining(3)
    yield s
    s.close()


def act(action: str, args: Mapping[str, Any], **kw: Any) -> Any:
    options = kw.pop("options", {})
    a = WaitAdapter(WaitConfig.model_validate(options), make_context())
    phase = kw.pop("phase", "apply")

    async def go() -> Any:
        try:
            return await getattr(a, phase)(make_call(WaitAdapter, action, args, phase=phase, **kw))
        finally:
            await a.aclose()

    return run(go())


class TestWaitContract(AdapterContract):
    adapter_class = WaitAdapter
    apply_is_safe = True

    @pytest.fixture(autouse=True)
    def _server(self, server: Draining) -> None:
        self.server = server

    def target_options(self) -> Mapping[str, Any]:
        return {"base_url": self.server.url}

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "sleep", {"duration": "5m"}
        yield "until", {"url": "/queue", "json": {"queue": 0}, "interval": "1s", "timeout": "1m"}


def test_sleep_uses_runbook_clock() -> None:
    clock = FakeClock()
    result = act("sleep", {"duration": "1h30m"}, clock=clock)
    assert clock.sleeps == [5400.0] and result.summary == "waited 1h30m"
    assert act("sleep", {"duration": 90}, phase="check").summary == "would wait 1m30s"
    assert clock.slept == 5400.0


def test_until_polls_until_json_matches(server: Draining) -> None:
    clock = FakeClock()
    args = {"url": f"{server.url}/queue", "json": {"queue": 0}, "interval": "10s", "timeout": "5m"}
    result = act("until", args, clock=clock)
    assert server.polls == 4 and clock.sleeps == [10.0, 10.0, 10.0]
    assert result.output == {"polls": 4, "waited": 30.0} and "ready after 30s" in result.summary


def test_until_gives_up_at_timeout(server: Draining) -> None:
    clock = FakeClock()
    args = {"url": "/queue", "json": {"queue": -1}, "interval": "20s", "timeout": "1m"}
    with pytest.raises(PermanentError, match=r"condition not met after 1m \(4 polls"):
        act("until", args, clock=clock, options={"base_url": server.url})
    assert clock.slept == 60.0
    verified = act("until", args, phase="verify", options={"base_url": server.url})
    assert not verified.ok and "$.queue" in verified.summary


def test_until_tolerates_an_unreachable_target() -> None:
    args = {"url": f"http://127.0.0.1:{free_port()}/", "interval": "5s", "timeout": "10s"}
    with pytest.raises(PermanentError, match="ConnectError"):
        act("until", args)


def test_check_polls_once_without_waiting(server: Draining) -> None:
    clock = FakeClock()
    args = {"url": f"{server.url}/queue", "json": {"queue": 0}, "timeout": "5m"}
    result = act("until", args, clock=clock, phase="check")
    assert "not met yet" in result.summary and clock.sleeps == [] and server.polls == 1


def test_models_are_strict() -> None:
    until = WaitAdapter.actions["until"].args
    for bad in ({"url": "/x"}, {"url": "/x", "timeout": "1m", "interval": 0}, {"duration": "1m"}):
        with pytest.raises(ValidationError):
            until.model_validate(bad)
    sleep = WaitAdapter.actions["sleep"].args
    with pytest.raises(ValidationError):
        sleep.model_validate({"duration": "soon"})
