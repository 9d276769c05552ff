"""The aiohttp transport under the http adapter, against real loopback servers.

A small threaded HTTP/1.1 server misbehaves on purpose (cuts a body short, drops the
connection, stalls, gzips, streams megabytes) and can speak TLS with a CA made here,
so each aiohttp failure is seen becoming the httpx exception, and the adapter's
transient/permanent decision, that httpx's own pool gives.
"""

from __future__ import annotations

import datetime as dt
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cutbook.errors import PermanentError, TransientError
from cutbook.testing import make_call, make_context, run
from cutbook_adapters._aiohttp import AiohttpTransport
from cutbook_adapters.http import HttpAdapter, HttpConfig
from cutbook_simulator.process import free_port

BIG = 3 * 1024 * 1024 + 17
"""Bytes of /big: many reads, and more than any buffer on the way."""
BIG_BODY = (b"a line the server streams\n" * (BIG // 26 + 1))[:BIG]


class Handler(BaseHTTPRequestHandler):
    """One behaviour per path; every request is counted by path."""

    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest shows failures, not every request."""

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_HEAD = do_DELETE = do_GET

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.hits[path] = self.server.hits.get(path, 0) + 1
        if path == "/drop":  # the request arrives, the connection closes unanswered
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path == "/cut":  # a body promised and cut short
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif path == "/stall":
            time.sleep(3)
            self._send(200, b'{"late":true}')
        elif path == "/gzip":
            payload = json.dumps({"state": "closed", "pad": "z" * 4000}).encode()
            self._send(200, gzip.compress(payload), [("Content-Encoding", "gzip")])
        elif path == "/big":  # chunked, in pieces, as a server streams
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, BIG, 65536):
                piece = BIG_BODY[start : start + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/redirect":
            self._send(302, b"{}", [("Location", "/echo")])
        elif path == "/cookie":
            self._send(200, b"{}", [("Set-Cookie", "session=abc; Path=/")])
        else:  # /echo, and what a proxy receives: the request as it arrived
            echo = {
                "method": self.command,
                "target": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
                "peer": self.client_address[1],
            }
            self._send(200, json.dumps(echo).encode())

    def _send(self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients hang up mid-request on purpose here (timeouts, refused TLS)."""


def serve(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    server = Server(tls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    yield from serve()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a server (127.0.0.1) and a client certificate it signed, as PEM files."""
    where = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("cutbook test CA"))
        .issuer_name(name("cutbook test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": where / "ca.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    usages = {
        "server": (x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, "127.0.0.1"),
        "client": (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH, "cutbook operator"),
    }
    for role, (usage, subject) in usages.items():
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        files[role] = where / f"{role}.pem"
        files[f"{role}_key"] = where / f"{role}.key"
        files[role].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        files[f"{role}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return files


@pytest.fixture(scope="module")
def tls_srv(pki: dict[str, Path]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"], pki["server_key"])
    yield from serve(context)


@pytest.fixture(scope="module")
def mtls_srv(pki: dict[str, Path]) -> Iterator[Server]:
    """A server that accepts only clients with a certificate from the CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"], pki["server_key"])
    context.load_verify_locations(pki["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    yield from serve(context)


def http_adapter(base_url: str, **options: Any) -> HttpAdapter:
    config = HttpConfig.model_validate({"base_url": base_url, "client": "aiohttp", **options})
    return HttpAdapter(config, make_context())


def act(adapter: HttpAdapter, action: str, args: dict[str, Any], **kw: Any) -> Any:
    async def go() -> Any:
        try:
            return await adapter.apply(make_call(HttpAdapter, action, args, **kw))
        finally:
            await adapter.aclose()

    return run(go())


def on_transport(coro_of: Any, **client: Any) -> Any:
    """Run ``coro_of(client)`` with a plain httpx client on the transport."""

    async def go() -> Any:
        transport = AiohttpTransport()
        async with httpx.AsyncClient(transport=transport, **client) as http:
            return await coro_of(http)

    return run(go())


# -- failures map to the httpx exception, and the adapter's decision, httpx gives ------


def test_server_closing_mid_body_is_a_read_error_and_transient(srv: Server) -> None:
    async def get(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(f"{srv.url}/cut")

    with pytest.raises(httpx.ReadError):
        on_transport(get)
    with pytest.raises(TransientError, match="ReadError"):
        act(http_adapter(srv.url), "get", {"path": "/cut"})


@pytest.mark.parametrize("method", ["post", "put", "get"])
def test_server_dropping_the_request_is_transient_and_never_resent(
    srv: Server, method: str
) -> None:
    """aiohttp would send an idempotent request again on its own; the transport must
    not: the engine decides retries, and journals each attempt."""
    before = srv.hits.get("/drop", 0)
    with pytest.raises(TransientError, match="RemoteProtocolError"):
        act(http_adapter(srv.url), method, {"path": "/drop"})
    assert srv.hits["/drop"] == before + 1

    async def send(http: httpx.AsyncClient) -> httpx.Response:
        return await http.request(method.upper(), f"{srv.url}/drop")

    with pytest.raises(httpx.RemoteProtocolError):
        on_transport(send)
    assert srv.hits["/drop"] == before + 2


def test_refused_port_is_a_connect_error_and_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def get(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(url)

    with pytest.raises(httpx.ConnectError):
        on_transport(get)
    with pytest.raises(TransientError, match="ConnectError"):
        act(http_adapter(url), "get", {"path": "/x"})


def test_stalled_server_is_a_read_timeout_within_the_limit(srv: Server) -> None:
    async def get(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(f"{srv.url}/stall")

    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        on_transport(get, timeout=httpx.Timeout(5, read=0.4))
    assert time.monotonic() - started < 2
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"timed out after 0\.4s"):
        act(http_adapter(srv.url, timeout="0.4s"), "get", {"path": "/stall"})
    assert time.monotonic() - started < 2


def test_connect_timeout_is_a_connect_timeout() -> None:
    """A listener whose backlog is full never completes the handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue; later SYNs go unanswered
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(listener.getsockname())
                fillers.append(filler)
            url = "http://{}:{}".format(*listener.getsockname())

            async def get(http: httpx.AsyncClient) -> httpx.Response:
                return await http.get(url)

            started = time.monotonic()
            with pytest.raises(httpx.ConnectTimeout):
                on_transport(get, timeout=httpx.Timeout(5, connect=0.4))
            assert time.monotonic() - started < 3
        finally:
            for filler in fillers:
                filler.close()


def test_non_http_url_is_refused_before_anything_is_sent() -> None:
    async def get(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get("ftp://127.0.0.1/x")

    with pytest.raises(httpx.UnsupportedProtocol):
        on_transport(get)


# -- TLS: verified as httpx verifies --------------------------------------------------


def test_tls_verifies_with_the_ca_and_fails_without_it(
    tls_srv: Server, pki: dict[str, Path]
) -> None:
    ok = act(http_adapter(tls_srv.url, verify_tls=str(pki["ca"])), "get", {"path": "/echo"})
    assert ok.output["status"] == 200 and ok.output["json"]["method"] == "GET"
    # verify_tls: true means httpx's default CAs (certifi), which know nothing of ours.
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        act(http_adapter(tls_srv.url), "get", {"path": "/echo"})
    off = act(http_adapter(tls_srv.url, verify_tls=False), "get", {"path": "/echo"})
    assert off.output["status"] == 200


def test_tls_with_httpx_default_context_honours_ssl_cert_file(
    tls_srv: Server, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify=True is httpx's own default: SSL_CERT_FILE names the CA bundle."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    ok = act(http_adapter(tls_srv.url), "get", {"path": "/echo"})
    assert ok.output["status"] == 200


def test_mutual_tls_sends_the_client_certificate(mtls_srv: Server, pki: dict[str, Path]) -> None:
    cert = {"cert": str(pki["client"]), "key": str(pki["client_key"])}
    ok = act(
        http_adapter(mtls_srv.url, verify_tls=str(pki["ca"]), client_cert=cert),
        "get",
        {"path": "/echo"},
    )
    assert ok.output["status"] == 200
    with pytest.raises(TransientError):  # the server refuses the handshake without one
        act(http_adapter(mtls_srv.url, verify_tls=str(pki["ca"])), "get", {"path": "/echo"})


# -- what goes on the wire, and what comes back ----------------------------------------


def test_headers_arrive_exactly_once_as_httpx_built_them(srv: Server) -> None:
    token = "tok-abcdefgh-1234"
    adapter = http_adapter(srv.url, auth={"bearer": token}, headers={"X-Operator": "test"})
    result = act(adapter, "put", {"path": "/echo", "json": {"a": 1}}, idempotency_key="k-1")
    sent = result.output["json"]["headers"]
    names = [k.lower() for k, _ in sent]
    for header in ("host", "authorization", "content-length", "content-type", "user-agent"):
        assert names.count(header) == 1, (header, sent)
    assert "transfer-encoding" not in names
    values = {k.lower(): v for k, v in sent}
    assert values["authorization"] == "Bearer ***"  # sent whole, scrubbed in the echo
    assert values["idempotency-key"] == "k-1" and values["x-operator"] == "test"
    assert values["content-type"] == "application/json"
    assert values["user-agent"].startswith("python-httpx/")
    assert result.output["json"]["body"] == '{"a":1}'


def test_a_raw_text_body_gets_no_content_type_httpx_did_not_send(srv: Server) -> None:
    result = act(http_adapter(srv.url), "post", {"path": "/echo", "data": "plain words"})
    names = [k.lower() for k, _ in result.output["json"]["headers"]]
    assert "content-type" not in names
    assert result.output["json"]["body"] == "plain words"


def test_basic_auth_and_cookies_come_from_httpx_once(srv: Server) -> None:
    async def go(http: httpx.AsyncClient) -> list[list[str]]:
        await http.get(f"{srv.url}/cookie")
        sent: list[list[str]] = (await http.get(f"{srv.url}/echo")).json()["headers"]
        return sent

    sent = on_transport(go, auth=("cutbook", "pw-1234567890"))
    names = [k.lower() for k, _ in sent]
    assert names.count("authorization") == 1 and names.count("cookie") == 1
    assert dict((k.lower(), v) for k, v in sent)["cookie"] == "session=abc"


def test_percent_encoding_is_sent_as_httpx_encoded_it(srv: Server) -> None:
    result = act(
        http_adapter(srv.url),
        "get",
        {"path": "/echo/a%2fb/%7Euser/%C3%A9", "params": {"q": "x y&z"}},
    )
    # Not re-quoted on the way: a server may tell %7E from ~ and %2f from %2F.
    assert result.output["json"]["target"] == "/echo/a%2fb/%7Euser/%C3%A9?q=x+y%26z"


def test_gzip_response_is_decoded_by_httpx(srv: Server) -> None:
    result = act(
        http_adapter(srv.url), "get", {"path": "/gzip", "expect": {"json": {"state": "closed"}}}
    )
    assert result.ok and result.output["json"]["state"] == "closed"


def test_large_body_streams_through(srv: Server) -> None:
    async def go(http: httpx.AsyncClient) -> tuple[bytes, int]:
        chunks = []
        async with http.stream("GET", f"{srv.url}/big") as response:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
        return b"".join(chunks), len(chunks)

    body, pieces = on_transport(go)
    assert body == BIG_BODY and pieces > 1
    result = act(http_adapter(srv.url, max_body_bytes=1024), "get", {"path": "/big"})
    assert result.output["status"] == 200 and "more]" in result.output["text"]


def test_redirects_are_not_followed(srv: Server) -> None:
    with pytest.raises(PermanentError, match="302"):
        act(http_adapter(srv.url), "get", {"path": "/redirect"})
    assert srv.hits.get("/redirect", 0) >= 1


def test_head_then_requests_share_one_kept_alive_connection(srv: Server) -> None:
    async def go(http: httpx.AsyncClient) -> tuple[httpx.Response, set[int]]:
        head = await http.head(f"{srv.url}/echo")
        peers = set()
        for _ in range(5):
            peers.add((await http.get(f"{srv.url}/echo")).json()["peer"])
        return head, peers

    head, peers = on_transport(go)
    assert head.status_code == 200 and head.content == b""
    assert head.http_version == "HTTP/1.1" and head.reason_phrase == "OK"
    assert len(peers) == 1


# -- proxies from the environment, as httpx's trust_env -------------------------------


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A 'proxy' that answers every request itself, showing the target it was asked for."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield from serve()


def test_environment_proxy_is_used(proxy: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result = act(http_adapter("http://cutbook-target.invalid"), "get", {"path": "/echo"})
    assert result.output["json"]["target"] == "http://cutbook-target.invalid/echo"


def test_no_proxy_keeps_loopback_direct(
    proxy: Server, srv: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    before = dict(proxy.hits)
    result = act(http_adapter(srv.url), "get", {"path": "/echo"})
    assert result.output["json"]["target"] == "/echo"
    assert proxy.hits == before


def test_unusable_proxy_scheme_is_a_clear_permanent_error(
    proxy: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://user:secret@127.0.0.1:1080")
    with pytest.raises(PermanentError, match="socks5://") as info:
        act(http_adapter("http://cutbook-target.invalid"), "get", {"path": "/echo"})
    assert "secret" not in str(info.value)


# -- the session's life ----------------------------------------------------------------


def test_aclose_before_use_and_twice() -> None:
    async def go() -> None:
        transport = AiohttpTransport()
        await transport.aclose()
        await transport.aclose()

    run(go())


def test_the_response_stream_gives_the_connection_back(srv: Server) -> None:
    """A pool of one connection: every request after a response read to its end, or
    closed half read, finds the connection given back (or closed), never held."""

    async def go() -> int:
        transport = AiohttpTransport(limit=1)
        async with httpx.AsyncClient(transport=transport, timeout=3) as http:
            for _ in range(6):
                assert (await http.get(f"{srv.url}/echo")).status_code == 200
            async with http.stream("GET", f"{srv.url}/big") as response:
                async for _chunk in response.aiter_raw():
                    break  # left unread: closing must not leak the connection
            return (await http.get(f"{srv.url}/echo")).status_code

    assert run(go()) == 200
