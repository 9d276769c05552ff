"""``cutbook schedule`` tells the channels subscribed to ``run-scheduled``, and never fails
because of them (the run does not exist yet, so nothing is journalled)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cutbook.engine.launch import tell_scheduled
from cutbook.engine.prefect.deploy import ScheduledCutover
from cutbook.validation import LoadedRunbook, load
from test_notify_milestones import Endpoint, closed_port, endpoint

__all__ = ["endpoint"]

TOKEN = "scheduled-token-123"


def _loaded(tmp_path: Path, channels: str) -> LoadedRunbook:
    text = f"""
apiVersion: cutbook/v1
name: notify-scheduled
timezone: Asia/Ho_Chi_Minh
window: {{start: "2025-03-14T23:00", end: "2025-03-15T05:00"}}
secrets: [NOTIFY_TOKEN]
notify:
{channels}
steps:
  - id: nothing
"""
    path = tmp_path / "rb.yaml"
    path.write_text(text, encoding="utf-8")
    return load(path)


def _made() -> ScheduledCutover:
    return ScheduledCutover(
        id="abc123",
        runbook="notify-scheduled",
        at=None,
        sha256="0" * 64,
        state="Scheduled",
        pool="cutbook",
        url=None,
        run_id="notify-scheduled-x",
    )


AT = datetime(2025, 3, 21, 16, 0, tzinfo=UTC)  # 23:00 in Ho Chi Minh City


def test_subscribed_channels_are_told_and_others_not(
    tmp_path: Path, endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    url = f'["json://127.0.0.1:{endpoint.port}/hook/{{{{ secrets.NOTIFY_TOKEN }}}}"]'
    loaded = _loaded(
        tmp_path,
        f"  - {{name: ops, urls: {url}, on: [run-scheduled]}}\n"
        f"  - {{name: quiet, urls: {url}, on: [run-started]}}",
    )
    told = tell_scheduled(loaded, _made(), AT)
    assert told == [("ops", None)]
    assert endpoint.milestones() == ["run-scheduled"]
    (path, body) = endpoint.received[0]
    assert path == f"/hook/{TOKEN}"
    assert "Fri 21 Mar 23:00 – 05:00" in body["title"] and "notify-scheduled-x" in body["message"]


def test_a_dead_channel_is_reported_scrubbed_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_TOKEN", TOKEN)
    url = f'["json://127.0.0.1:{closed_port()}/hook/{{{{ secrets.NOTIFY_TOKEN }}}}"]'
    loaded = _loaded(tmp_path, f"  - {{name: ops, urls: {url}, on: [run-scheduled]}}")
    [(label, error)] = tell_scheduled(loaded, _made(), AT)
    assert label == "ops" and error and TOKEN not in error


def test_no_subscriber_means_nothing_is_sent(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, '  - {name: ops, urls: ["json://127.0.0.1:1/x"], on: [run-started]}')
    assert tell_scheduled(loaded, _made(), AT) == []
