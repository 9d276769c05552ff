"""A third-party adapter, installed from its own distribution, is found and passes the contract.

The example package in tests/example_adapter is really built and installed
(into a temporary target directory, not the venv), and everything else runs
in a fresh interpreter that sees it only through PYTHONPATH, as a user's
installation would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_support import EXAMPLE_ADAPTER, PrefectServer, install_example_adapter

EXAMPLE = EXAMPLE_ADAPTER


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    install_example_adapter(build, target, timeout=120)
    yield target


def python(site: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``-c code``, or the given interpreter arguments, with the plugin on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    argv = [sys.executable, *args] if args else [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_entry_point_found_and_loaded(site: Path) -> None:
    proc = python(
        site,
        """
        from importlib.metadata import entry_points
        from cutbook import registry
        names = {ep.name: ep.value for ep in entry_points(group="cutbook.adapters")}
        assert names["echo"] == "cutbook_echo:EchoAdapter", names
        cls = registry.load("echo")
        assert cls.name == "echo" and set(cls.actions) == {"say", "peek"}
        [entry] = [e for e in registry.available() if e.name == "echo"]
        assert entry.distribution == "cutbook-echo", entry
        print("ok")
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_contract_suite_passes_for_the_plugin(site: Path, tmp_path: Path) -> None:
    test_file = tmp_path / "test_echo_contract.py"
    test_file.write_text(
        textwrap.dedent(
            """
            from cutbook import registry
            from cutbook.testing import AdapterContract


            class TestEchoContract(AdapterContract):
                adapter_class = registry.load("echo")
                apply_is_safe = True

                def target_options(self):
                    return {"prefix": "> "}

                def sample_calls(self):
                    yield "say", {"text": "hello"}
                    yield "peek", {"text": "hello"}
            """
        )
    )
    proc = python(
        site,
        "",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tmp_path),
        str(test_file),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "11 passed" in proc.stdout, proc.stdout


def test_broken_plugin_is_named_and_others_still_load(site: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    dist = broken / "cutbook_broken-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cutbook-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cutbook.adapters]\nbroken = cutbook_broken:Adapter\n")
    (broken / "cutbook_broken.py").write_text("raise ImportError('missing libfoo')\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{broken}"}
    code = """
        from cutbook import registry
        from cutbook.errors import RegistryError
        try:
            registry.load("broken")
        except RegistryError as exc:
            print("ERR", exc)
        else:
            raise SystemExit("loaded a broken plugin")
        assert "broken" in registry.names()
        assert registry.load("echo").name == "echo"
        assert registry.load("http").name == "http"
        """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "adapter 'broken' (cutbook_broken:Adapter) failed to import" in proc.stdout
    assert "missing libfoo" in proc.stdout


def test_every_builtin_adapter_loads_through_its_entry_point() -> None:
    from cutbook import registry
    from cutbook.adapter import ActionSpec

    for name in ("http", "shell", "sql", "pki", "notify", "manual", "wait"):
        cls = registry.load(name)
        assert cls.name == name
        assert all(isinstance(spec, ActionSpec) for spec in cls.actions.values())


ECHO_RUNBOOK = """\
apiVersion: cutbook/v1
name: echo-night
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T23:00", end: "2025-03-15T01:00"}
targets:
  speaker: {adapter: echo, prefix: "[night] "}
steps:
  - id: announce
    target: speaker
    action: say
    for_each: [intake stops, intake reopens]
    with: {text: "{{ item }}"}
  - id: check
    target: speaker
    action: peek
    with: {text: intake stops}
    depends_on: [announce]
"""


@pytest.mark.prefect
def test_a_runbook_runs_through_the_installed_plugin(
    site: Path, prefect_server: PrefectServer, tmp_path: Path
) -> None:
    """Validate and run a runbook whose only adapter comes from the third-party package."""
    runbook = tmp_path / "echo.yaml"
    runbook.write_text(ECHO_RUNBOOK, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PREFECT_API_URL": prefect_server.api_url,
        "CUTBOOK_DATA_DIR": str(tmp_path / "data"),
    }
    cutbook = str(Path(sys.executable).with_name("cutbook"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cutbook, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )

    assert run("validate", str(runbook)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(ECHO_RUNBOOK.replace("with: {text: intake stops}", "with: {txt: x}"))
    invalid = run("validate", str(bad))
    assert invalid.returncode == 2
    expected = "bad.yaml:16:12: unknown argument 'txt' for echo.peek in step 'check'"
    assert f"{expected} (did you mean 'text'?)" in invalid.stderr
    result = run("run", str(runbook), "--clock", "virtual", "--speed", "600", "--run-id", "echo-1")
    assert result.returncode == 0, result.stderr[-2000:]
    journal = (tmp_path / "data" / "journal" / "echo-1.jsonl").read_text(encoding="utf-8")
    records = [json.loads(line) for line in journal.splitlines()]
    said = [r["summary"] for r in records if r["event"] == "step.outcome"]
    assert "said '[night] intake stops'" in said[0] or "[night] intake stops" in said[0]
    assert records[-1]["event"] == "run.finished" and records[-1]["outcome"] == "succeeded"
