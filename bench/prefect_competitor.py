"""What a Prefect user would write by hand: the competitor of ``cutbook run``.

    PREFECT_API_URL=... .venv/bin/python bench/prefect_competitor.py fanout URL ITEMS CONCURRENCY
    PREFECT_API_URL=... .venv/bin/python bench/prefect_competitor.py sequential URL STEPS

``fanout``: one flow, ``task.map`` over the items on a thread pool of CONCURRENCY
workers, each task one PUT. ``sequential``: one flow, one task per call, in
order. Both use one shared ``httpx.Client``. The benches run this as a child
process, so its wall and CPU time include Prefect's start-up, as cutbook's do.
"""

from __future__ import annotations

import sys
from typing import Any

import httpx
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

CLIENT = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=100))


@task
def call(url: str, i: int) -> int:
    reply = CLIENT.put(f"{url}/catalogue/version/{i}", json={"version": "2024"})
    reply.raise_for_status()
    return reply.status_code


def fanout(url: str, items: int, concurrency: int) -> None:
    runner: Any = ThreadPoolTaskRunner(max_workers=concurrency)  # its generic infers Never

    @flow(name="bench-fanout", task_runner=runner)
    def run() -> None:
        futures = call.map(url, list(range(items)))
        futures.result()

    run()


def sequential(url: str, steps: int) -> None:
    @flow(name="bench-sequential")
    def run() -> None:
        for i in range(steps):
            call(url, i)

    run()


def main(argv: list[str]) -> int:
    if argv[:1] == ["fanout"] and len(argv) == 4:
        fanout(argv[1], int(argv[2]), int(argv[3]))
    elif argv[:1] == ["sequential"] and len(argv) == 3:
        sequential(argv[1], int(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
