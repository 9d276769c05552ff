"""The shell adapter against real processes."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from cutbook.errors import PermanentError, TransientError
from cutbook.testing import AdapterContract, make_call, make_context, run
from cutbook_adapters.shell import ShellAdapter, ShellConfig

PY = sys.executable


def adapter(secrets: Iterable[str] = (), **options: Any) -> ShellAdapter:
    return ShellAdapter(ShellConfig.model_validate(options), make_context(secrets))


async def act(a: ShellAdapter, action: str, args: Mapping[str, Any], **kw: Any) -> Any:
    try:
        return await getattr(a, kw.pop("phase", "apply"))(
            make_call(ShellAdapter, action, args, **kw)
        )
    finally:
        await a.aclose()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); its state letter says it is dead.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


class TestShellContract(AdapterContract):
    adapter_class = ShellAdapter
    apply_is_safe = True

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "run", {"argv": [PY, "-c", "import sys; print(sys.argv[1])", "hello"]}
        yield "run", {"argv": ["cat"], "stdin": "from stdin", "env": {"X": "y"}}
        yield "probe", {"argv": ["true"]}


def test_runs_argv_without_a_shell() -> None:
    hostile = "$(touch /tmp/cutbook-pwned); `id` | rm -rf ~ && echo 'x'"
    result = run(act(adapter(), "run", {"argv": ["echo", hostile]}))
    assert result.output["stdout"] == hostile + "\n"
    assert result.output["exit_code"] == 0
    assert result.changed
    assert not Path("/tmp/cutbook-pwned").exists()


def test_stdin_env_and_cwd(tmp_path: Path) -> None:
    code = (
        "import os, sys; "
        "print(os.getcwd(), os.environ['STEP'], os.environ['TGT'], sys.stdin.read())"
    )
    result = run(
        act(
            adapter(env={"TGT": "t"}, cwd=str(tmp_path)),
            "run",
            {"argv": [PY, "-c", code], "env": {"STEP": "s"}, "stdin": "in"},
        )
    )
    assert result.output["stdout"].split() == [str(tmp_path), "s", "t", "in"]


def test_minimal_environment_unless_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUTBOOK_TEST_LEAK", "leaked")
    code = "import os; print(os.environ.get('CUTBOOK_TEST_LEAK', 'absent'))"
    args = {"argv": [PY, "-c", code]}
    assert run(act(adapter(), "run", args)).output["stdout"].strip() == "absent"
    inherited = run(act(adapter(inherit_env=True), "run", args))
    assert inherited.output["stdout"].strip() == "leaked"


def test_exit_codes_classified() -> None:
    fail = {"argv": [PY, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]}
    with pytest.raises(PermanentError, match="exit 3: boom"):
        run(act(adapter(), "run", fail))
    with pytest.raises(TransientError):
        run(act(adapter(), "run", {**fail, "transient_codes": [3]}))
    ok = run(act(adapter(), "run", {**fail, "ok_codes": [0, 3]}))
    assert ok.output["exit_code"] == 3


def test_probe_verify_reports_instead_of_raising() -> None:
    a = adapter()
    result = run(act(a, "probe", {"argv": ["false"]}, phase="verify"))
    assert not result.ok and not result.changed
    assert run(act(adapter(), "probe", {"argv": ["true"]}, phase="check")).ok


def test_run_is_not_executed_by_check(tmp_path: Path) -> None:
    marker = tmp_path / "made"
    result = run(act(adapter(), "run", {"argv": ["touch", str(marker)]}, phase="check"))
    assert result.ok and result.changed and "would run: touch" in result.summary
    assert not marker.exists()
    missing = run(act(adapter(), "run", {"argv": ["no-such-program-xyz"]}, phase="check"))
    assert not missing.ok and "not found" in missing.summary
    bad_cwd = run(
        act(adapter(cwd=str(tmp_path / "nope")), "run", {"argv": ["true"]}, phase="check")
    )
    assert not bad_cwd.ok and "does not exist" in bad_cwd.summary


def test_run_check_command_runs_in_check_only(tmp_path: Path) -> None:
    marker = tmp_path / "made"
    seen = tmp_path / "checked"
    args = {
        "argv": ["touch", str(marker)],
        "check": ["touch", str(seen)],
        "ok_codes": [0, 3],
        "env": {"WHO": "ops"},
    }
    result = run(act(adapter(), "run", args, phase="check"))
    assert result.ok and result.changed and seen.exists() and not marker.exists()
    assert "would run: touch" in result.summary and "check: touch" in result.summary
    script = "import os, sys; print(os.environ['WHO']); sys.exit(3)"
    failing = {**args, "check": [PY, "-c", script]}
    blocked = run(act(adapter(), "run", failing, phase="check"))
    assert not blocked.ok and "exit 3: ops" in blocked.summary  # the run's ok_codes do not apply
    assert not marker.exists()
    applied = run(act(adapter(), "run", args, phase="apply"))
    assert applied.ok and marker.exists()


def test_run_check_without_program_still_checks_the_program() -> None:
    from pydantic import ValidationError

    missing = run(act(adapter(), "run", {"argv": ["no-such-program-xyz"]}, phase="check"))
    assert not missing.ok and "not found" in missing.summary
    with pytest.raises(ValidationError, match="check"):
        ShellAdapter.actions["probe"].args.model_validate({"argv": ["x"], "check": ["y"]})
    with pytest.raises(ValidationError, match="check"):
        ShellAdapter.actions["run"].args.model_validate({"argv": ["x"], "check": []})


def test_missing_program_is_permanent() -> None:
    with pytest.raises(PermanentError, match="cannot start"):
        run(act(adapter(), "run", {"argv": ["no-such-program-xyz"]}))


def test_secrets_scrubbed_from_output_and_summary() -> None:
    secret = "hunter2-very-secret"
    code = f"import sys; print('token={secret}'); sys.stderr.write('{secret}'); sys.exit(1)"
    with pytest.raises(PermanentError) as info:
        run(act(adapter([secret]), "run", {"argv": [PY, "-c", code]}))
    assert secret not in str(info.value)
    result = run(act(adapter([secret]), "run", {"argv": [PY, "-c", code], "ok_codes": [1]}))
    assert secret not in result.summary + str(result.output)
    assert "token=***" in result.output["stdout"]


def test_output_truncated_to_head_and_tail() -> None:
    code = "print('A' * 5000 + 'B' * 5000 + 'C' * 5000)"
    result = run(act(adapter(), "run", {"argv": [PY, "-c", code], "max_output_bytes": 1000}))
    out = result.output["stdout"]
    assert out.startswith("A" * 500) and out.rstrip().endswith("C" * 400)
    assert "bytes omitted" in out and len(out) < 1200


def _spawn_group_script(tmp_path: Path) -> tuple[list[str], Path]:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 100 & echo $! >> {pids}; sleep 100"
    return ["sh", "-c", script], pids


def _read_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) == 2:
            return [int(p) for p in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError("child did not write its pids")


def _assert_all_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    assert all(gone(p) for p in pids), f"still running: {pids}"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    argv, pids_file = _spawn_group_script(tmp_path)
    started = time.monotonic()
    with pytest.raises(PermanentError, match=r"timed out after 0\.5s; process group killed"):
        run(act(adapter(), "run", {"argv": argv, "timeout": 0.5}))
    assert time.monotonic() - started < 5
    pids = _read_pids(pids_file)
    _assert_all_gone(pids)


def test_call_timeout_applies_and_can_be_declared_transient(tmp_path: Path) -> None:
    argv, pids_file = _spawn_group_script(tmp_path)
    with pytest.raises(TransientError, match="timed out"):
        run(act(adapter(), "run", {"argv": argv, "transient_on_timeout": True}, timeout=0.5))
    _assert_all_gone(_read_pids(pids_file))


def test_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    argv, pids_file = _spawn_group_script(tmp_path)

    async def go() -> None:
        a = adapter()
        task = asyncio.create_task(a.apply(make_call(ShellAdapter, "run", {"argv": argv})))
        while not pids_file.exists() or len(pids_file.read_text().split()) < 2:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(go())
    _assert_all_gone(_read_pids(pids_file))


def test_args_model_is_strict() -> None:
    from pydantic import ValidationError

    spec = ShellAdapter.actions["run"]
    for bad in ({"argv": []}, {"argv": "echo hi"}, {"argv": ["x"], "shell": True}):
        with pytest.raises(ValidationError):
            spec.args.model_validate(bad)
    assert spec.args.model_validate({"argv": ["x"], "timeout": "2m"}).timeout.total_seconds() == 120
