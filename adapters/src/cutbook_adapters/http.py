"""The ``http`` adapter: JSON APIs over HTTP(S) with idempotency keys.

Mutating requests carry ``Idempotency-Key`` so a retry or a resumed run never
applies a change twice on servers that honour it. The adapter never retries
itself: it classifies failures and lets the engine decide.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator

from cutbook import (
    ActionSpec,
    AdapterContext,
    Args,
    Call,
    Duration,
    PermanentError,
    Result,
    TargetConfig,
    TransientError,
    UrlPath,
)
from cutbook_adapters._common import (
    DEFAULT_MAX_BYTES,
    TRANSIENT_STATUS,
    ScrubbingAdapter,
    compact_json,
    json_mismatch,
    min_timeout,
    one_line,
    retry_after_seconds,
    tls_context,
    truncate,
)
from cutbook_adapters._lazy import LazyModule

if TYPE_CHECKING:
    import httpx
else:
    httpx = LazyModule("httpx")

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

REHEARSAL_HEADER = "Cutbook-Rehearsal-Time"
"""Tells a simulator the rehearsal's time, so its estate ages with the rehearsal."""


def rehearsal_headers(call: Call) -> dict[str, str]:
    """``Cutbook-Rehearsal-Time: <ISO 8601>`` under a rehearsal clock, else nothing.

    A rehearsal skips its waits; the simulator behind it must see those skipped
    minutes pass (a queue drains during a 20-minute wait). A real clock never
    sends it: the systems of a real night keep their own time.
    """
    if getattr(call.clock, "rehearsal", False) is not True:
        return {}
    return {REHEARSAL_HEADER: call.clock.now().isoformat()}


ParamValue = str | int | float | bool | list[str | int | float | bool]


class BasicAuth(Args):
    username: str = Field(description="The user name", examples=["cutbook"])
    password: str = Field(
        description="Usually a secret: '{{ secrets.API_PASSWORD }}'",
        examples=["{{ secrets.API_PASSWORD }}"],
    )


class AuthConfig(Args):
    """Exactly one of ``bearer`` or ``basic``."""

    bearer: str | None = Field(
        None,
        description="Token sent as 'Authorization: Bearer …'",
        examples=["{{ secrets.VNACCS_TOKEN }}"],
    )
    basic: BasicAuth | None = Field(
        None,
        description="User name and password sent as HTTP basic authentication",
        examples=[{"username": "cutbook", "password": "{{ secrets.API_PASSWORD }}"}],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> AuthConfig:
        if (self.bearer is None) == (self.basic is None):
            raise ValueError("give exactly one of 'bearer' or 'basic'")
        return self


class ClientCert(Args):
    cert: str = Field(
        description="PEM file with the client certificate (and chain)",
        examples=["/etc/cutbook/client.pem"],
    )
    key: str | None = Field(
        None,
        description="PEM private key, if not inside 'cert'",
        examples=["/etc/cutbook/client.key"],
    )


class HttpConfig(TargetConfig):
    """Options of an ``http`` target."""

    base_url: str = Field(
        description="Prefix for every step's 'path', e.g. https://api.example",
        examples=["https://api.example", "{{ vars.estate_url }}/vnaccs"],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent with every request",
        examples=[{"X-Change-Ticket": "CHG-4711"}],
    )
    auth: AuthConfig | None = Field(
        None,
        description="Credentials: exactly one of bearer or basic, from secrets",
        examples=[{"bearer": "{{ secrets.VNACCS_TOKEN }}"}],
    )
    timeout: Duration = Field(
        timedelta(seconds=30), description="Per-request time limit", examples=["20s"]
    )
    verify_tls: bool | str = Field(
        True,
        description="false, true, or a CA bundle path",
        examples=[True, "/etc/ssl/certs/internal-ca.pem"],
    )
    client_cert: ClientCert | None = Field(
        None,
        description="A client certificate for mutual TLS",
        examples=[{"cert": "/etc/cutbook/client.pem", "key": "/etc/cutbook/client.key"}],
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=256,
        description="Response bytes kept in outputs",
        examples=[DEFAULT_MAX_BYTES],
    )
    client: Literal["aiohttp", "httpx"] = Field(
        "aiohttp",
        description="Which connection pool sends the requests: 'aiohttp' (the default; "
        "less CPU per request) or 'httpx' (httpx's own pool), the escape hatch for a proxy "
        "or server that only works with it",
        examples=["httpx"],
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "{{")):
            raise ValueError("base_url must start with http:// or https://")
        return value


class Expect(Args):
    """What a response must look like for the step to count as done."""

    status: list[int] | None = Field(
        None,
        description="Accepted status codes; default any 2xx",
        min_length=1,
        examples=[[200], [200, 409]],
    )
    json_: Any = Field(
        None,
        alias="json",
        description="Subset the JSON body must contain (objects recursively; lists exactly)",
        examples=[{"state": "closed"}],
    )


class GetArgs(Args):
    path: UrlPath = Field(
        "",
        description="Path under base_url, or a full http(s) URL; each templated value in it "
        "is one percent-encoded segment (use `| raw_path` for a value that is a whole path)",
        examples=["/intake/stop", "/offices/{{ item.code }}"],
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict,
        description="Query parameters",
        examples=[{"office": "{{ item.code }}", "dry_run": False}],
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers",
        examples=[{"Idempotency-Key": "{{ run.id }}-{{ item.code }}"}],
    )
    expect: Expect = Field(
        default_factory=Expect,
        description="What the response must look like for the call to count as done",
        examples=[{"status": [200], "json": {"state": "closed"}}],
    )


class BodyArgs(GetArgs):
    json_: Any = Field(
        None,
        alias="json",
        description="JSON request body",
        examples=[{"code": "{{ item.code }}", "name": "{{ item.name }}"}],
    )
    data: dict[str, str] | str | None = Field(
        None,
        description="Form fields or raw text body (not with 'json')",
        examples=[{"office": "{{ item.code }}"}],
    )

    @model_validator(mode="after")
    def _one_body(self) -> BodyArgs:
        if self.json_ is not None and self.data is not None:
            raise ValueError("give 'json' or 'data', not both")
        return self


def path_problem(path: str) -> str | None:
    """Why ``path`` may not be what the runbook meant, or None.

    Values are rendered into ``path`` before the adapter sees it, so a value such
    as ``../../vnaccs/intake/start#`` would move the request to another endpoint.
    A ``.``/``..`` segment (also percent-encoded), a ``#``, or a path that
    normalises to something else (an empty segment) is refused, never sent.
    """
    if "#" in path:
        return "contains '#', which would cut the rest of the path off"
    local = urlsplit(path).path
    for segment in local.split("/"):
        if unquote(segment).strip() in (".", ".."):
            return f"has a {segment!r} segment, which would change the endpoint called"
    inner = local.strip("/")
    if inner and posixpath.normpath("/" + inner) != "/" + inner:
        return "has an empty segment ('//'): is a templated value empty?"
    return None


def _spec(args: type[BaseModel], method: str, mutating: bool) -> ActionSpec:
    what = "read" if not mutating else "send"
    return ActionSpec(
        args=args,
        description=f"{what} an HTTP {method}; checks 'expect'",
        mutating=mutating,
        reversible=False,
    )


class HttpAdapter(ScrubbingAdapter):
    """Drives JSON-over-HTTP systems; one pooled client per target."""

    name: ClassVar[str] = "http"
    Config: ClassVar[type[BaseModel]] = HttpConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "get": _spec(GetArgs, "GET", False),
        "post": _spec(BodyArgs, "POST", True),
        "put": _spec(BodyArgs, "PUT", True),
        "patch": _spec(BodyArgs, "PATCH", True),
        "delete": _spec(BodyArgs, "DELETE", True),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, HttpConfig)
        self.cfg = config
        if config.auth is not None:
            self.add_secrets([config.auth.bearer])
            if config.auth.basic is not None:
                self.add_secrets([config.auth.basic.password])
        self._client: httpx.AsyncClient | None = None
        self._described: dict[tuple[str, str, str], str] = {}

    # -- plumbing --------------------------------------------------------------

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            cfg = self.cfg
            headers = dict(cfg.headers)
            auth: httpx.Auth | None = None
            if cfg.auth is not None and cfg.auth.bearer is not None:
                headers["Authorization"] = f"Bearer {cfg.auth.bearer}"
            elif cfg.auth is not None and cfg.auth.basic is not None:
                auth = httpx.BasicAuth(cfg.auth.basic.username, cfg.auth.basic.password)
            verify: Any = cfg.verify_tls
            if cfg.client_cert is not None or isinstance(cfg.verify_tls, str):
                cert = cfg.client_cert
                try:
                    verify = tls_context(
                        cfg.verify_tls,
                        cert.cert if cert else None,
                        cert.key if cert else None,
                    )
                except OSError as exc:
                    raise PermanentError(f"http: cannot load TLS files: {exc}") from exc
            transport: httpx.AsyncBaseTransport | None = None
            if cfg.client == "aiohttp":  # httpx's API on aiohttp's cheaper pool (issue #14)
                from cutbook_adapters._aiohttp import AiohttpTransport

                transport = AiohttpTransport(verify)
            self._client = httpx.AsyncClient(
                base_url=cfg.base_url,
                headers=headers,
                auth=auth,
                verify=verify,
                timeout=cfg.timeout.total_seconds(),
                follow_redirects=False,
                transport=transport,
            )
        return self._client

    def _method(self, call: Call) -> str:
        if call.action not in self.actions:
            raise PermanentError(f"http: no action {call.action!r}")
        return call.action.upper()

    def _path(self, args: GetArgs) -> str:
        """The path to request; a bent one stops the step before anything is sent."""
        problem = path_problem(args.path)
        if problem is not None:
            raise PermanentError(self.scrub(f"http: path {args.path!r} {problem}; not sent"))
        return args.path

    def _url(self, args: GetArgs) -> str:
        path = self._path(args)
        return str(self._get_client().build_request("GET", path, params=args.params).url)

    def _describe(self, method: str, args: GetArgs) -> str:
        """``PUT /portal/offices/16A5``, as sent (percent-encoded), for logs and summaries.

        A call describes itself up to three times (log line, error, summary) and building
        the URL is most of an adapter's own CPU in a fan-out: the last few are kept."""
        key = (method, args.path, repr(sorted(args.params.items())) if args.params else "")
        text = self._described.get(key)
        if text is None:
            shown = urlsplit(self._url(args))
            text = f"{method} {shown.path or '/'}"
            if shown.query:
                text += f"?{shown.query}"
            text = self.scrub(text)
            if len(self._described) >= 128:
                self._described.pop(next(iter(self._described)))
            self._described[key] = text
        return text

    async def _send(self, call: Call, method: str, args: GetArgs) -> httpx.Response:
        client = self._get_client()
        headers = {**dict(args.headers), **rehearsal_headers(call)}
        if self.actions[call.action].mutating and method not in ("GET", "HEAD"):
            headers["Idempotency-Key"] = call.idempotency_key  # a probe must not claim the key
        body: dict[str, Any] = {}
        if isinstance(args, BodyArgs):
            if args.json_ is not None:
                body["json"] = args.json_
            elif isinstance(args.data, str):
                body["content"] = args.data
            elif args.data is not None:
                body["data"] = args.data
        limit = min_timeout(self.cfg.timeout.total_seconds(), call.timeout)
        where = self._describe(method, args)
        try:
            async with asyncio.timeout(limit):
                return await client.request(
                    method,
                    self._path(args),
                    params=args.params or None,
                    headers=headers,
                    timeout=limit,
                    **body,
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientError(f"{where}: timed out after {limit:g}s") from exc
        except httpx.TransportError as exc:
            detail = self.scrub(f"{type(exc).__name__}: {exc}")
            raise TransientError(f"{where}: {detail}") from exc
        except httpx.HTTPError as exc:
            raise PermanentError(f"{where}: {self.scrub(str(exc))}") from exc

    def _result(self, call: Call, method: str, args: GetArgs, resp: httpx.Response) -> Result:
        """Build the Result; raises for a status outside ``expect``."""
        body_json: Any = None
        try:
            body_json = resp.json()
        except ValueError:
            body_json = None
        text = resp.text
        limit = self.cfg.max_body_bytes
        kept_json = body_json if len(resp.content) <= limit else None
        output: dict[str, Any] = {
            "status": resp.status_code,
            "json": self.scrub_value(kept_json),
            "text": self.scrub(truncate(text, limit)),
        }
        if resp.headers.get("Idempotent-Replayed", "").lower() == "true":
            output["replayed"] = True
        shown = compact_json(body_json) if body_json is not None else text
        summary = one_line(
            f"{self._describe(method, args)} → {resp.status_code} {self.scrub(shown)}"
        )
        mutating = self.actions[call.action].mutating
        changed = mutating
        if (
            mutating
            and isinstance(body_json, Mapping)
            and isinstance(body_json.get("changed"), bool)
        ):
            changed = body_json["changed"]
        accepted = args.expect.status
        status_ok = (
            resp.status_code in accepted if accepted is not None else 200 <= resp.status_code < 300
        )
        if not status_ok:
            if resp.status_code in TRANSIENT_STATUS:
                raise TransientError(
                    summary, retry_after=retry_after_seconds(resp.headers.get("Retry-After"))
                )
            raise PermanentError(summary)
        mismatch = None
        if args.expect.json_ is not None:
            mismatch = json_mismatch(args.expect.json_, body_json)
        if mismatch:
            return Result(
                changed=changed,
                ok=False,
                summary=one_line(f"{summary} — expected {self.scrub(mismatch)}"),
                output=output,
            )
        return Result(changed=changed, summary=summary, output=output)

    # -- the contract ----------------------------------------------------------

    async def check(self, call: Call) -> Result:
        """GET is safe to perform; mutating requests are only described."""
        method = self._method(call)
        args = call.args
        assert isinstance(args, GetArgs)
        if not self.actions[call.action].mutating:
            return await self._perform(call, method, args, raise_on_mismatch=False)
        body = ""
        if isinstance(args, BodyArgs) and args.json_ is not None:
            body = " " + compact_json(args.json_)
        elif isinstance(args, BodyArgs) and args.data is not None:
            body = " " + compact_json(args.data)
        summary = f"would {self._describe(method, args)}{body}"
        status, problem = await self._probe(call, args)
        summary += f" (target answers HEAD with {status})" if status else ""
        if problem:
            summary += f" — {problem}"
        return Result(
            changed=True,
            ok=problem is None,
            summary=one_line(self.scrub(summary)),
            output={"method": method, "probe_status": status},
        )

    async def _probe(self, call: Call, args: GetArgs) -> tuple[int | None, str | None]:
        """A HEAD to the change's URL: safe by HTTP's rules, and it proves the target is
        reachable and accepts the credentials, which describing the change cannot."""
        try:
            resp = await self._send(call, "HEAD", GetArgs(path=args.path, params=args.params))
        except TransientError as exc:
            return None, f"target unreachable: {exc}"
        except PermanentError as exc:
            return None, str(exc)
        if resp.status_code in (401, 403, 407):
            return resp.status_code, f"credentials refused ({resp.status_code})"
        return resp.status_code, None

    async def apply(self, call: Call) -> Result:
        method = self._method(call)
        assert isinstance(call.args, GetArgs)
        return await self._perform(call, method, call.args, raise_on_mismatch=True)

    async def verify(self, call: Call) -> Result:
        """Repeat a GET and judge it; never repeat a mutating request."""
        method = self._method(call)
        if self.actions[call.action].mutating:
            status = call.prior.output.get("status") if call.prior else None
            return Result(ok=True, summary=f"{method} answered {status}; no read-back defined")
        assert isinstance(call.args, GetArgs)
        return await self._perform(call, method, call.args, raise_on_mismatch=False)

    async def _perform(
        self, call: Call, method: str, args: GetArgs, *, raise_on_mismatch: bool
    ) -> Result:
        call.log(f"http {self._describe(method, args)}")
        resp = await self._send(call, method, args)
        result = self._result(call, method, args, resp)
        if not result.ok and raise_on_mismatch:
            raise PermanentError(result.summary)
        return result

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
