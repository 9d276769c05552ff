"""The contract with cutbook's core: it finds this distribution through entry points only.

The core never imports ``cutbook_simulator``; ``cutbook.simulator_plugin`` loads
the names declared in simulator/pyproject.toml. These tests keep both sides in step.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import cutbook_simulator
from cutbook import simulator_plugin
from cutbook.errors import UsageError
from cutbook_simulator.errors import SimulatorUsageError
from cutbook_simulator.process import SimulatorProcess
from cutbook_simulator.server import serve


def test_entry_points_name_the_simulator_objects() -> None:
    assert simulator_plugin.installed()
    assert simulator_plugin.estate_factory() is SimulatorProcess
    assert simulator_plugin._load("serve") is serve
    assert simulator_plugin._load("usage_error") is SimulatorUsageError


def test_importing_the_core_does_not_import_the_simulator() -> None:
    code = (
        "import sys, cutbook.cli, cutbook.cli.demo, cutbook.simulator_plugin\n"
        "assert not [m for m in sys.modules if m.startswith('cutbook_simulator')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_missing_simulator_is_a_usage_error_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(simulator_plugin, "_entry_points", dict)
    assert not simulator_plugin.installed()
    with pytest.raises(UsageError, match=r"not installed.*pip install \./simulator"):
        simulator_plugin.estate_factory()


def test_a_broken_install_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint("estate", "cutbook_simulator.nowhere:Nothing", simulator_plugin.GROUP)
    monkeypatch.setattr(simulator_plugin, "_entry_points", lambda: {"estate": broken})
    with pytest.raises(UsageError, match="failed to import"):
        simulator_plugin.estate_factory()


def test_serve_turns_simulator_mistakes_into_cutbook_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--port must be between") as info:
        simulator_plugin.serve(
            host="127.0.0.1", port=70000, faults=None, state=tmp_path / "s.sqlite", seed=None
        )
    assert info.value.exit_code == 2


def test_the_package_exports_its_error() -> None:
    assert cutbook_simulator.SimulatorUsageError is SimulatorUsageError
