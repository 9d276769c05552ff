"""One data directory per user, found the same way by every command from any directory.

The lookup is ``--data-dir``, else ``CUTBOOK_DATA_DIR``, else the platform's user data
directory; ``CUTBOOK_JOURNAL_DIR`` moves only the journals. Journals left in an old
``./.cutbook`` are announced, never silently out of sight. The CLI cases run the real
``cutbook`` in fresh processes with a home and ``XDG_DATA_HOME`` of their own, so the
real user's files are never touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cutbook import paths
from cutbook.journal import Event, Journal
from e2e_support import CUTBOOK, TINY_RUNBOOK, Cutbook

# ------------------------------------------------------------------ the rule, in-process


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data directory chosen: a home of its own, no XDG or Windows variables."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("CUTBOOK_DATA_DIR", "CUTBOOK_JOURNAL_DIR", "XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.mark.parametrize("platform", ["linux", "freebsd14", "openbsd7"])
def test_linux_and_bsd_follow_xdg(
    bare: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    assert paths.default_data_dir(platform) == bare / ".local" / "share" / "cutbook"
    monkeypatch.setenv("XDG_DATA_HOME", str(bare / "xdg"))
    assert paths.default_data_dir(platform) == bare / "xdg" / "cutbook"
    # The XDG spec: a relative XDG_DATA_HOME is invalid and ignored, so the default
    # never depends on the working directory.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    assert paths.default_data_dir(platform) == bare / ".local" / "share" / "cutbook"


def test_macos_uses_application_support(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(bare / "xdg"))  # not a macOS convention
    expected = bare / "Library" / "Application Support" / "cutbook"
    assert paths.default_data_dir("darwin") == expected


def test_windows_uses_local_app_data(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.default_data_dir("win32") == bare / "AppData" / "Local" / "cutbook"
    monkeypatch.setenv("LOCALAPPDATA", str(bare / "Local"))
    assert paths.default_data_dir("win32") == bare / "Local" / "cutbook"


def test_the_default_is_this_platforms_and_absolute(bare: Path) -> None:
    assert paths.default_data_dir() == paths.default_data_dir(sys.platform)
    assert paths.default_data_dir().is_absolute()


def test_override_order(bare: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--data-dir`` > ``CUTBOOK_DATA_DIR`` > the platform default; journals follow
    the data directory unless ``CUTBOOK_JOURNAL_DIR`` moves them."""
    flag, env = tmp_path / "flag", tmp_path / "env"
    assert paths.data_dir() == paths.default_data_dir()
    assert paths.journal_dir() == paths.default_data_dir() / "journal"
    monkeypatch.setenv("CUTBOOK_DATA_DIR", str(env))
    assert paths.data_dir() == env
    assert paths.data_dir(flag) == flag
    assert paths.journal_dir(flag) == flag / "journal"
    assert paths.reports_dir() == env / "reports"
    monkeypatch.setenv("CUTBOOK_JOURNAL_DIR", str(tmp_path / "journals"))
    assert paths.journal_dir(flag) == tmp_path / "journals"
    assert paths.reports_dir(flag) == flag / "reports"


# ------------------------------------------------------------------ the rule, as the CLI runs it


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user who chose nothing: a home and XDG_DATA_HOME of its own."""
    drop = ("CUTBOOK_DATA_DIR", "CUTBOOK_JOURNAL_DIR", "XDG_DATA_HOME", "PREFECT_API_URL")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), COLUMNS="400", **extra)
    return env


def database_of(cwd: Path, env: dict[str, str], *args: str) -> Path:
    """The data directory ``cutbook server status`` resolves (it prints the database path)."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [CUTBOOK, "server", "status", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # nothing runs: exit 1, no trace
    line = next(x for x in done.stdout.splitlines() if x.startswith("database:"))
    return Path(line.split(":", 1)[1].strip()).parent.parent


def test_every_directory_finds_the_same_data_directory(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    home = Path(env["HOME"])
    one = database_of(tmp_path / "a", env)
    two = database_of(tmp_path / "b" / "deeper", env)
    assert one == two == home / ".local" / "share" / "cutbook"
    with_xdg = clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    assert database_of(tmp_path / "a", with_xdg) == tmp_path / "xdg" / "cutbook"


def test_the_cli_applies_the_override_order(tmp_path: Path) -> None:
    env = clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    chosen = clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"), CUTBOOK_DATA_DIR="/srv/env")
    assert database_of(tmp_path, chosen) == Path("/srv/env")
    assert database_of(tmp_path, chosen, "--data-dir", "/srv/flag") == Path("/srv/flag")
    assert database_of(tmp_path, env, "--data-dir", "/srv/flag") == Path("/srv/flag")


@pytest.mark.prefect
@pytest.mark.slow
def test_audit_list_from_one_directory_sees_a_run_made_from_another(
    cutbook: Cutbook, tmp_path: Path
) -> None:
    """The issue's case: a run started in one directory, audited from another."""
    env = clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    env["PREFECT_API_URL"] = cutbook.env["PREFECT_API_URL"]
    made_in, audited_from = tmp_path / "ops" / "checkout", tmp_path / "auditor"
    made_in.mkdir(parents=True)
    audited_from.mkdir()
    (made_in / "tiny.yaml").write_text(TINY_RUNBOOK, encoding="utf-8")
    ran = Cutbook(env=env, cwd=made_in).run(
        "run", "tiny.yaml", "--clock", "virtual", "--run-id", "tiny-from-b", timeout=180
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    journal = tmp_path / "xdg" / "cutbook" / "journal" / "tiny-from-b.jsonl"
    assert journal.is_file(), "the run journals into the user's data directory"
    assert not (made_in / ".cutbook").exists(), "nothing under the directory it ran from"
    auditor = Cutbook(env=env, cwd=audited_from)
    listed = auditor.run("audit", "list", check=True)
    assert "tiny-from-b" in listed.stdout and "succeeded" in listed.stdout
    verified = auditor.run("audit", "verify", "tiny-from-b")
    assert verified.returncode == 0, verified.stdout + verified.stderr


# ------------------------------------------------------------------ the old ./.cutbook


def old_journal(cwd: Path, run_id: str) -> Path:
    """A finished run journalled by the real writer into ``cwd/.cutbook/journal``."""
    folder = cwd / ".cutbook" / "journal"
    journal = Journal.create(folder, run_id)
    journal.append(Event.RUN_STARTED, runbook_name="old-night", timezone="UTC", clock="real")
    journal.append(Event.RUN_FINISHED, outcome="succeeded")
    journal.close()
    return folder / f"{run_id}.jsonl"


def audit_list(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUTBOOK, "audit", "list", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_old_journals_in_the_working_directory_are_announced_once(tmp_path: Path) -> None:
    old_journal(tmp_path, "old-run-1")
    env = clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg"))
    done = audit_list(tmp_path, env)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, done.stderr
    note = notes[0]
    assert str(tmp_path / ".cutbook") in note and str(tmp_path / "xdg" / "cutbook") in note
    assert "--data-dir .cutbook" in note and "CUTBOOK_DATA_DIR=" in note
    assert "1 journalled run" in note
    assert "old-run-1" not in done.stdout  # the new default does not hold it...
    kept = audit_list(tmp_path, env, "--data-dir", ".cutbook")  # ...and the advice works
    assert "old-run-1" in kept.stdout and "note:" not in kept.stderr
    chosen = audit_list(tmp_path, {**env, "CUTBOOK_DATA_DIR": str(tmp_path / ".cutbook")})
    assert "old-run-1" in chosen.stdout and "note:" not in chosen.stderr


def test_no_notice_without_old_journals(tmp_path: Path) -> None:
    (tmp_path / ".cutbook" / "journal").mkdir(parents=True)  # an empty one says nothing
    done = audit_list(tmp_path, clean_env(tmp_path, XDG_DATA_HOME=str(tmp_path / "xdg")))
    assert done.returncode == 0 and "note:" not in done.stderr, done.stderr


def test_the_notice_is_given_once_per_process_and_only_when_asked(
    bare: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Library callers hear nothing; the CLI's hook hears once however often it looks."""
    old_journal(tmp_path, "old-run-2")
    monkeypatch.chdir(tmp_path)
    heard: list[tuple[Path, Path]] = []
    paths.on_legacy_data_dir(None)
    paths.data_dir()
    paths.on_legacy_data_dir(lambda old, new: heard.append((old, new)))
    try:
        for _ in range(3):
            paths.journal_dir()
            paths.data_dir()
        assert heard == [(tmp_path / ".cutbook", paths.default_data_dir())]
        assert paths.legacy_journals(tmp_path) == 1
    finally:
        paths.on_legacy_data_dir(None)
