"""Validation of ``notify:`` channels and step milestones: located, with did-you-mean."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutbook.errors import RunbookInvalid
from cutbook.validation import load

HEAD = """\
apiVersion: cutbook/v1
name: notify-checks
timezone: Asia/Ho_Chi_Minh
window: {start: "2025-03-14T22:30", end: "05:00"}
vars: {hook_host: hooks.example.org}
secrets: [OPS_WEBHOOK_URL]
"""

STEPS = """\
steps:
  - id: stop-intake
    milestone: intake-stopped
  - id: reopen-intake
    depends_on: [stop-intake]
    milestone: intake-reopened
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "rb.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RunbookInvalid) as info:
        load(path, display="rb.yaml")
    return [d.render() for d in info.value.diagnostics]


def warnings(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "rb.yaml"
    path.write_text(text, encoding="utf-8")
    return [w.render() for w in load(path, display="rb.yaml").warnings]


def test_a_good_channel_validates_without_warnings(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
notify:
  - name: ops-channel
    urls: ["{{ secrets.OPS_WEBHOOK_URL }}", "json://{{ vars.hook_host }}/cutover"]
    on: [run-scheduled, run-started, intake-stopped, gate-waiting, step-failed,
         rollback-started, intake-reopened, run-finished, guard-alarm]
"""
        + STEPS
    )
    assert warnings(tmp_path, text) == []


def test_an_unknown_milestone_is_located_with_a_suggestion(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
notify:
  - name: ops-channel
    urls: ["{{ secrets.OPS_WEBHOOK_URL }}"]
    on: [run-started, intake-stoped, step-faild]
"""
        + STEPS
    )
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert found[0].startswith(
        "rb.yaml:10:23: channel 'ops-channel': unknown milestone 'intake-stoped' "
        "(did you mean 'intake-stopped'?)"
    )
    assert found[1].startswith(
        "rb.yaml:10:38: channel 'ops-channel': unknown milestone 'step-faild' "
        "(did you mean 'step-failed'?)"
    )


def test_a_custom_step_milestone_can_be_heard_by_its_name(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
notify:
  - urls: ["{{ secrets.OPS_WEBHOOK_URL }}"]
    on: [certificates-reissued]
steps:
  - id: reissue
    milestone: certificates-reissued
"""
    )
    assert warnings(tmp_path, text) == []


def test_a_channel_needs_urls(tmp_path: Path) -> None:
    text = HEAD + "notify:\n  - name: ops\n    urls: []\n    on: [run-started]\n" + STEPS
    assert problems(tmp_path, text) == [
        "rb.yaml:8:5: channel 'ops' has no urls; give at least one apprise URL "
        "(json://host/path, mailto://..., or a secret: '{{ secrets.OPS_WEBHOOK_URL }}')"
    ]


def test_url_templates_may_use_only_vars_and_secrets(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
notify:
  - urls: ["json://x/{{ steps['stop-intake'].output.id }}", "{{ secrets.OPS_WEBHOOK_ULR }}",
           "json://{{ vars.hook_hots }}/x"]
    on: [run-started]
"""
        + STEPS
    )
    found = problems(tmp_path, text)
    assert found[0] == (
        "rb.yaml:8:12: channel number 1: a URL may use only vars and secrets, not 'steps'; "
        "it is set up before any step runs"
    )
    assert found[1] == (
        "rb.yaml:8:61: secret 'OPS_WEBHOOK_ULR' is not declared under secrets: "
        "(did you mean 'OPS_WEBHOOK_URL'?)"
    )
    assert found[2] == (
        "rb.yaml:9:12: undefined variable vars.hook_hots (did you mean 'hook_host'?)"
    )


def test_a_step_milestone_must_be_lowercase_dashed_and_not_a_run_milestone(
    tmp_path: Path,
) -> None:
    text = (
        HEAD
        + """\
steps:
  - id: stop-intake
    milestone: Intake_Stopped
  - id: start
    milestone: run-started
"""
    )
    assert problems(tmp_path, text) == [
        "rb.yaml:9:16: step 'stop-intake': milestone 'Intake_Stopped' must be lowercase "
        "letters and digits, words joined by single dashes (intake-stopped)",
        "rb.yaml:11:16: step 'start': milestone 'run-started' is announced by the run itself; "
        "a step marks intake-stopped or intake-reopened, or a name of its own",
    ]


def test_hearing_an_intake_milestone_no_step_marks_is_a_warning(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
notify:
  - name: ops
    urls: ["{{ secrets.OPS_WEBHOOK_URL }}"]
    on: [intake-stopped, run-finished]
steps:
  - id: stop-intake
    milestone: intake-stoped
"""
    )
    assert warnings(tmp_path, text) == [
        "rb.yaml:13:16: warning: step 'stop-intake' marks milestone 'intake-stoped', which no "
        "channel hears (did you mean 'intake-stopped'?)",
        "rb.yaml:10:10: warning: channel 'ops' hears 'intake-stopped', but no step marks it; "
        "add milestone: intake-stopped to the step that does it",
    ]


def test_unknown_keys_in_a_channel_are_shape_errors(tmp_path: Path) -> None:
    text = HEAD + "notify:\n  - urls: [json://x/y]\n    onn: [run-started]\n" + STEPS
    found = problems(tmp_path, text)
    assert len(found) == 1 and "onn" in found[0] and "rb.yaml:9:5" in found[0]
