"""The manual adapter with the test confirmation helper."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from cutbook.errors import PermanentError
from cutbook.testing import AdapterContract, auto_confirm, make_call, make_context, run
from cutbook_adapters.manual import ManualAdapter, ManualConfig

ARGS = {
    "title": "Call the treasury",
    "instructions": "Phone the State Treasury duty desk and confirm the account switch.",
    "checklist": ["Spoke to the duty officer", "Reference number noted"],
}


def go(args: Mapping[str, Any], **kw: Any) -> Any:
    a = ManualAdapter(ManualConfig(), make_context(kw.pop("secrets", ())))
    phase = kw.pop("phase", "apply")
    return run(getattr(a, phase)(make_call(ManualAdapter, "confirm", args, phase=phase, **kw)))


class TestManualContract(AdapterContract):
    adapter_class = ManualAdapter
    apply_is_safe = True

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "confirm", ARGS
        yield "confirm", {"instructions": "Tick the box", "evidence_required": True}


def test_apply_asks_and_records_the_answer() -> None:
    confirm = auto_confirm(by="lan", comment="ref KB-7731")
    result = go(ARGS, confirm=confirm)
    assert result.changed and result.output["by"] == "lan"
    assert result.output["comment"] == "ref KB-7731" and result.output["at"]
    [(title, text)] = confirm.asked  # type: ignore[attr-defined]
    assert title == "Call the treasury"
    assert "duty desk" in text and "- [ ] Reference number noted" in text


def test_title_defaults_to_step_id() -> None:
    confirm = auto_confirm()
    go({"instructions": "x"}, confirm=confirm, step_id="call-bank")
    assert confirm.asked[0][0] == "call-bank"  # type: ignore[attr-defined]


def test_refusal_and_missing_evidence_are_permanent() -> None:
    with pytest.raises(PermanentError, match="operator minh declined: bank closed"):
        go(ARGS, confirm=auto_confirm(by="minh", approved=False, comment="bank closed"))
    with pytest.raises(PermanentError, match="without the required evidence"):
        go({**ARGS, "evidence_required": True}, confirm=auto_confirm(comment=""))


def test_no_operator_channel_is_permanent() -> None:
    with pytest.raises(PermanentError, match="no operator channel"):
        go(ARGS)


def test_check_asks_nobody() -> None:
    confirm = auto_confirm()
    result = go(ARGS, confirm=confirm, phase="check")
    assert not result.changed and result.summary == (
        "would ask an operator: Call the treasury: Phone the State Treasury duty desk and "
        "confirm the account switch. — 2-item checklist"
    )
    assert confirm.asked == []  # type: ignore[attr-defined]


def test_check_shortens_long_instructions_and_names_required_evidence() -> None:
    text = "Phone the bank.\nThen write down the reference number they give you."
    result = go({"instructions": text, "evidence_required": True}, phase="check", step_id="bank")
    assert result.summary == "would ask an operator: bank: Phone the bank.… — evidence required"
    long = "x" * 200
    summary = go({"instructions": long}, phase="check", step_id="s").summary
    assert summary.endswith("x" * 80 + "…") and "x" * 81 not in summary


def test_comment_secrets_scrubbed() -> None:
    result = go(ARGS, confirm=auto_confirm(comment="password is pw-123456"), secrets=["pw-123456"])
    assert "pw-123456" not in result.summary + str(result.output)
