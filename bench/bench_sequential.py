"""Sequential HTTP steps side by side: ``cutbook run`` against a bare loop, Prefect and Ansible.

    .venv/bin/python bench/bench_sequential.py [--steps N] [--latency-ms 0]

A chain of N steps (200; 50 with ``BENCH_QUICK=1``), each one PUT to
``bench/target_server.py``. Each round runs, in turn: a bare ``httpx.Client``
loop (the limit), a hand-written Prefect flow with one task per call, an
Ansible playbook of N ``uri`` tasks (ansible-core from ``bench/.venv-ansible``,
installed there on first use; once per bench with ``BENCH_QUICK=1``), a one-step
runbook (one flow run's fixed cost) and the N-step chain, both through the
whole ``cutbook run`` process on a Prefect server this bench starts.
``BENCH_RUNS`` rounds (default 3); medians.

Target (issue 14): cutbook ≤ 1.5 × bare + the fixed cost; the ratios against
the Prefect flow and Ansible are reported. Saves ``bench/results/sequential.json``;
exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as h
import httpx

RATIO = 1.5


def bare(url: str, steps: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(steps):
            client.put(f"/step/{i}", json={"version": "2024"}).raise_for_status()
    return time.perf_counter() - wall, time.process_time() - cpu


def chain(url: str, steps: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for i in range(steps):
        step: dict[str, Any] = {
            "id": f"s{i:04d}",
            "target": "target",
            "action": "put",
            "with": {"path": f"/step/{i}", "json": {"version": "2024"}},
        }
        if i:
            step["depends_on"] = [f"s{i - 1:04d}"]
        items.append(step)
    return h.http_runbook("bench-sequential", items, url)


def playbook(path: Path, url: str, steps: int) -> Path:
    tasks = [
        {
            "name": f"step {i}",
            "ansible.builtin.uri": {
                "url": f"{url}/step/{i}",
                "method": "PUT",
                "body_format": "json",
                "body": {"version": "2024"},
            },
        }
        for i in range(steps)
    ]
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path.write_text(json.dumps(play, indent=1) + "\n")  # JSON is YAML
    return path


def ansible(exe: Path, book: Path) -> h.Child:
    interpreter = exe.parent / "python"
    env = {
        "PATH": f"{exe.parent}:/usr/bin:/bin",
        "HOME": str(book.parent),
        "ANSIBLE_LOCAL_TEMP": str(book.parent / "ansible-tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "LC_ALL": "C.UTF-8",
    }
    cmd = [str(exe), "-i", "localhost,", "-c", "local", str(book)]
    cmd += ["-e", f"ansible_python_interpreter={interpreter}"]
    return h.run_child(cmd, env=env, cwd=book.parent, timeout=1800).check("ansible-playbook")


def main(argv: list[str] | None = None) -> int:
    settings = h.Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=50 if settings.quick else 200)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    n = args.steps
    result = h.Result("sequential", f"Sequential: {n} HTTP steps, whole process", settings)
    base = Path(tempfile.mkdtemp(prefix="cutbook-bench-sequential-"))
    exe, why = h.ensure_ansible()
    print(f"ansible: {exe or why}", flush=True)
    ansible_runs = 1 if settings.quick else settings.runs

    rounds = h.Rounds()
    runs, add, quiet = rounds.runs, rounds.add, rounds.quiet

    try:
        with h.target_server(args.latency_ms) as url:
            rb_dir = base / "runbooks"
            one = {"id": "one", "target": "target", "action": "put", "with": {"path": "/one"}}
            one_rb = h.write_runbook(
                rb_dir / "one-step.yaml", h.http_runbook("bench-one-step", [one], url)
            )
            chain_rb = h.write_runbook(rb_dir / "chain.yaml", chain(url, n))
            book = playbook(base / "playbook.yml", url, n)
            with h.prefect_server(base / "prefect") as (api, server_s):
                print(f"Prefect server up in {server_s:.1f} s at {api}", flush=True)
                h.cutbook_run(one_rb, api, base / "data", "warm-up")
                for r in range(settings.runs):
                    print(f"round {r + 1} of {settings.runs}", flush=True)
                    add("bare httpx loop", *bare(url, n))
                    quiet(api)
                    child = h.run_child(
                        [
                            sys.executable,
                            str(h.BENCH / "prefect_competitor.py"),
                            "sequential",
                            url,
                            str(n),
                        ],
                        env=h.cutbook_env(api, base / "data"),
                    ).check("the Prefect flow")
                    add("Prefect flow, one task per call", child.wall_s, child.cpu_s)
                    if exe is not None and r < ansible_runs:
                        child = ansible(exe, book)
                        add("Ansible uri playbook", child.wall_s, child.cpu_s)
                    quiet(api)
                    child = h.cutbook_run(one_rb, api, base / "data", f"one-{r}")
                    add("cutbook run, one step (fixed cost)", child.wall_s, child.cpu_s)
                    quiet(api)
                    child = h.cutbook_run(chain_rb, api, base / "data", f"chain-{r}")
                    add(f"cutbook run, {n} steps", child.wall_s, child.cpu_s)
    except SystemExit as exc:
        result.notes.append(f"FAILED: {exc}")
        print(f"FAILED: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    nan = float("nan")
    wall, cpu = rounds.medians()
    bare_s = wall.get("bare httpx loop", nan)
    fixed = wall.get("cutbook run, one step (fixed cost)", nan)
    ours = wall.get(f"cutbook run, {n} steps", nan)
    prefect = wall.get("Prefect flow, one task per call", nan)
    ans = wall.get("Ansible uri playbook", nan)
    limit = RATIO * bare_s + fixed
    rows = []
    for name, values in runs.items():
        walls = [w for w, _ in values]
        rows.append(
            [
                name,
                h.fmt_s(wall[name]),
                f"{min(walls):.2f}–{max(walls):.2f} s ({len(walls)})",
                f"{cpu[name]:.2f} s",
                f"{wall[name] * 1000 / n:.1f} ms",
                h.fmt_ratio(ours / wall[name]),
            ]
        )
    if exe is None:
        rows.append(["Ansible uri playbook", "–", "–", "–", "–", f"not run: {why}"])
    result.tables.append(
        h.Table(
            f"{n} sequential PUTs, {args.latency_ms:g} ms target latency (medians)",
            ["competitor", "wall", "range (runs)", "CPU", "wall / step", "cutbook ÷ it"],
            rows,
            note=(
                "Whole processes except the bare loop (in the bench process). "
                "A ratio below 1 means cutbook was faster."
                + (" Ansible ran once (QUICK)." if settings.quick and exe is not None else "")
            ),
        )
    )
    result.targets.append(
        h.Target(
            f"Sequential, {n} HTTP steps, whole process",
            f"≤ 1.5 × bare + fixed = {h.fmt_s(limit)}",
            f"{h.fmt_s(ours)} ({h.fmt_ratio(ours / limit)} of the limit)",
            None if ours != ours else ours <= limit,
            f"bare {h.fmt_s(bare_s)}, fixed cost {h.fmt_s(fixed)}; "
            f"{(ours - fixed) * 1000 / n:.0f} ms per step net of the fixed cost",
        )
    )
    result.targets.append(
        h.Target(
            "Sequential vs hand-written Prefect flow",
            "report (today 0.92×)",
            f"cutbook ÷ Prefect = {h.fmt_ratio(ours / prefect)}",
            None,
            f"Prefect flow {h.fmt_s(prefect)}",
        )
    )
    result.targets.append(
        h.Target(
            "Sequential vs Ansible uri",
            "report (today 10× faster; aim 20×)",
            f"Ansible ÷ cutbook = {h.fmt_ratio(ans / ours)}" if exe else f"not run: {why}",
            None,
            f"Ansible {h.fmt_s(ans)}" if exe else "",
        )
    )
    note = rounds.settle_note()
    if note is not None:
        result.notes.append(note)
    result.raw = {
        "settled_s": rounds.settled,
        "runs": runs,
        "steps": n,
        "ansible": str(exe) if exe else why,
    }
    result.print()
    print(f"saved {result.save()}", flush=True)
    return 0 if result.ok and not result.notes else 1


if __name__ == "__main__":
    sys.exit(main())
