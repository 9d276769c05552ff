"""The live view in a real terminal: a rehearsal in tmux at 120×40, read back from the pane.

The table must be drawn in place (its header once in the whole scrollback, where the
old view reprinted it dozens of times), no line of it wider than the terminal, and it
must end with every step settled.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.cells import cell_len

from cutbook_simulator.process import SimulatorProcess
from e2e_support import CUTBOOK, RUNBOOKS, Cutbook

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
WIDTH, HEIGHT = 120, 40
CUSTOMS = RUNBOOKS / "customs-reorg-2025.yaml"


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """A private tmux server (its own socket, no user configuration), killed afterwards."""
    if not os.path.exists(TMUX):
        if os.environ.get("CUTBOOK_REQUIRE_TMUX"):  # make test installs it: missing is a failure
            pytest.fail("tmux is not installed (make test installs it with apt-get)")
        pytest.skip("tmux is not installed")
    where = Path(tempfile.mkdtemp(prefix="cbtmux"))
    base = [TMUX, "-S", str(where / "s"), "-f", "/dev/null"]
    try:
        yield base
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True, timeout=10)
        shutil.rmtree(where, ignore_errors=True)


def _capture(base: list[str], *extra: str) -> list[str]:
    got = subprocess.run(
        [*base, "capture-pane", "-p", "-J", "-t", "view", *extra],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return got.stdout.rstrip("\n").split("\n")


def test_the_live_view_is_drawn_in_place_in_a_120x40_terminal(
    cutbook: Cutbook, tmux: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cutbook.env.items() if k not in ("COLUMNS", "LINES")}
    env["VNACCS_TOKEN"] = "tmux-view-token-1234"
    with SimulatorProcess(tmp_path / "estate.sqlite", faults="calm", env=env) as sim:
        command = " ".join(
            shlex.quote(a)
            for a in (
                CUTBOOK,
                "run",
                str(CUSTOMS),
                "--var",
                f"estate_url={sim.url}",
                "--clock",
                "virtual",
                "--speed",
                "3600",
                "--auto-approve",
                "--run-id",
                "tmux-view-1",
            )
        )
        script = tmp_path / "night.sh"
        script.write_text(
            f"unset COLUMNS LINES\ncd {shlex.quote(str(tmp_path))}\n{command}\n"
            'echo "EXIT=$?"\nsleep 600\n',
            encoding="utf-8",
        )
        size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
        subprocess.run(
            [*tmux, "new-session", "-d", *size, "-s", "view", "bash", str(script)],
            env=env,
            check=True,
            timeout=10,
        )
        deadline = time.monotonic() + 150
        screen: list[str] = []
        while time.monotonic() < deadline:
            screen = _capture(tmux)
            if any(line.startswith("EXIT=") for line in screen):
                break
            time.sleep(1)
        history = _capture(tmux, "-S", "-", "-E", "-")
    shown = "\n".join(history)
    assert "EXIT=0" in shown, shown[-4000:]
    assert "outcome: succeeded (22 succeeded)" in shown
    # Drawn in place: one title and one header row in the whole scrollback.
    titles = [i for i, line in enumerate(history) if line.startswith("customs-reorg-2025 · ")]
    heads = [line for line in history if re.match(r"^\s+step\s+planned\s+actual\s+vs plan", line)]
    assert len(titles) == 1, shown
    assert len(heads) == 1, shown
    # The table as it was left: every step settled, no line wider than the terminal
    # (lines are joined back where the terminal wrapped them, so a wrap shows here).
    end = next(i for i, line in enumerate(history) if line.startswith("outcome:"))
    table = [
        line
        for line in history[titles[0] : end]
        if line == history[titles[0]] or line in heads or line.startswith(("✓ ", "guard:"))
    ]
    region = "\n".join(history[titles[0] : end])
    assert max(cell_len(line) for line in table) <= WIDTH, region
    assert "22/22 steps done" in table[0], region
    rows = {line.split()[1]: line for line in table if line.startswith("✓ ")}
    assert len(rows) == 22, region
    last = max(i for i in range(titles[0], end) if history[i].startswith(("✓ ", "guard:")))
    assert last - titles[0] < HEIGHT, region
    assert "go (auto-approved for" in rows["go-no-go"], region
    # A fan-out shows its items done, and attempts as "1 each" (or its retries): not 39.
    assert re.search(r"(1 each|retr\w+) +█+ 39/39 ", rows["reset-budget-codes"]), region
