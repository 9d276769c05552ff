"""The simulated customs estate as a FastAPI application.

Cross-cutting behaviour lives in one ASGI middleware, in this order: the
estate clock following a rehearsal (``Cutbook-Rehearsal-Time``), call log,
fault injection (before any handler, so a faulted request changes nothing and
never consumes an idempotency key), then idempotency (one lock around
check-and-apply, so concurrent replays apply once). Handlers only talk to
:class:`~cutbook_simulator.store.Store`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cutbook_simulator.clock import REHEARSAL_HEADER, EstateClock, parse_rehearsal_time
from cutbook_simulator.faults import MUTATING, Decision, FaultConfig, FaultEngine
from cutbook_simulator.final import check_final_state
from cutbook_simulator.seed import default_seed_csv, read_offices
from cutbook_simulator.store import Store, StoreError

__all__ = ["Estate", "create_app"]

CALL_LOG_SIZE = 20_000


class Estate:
    """Everything one running simulator holds: state, faults and the call log."""

    def __init__(self, store: Store, faults: FaultEngine, clock: EstateClock) -> None:
        self.store = store
        self.faults = faults
        self.clock = clock
        self.calls: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_SIZE)
        self._seq = itertools.count(1)
        self.idempotency_lock = asyncio.Lock()
        self.stopping = False
        """Set when the server begins to shut down: held (hanging) requests let go."""

    def next_seq(self) -> int:
        return next(self._seq)

    def reset(self) -> None:
        self.clock.reset()  # first: the fresh estate is seeded at plain wall time
        self.store.reset()
        self.faults.reset()
        self.calls.clear()


def _is_admin(path: str) -> bool:
    return path in ("/healthz", "/docs", "/redoc", "/openapi.json") or path.startswith(
        ("/admin/", "/docs/")
    )


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(payload, status_code=status, headers=dict(headers or {}))


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _hold(receive: Receive, seconds: float, estate: Estate) -> str:
    """Hold a request without blocking anyone.

    Returns "disconnected" when the client gave up, "stopping" when the server
    is shutting down (so a hang never delays a clean exit), else "elapsed".
    """
    listener = asyncio.ensure_future(_until_disconnect(receive))
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "elapsed"
            if estate.stopping:
                return "stopping"
            done, _ = await asyncio.wait({listener}, timeout=min(left, 0.1))
            if done:
                return "disconnected"
    finally:
        listener.cancel()


class EstateMiddleware:
    """Call log, fault injection and idempotency around every estate endpoint."""

    def __init__(self, app: ASGIApp, estate: Estate) -> None:
        self.app = app
        self.estate = estate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_admin(scope["path"]):
            await self.app(scope, receive, send)
            return
        method: str = scope["method"].upper()
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("idempotency-key") or None
        rehearsal = headers.get(REHEARSAL_HEADER)
        if rehearsal is not None:
            try:
                self.estate.clock.follow(parse_rehearsal_time(rehearsal))
            except ValueError:
                problem = f"{REHEARSAL_HEADER}: {rehearsal!r} is not an ISO 8601 time"
                await _json(400, {"error": problem})(scope, receive, send)
                return
        started = time.monotonic()
        entry: dict[str, Any] = {
            "seq": self.estate.next_seq(),
            "method": method,
            "path": path,
            "status": None,
            "idempotency_key": key,
            "replayed": False,
            "fault": None,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.estate.clock.now())),
            "rehearsal_time": rehearsal,
        }
        self.estate.calls.append(entry)

        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                entry["status"] = 499
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
        body_sent = False

        async def replay_receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            decision = self.estate.faults.decide(method, path)
            if decision.delay_s > 0:
                await asyncio.sleep(decision.delay_s)
            if decision.hang_s is not None:
                entry["fault"] = decision.rule
                held = await _hold(receive, decision.hang_s, self.estate)
                if held == "disconnected":
                    entry["status"] = 499
                    return
                if held == "stopping":
                    entry["status"] = 503
                    await _json(503, {"error": "simulator is shutting down"})(
                        scope, replay_receive, send
                    )
                    return
            if decision.status is not None:
                entry["fault"] = decision.rule
                entry["status"] = decision.status
                await self._fault_response(decision)(scope, replay_receive, send)
                return
            if method in MUTATING and key is not None:
                await self._idempotent(scope, replay_receive, send, key, body, entry)
            else:
                await self._plain(scope, replay_receive, send, entry)
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)

    @staticmethod
    def _fault_response(decision: Decision) -> Response:
        headers = {"X-Cutbook-Fault": decision.rule or "fault"}
        if decision.retry_after is not None:
            headers["Retry-After"] = str(decision.retry_after)
        payload = {
            "error": f"injected fault ({decision.reason}) by rule {decision.rule!r}",
            "fault": decision.rule,
        }
        return _json(decision.status or 503, payload, headers)

    async def _plain(
        self, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]
    ) -> None:
        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        await self.app(scope, receive, logging_send)

    async def _idempotent(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
        body: bytes,
        entry: dict[str, Any],
    ) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        fingerprint = hashlib.sha256(
            f"{scope['method']} {scope['path']}?{query}\n".encode() + body
        ).hexdigest()
        store = self.estate.store
        async with self.estate.idempotency_lock:
            stored = store.stored_response(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    entry["status"] = 422
                    await _json(
                        422,
                        {
                            "error": f"Idempotency-Key {key!r} was already used for a "
                            "different request; use a new key"
                        },
                    )(scope, receive, send)
                    return
                store.count_replay(key)
                entry["status"] = stored.status
                entry["replayed"] = True
                replay = Response(
                    content=stored.body,
                    status_code=stored.status,
                    media_type=stored.content_type,
                    headers={"Idempotent-Replayed": "true"},
                )
                await replay(scope, receive, send)
                return
            messages: list[Message] = []

            async def capture(message: Message) -> None:
                messages.append(message)

            await self.app(scope, receive, capture)
            start = next(m for m in messages if m["type"] == "http.response.start")
            status = int(start["status"])
            content = b"".join(
                m.get("body", b"") for m in messages if m["type"] == "http.response.body"
            )
            content_type = "application/json"
            for name, value in start.get("headers", []):
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
            if 200 <= status < 300:
                store.store_response(key, fingerprint, status, content, content_type)
        entry["status"] = status
        start["headers"] = [*start.get("headers", []), (b"idempotent-replayed", b"false")]
        for message in messages:
            await send(message)


# -- request bodies ---------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OfficePatch(_Body):
    name: str | None = Field(None, min_length=1)
    budget_code: str | None = Field(None, min_length=1)
    treasury_account: str | None = Field(None, min_length=1)
    treasury_code: str | None = Field(None, min_length=1)


class VersionBody(_Body):
    version: str = Field(min_length=1)


class UnitBody(_Body):
    old_name: str = Field(min_length=1)
    new_code: str = Field(min_length=1)
    new_name: str = Field(min_length=1)


class NoticeBody(_Body):
    title: str = Field(min_length=1)
    body: str


class IssueBody(_Body):
    owner: str = Field(min_length=1)
    csr: str = Field(min_length=1)


class CurrentBody(_Body):
    serial: str = Field(min_length=1)


def _mutation(result: Mapping[str, Any]) -> dict[str, Any]:
    """Mutating replies repeat the ``after`` fields at the top level for convenience."""
    after = result.get("after")
    top = dict(after) if isinstance(after, Mapping) else {}
    return {**top, **result}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    state_path: Path, seed_csv: Path | None = None, faults: FaultConfig | None = None
) -> FastAPI:
    """Build the simulator; the state file is created and seeded when it is new."""
    csv_path = seed_csv if seed_csv is not None else default_seed_csv()
    seed_text, _rows = read_offices(csv_path)
    clock = EstateClock()
    store = Store(Path(state_path), seed_text, str(csv_path), clock=clock.now)
    estate = Estate(store, FaultEngine(faults, clock=clock.now), clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="cutbook simulated customs estate",
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.estate = estate

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError) -> Response:
        return _json(exc.status, {"error": exc.message})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _json(exc.status_code, {"error": message}, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        return _json(422, {"error": _validation_message(exc)})

    @app.exception_handler(Exception)
    async def _crash(_request: Request, exc: Exception) -> Response:
        return _json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    # -- VNACCS -------------------------------------------------------------

    @app.get("/vnaccs/intake")
    async def get_intake() -> dict[str, Any]:
        return store.intake()

    @app.post("/vnaccs/intake/stop")
    async def stop_intake() -> dict[str, Any]:
        return _mutation(store.set_intake("stopped"))

    @app.post("/vnaccs/intake/start")
    async def start_intake() -> dict[str, Any]:
        return _mutation(store.set_intake("open"))

    @app.get("/vnaccs/offices/{code}/intake")
    async def get_office_intake(code: str) -> dict[str, Any]:
        return store.office_intake(code)

    @app.post("/vnaccs/offices/{code}/intake/stop")
    async def stop_office_intake(code: str) -> dict[str, Any]:
        return _mutation(store.set_office_intake(code, "stopped"))

    @app.post("/vnaccs/offices/{code}/intake/start")
    async def start_office_intake(code: str) -> dict[str, Any]:
        return _mutation(store.set_office_intake(code, "open"))

    # -- satellites ---------------------------------------------------------

    @app.get("/satellites")
    async def list_satellites() -> list[dict[str, Any]]:
        return store.satellites()

    @app.get("/satellites/{name}")
    async def get_satellite(name: str) -> dict[str, Any]:
        return store.satellite(name)

    @app.post("/satellites/{name}/intake/stop")
    async def stop_satellite(name: str) -> dict[str, Any]:
        return _mutation(store.set_satellite_intake(name, "off"))

    @app.post("/satellites/{name}/intake/start")
    async def start_satellite(name: str) -> dict[str, Any]:
        return _mutation(store.set_satellite_intake(name, "on"))

    @app.put("/satellites/{name}/config")
    async def put_satellite_config(name: str, config: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return _mutation(store.set_satellite_config(name, config))

    # -- catalogue ----------------------------------------------------------

    @app.get("/catalogue/offices")
    async def list_offices() -> list[dict[str, Any]]:
        return store.offices()

    @app.get("/catalogue/offices/{code}")
    async def get_office(code: str) -> dict[str, Any]:
        return store.office(code)

    @app.patch("/catalogue/offices/{code}")
    async def patch_office(code: str, patch: OfficePatch) -> dict[str, Any]:
        changes = patch.model_dump(exclude_none=True)
        if not changes:
            raise StoreError(
                422, "give at least one of name, budget_code, treasury_account, treasury_code"
            )
        return _mutation(store.patch_office(code, changes))

    @app.post("/catalogue/offices/{code}/close")
    async def close_office(code: str) -> dict[str, Any]:
        return _mutation(store.set_office_status(code, "closed"))

    @app.post("/catalogue/offices/{code}/reopen")
    async def reopen_office(code: str) -> dict[str, Any]:
        return _mutation(store.set_office_status(code, "active"))

    @app.get("/catalogue/version")
    async def get_version() -> dict[str, Any]:
        return store.catalogue_version()

    @app.put("/catalogue/version")
    async def put_version(body: VersionBody) -> dict[str, Any]:
        return _mutation(store.set_catalogue_version(body.version))

    # -- portal -------------------------------------------------------------

    @app.get("/portal/units")
    async def list_units() -> list[dict[str, Any]]:
        return store.units()

    @app.get("/portal/units/{old_code}")
    async def get_unit(old_code: str) -> dict[str, Any]:
        for unit in store.units():
            if unit["old_code"] == old_code:
                return unit
        raise StoreError(404, f"unit {old_code!r} is not published")

    @app.put("/portal/units/{old_code}")
    async def put_unit(old_code: str, body: UnitBody) -> dict[str, Any]:
        return _mutation(store.put_unit(old_code, body.old_name, body.new_code, body.new_name))

    @app.delete("/portal/units/{old_code}")
    async def delete_unit(old_code: str) -> dict[str, Any]:
        return _mutation(store.delete_unit(old_code))

    @app.get("/portal/notices")
    async def list_notices() -> list[dict[str, Any]]:
        return store.notices()

    @app.post("/portal/notices", status_code=201)
    async def add_notice(body: NoticeBody) -> dict[str, Any]:
        return store.add_notice(body.title, body.body)

    # -- Edoc CA ------------------------------------------------------------

    @app.get("/edoc/ca")
    async def get_ca() -> dict[str, Any]:
        return {"certificate": store.ca_pem()}

    @app.get("/edoc/owners")
    async def list_owners(unit: str | None = None) -> list[dict[str, Any]]:
        return store.owners(unit)

    @app.get("/edoc/owners/{owner}")
    async def get_owner(owner: str) -> dict[str, Any]:
        return store.owner(owner)

    @app.post("/edoc/owners/{owner}/current")
    async def make_current(owner: str, body: CurrentBody) -> dict[str, Any]:
        return _mutation(store.make_current(owner, body.serial))

    @app.get("/edoc/certificates")
    async def list_certificates(owner: str | None = None) -> list[dict[str, Any]]:
        return store.certificates(owner)

    @app.post("/edoc/certificates", status_code=201)
    async def issue_certificate(body: IssueBody) -> dict[str, Any]:
        return store.issue(body.owner, body.csr)

    @app.get("/edoc/certificates/{serial}")
    async def get_certificate(serial: str) -> dict[str, Any]:
        return store.certificate(serial)

    @app.post("/edoc/certificates/{serial}/revoke")
    async def revoke_certificate(serial: str) -> dict[str, Any]:
        return _mutation(store.revoke(serial))

    # -- administration -----------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "faults": estate.faults.name}

    @app.get("/admin/state")
    async def admin_state() -> dict[str, Any]:
        return store.snapshot()

    @app.get("/admin/check")
    async def admin_check() -> dict[str, Any]:
        problems = check_final_state(store.snapshot(), store.offices_csv)
        return {"ok": not problems, "problems": problems}

    @app.get("/admin/calls")
    async def admin_calls(since: int = 0) -> list[dict[str, Any]]:
        return [dict(c) for c in list(estate.calls) if c["seq"] > since]

    @app.get("/admin/idempotency")
    async def admin_idempotency() -> dict[str, dict[str, int]]:
        return store.idempotency()

    @app.get("/admin/faults")
    async def admin_faults() -> dict[str, Any]:
        return estate.faults.describe()

    @app.post("/admin/faults")
    async def admin_add_faults(request: Request) -> Response:
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            return _json(422, {"error": "body must be JSON: a rule, a list of rules or {rules}"})
        rules: Any
        if isinstance(payload, list):
            rules = payload
        elif isinstance(payload, dict) and ("rules" in payload or "seed" in payload):
            extra = set(payload) - {"rules", "seed"}
            if extra:
                return _json(
                    422, {"error": f"unknown key(s) {', '.join(sorted(extra))} beside rules/seed"}
                )
            rules = payload.get("rules") or []
            if "seed" in payload:
                seed = payload["seed"]
                if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                    return _json(422, {"error": "seed must be an integer or null"})
                estate.faults.set_seed(seed)
        elif isinstance(payload, dict):
            rules = [payload]
        else:
            return _json(422, {"error": "body must be a rule, a list of rules or {rules}"})
        try:
            estate.faults.add(rules)
        except (ValueError, TypeError) as exc:
            return _json(422, {"error": str(exc)})
        return _json(200, estate.faults.describe())

    @app.delete("/admin/faults")
    async def admin_clear_faults() -> dict[str, Any]:
        estate.faults.clear()
        return estate.faults.describe()

    @app.get("/admin/clock")
    async def admin_clock() -> dict[str, Any]:
        """The estate's time and how far it has moved ahead to follow a rehearsal."""
        return estate.clock.describe()

    @app.post("/admin/reset")
    async def admin_reset() -> dict[str, Any]:
        estate.reset()
        return {"ok": True, "reset": True}

    app.add_middleware(EstateMiddleware, estate=estate)
    return app
