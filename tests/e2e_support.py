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
