"""httpx's API on aiohttp's connection pool: the http adapter's transport (issue #14).

Adapter authors keep writing ``httpx.AsyncClient`` code; only the bytes on the wire
go through aiohttp, whose pool costs a fraction of httpcore's per request (the
numbers are in docs/decisions.md). The transport is ours rather than the
``httpx-aiohttp`` package so that each aiohttp failure becomes the httpx exception
that means the same thing: the adapter decides transient or permanent from it.

What it keeps from httpx's own transport, because runbooks rely on it:

* TLS: ``verify=True`` builds httpx's default context (certifi, or SSL_CERT_FILE /
  SSL_CERT_DIR), so a certificate that verified before verifies now; an
  ``ssl.SSLContext`` (the adapter's CA bundle and client certificate) is used as is.
* Proxies: HTTP(S)_PROXY, ALL_PROXY and NO_PROXY from the environment, read when the
  transport is made, as httpx reads them when its client is made.
* The request exactly as httpx built it: its headers (case, order, duplicates) and
  its percent-encoding; aiohttp adds nothing of its own, follows no redirect, keeps no
  cookies and leaves content decoding to httpx.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Final
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

KEEPALIVE_S: Final = 5.0
"""Idle connections are closed after this long, as httpx's pool does."""

_NO_AUTO_HEADERS: Final = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
"""aiohttp's defaults for these would be added where httpx deliberately sent none."""

_PROXY_SCHEMES: Final = ("http", "https")

# First match wins: the specific aiohttp errors before their base classes.
_SENDING: Final[tuple[tuple[type[BaseException], type[httpx.TransportError]], ...]] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # SocketTimeoutError: sock_read
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    # Refused, DNS, TLS handshake and certificate, an unreachable proxy: as httpcore.
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),  # "cannot write to closing"
    (aiohttp.ClientOSError, httpx.ReadError),  # WriteError for the body: see _translate
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.TransportError),
    (TimeoutError, httpx.ReadTimeout),  # a bare one: aiohttp wraps connect timeouts
    (ValueError, httpx.LocalProtocolError),  # aiohttp refusing a header or body
)
_READING: Final = tuple(pair for pair in _SENDING if pair[0] is not ValueError)
"""While the body streams only the connection can fail; a ValueError there is a bug."""


_DEFAULT_MESSAGE: Final[dict[type[httpx.TransportError], str]] = {
    httpx.ConnectTimeout: "timed out connecting",
    httpx.ReadTimeout: "timed out waiting for the response",
    httpx.RemoteProtocolError: "server disconnected",
}


def _translate(
    exc: Exception,
    request: httpx.Request,
    table: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...],
) -> httpx.TransportError | None:
    """The httpx exception that means what ``exc`` means, or None if it is not aiohttp's."""
    for source, target in table:
        if isinstance(exc, source):
            if target is httpx.ReadError and "write request body" in str(exc):
                target = httpx.WriteError  # aiohttp's "Can not write request body for ..."
            message = str(exc) or _DEFAULT_MESSAGE.get(target, type(exc).__name__)
            return target(message, request=request)
    return None


def _default_ssl(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    """The context httpx would build for ``verify``, so verification is unchanged."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    return httpx.create_ssl_context(verify=verify, trust_env=True)


class _Proxies:
    """The environment's proxy for a URL, decided once per scheme, host and port.

    Read when the transport is made, as httpx reads its client's. NO_PROXY is
    matched by urllib's rules (hosts, domain suffixes, ``*``, ``host:port``);
    ALL_PROXY serves schemes without their own variable.
    """

    def __init__(self) -> None:
        self._env = urllib.request.getproxies_environment()
        self._cache: dict[
            tuple[str, str, int | None], tuple[URL, aiohttp.BasicAuth | None] | None
        ] = {}

    def for_url(self, url: httpx.URL) -> tuple[URL, aiohttp.BasicAuth | None] | None:
        key = (url.scheme, url.host, url.port)
        if key not in self._cache:
            self._cache[key] = self._decide(url)
        return self._cache[key]

    def _decide(self, url: httpx.URL) -> tuple[URL, aiohttp.BasicAuth | None] | None:
        env = self._env
        raw = env.get(url.scheme) or env.get("all")
        if not raw:
            return None
        host = url.host if url.port is None else f"{url.host}:{url.port}"
        if proxy_bypass_environment(host, env):
            return None
        proxy = URL(raw if "://" in raw else f"http://{raw}")
        if proxy.scheme not in _PROXY_SCHEMES:
            # Not a TransportError: retrying cannot help, so the adapter fails the step.
            raise httpx.RequestError(
                f"the environment's proxy {proxy.with_user(None)} for {url.host} is "
                f"{proxy.scheme}://; the http adapter's aiohttp client takes http:// "
                "and https:// proxies only (exempt the host with NO_PROXY, or set the "
                "target's 'client: httpx', which needs the socksio package for SOCKS)"
            )
        auth = None
        if proxy.user is not None:
            auth = aiohttp.BasicAuth(proxy.user, proxy.password or "")
        return proxy.with_user(None), auth


class _Body(httpx.AsyncByteStream):
    """The response body as aiohttp receives it; closing gives the connection back."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except Exception as exc:
            self._response.close()
            mapped = _translate(exc, self._request, _READING)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # Back to the pool when read to the end; closed otherwise (aiohttp decides).
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport on one ``aiohttp.ClientSession``.

    The session (and its pool of at most ``limit`` connections) is made on the first
    request, inside the running event loop, and closed by ``aclose``; one transport
    serves one event loop, like the client it belongs to.
    """

    def __init__(self, verify: ssl.SSLContext | bool = True, *, limit: int = 100) -> None:
        self._ssl = _default_ssl(verify)
        self._limit = limit
        self._proxies = _Proxies()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, ssl=self._ssl, keepalive_timeout=KEEPALIVE_S
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # proxies are _Proxies' job; no per-request netrc lookup
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=_NO_AUTO_HEADERS,
            )
            # aiohttp sends an idempotent request (GET, PUT, DELETE) again when the
            # server drops it; httpx never does, and the engine decides (and journals)
            # every retry. No public switch: the tests prove it stays off.
            self._session._retry_connection = False
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("an AiohttpTransport serves the event loop it started in")
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's four timeouts as aiohttp's: aiohttp has no write timeout, and its
        ``connect`` spans both waiting for the pool and connecting."""
        given = request.extensions.get("timeout", {})
        connect, read, pool = given.get("connect"), given.get("read"), given.get("pool")
        key = (connect, read, pool)
        timeout = self._timeouts.get(key)
        if timeout is None:
            whole = None if connect is None or pool is None else connect + pool
            timeout = aiohttp.ClientTimeout(
                total=None, connect=whole, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        body = await request.aread()
        headers = [
            (key.decode("latin-1"), value.decode("latin-1"))
            for key, value in request.headers.raw
            if key.lower() != b"transfer-encoding"  # aiohttp frames the body itself
        ]
        proxy = self._proxies.for_url(request.url)
        try:
            response = await session.request(
                request.method,
                URL(str(request.url), encoded=True),  # httpx's encoding, byte for byte
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=self._timeout(request),
                proxy=proxy[0] if proxy else None,
                proxy_auth=proxy[1] if proxy else None,
            )
        except Exception as exc:
            mapped = _translate(exc, request, _SENDING)
            if mapped is None:
                raise
            raise mapped from exc
        version = response.version
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": f"HTTP/{version.major}.{version.minor}".encode()
                if version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
