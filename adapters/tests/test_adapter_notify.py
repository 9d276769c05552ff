"""The notify adapter against a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from cutbook.errors import PermanentError, TransientError
from cutbook.testing import AdapterContract, make_call, make_context, run
from cutbook_adapters.notify import NotifyAdapter, NotifyConfig
from cutbook_simulator.process import free_port


class Receiver:
    """Records every POST; answers with ``status`` (settable per test)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                outer.received.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "3")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def adapter(options: Mapping[str, Any], secrets: Iterable[str] = ()) -> NotifyAdapter:
    return NotifyAdapter(NotifyConfig.model_validate(options), make_context(secrets))


async def act(a: NotifyAdapter, args: Mapping[str, Any], **kw: Any) -> Any:
    phase = kw.pop("phase", "apply")
    try:
        return await getattr(a, phase)(make_call(NotifyAdapter, "send", args, phase=phase, **kw))
    finally:
        await a.aclose()


class TestNotifyWebhookContract(AdapterContract):
    adapter_class = NotifyAdapter
    apply_is_safe = True

    @pytest.fixture(autouse=True)
    def _receiver(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def target_options(self) -> Mapping[str, Any]:
        return {"webhook": f"http://127.0.0.1:{self.receiver.port}/hook"}

    def snapshot(self) -> Any:
        return len(self.receiver.received)

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "send", {"title": "Intake stopped", "body": "VNACCS intake is stopped", "tags": ["a"]}


def test_webhook_posts_json_with_idempotency_key(receiver: Receiver) -> None:
    a = adapter({"webhook": f"http://127.0.0.1:{receiver.port}/hook", "headers": {"X-T": "1"}})
    args = {"title": "Go", "body": "Cutover starts", "level": "warning", "tags": ["cutover"]}
    result = run(act(a, args, idempotency_key="r:s:-", step_id="announce"))
    assert result.changed and 'sent "Go"' in result.summary
    [msg] = receiver.received
    assert msg["path"] == "/hook" and msg["headers"]["Idempotency-Key"] == "r:s:-"
    assert msg["headers"]["X-T"] == "1"
    assert msg["body"]["body"] == "Cutover starts" and msg["body"]["step_id"] == "announce"
    assert msg["body"]["level"] == "warning" and msg["body"]["tags"] == ["cutover"]


def test_apprise_json_url_delivers(receiver: Receiver) -> None:
    a = adapter({"urls": [f"json://127.0.0.1:{receiver.port}/apprise"]})
    checked = run(act(a, {"title": "T", "body": "B"}, phase="check"))
    assert checked.ok and checked.changed and not receiver.received
    result = run(
        act(
            adapter({"urls": [f"json://127.0.0.1:{receiver.port}/apprise"]}),
            {"title": "T", "body": "B"},
        )
    )
    assert result.changed and "1 channel(s) (json)" in result.summary
    [msg] = receiver.received
    assert msg["path"] == "/apprise"
    assert msg["body"]["title"] == "T" and msg["body"]["message"] == "B"


def test_delivery_failures_are_classified(receiver: Receiver) -> None:
    hook = {"webhook": f"http://127.0.0.1:{receiver.port}/hook"}
    receiver.status = 503
    with pytest.raises(TransientError) as info:
        run(act(adapter(hook), {"body": "x"}))
    assert info.value.retry_after == 3
    receiver.status = 400
    with pytest.raises(PermanentError, match="400"):
        run(act(adapter(hook), {"body": "x"}))
    receiver.status = 500
    with pytest.raises(TransientError):
        run(act(adapter({"urls": [f"json://127.0.0.1:{receiver.port}/a"]}), {"body": "x"}))
    closed = {"webhook": f"http://127.0.0.1:{free_port()}/hook"}
    with pytest.raises(TransientError, match="unreachable"):
        run(act(adapter(closed), {"body": "x"}))


def test_bad_apprise_url_fails_check_and_apply() -> None:
    a = adapter({"urls": ["nosuchscheme://token-abc"]})
    checked = run(act(a, {"body": "x"}, phase="check"))
    assert not checked.ok and "URL number 1" in checked.summary
    assert "token-abc" not in checked.summary
    with pytest.raises(PermanentError):
        run(act(adapter({"urls": ["nosuchscheme://token-abc"]}), {"body": "x"}))


def test_urls_never_shown_and_secrets_scrubbed(receiver: Receiver) -> None:
    secret = "s3cr3t-token-value"
    a = adapter({"urls": [f"json://user:{secret}@127.0.0.1:{receiver.port}/x"]}, [secret])
    result = run(act(a, {"title": f"about {secret}", "body": "b"}))
    assert secret not in result.summary + str(result.output)


def test_config_requires_exactly_one_channel_kind() -> None:
    for bad in ({}, {"urls": ["json://x"], "webhook": "http://x"}, {"urls": []}, {"webhook": "x"}):
        with pytest.raises(ValidationError):
            NotifyConfig.model_validate(bad)
