"""A tiny HTTP target for the benchmarks: every answer waits a fixed latency.

    .venv/bin/python bench/target_server.py --port 8123 [--latency-ms 20]

Any method on any path answers ``{"ok": true, "changed": false}`` after
sleeping ``--latency-ms`` (without blocking other requests), so the bare
clients, the Prefect flows, Ansible and cutbook all pay the same latency.
``GET /_count`` says how many requests were answered; ``GET /_health`` is for
start-up. uvicorn and Starlette come with Prefect.
"""

from __future__ import annotations

import argparse
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def app(latency_s: float) -> Starlette:
    count = 0

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def counted(request: Request) -> JSONResponse:
        return JSONResponse({"count": count})

    async def anything(request: Request) -> JSONResponse:
        nonlocal count
        await request.body()
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        count += 1
        return JSONResponse({"ok": True, "changed": False})

    methods = ["GET", "PUT", "POST", "PATCH", "DELETE"]
    return Starlette(
        routes=[
            Route("/_health", health),
            Route("/_count", counted),
            Route("/{path:path}", anything, methods=methods),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    uvicorn.run(
        app(args.latency_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
