"""Helpers shared by the end-to-end tests (a plain module: conftest is not for importing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNBOOKS = REPO / "runbooks"
CUTBOOK = shutil.which("cutbook", path=os.path.dirname(sys.executable)) or "cutbook"


@dataclass
class PrefectServer:
    api_url: str
    home: Path


@dataclass
class Cutbook:
    """Runs the real ``cutbook`` command with an isolated data directory."""

    env: dict[str, str]
    cwd: Path

    def run(
        self, *args: str, timeout: float = 240, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CUTBOOK, *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"cutbook {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [CUTBOOK, *args],
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )


EXAMPLE_ADAPTER = Path(__file__).parent / "example_adapter"

TINY_RUNBOOK = """\
apiVersion: cutbook/v1
name: tiny-night
timezone: UTC
window: {start: "2025-03-14T23:00", end: "2025-03-15T01:00"}
targets:
  host: {adapter: shell}
steps:
  - id: say-hello
    target: host
    action: probe
    with: {argv: ["true"]}
    estimate: 1m
"""
"""A one-step runbook that needs no estate: a shell probe of ``true``."""


def install_example_adapter(build: Path, target: Path, timeout: float = 300) -> None:
    """Build tests/example_adapter from a copy (no build litter in the tree) and install
    it into ``target``, a directory a test then puts on PYTHONPATH, as a user would."""
    src = build / "example_adapter"
    src.mkdir()
    for name in ("pyproject.toml", "cutbook_echo.py"):
        (src / name).write_bytes((EXAMPLE_ADAPTER / name).read_bytes())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--no-index",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
