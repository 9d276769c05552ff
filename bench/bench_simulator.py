"""Simulator benchmark: start-up time and requests/s, calm and hostile.

    .venv/bin/python bench/bench_simulator.py [--requests 2000] [--clients 8]

Hostile numbers include injected latency, failures and hangs cut off by the
client timeout, so they measure how the estate holds up, not raw speed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

import httpx

from cutbook_simulator import SimulatorProcess


async def load(url: str, total: int, clients: int, timeout: float) -> tuple[float, Counter[str]]:
    outcomes: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    if i % 4 == 0:
                        reply = await client.put(
                            "/catalogue/version",
                            json={"version": str(i)},
                            headers={"Idempotency-Key": f"bench-{i}"},
                        )
                    elif i % 4 == 1:
                        reply = await client.get("/catalogue/offices")
                    else:
                        reply = await client.get("/vnaccs/intake")
                    outcomes[str(reply.status_code)] += 1
                except httpx.TimeoutException:
                    outcomes["timeout"] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args()
    for profile in ("calm", "hostile"):
        started = time.perf_counter()
        with SimulatorProcess(faults=profile) as sim:
            startup = time.perf_counter() - started
            elapsed, outcomes = asyncio.run(
                load(sim.url, args.requests, args.clients, args.timeout)
            )
            healthy = httpx.get(f"{sim.url}/healthz", timeout=5).status_code == 200
        rate = args.requests / elapsed
        print(
            f"{profile:8} startup {startup:5.2f}s  {rate:7.0f} req/s  "
            f"({args.requests} requests, {args.clients} clients, {elapsed:.1f}s)  "
            f"healthy after: {healthy}  {dict(sorted(outcomes.items()))}"
        )


if __name__ == "__main__":
    main()
