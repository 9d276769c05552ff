"""The http adapter against a target that echoes the basic-auth header back: the encoded
forms of the password (base64 of it, base64 of ``user:password``) must not survive the
Redactor, which is what everything the run writes down goes through."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cutbook.redact import Redactor
from cutbook.testing import make_call, make_context, run
from cutbook_adapters.http import HttpAdapter, HttpConfig

USER = "deploy-bot"
PASSWORD = "s3cr3t-Passw0rd!"


def _forms(data: bytes) -> list[str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return [std, std.rstrip("="), url, url.rstrip("=")]


class _Echo(BaseHTTPRequestHandler):
    """Answers every GET with the Authorization header it got, as a careless target does."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.partition(" ")[2]
        password = base64.b64decode(token).partition(b":")[2] if token else b""
        body = (
            f"you sent {auth}; token {token}; "
            f"password as base64 {base64.b64encode(password).decode()}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _get(url: str) -> Any:
    config = HttpConfig.model_validate(
        {"base_url": url, "auth": {"basic": {"username": USER, "password": PASSWORD}}}
    )
    adapter = HttpAdapter(config, make_context([PASSWORD]))
    try:
        return await adapter.apply(make_call(HttpAdapter, "get", {"path": "/whoami"}))
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("shapes", [True, False], ids=["with-shapes", "values-only"])
def test_echoed_basic_auth_is_scrubbed_in_every_encoding(echo_url: str, shapes: bool) -> None:
    result = run(_get(echo_url))
    raw = json.dumps({"summary": result.summary, "output": result.output})
    # The target echoed the header, its token and the password's base64: the adapter's
    # own scrubbing (the same Redactor) already caught every encoded form...
    for leak in _forms(PASSWORD.encode()) + _forms(f"{USER}:{PASSWORD}".encode()):
        assert leak not in raw, leak
    assert "you sent Basic ***; token ***; password as base64 ***" in raw

    # ...and so does the engine's redactor, which sees everything the adapter returns.
    scrubbed = json.dumps(Redactor([PASSWORD], shapes=shapes).scrub(json.loads(raw)))
    assert PASSWORD not in scrubbed
    for leak in _forms(PASSWORD.encode()) + _forms(f"{USER}:{PASSWORD}".encode()):
        assert leak not in scrubbed, leak
    assert "you sent Basic ***; token ***; password as base64 ***" in scrubbed
