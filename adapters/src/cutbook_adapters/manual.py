"""The ``manual`` adapter: a step a person performs and then confirms.

Some cutover work has no API (a phone call to the bank, a form in a vendor
portal). The step still belongs in the plan, with its time, owner and
evidence, so the journal shows who did it and when.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import BaseModel, Field

from cutbook import ActionSpec, Args, Call, PermanentError, Result, TargetConfig
from cutbook_adapters._common import ScrubbingAdapter, one_line

INSTRUCTIONS_SHOWN = 80
"""Characters of the instructions' first line a pre-flight shows."""


class ManualConfig(TargetConfig):
    """A ``manual`` target takes no options; it may name a team in the runbook only."""


class ConfirmArgs(Args):
    title: str | None = Field(
        None,
        description="Short prompt; defaults to the step id",
        examples=["Switch the border gateway"],
    )
    instructions: str = Field(
        min_length=1,
        description="What the operator must do",
        examples=["Move the gateway to the new VLAN, then confirm with the change ticket"],
    )
    checklist: list[str] = Field(
        default_factory=list,
        description="Items to tick off",
        examples=[["Cable moved", "Link light green"]],
    )
    evidence_required: bool = Field(
        False,
        description="Refuse a confirmation without a comment (ticket, reference)",
        examples=[True],
    )


class ManualAdapter(ScrubbingAdapter):
    """Asks an operator through the engine's confirmation channel."""

    name: ClassVar[str] = "manual"
    Config: ClassVar[type[BaseModel]] = ManualConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "confirm": ActionSpec(
            args=ConfirmArgs,
            description="Wait for an operator to do something by hand and confirm it",
            # A confirmation is evidence, not a change to any system: nothing to undo.
            mutating=False,
            reversible=False,
        ),
    }

    def _args(self, call: Call) -> ConfirmArgs:
        if call.action != "confirm" or not isinstance(call.args, ConfirmArgs):
            raise PermanentError(f"manual: no action {call.action!r} with these args")
        return call.args

    @staticmethod
    def _instructions(args: ConfirmArgs) -> str:
        parts = [args.instructions.strip()]
        if args.checklist:
            parts.append("\n".join(f"- [ ] {item}" for item in args.checklist))
        if args.evidence_required:
            parts.append("Evidence required: put a ticket, reference or note in the comment.")
        return "\n\n".join(parts)

    async def check(self, call: Call) -> Result:
        """Asks nobody; says what a person will be asked, so the lead can see it is right."""
        args = self._args(call)
        title = args.title or call.step_id
        lines = args.instructions.strip().splitlines()
        first = lines[0].strip() if lines else ""
        if len(first) > INSTRUCTIONS_SHOWN or len(lines) > 1:
            first = first[:INSTRUCTIONS_SHOWN].rstrip() + "…"
        parts = [f"would ask an operator: {title}: {first}"]
        if args.checklist:
            parts.append(f"{len(args.checklist)}-item checklist")
        if args.evidence_required:
            parts.append("evidence required")
        return Result(changed=False, summary=one_line(self.scrub(" — ".join(parts))))

    async def apply(self, call: Call) -> Result:
        args = self._args(call)
        if call.confirm is None:
            raise PermanentError(
                "manual: this run has no operator channel (call.confirm is missing); "
                "run it where someone can answer"
            )
        title = args.title or call.step_id
        call.log(f"manual: waiting for an operator: {title}")
        answer = await call.confirm(title, self._instructions(args))
        by = self.scrub(answer.by)
        comment = self.scrub(answer.comment or "")
        if not answer.approved:
            raise PermanentError(
                one_line(f"operator {by} declined: {comment or 'no reason given'}")
            )
        if args.evidence_required and not comment.strip():
            raise PermanentError(f"operator {by} confirmed without the required evidence")
        output = {"by": by, "comment": comment, "at": answer.at.isoformat() if answer.at else None}
        summary = f"confirmed by {by}" + (f": {comment}" if comment else "")
        return Result(changed=True, summary=one_line(summary), output=output)

    async def verify(self, call: Call) -> Result:
        by = call.prior.output.get("by") if call.prior else None
        return Result(ok=True, summary=f"confirmed by {by}" if by else "nothing to verify")
