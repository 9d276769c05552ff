"""Checking a journal: the chain, HMACs written into it, anchors kept outside it,
and the runbook it says it ran.

Why apart from the writer: an auditor verifies journals long after the night,
maybe with a later cutbook; this module needs nothing but the record format.
Any change shows *at its line*: each record's ``hash`` covers its canonical
JSON, and its ``prev`` is the hash of the record before. An anchor (the head
seq and hash, kept in a ticket or e-mail) also catches records cut off the end.

The verdict (``passed``, exit 0) is stricter than an intact chain (``ok``): the
journal must also end with its one run.finished (nothing after it, and with a
key, a head_hmac on it), unless a live process holds the run's lease
(:func:`cutbook.journal.lease.holder`: a lock file nobody holds is a crashed run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac as hmac_mod
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cutbook.errors import ChainBroken, JournalError
from cutbook.journal.events import Event
from cutbook.journal.lease import holder
from cutbook.journal.records import (
    GENESIS,
    HASH_MARK,
    TAIL_LEN,
    check_line,
    classify_fragment,
    head_hmac,
)

_RUN_STARTED: Final = Event.RUN_STARTED.value
_RUN_FINISHED: Final = Event.RUN_FINISHED.value


def unfinished_problem(run_id: str) -> str:
    """Why a journal without run.finished fails: three causes verify cannot tell apart."""
    return (
        "no run.finished: the run is still running, or it crashed "
        f"(resume it with cutbook resume {run_id}), or the journal was cut"
    )


# ---------------------------------------------------------------- anchors


def make_anchor(run_id: str, seq: int, digest: str, key: bytes | None) -> dict[str, Any]:
    """A head as an anchor; with a key, one only a key holder could have made."""
    anchor: dict[str, Any] = {"run_id": run_id, "seq": seq, "hash": digest}
    if key is not None:
        anchor["hmac"] = head_hmac(key, run_id, seq, digest)
    return anchor


def format_anchor(anchor: Mapping[str, Any]) -> str:
    """One line an auditor can paste into a ticket and later give back to verify."""
    keys = ("run_id", "seq", "hash", "hmac")
    return json.dumps({k: anchor[k] for k in keys if k in anchor}, separators=(",", ":"))


def parse_anchor(text: str) -> dict[str, Any]:
    """Read an anchor back: the JSON line, or ``run_id=… seq=… hash=… hmac=…``."""
    text = text.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = dict(part.split("=", 1) for part in text.replace(",", " ").split() if "=" in part)
    if not isinstance(obj, dict) or "seq" not in obj or "hash" not in obj:
        raise JournalError("an anchor needs at least seq and hash")
    try:
        obj["seq"] = int(obj["seq"])
    except (TypeError, ValueError):
        raise JournalError(f"anchor seq {obj['seq']!r} is not a number") from None
    if not re.fullmatch(r"[0-9a-f]{64}", str(obj["hash"])):
        raise JournalError("anchor hash must be 64 lowercase hex digits")
    return obj


# ---------------------------------------------------------------- the chain


@dataclass
class VerifyResult:
    """What verification found; ``problem`` locates the first break for a human."""

    ok: bool
    """The chain is intact: no edit, deletion, insertion, reordering or forgery found."""
    records: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    problem: str | None = None
    torn_tail: bool = False
    head_hash: str | None = None
    hmac_ok: bool | None = None
    runbook_hash_ok: bool | None = None
    complete: bool = False
    head_seq: int | None = None
    torn_offset: int | None = None
    anchor_ok: bool | None = None
    run_id: str | None = None
    path: str | None = None
    warnings: list[str] = field(default_factory=list)
    live: bool = False
    """A live process holds the run's lease: an unfinished journal is expected."""
    passed: bool = False
    """The verdict (exit 0): intact *and* ended with run.finished, or known to be live."""

    def describe(self) -> str:
        """A few lines an auditor can read without knowing the format."""
        where = f"{self.path}: " if self.path else ""
        if self.passed:
            head = f"{where}OK: {self.records} records verify"
            if self.head_hash:
                head += f"; head seq {self.head_seq} hash {self.head_hash}"
        else:
            head = f"{where}FAILED: {self.problem}"
        lines = [head]
        if self.passed and self.problem:
            lines.append(f"note: {self.problem}")
        if self.ok and not self.passed and self.torn_tail:
            lines.append(
                f"the run crashed: resume it with cutbook resume {self.run_id or 'RUN'} "
                "(the torn line is cut away and the repair journalled)"
            )
        if self.hmac_ok is not None:
            lines.append(f"hmac: {'ok' if self.hmac_ok else 'BAD'}")
        if self.runbook_hash_ok is not None:
            lines.append(f"runbook hash: {'matches' if self.runbook_hash_ok else 'DIFFERS'}")
        if self.anchor_ok is not None:
            lines.append(f"anchor: {'matches' if self.anchor_ok else 'DOES NOT MATCH'}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        if not self.passed:
            raise ChainBroken(self.describe())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def verify(
    path: Path | str,
    *,
    hmac_key: bytes | None = None,
    runbook_path: Path | str | None = None,
    anchor: Mapping[str, Any] | str | None = None,
) -> VerifyResult:
    """Check every record's hash and link; locate the first break.

    A torn final line (crash mid-write) is reported as such, not as tampering.
    """
    path = Path(path)
    result = VerifyResult(ok=True, records=0, path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.ok = False
        result.problem = f"cannot read the journal: {exc}"
        return result
    anchor_obj = parse_anchor(anchor) if isinstance(anchor, str) else anchor
    cut = data.rfind(b"\n") + 1
    fragment = data[cut:]
    lines = data[:cut].split(b"\n")[:-1]

    prev = GENESIS
    run_id: str | None = None
    last_ts = ""
    last_event: str | None = None
    started: dict[str, Any] | None = None
    finished_line: int | None = None
    finished_hmac = False
    hmac_checks: list[tuple[int, str, str, str]] = []  # line, run_id, prev, hmac
    seq = 0

    def fail(line_no: int, problem: str, bad_seq: int | None) -> VerifyResult:
        result.ok = False
        result.first_bad_line = line_no
        result.first_bad_seq = bad_seq
        result.problem = f"line {line_no} (seq {bad_seq}): {problem}"
        return result

    sha256 = hashlib.sha256
    loads = json.loads
    mark = HASH_MARK
    for seq, line in enumerate(lines):
        line_no = seq + 1
        # Hash the bytes as written (they are the canonical JSON, so this is the
        # documented hash, and any changed byte shows); then parse. Kept inline:
        # this loop must do 100k records well inside 2 s.
        if len(line) <= TAIL_LEN or line[-TAIL_LEN:-66] != mark or line[-2:] != b'"}':
            return _finish(fail(line_no, "not a journal record: hash field damaged", seq))
        digest = line[-66:-2].decode("ascii", "replace")
        if sha256(line[:-TAIL_LEN] + b"}").hexdigest() != digest:
            return _finish(fail(line_no, "hash mismatch: the record was edited", seq))
        try:
            obj = loads(line)
        except ValueError:
            return _finish(fail(line_no, "not valid JSON although its hash matches", seq))
        if type(obj) is not dict or obj.get("hash") != digest:
            return _finish(fail(line_no, "not a well-formed journal record", seq))
        got = obj.get("seq")
        if got != seq:
            why = _misplaced(lines, seq, got)
            return _finish(fail(line_no, why, got if isinstance(got, int) else seq))
        if obj.get("prev") != prev:
            return _finish(
                fail(line_no, "prev does not match the record before: inserted or replaced", seq)
            )
        rid = obj.get("run_id")
        if run_id is None:
            run_id = rid
            result.run_id = str(rid)
        elif rid != run_id:
            return _finish(fail(line_no, f"run_id {rid!r} differs from {run_id!r}", seq))
        event = obj.get("event")
        if not isinstance(event, str):
            return _finish(fail(line_no, "event is missing", seq))
        if finished_line is not None:
            # The writer never appends after run.finished (a finished run never
            # resumes), and head_hmac covers only what came before it.
            why = (
                f"{event} after run.finished (line {finished_line}): records were appended "
                "after the run ended"
            )
            return _finish(fail(line_no, why, seq))
        if event == _RUN_FINISHED:
            finished_line = line_no
            finished_hmac = "head_hmac" in obj
        ts = obj.get("ts")
        if isinstance(ts, str):
            if ts < last_ts and not any("clock went back" in w for w in result.warnings):
                result.warnings.append(f"host clock went backwards at line {line_no}")
            last_ts = ts
        if event == _RUN_STARTED and started is None:
            started = obj
        hm = obj.get("head_hmac")
        if hm is not None and seq > 0:
            hmac_checks.append((line_no, str(rid), prev, str(hm)))
        last_event = event
        prev = digest
        result.records = line_no

    if lines and result.records == len(lines):
        result.head_hash = prev
        result.head_seq = len(lines) - 1

    if fragment:
        offset = cut
        if classify_fragment(fragment) == "tampered":
            line_no = len(lines) + 1
            return _finish(
                fail(
                    line_no,
                    f"damaged last line at byte {offset} (its line ending or content was "
                    "altered; a crash leaves only a cut-off line)",
                    len(lines),
                )
            )
        result.torn_tail = True
        result.torn_offset = offset
        result.problem = (
            f"torn last line at byte {offset}: the writer crashed mid-write; earlier records verify"
        )

    result.complete = last_event == _RUN_FINISHED

    # HMACs written into run.finished records. With a key, a run.finished without
    # one is a forgery: stripping it is how an edited outcome would be hidden.
    if hmac_key is not None and finished_line is not None and not finished_hmac:
        result.hmac_ok = False
        return _finish(
            fail(
                finished_line,
                "run.finished has no head_hmac although a key was given: it was stripped "
                "(and the record rewritten), or the run was journalled without this key",
                finished_line - 1,
            )
        )
    if hmac_checks:
        if hmac_key is None:
            result.warnings.append("head_hmac present but no key given: not checked")
        else:
            for line_no, rid, link, mac in hmac_checks:
                expected = head_hmac(hmac_key, rid, line_no - 2, link)
                if not hmac_mod.compare_digest(expected, mac):
                    result.hmac_ok = False
                    return _finish(
                        fail(line_no, "head_hmac does not match: wrong key or forged", line_no - 1)
                    )
            result.hmac_ok = True
    elif hmac_key is not None and not (anchor_obj and "hmac" in anchor_obj):
        result.warnings.append("a key was given but the journal holds no head_hmac to check")

    if anchor_obj is not None:
        _check_anchor(result, lines, anchor_obj, hmac_key, run_id)
        if not result.ok:
            return _finish(result)

    _check_runbook(result, started, runbook_path)
    if result.ok and not result.complete:
        live = holder(path.parent, path.stem)
        result.live = live is not None
        if live is not None:
            result.warnings.append(
                f"no run.finished, and {live.describe()} holds its lease: the run is still "
                "going; verified up to its current head (anchor it to pin that head)"
            )
        elif not result.torn_tail:
            result.problem = unfinished_problem(result.run_id or path.stem)
    return _finish(result)


def _finish(result: VerifyResult) -> VerifyResult:
    """A journal that fails verification is never called complete, nor passed."""
    if not result.ok:
        result.complete = False
    result.passed = result.ok and (result.complete or result.live)
    return result


def _seq_of(line: bytes) -> int | None:
    try:
        got = json.loads(line).get("seq")
    except (ValueError, AttributeError):
        return None
    return got if isinstance(got, int) else None


def _misplaced(lines: Sequence[bytes], seq: int, got: object) -> str:
    """Name a seq out of place: swapped, moved, deleted or inserted (failure path only)."""
    if not isinstance(got, int):
        return "seq is missing or not a number"
    if got < seq:
        return f"seq {got} again where {seq} belongs: record inserted, copied or reordered"
    later = next((j for j in range(seq + 1, len(lines)) if _seq_of(lines[j]) == seq), None)
    if later is not None and later == got:
        return (
            f"records {seq} and {got} are out of order (swapped): seq {got} is on line "
            f"{seq + 1} and seq {seq} on line {got + 1}"
        )
    if later is not None:
        return (
            f"records are out of order: seq {got} is on line {seq + 1}, where seq {seq} "
            f"belongs; seq {seq} was moved to line {later + 1}"
        )
    return f"seq jumps from {seq - 1} to {got}: {got - seq} record(s) deleted before this line"


def _check_anchor(
    result: VerifyResult,
    lines: Sequence[bytes],
    anchor: Mapping[str, Any],
    key: bytes | None,
    run_id: str | None,
) -> None:
    aseq, ahash = int(anchor["seq"]), str(anchor["hash"])
    arun = anchor.get("run_id")
    if arun is not None and run_id is not None and arun != run_id:
        result.anchor_ok = False
        result.ok = False
        result.problem = f"the anchor is for run {arun!r}, this journal is {run_id!r}"
        return
    if key is None and "hmac" in anchor:
        result.warnings.append("the anchor carries an hmac but no key was given: not checked")
    if key is not None and "hmac" in anchor:
        expected = head_hmac(key, str(arun or run_id), aseq, ahash)
        if not hmac_mod.compare_digest(expected, str(anchor["hmac"])):
            result.hmac_ok = False
            result.anchor_ok = False
            result.ok = False
            result.problem = "the anchor's hmac does not match this key"
            return
        if result.hmac_ok is None:
            result.hmac_ok = True
    if aseq >= len(lines):
        result.anchor_ok = False
        result.ok = False
        result.first_bad_seq = len(lines)
        result.first_bad_line = len(lines) + 1
        missing = aseq - len(lines) + 1
        result.problem = (
            f"the chain ends at seq {len(lines) - 1} but the anchor says seq {aseq} existed: "
            f"{missing} record(s) were cut off the end"
        )
        return
    got = check_line(lines[aseq]).record
    if got is None or got.get("hash") != ahash:
        result.anchor_ok = False
        result.ok = False
        result.first_bad_seq = aseq
        result.first_bad_line = aseq + 1
        result.problem = (
            f"line {aseq + 1} (seq {aseq}): hash differs from the anchor: the chain was "
            "rewritten after the anchor was taken"
        )
        return
    result.anchor_ok = True


def _check_runbook(
    result: VerifyResult, started: Mapping[str, Any] | None, runbook_path: Path | str | None
) -> None:
    if started is None:
        if result.records:
            result.warnings.append("no run.started record: runbook identity unknown")
        return
    recorded = started.get("runbook_sha256")
    text = started.get("runbook_text")
    if (
        isinstance(text, str)
        and recorded
        and hashlib.sha256(text.encode("utf-8")).hexdigest() != recorded
    ):
        result.warnings.append(
            "the runbook text stored in run.started does not hash to runbook_sha256 "
            "(expected if the text held credential-shaped strings that were scrubbed)"
        )
    explicit = runbook_path is not None
    candidate = Path(runbook_path) if runbook_path is not None else None
    if candidate is None and isinstance(started.get("runbook_path"), str):
        candidate = Path(str(started["runbook_path"]))
        if not candidate.is_file():
            return
    if candidate is None or not recorded:
        return
    actual = _sha256_file(candidate)
    if actual is None:
        result.runbook_hash_ok = False
        result.warnings.append(f"cannot read runbook {candidate}")
        if explicit:
            result.ok = False
            result.problem = f"cannot read runbook {candidate}"
        return
    result.runbook_hash_ok = actual == recorded
    if not result.runbook_hash_ok:
        msg = (
            f"runbook {candidate} has sha256 {actual} but the run recorded {recorded}: "
            "this is not the runbook text that ran"
        )
        if explicit:
            result.ok = False
            result.problem = msg
        else:
            result.warnings.append(msg + " (the file may have been edited since)")
