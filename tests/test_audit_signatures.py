"""``cutbook audit verify`` re-checks signed approvals from the journal alone.

Why real journals written by the real writer: a forged answer that the writer
itself accepted (a wrong signature, another runbook's hash) has an intact chain,
so only the signature check can catch it; an edited file must still be caught
by the chain first. Keys are real Ed25519 keys from ``cutbook.signing``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cutbook import audit, signing
from cutbook.audit.signatures import check_signatures, signature_status
from cutbook.journal import Event, Journal, read_records

CUTBOOK = str(Path(sys.executable).with_name("cutbook"))
RUN = "20250314-2300-sig1"
HMAC = b"h" * 32
SIGNED_AT = "2025-03-15T02:10:00+07:00"


@dataclass(frozen=True)
class Approver:
    name: str
    key: Ed25519PrivateKey
    public: str


def approver(name: str) -> Approver:
    pem, public = signing.new_key()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return Approver(name, key, public)


@pytest.fixture(scope="module")
def people() -> Iterator[dict[str, Approver]]:
    yield {name: approver(name) for name in ("ops-lead", "cio", "dba")}


def runbook_text(people: dict[str, Approver], *, keyed: tuple[str, ...] = ("ops-lead",)) -> str:
    """A runbook whose go-live gate must be signed; only ``keyed`` approvers list a key."""
    lines = ["apiVersion: cutbook/v1", "name: sig-night", "approvers:"]
    for name in people:
        lines.append(
            f'  {name}: {{key: "{people[name].public}"}}' if name in keyed else f"  {name}: {{}}"
        )
    lines += [
        "steps:",
        "  - id: freeze",
        "    approval: {approvers: [ops-lead, cio]}",
        "  - id: go-live",
        "    approval: {approvers: [ops-lead, cio], quorum: 2, signed: true}",
    ]
    return "\n".join(lines) + "\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def answer(
    who: Approver | None,
    by: str,
    step: str = "go-live",
    decision: str = "approve",
    *,
    runbook_sha256: str,
    sign_sha256: str | None = None,
    sign_decision: str | None = None,
    run_id: str = RUN,
) -> dict[str, Any]:
    """The fields of one gate.answered, signed by ``who`` (None: unsigned) as the engine would."""
    fields: dict[str, Any] = {
        "step": step,
        "kind": "gate",
        "by": by,
        "approved": decision == "approve",
        "decision": decision,
        "comment": "",
        "runbook_sha256": runbook_sha256,
        "signature": None,
        "signed_at": None,
        "key": None,
    }
    if who is not None:
        data = signing.payload(
            run_id=run_id,
            step=step,
            decision=sign_decision or decision,
            runbook_sha256=sign_sha256 or runbook_sha256,
            signed_at=SIGNED_AT,
        )
        fields.update(
            signature=signing.sign(who.key, data),
            signed_at=SIGNED_AT,
            key=signing.fingerprint(who.public),
        )
    return fields


def write_run(
    directory: Path,
    text: str | None,
    answers: list[dict[str, Any]],
    *,
    hmac_key: bytes | None = None,
    run_id: str = RUN,
) -> Path:
    """A finished run through the real writer: run.started with the runbook, then the answers."""
    journal = Journal.create(directory, run_id, hmac_key=hmac_key, fsync=False)
    started: dict[str, Any] = {"runbook_name": "sig-night", "plan": {"steps": []}}
    if text is not None:
        started.update(runbook_text=text, runbook_sha256=sha(text))
    journal.append(Event.RUN_STARTED, **started)
    for fields in answers:
        journal.append(
            Event.GATE_REQUESTED, step=fields["step"], kind="gate", approvers=["ops-lead", "cio"]
        )
        journal.append(Event.GATE_ANSWERED, **fields)
    journal.append(Event.RUN_FINISHED, outcome="succeeded", error=None)
    journal.close()
    return journal.path


def verify_cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUTBOOK, "audit", "verify", *args, "--journal-dir", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "NO_COLOR": "1"},
        timeout=60,
    )


def seqs(path: Path, event: str) -> list[int]:
    return [int(r["seq"]) for r in read_records(path) if r["event"] == event]


# ---------------------------------------------------------------- passing


def test_signed_answers_verify_and_verify_says_so(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people, keyed=("ops-lead", "cio"))
    digest = sha(text)
    path = write_run(
        tmp_path,
        text,
        [
            answer(people["ops-lead"], "ops-lead", runbook_sha256=digest),
            answer(people["cio"], "cio", runbook_sha256=digest),
            answer(None, "cio", "freeze", runbook_sha256=digest),  # an unsigned, unsigned step
        ],
        hmac_key=HMAC,
    )
    key_file = tmp_path / "hmac"
    key_file.write_bytes(HMAC)
    done = verify_cli(tmp_path, RUN, "--key-file", str(key_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{RUN}: OK: " in done.stdout
    assert "\n  signatures: 2 verified\n" in done.stdout
    report = audit.verify_signatures(tmp_path, RUN[:12])
    assert report.passed and [a.status for a in report.answers] == ["verified", "verified"]
    answered = seqs(path, "gate.answered")
    assert signature_status(read_records(path)) == {
        answered[0]: "verified",
        answered[1]: "verified",
    }
    assert report.answers[0].key == signing.fingerprint(people["ops-lead"].public)


def test_a_journal_without_signatures_says_none_and_passes(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    old_runbook = "apiVersion: cutbook/v1\nname: old\nsteps:\n  - id: go-live\n    approval: {}\n"
    write_run(tmp_path, old_runbook, [answer(None, "ops-lead", runbook_sha256=sha(old_runbook))])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 0, done.stdout
    assert "\n  signatures: none\n" in done.stdout
    write_run(tmp_path / "older", None, [])  # no runbook text at all: an older version
    assert verify_cli(tmp_path / "older", RUN).stdout.endswith("signatures: none\n")


def test_unknown_key_is_reported_but_does_not_fail(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people)  # cio has no key in this runbook
    path = write_run(tmp_path, text, [answer(people["cio"], "cio", runbook_sha256=sha(text))])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 0, done.stdout
    assert "signatures: 1 unknown key" in done.stdout
    assert "the runbook lists no key for 'cio'" in done.stdout
    assert signature_status(read_records(path)) == {seqs(path, "gate.answered")[0]: "unknown key"}


def test_an_auto_approval_of_a_signed_step_is_not_a_missing_signature(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people)
    auto = answer(None, "auto", runbook_sha256=sha(text)) | {"auto": True}
    rejected = answer(None, "timeout", decision="reject", runbook_sha256=sha(text))
    write_run(tmp_path, text, [auto, rejected])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 0 and "signatures: none" in done.stdout


# ---------------------------------------------------------------- failing


def test_a_wrong_signature_written_through_the_writer_fails_verify(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    """The chain is intact (the writer wrote it): only the signature check can tell."""
    text = runbook_text(people, keyed=("ops-lead", "cio"))
    digest = sha(text)
    forged = answer(people["ops-lead"], "ops-lead", runbook_sha256=digest, sign_decision="reject")
    wrong_key = answer(people["dba"], "cio", runbook_sha256=digest)  # dba's key, cio's name
    path = write_run(tmp_path, text, [forged, wrong_key])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 1, done.stdout
    assert "records verify, ends with run.finished" in done.stdout  # the chain itself is fine
    assert f"{RUN}: FAILED: signatures: 2 bad signature" in done.stdout
    first, second = seqs(path, "gate.answered")
    assert (
        f"  seq {first} go-live approve by ops-lead: bad signature: does not verify with "
        f"ops-lead's key {signing.fingerprint(people['ops-lead'].public)}" in done.stdout
    )
    assert f"  seq {second} go-live approve by cio: bad signature" in done.stdout


@pytest.mark.parametrize(
    "signature", ["not base64!", "", "QUJD", 88 * "A", 12345, ["a", "b"]], ids=repr
)
def test_a_malformed_signature_is_a_bad_signature_not_a_crash(
    tmp_path: Path, people: dict[str, Approver], signature: object
) -> None:
    text = runbook_text(people)
    fields = answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(text))
    write_run(tmp_path, text, [fields | {"signature": signature}])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "signatures: 1 bad signature" in done.stdout


def test_an_answer_bound_to_another_runbook_fails(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    """Validly signed, but for another runbook's hash: a replayed approval."""
    text = runbook_text(people)
    other = "0" * 64
    fields = answer(people["ops-lead"], "ops-lead", runbook_sha256=other)
    path = write_run(tmp_path, text, [fields])
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 1, done.stdout
    assert "signatures: 1 other runbook" in done.stdout
    assert f"signed for runbook sha256 {other}, the run's is {sha(text)}" in done.stdout
    assert signature_status(read_records(path)) == {seqs(path, "gate.answered")[0]: "other runbook"}


def test_an_unsigned_approval_of_a_signed_step_fails(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people)
    path = write_run(tmp_path, text, [answer(None, "cio", runbook_sha256=sha(text))])
    report = check_signatures(read_records(path))
    assert not report.passed and [u.by for u in report.unsigned] == ["cio"]
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 1
    assert "1 unsigned approval(s) of signed steps" in done.stdout
    assert "go-live approved by cio without a signature" in done.stdout


def test_an_edited_journal_fails_on_its_chain_first(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    """Editing a signed answer in the file breaks the hash chain at that line, as ever."""
    text = runbook_text(people)
    path = write_run(
        tmp_path,
        text,
        [answer(people["ops-lead"], "ops-lead", decision="reject", runbook_sha256=sha(text))],
    )
    assert verify_cli(tmp_path, RUN).returncode == 0
    lines = path.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if b'"event":"gate.answered"' in line)
    lines[number] = lines[number].replace(b'"decision":"reject"', b'"decision":"approve"')
    path.write_bytes(b"".join(lines))
    done = verify_cli(tmp_path, RUN)
    assert done.returncode == 1
    assert f"line {number + 1} (seq {number})" in done.stdout
    assert "edited" in done.stdout
    assert "signatures: 1 bad signature" in done.stdout  # and the signature no longer fits


def test_verify_all_checks_every_runs_signatures(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people)
    good = answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(text), run_id="run-good")
    bad = answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(text), run_id="run-good")
    write_run(tmp_path, text, [good], run_id="run-good")
    write_run(tmp_path, text, [bad], run_id="run-bad")  # signed for another run id
    done = verify_cli(tmp_path, "--all")
    assert done.returncode == 1
    assert "run-good: OK: " in done.stdout and "  signatures: 1 verified" in done.stdout
    assert "run-bad: FAILED: signatures: 1 bad signature" in done.stdout


# ---------------------------------------------------------------- tolerant reading


def test_a_runbook_that_cannot_be_read_leaves_keys_unknown(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    broken = "approvers: {ops-lead: [unclosed\n"
    path = write_run(
        tmp_path, broken, [answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(broken))]
    )
    report = check_signatures(read_records(path))
    assert [a.status for a in report.answers] == ["unknown key"] and report.passed
    assert any("cannot be read" in note for note in report.notes)


def test_a_malformed_key_in_the_runbook_is_named(
    tmp_path: Path, people: dict[str, Approver]
) -> None:
    text = runbook_text(people).replace(people["ops-lead"].public, "ed25519:AAAA")
    path = write_run(
        tmp_path, text, [answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(text))]
    )
    (found,) = check_signatures(read_records(path)).answers
    assert found.status == "unknown key" and "3 bytes, an Ed25519 key has 32" in found.detail


def test_the_report_has_a_json_shape(tmp_path: Path, people: dict[str, Approver]) -> None:
    text = runbook_text(people)
    path = write_run(
        tmp_path, text, [answer(people["ops-lead"], "ops-lead", runbook_sha256=sha(text))]
    )
    data = json.loads(json.dumps(check_signatures(read_records(path)).to_dict()))
    assert data["passed"] is True and data["counts"] == {"verified": 1}
    assert data["answers"][0]["by"] == "ops-lead" and data["unsigned"] == []
