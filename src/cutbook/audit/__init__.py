"""The auditor's side: list, show, verify, anchor and report on past runs.

Everything here returns data plus rendered strings; the CLI (``cutbook audit
…``) only prints them and picks exit codes. Finding runs lives in
:mod:`cutbook.audit.runs`, the report in :mod:`cutbook.audit.report`; both
are importable from here, as they always were.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cutbook.audit.report import ReportFormat, build_report, render_report, report
from cutbook.audit.runs import (
    RunListing,
    format_listing,
    format_time,
    list_runs,
    run_mode,
    zone_of,
)
from cutbook.audit.signatures import SignatureReport, check_signatures, signature_status
from cutbook.errors import ChainBroken, JournalError
from cutbook.journal import (
    RESERVED_FIELDS,
    VerifyResult,
    format_anchor,
    journal_files,
    make_anchor,
    parse_anchor,
    read_records,
    resolve_run,
    summarize,
    verify,
)
from cutbook.redact import Redactor

# ---------------------------------------------------------------- verify / anchor


def verify_run(
    journal_dir: Path | str,
    run_id: str,
    *,
    hmac_key: bytes | None = None,
    anchor: Mapping[str, Any] | str | None = None,
    runbook_path: Path | str | None = None,
) -> VerifyResult:
    """Verify one run's chain (and its HMACs, anchor and runbook hash if given)."""
    return verify(
        resolve_run(journal_dir, run_id),
        hmac_key=hmac_key,
        anchor=anchor,
        runbook_path=runbook_path,
    )


def verify_all(
    journal_dir: Path | str, *, hmac_key: bytes | None = None
) -> list[tuple[str, VerifyResult]]:
    """Verify every journal in the directory; the caller fails if any is not ok."""
    return [(p.stem, verify(p, hmac_key=hmac_key)) for p in journal_files(Path(journal_dir))]


def verify_signatures(journal_dir: Path | str, run_id: str) -> SignatureReport:
    """Re-check a run's signed answers against its journalled runbook's keys.

    Apart from :func:`verify_run` because it answers another question (who
    answered, not whether the file changed); ``cutbook audit verify`` asks both.
    Reads what it can of a damaged journal: the chain check names the damage.
    """
    return check_signatures(read_records(resolve_run(journal_dir, run_id), skip_bad=True))


def anchor(journal_dir: Path | str, run_id: str, hmac_key: bytes | None = None) -> dict[str, Any]:
    """The verified head of a run, to paste into a ticket (see :func:`format_anchor`).

    Refuses (:class:`ChainBroken`, exit 1) a chain that does not verify: that
    would vouch for it. An intact run without run.finished (live, crashed or
    cut: the anchor cannot tell) is anchored, marked ``"finished": False`` so
    the output says so; the pasted line stays the head alone.
    """
    path = resolve_run(journal_dir, run_id)
    result = verify(path, hmac_key=hmac_key)
    if not result.ok:
        raise ChainBroken(f"not anchoring a journal that fails verification: {result.problem}")
    if result.head_hash is None or result.head_seq is None:
        raise JournalError(f"{path} has no records to anchor")
    head = make_anchor(result.run_id or path.stem, result.head_seq, result.head_hash, hmac_key)
    if not result.complete:
        head["finished"] = False
    return head


_BULKY = frozenset({"runbook_text", "plan", "variables", "versions", "output"})


def _short(value: Any, limit: int = 120) -> str:
    """One field on one timeline line: long values would bury the timeline."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def show(
    journal_dir: Path | str,
    run_id: str,
    *,
    redactor: Redactor | None = None,
    verbose: bool = False,
) -> str:
    """A readable timeline: one line per record, times in the runbook's zone."""
    path = resolve_run(journal_dir, run_id)
    redactor = redactor or Redactor()
    summary = summarize(path)
    tz = zone_of(summary.timezone)
    mode = run_mode(summary.dry_run, summary.clock, summary.preflight)
    out = [
        f"run {summary.run_id}  runbook {summary.runbook_name or '?'}  "
        f"sha256 {summary.runbook_sha256 or '?'}",
        f"started by {summary.started_by or '?'} on {summary.host or '?'}  "
        f"mode {mode}  outcome {summary.outcome or 'unfinished'}",
        f"times in {getattr(tz, 'key', 'UTC')} (host clock)",
        "",
    ]
    for rec in read_records(path, skip_bad=True):
        rec = redactor.scrub(rec)
        event = str(rec.get("event", "?"))
        details = []
        for key, value in sorted(rec.items()):
            if key in RESERVED_FIELDS:
                continue
            if key in _BULKY and not verbose:
                details.append(f"{key}=…")
                continue
            details.append(f"{key}={_short(value)}")
        seq = rec.get("seq", "?")
        out.append(f"{format_time(rec.get('ts'), tz)}  #{seq:<5} {event:<18} {' '.join(details)}")
    out.append("")
    out.append(verify(path).describe())
    return "\n".join(out)


__all__ = [
    "ReportFormat",
    "RunListing",
    "SignatureReport",
    "anchor",
    "build_report",
    "check_signatures",
    "format_anchor",
    "format_listing",
    "list_runs",
    "parse_anchor",
    "render_report",
    "report",
    "resolve_run",
    "show",
    "signature_status",
    "verify_all",
    "verify_run",
    "verify_signatures",
]
