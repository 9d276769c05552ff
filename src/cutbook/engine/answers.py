"""Which answers count: the rules an auditor will hold every go/no-go to.

An answer counts only if it names a person, comes from someone allowed to
answer (a listed approver, not the run's executor where duties are separated,
not a second "go" from someone already counted toward a quorum), approves the
runbook this run runs (its sha256), and, where a key is involved, carries a
signature that verifies. Everything else is refused with a reason that is
journalled and shown to the people waiting.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cutbook import signing
from cutbook.engine.state import Answer, Question, RunState

RESERVED_NAMES = frozenset({"timeout", "default", "unknown", "nobody"})
"""Names the engine itself writes as ``by``: a person may not answer as one."""
SIGNATURE_SKEW = timedelta(minutes=5)
"""How far before the question a signature's time may be (clocks differ a little)."""


def approver_key(run: RunState, name: str) -> str | None:
    """The public key the runbook lists for ``name``, if any."""
    approver = run.rb.approvers.get(name)
    return approver.key if approver is not None else None


def decision_of(answer: Answer) -> str:
    """The decision as journalled and signed: approve/reject, or a failure's decision."""
    return answer.decision or ("approve" if answer.approved else "reject")


def refusal(
    run: RunState,
    q: Question,
    answer: Answer,
    forbidden: tuple[str, ...],
    counted: list[Answer],
) -> str | None:
    """Why ``answer`` may not count for ``q``, or None when it may."""
    name = answer.by.strip()
    if answer.problem:
        return answer.problem
    if not name or name.lower() in RESERVED_NAMES:
        return "no name given: an answer must say who gives it (approver, or --by NAME)"
    if name in forbidden:
        return f"{name} runs this cutover and this gate separates duties: someone else must answer"
    if q.approvers and name not in q.approvers:
        return f"not an approver ({', '.join(q.approvers)})"
    if answer.approved and any(a.by == name for a in counted):
        return f"{name} has already said go: a quorum of {q.quorum} needs distinct approvers"
    sha = answer.runbook_sha256
    if sha is not None and sha != q.runbook_sha256:
        return (
            f"it approves another runbook (sha256 {sha[:12]}…); this run's is "
            f"{q.runbook_sha256[:12]}…"
        )
    return _signature_problem(run, q, answer, name)


def _signature_problem(run: RunState, q: Question, answer: Answer, name: str) -> str | None:
    command = f"cutbook approve {run.opts.run_id} {q.step_id} --by {name} --key FILE"
    if not answer.signature:
        if q.signed:
            return f"this gate takes only signed answers (the Prefect UI cannot sign): {command}"
        return None
    key = approver_key(run, name)
    if key is None:
        return f"signed, but the runbook lists no key for {name} (approvers: {name}: {{key: ...}})"
    if answer.runbook_sha256 is None or answer.signed_at is None:
        return "signed, but without the runbook sha256 and time it signs"
    data = signing.payload(
        run_id=run.opts.run_id,
        step=q.step_id,
        decision=decision_of(answer),
        runbook_sha256=answer.runbook_sha256,
        signed_at=answer.signed_at,
    )
    if not signing.verify(key, data, answer.signature):
        return f"the signature does not verify with {name}'s key ({signing.fingerprint(key)})"
    if run.clock.kind == "real" and run.waiting is not None:
        try:
            when = datetime.fromisoformat(answer.signed_at)
        except ValueError:
            return f"signed at {answer.signed_at!r}, which is not a time"
        if when.tzinfo is None or when < run.waiting.since - SIGNATURE_SKEW:
            return "signed before this question was asked: an old signature cannot be reused"
    return None
