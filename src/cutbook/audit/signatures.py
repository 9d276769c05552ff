"""Re-checking signed answers from a journal alone, long after the night.

Why apart from the chain check: the hash chain proves the file was not edited,
not who wrote it; anyone who can write the file can write a consistent false
chain. A signed answer is checked against the public key the runbook (journalled
verbatim in run.started) lists for its approver, so a forged approval needs that
approver's private key, which never sits on the cutover host.

Every answer with a signature gets one status:

- ``verified``: the approver's key signed exactly this run, step, decision,
  runbook hash and time;
- ``bad signature``: it does not verify (forged, altered, or the wrong key);
- ``other runbook``: it verifies, or could not be checked, but names another
  runbook hash than the run's: it was made for another runbook;
- ``unknown key``: the runbook lists no usable key for the approver, so it
  cannot be checked (not a failure: nothing says it is false).

Also listed: approvals without a signature of a step whose ``approval.signed`` is
true. The engine refuses those, so one found here means the journal was rewritten.
Reading is tolerant: journals from versions without approvers have no keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cutbook import signing
from cutbook.errors import RunbookLoadError
from cutbook.journal.events import Event
from cutbook.yamlsafe import load_text

Status = Literal["verified", "bad signature", "unknown key", "other runbook"]
FAILING: Final[frozenset[str]] = frozenset({"bad signature", "other runbook"})
"""Statuses that fail ``cutbook audit verify``: evidence of a false or misplaced answer."""

_STARTED: Final = Event.RUN_STARTED.value
_ANSWERED: Final = Event.GATE_ANSWERED.value
_APPROVAL_KINDS: Final = frozenset({"gate", "manual"})


@dataclass(frozen=True)
class SignedAnswer:
    """One signed gate.answered and what checking it found."""

    seq: int
    step: str
    by: str
    decision: str
    status: Status
    key: str | None  # fingerprint of the runbook's key it was checked with
    detail: str  # one line for people: why this status

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "step": self.step,
            "by": self.by,
            "decision": self.decision,
            "status": self.status,
            "key": self.key,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class UnsignedApproval:
    """An approval of a step the runbook says must be signed, carrying no signature."""

    seq: int
    step: str
    by: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "step": self.step, "by": self.by}


@dataclass
class SignatureReport:
    """Every signed answer of one run, and signed steps approved without a signature."""

    answers: list[SignedAnswer] = field(default_factory=list)
    unsigned: list[UnsignedApproval] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why keys could not be read, if so

    @property
    def passed(self) -> bool:
        """False for a bad signature, another runbook's, or a signed step approved unsigned."""
        return not self.unsigned and not any(a.status in FAILING for a in self.answers)

    @property
    def status(self) -> dict[int, str]:
        """Each signed answer's status by the record's ``seq``, for the report."""
        return {a.seq: a.status for a in self.answers}

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for answer in self.answers:
            found[answer.status] = found.get(answer.status, 0) + 1
        return found

    def lines(self) -> list[str]:
        """``signatures: N verified``, or a summary and then each problem on its own line."""
        if not self.answers and not self.unsigned:
            return ["signatures: none", *(f"  note: {n}" for n in self.notes)]
        order = ("verified", "bad signature", "other runbook", "unknown key")
        counts = self.counts()
        parts = [f"{counts[s]} {s}" for s in order if counts.get(s)]
        if self.unsigned:
            parts.append(f"{len(self.unsigned)} unsigned approval(s) of signed steps")
        out = [f"signatures: {', '.join(parts)}"]
        for a in self.answers:
            if a.status != "verified":
                out.append(f"  seq {a.seq} {a.step} {a.decision} by {a.by}: {a.status}: {a.detail}")
        for u in self.unsigned:
            out.append(
                f"  seq {u.seq} {u.step} approved by {u.by} without a signature, but the "
                "runbook says approval.signed: the engine refuses that; the journal was rewritten"
            )
        out.extend(f"  note: {n}" for n in self.notes)
        return out

    def describe(self) -> str:
        return "\n".join(self.lines())

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "counts": self.counts(),
            "answers": [a.to_dict() for a in self.answers],
            "unsigned": [u.to_dict() for u in self.unsigned],
            "notes": list(self.notes),
        }


@dataclass
class _Runbook:
    """What the journalled runbook says about signing: keys by approver, signed steps."""

    keys: dict[str, str] = field(default_factory=dict)  # approver -> public key text
    bad_keys: dict[str, str] = field(default_factory=dict)  # approver -> why unusable
    signed_steps: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _read_runbook(started: Mapping[str, Any] | None) -> _Runbook:
    """The approvers' keys and signed steps of the runbook text that ran; never raises."""
    found = _Runbook()
    if started is None:
        found.notes.append("no run.started record: no runbook to take keys from")
        return found
    text = started.get("runbook_text")
    if not isinstance(text, str):
        found.notes.append("run.started holds no runbook text: no keys to check with")
        return found
    try:
        data = load_text(text, "runbook_text").data
    except RunbookLoadError as exc:
        found.notes.append(f"the journalled runbook cannot be read: {exc}")
        return found
    if not isinstance(data, dict):
        return found
    approvers = data.get("approvers")
    if isinstance(approvers, dict):
        for name, spec in approvers.items():
            key = spec.get("key") if isinstance(spec, dict) else None
            if key is None:
                continue
            try:
                signing.parse_public(key)
            except signing.SignatureError as exc:
                found.bad_keys[str(name)] = str(exc)
            else:
                found.keys[str(name)] = key
    steps = data.get("steps")
    for step in steps if isinstance(steps, list) else []:
        approval = step.get("approval") if isinstance(step, dict) else None
        if isinstance(approval, dict) and approval.get("signed") is True:
            found.signed_steps.add(str(step.get("id")))
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check(rec: Mapping[str, Any], runbook: _Runbook, run_sha256: str | None) -> SignedAnswer:
    """One signed answer's status: the signature first, then what it is bound to."""
    by, step, decision = _text(rec.get("by")), _text(rec.get("step")), _text(rec.get("decision"))
    bound = rec.get("runbook_sha256")
    elsewhere = run_sha256 is not None and bound != run_sha256
    where = f"signed for runbook sha256 {bound or '(none)'}, the run's is {run_sha256}"
    public = runbook.keys.get(by)
    if public is None:
        why = runbook.bad_keys.get(by) or f"the runbook lists no key for {by!r}"
        if elsewhere:
            return SignedAnswer(_seq(rec), step, by, decision, "other runbook", None, where)
        return SignedAnswer(_seq(rec), step, by, decision, "unknown key", None, why)
    print_ = signing.fingerprint(public)
    data = signing.payload(
        run_id=_text(rec.get("run_id")),
        step=step,
        decision=decision,
        runbook_sha256=_text(bound),
        signed_at=_text(rec.get("signed_at")),
    )
    if not signing.verify(public, data, _text(rec.get("signature"))):
        why = f"does not verify with {by}'s key {print_}"
        return SignedAnswer(_seq(rec), step, by, decision, "bad signature", print_, why)
    if elsewhere:
        return SignedAnswer(_seq(rec), step, by, decision, "other runbook", print_, where)
    named = rec.get("key")
    detail = f"key {print_}"
    if named is not None and named != print_:
        detail += f" (the record names {named})"
    return SignedAnswer(_seq(rec), step, by, decision, "verified", print_, detail)


def _seq(rec: Mapping[str, Any]) -> int:
    seq = rec.get("seq")
    return seq if isinstance(seq, int) else -1


def check_signatures(records: Iterable[Mapping[str, Any]]) -> SignatureReport:
    """Check every signed answer of a run against the keys its own runbook lists.

    ``records`` as :func:`cutbook.journal.read_records` yields them. Never raises on
    what a journal holds: everything found goes into the report.
    """
    report = SignatureReport()
    started: Mapping[str, Any] | None = None
    answers: list[Mapping[str, Any]] = []
    for rec in records:
        event = rec.get("event")
        if event == _STARTED and started is None:
            started = rec
        elif event == _ANSWERED:
            answers.append(rec)
    runbook = _read_runbook(started)
    run_sha = started.get("runbook_sha256") if started is not None else None
    run_sha256 = run_sha if isinstance(run_sha, str) else None
    for rec in answers:
        if rec.get("signature") is not None:
            report.answers.append(_check(rec, runbook, run_sha256))
        elif _unsigned_approval(rec, runbook):
            report.unsigned.append(
                UnsignedApproval(_seq(rec), _text(rec.get("step")), _text(rec.get("by")))
            )
    if report.answers or report.unsigned:
        report.notes.extend(runbook.notes)
    return report


def _unsigned_approval(rec: Mapping[str, Any], runbook: _Runbook) -> bool:
    """A person's approval of a step that must be signed (automatic answers cannot sign)."""
    if rec.get("step") not in runbook.signed_steps or rec.get("auto") is True:
        return False
    if rec.get("kind", "gate") not in _APPROVAL_KINDS:
        return False
    return rec.get("approved") is True or rec.get("decision") == "approve"


def signature_status(records: Iterable[Mapping[str, Any]]) -> dict[int, str]:
    """Each signed answer's status by ``seq``: what the report shows beside an approval."""
    return check_signatures(records).status


__all__ = [
    "FAILING",
    "SignatureReport",
    "SignedAnswer",
    "Status",
    "UnsignedApproval",
    "check_signatures",
    "signature_status",
]
