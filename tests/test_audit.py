"""The auditor's commands on a realistic synthetic journal written via the Journal API."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cutbook import audit
from cutbook.errors import ChainBroken, UsageError
from cutbook.journal import INDEX_NAME, Journal, format_anchor, summarize
from test_journal_contract import foreign_append

CANARY = "Canary-S3cret-7731-xyzzy"
TZ = ZoneInfo("Asia/Jakarta")
KEY = b"auditor-held-key"
RUNBOOK_TEXT = (
    "apiVersion: cutbook/v1\nname: customs-reorg-2025\ntimezone: Asia/Jakarta\n"
    "window: {start: '2025-03-14T23:00', end: '05:00'}\nsteps: []\n"
)


def at(hour: int, minute: int, day: int = 14, second: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, second, tzinfo=TZ)


def iso(moment: datetime) -> str:
    return moment.isoformat()


class FakeClock:
    """Host clock for record ``ts``: advances a little on every record."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        self.current += timedelta(seconds=7)
        return self.current

    def set(self, moment: datetime) -> None:
        self.current = moment


PLAN = [
    ("freeze-intake", "Freeze document intake", at(23, 0), at(23, 10), True),
    ("go-no-go", "Go / no-go", at(23, 10), at(23, 15), True),
    ("move-ou", "Move office OUs", at(23, 15), at(23, 45), True),
    ("repoint-dns", "Repoint customs DNS", at(23, 45), at(0, 0, 15), True),
    ("notify-offices", "Notify offices", at(0, 0, 15), at(0, 5, 15), False),
]


def write_run(
    journal_dir: Path,
    run_id: str,
    *,
    runbook_path: Path | None = None,
    day: int = 14,
    dry_run: bool = False,
    clock: str = "real",
    runbook_name: str = "customs-reorg-2025",
    hmac_key: bytes | None = None,
    failing: bool = True,
) -> Path:
    """A night with a late start, a retried fan-out item, a gate, a failure,
    a skipped step and a rollback, then run.finished."""
    shift = timedelta(days=day - 14)
    host = FakeClock(at(22, 55) + shift)
    journal = Journal.create(journal_dir, run_id, hmac_key=hmac_key, now=host.now)
    journal.redactor.add(CANARY)
    journal.append(
        "run.started",
        runbook_name=runbook_name,
        runbook_path=str(runbook_path) if runbook_path else "runbooks/customs-reorg-2025.yaml",
        runbook_sha256=hashlib.sha256(RUNBOOK_TEXT.encode()).hexdigest(),
        runbook_text=RUNBOOK_TEXT,
        variables={"wave": 1, "db_password": CANARY, "note": f"uses {CANARY}"},
        started_by="rina.operator",
        host="cutover-01",
        versions={"cutbook": "0.1.0", "adapters": {"http": "0.1.0", "sql": "0.1.0"}},
        window={"start": iso(at(23, 0) + shift), "end": iso(at(5, 0, 15) + shift)},
        timezone="Asia/Jakarta",
        clock=clock,
        speed=60.0 if clock == "virtual" else 1.0,
        dry_run=dry_run,
        plan={
            "fits_window": True,
            "finish": iso(at(0, 5, 15) + shift),
            "point_of_no_return": iso(at(23, 45) + shift),
            "steps": [
                {
                    "id": i,
                    "title": t,
                    "start": iso(s + shift),
                    "finish": iso(f + shift),
                    "critical": c,
                }
                for i, t, s, f, c in PLAN
            ],
        },
    )

    def step(
        sid: str,
        start: datetime,
        finish: datetime,
        status: str = "succeeded",
        error: str | None = None,
    ) -> None:
        journal.append(
            "step.finished",
            step=sid,
            status=status,
            error=error,
            started=iso(start + shift),
            finished=iso(finish + shift),
        )

    journal.append("step.started", step="freeze-intake", items=[])
    journal.append(
        "step.intent",
        step="freeze-intake",
        item=None,
        phase="apply",
        action="post",
        target="intake",
        idempotency_key="k1",
    )
    journal.append(
        "step.outcome",
        step="freeze-intake",
        item=None,
        phase="apply",
        ok=True,
        changed=True,
        summary="intake: open → frozen",
        output={"status": 200},
    )
    step("freeze-intake", at(23, 0, second=5), at(23, 8))

    journal.append("step.started", step="go-no-go", items=[])
    journal.append(
        "gate.requested", step="go-no-go", approvers=["budi.lead", "sari.cio"], timeout_s=1800
    )
    journal.append(
        "gate.answered",
        step="go-no-go",
        by="sari.cio",
        approved=True,
        comment="go <script>alert(1)</script>",
        auto=False,
    )
    step("go-no-go", at(23, 10), at(23, 14))

    offices = ["KPU-BATAM", "KPU-PRIOK", "KPU-SOETTA"]
    journal.append("step.started", step="move-ou", items=offices)
    for office in offices:
        journal.append(
            "step.intent",
            step="move-ou",
            item=office,
            phase="apply",
            action="move",
            target="directory",
            idempotency_key=f"move-{office}",
        )
        if office == "KPU-PRIOK":
            journal.append(
                "step.attempt",
                step="move-ou",
                item=office,
                attempt=1,
                error="TransientError: 503 Service Unavailable",
                transient=True,
                next_delay_s=2.0,
            )
        journal.append(
            "step.outcome",
            step="move-ou",
            item=office,
            phase="apply",
            ok=True,
            changed=True,
            summary=f"OU=Customs,{office}: 12 users moved",
            output={"moved": 12},
        )
    step("move-ou", at(23, 21), at(23, 44), "succeeded")

    if failing:
        journal.append("step.started", step="repoint-dns", items=[])
        journal.append(
            "step.attempt",
            step="repoint-dns",
            item=None,
            attempt=1,
            error=f"PermanentError: 401 with Authorization: Bearer {CANARY}",
            transient=False,
            next_delay_s=None,
        )
        step("repoint-dns", at(23, 46), at(23, 47), "failed", "PermanentError: 401 Unauthorized")
        journal.append("step.finished", step="notify-offices", status="skipped", error="run failed")
        journal.append(
            "rollback.started", reason="repoint-dns failed", steps=["move-ou", "freeze-intake"]
        )
        journal.append(
            "step.outcome",
            step="move-ou",
            item="KPU-BATAM",
            phase="rollback",
            ok=True,
            changed=True,
            summary="OU moves undone",
        )
        step("move-ou", at(23, 21), at(23, 52), "rolled_back", "undone after repoint-dns failed")
        journal.append("rollback.finished", ok=True)
        journal.append("run.finished", outcome="rolled_back", error="repoint-dns: 401 Unauthorized")
    else:
        for sid, _title, start, finish, _crit in PLAN[3:]:
            journal.append("step.started", step=sid, items=[])
            step(sid, start, finish, "dry_run" if dry_run else "succeeded")
        journal.append("run.finished", outcome="succeeded", error=None)
    journal.close()
    return journal.path


@pytest.fixture
def night(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A journal dir with the real (rolled back) night and an earlier rehearsal."""
    runbook = tmp_path / "customs-reorg-2025.yaml"
    runbook.write_text(RUNBOOK_TEXT, encoding="utf-8")
    jdir = tmp_path / "journal"
    write_run(
        jdir, "20250307-rehearsal-aa11", day=7, clock="virtual", failing=False, runbook_path=runbook
    )
    write_run(
        jdir,
        "20250310-dry-bb22",
        day=10,
        dry_run=True,
        failing=False,
        runbook_name="ports-cutover",
        runbook_path=runbook,
    )
    path = write_run(jdir, "20250314-real-cc33", hmac_key=KEY, runbook_path=runbook)
    yield jdir, path


def test_list_filters(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    runs = audit.list_runs(jdir)
    assert [r.run_id for r in runs] == [
        "20250307-rehearsal-aa11",
        "20250310-dry-bb22",
        "20250314-real-cc33",
    ]
    assert runs[-1].outcome == "rolled_back" and runs[-1].runbook == "customs-reorg-2025"
    assert [r.run_id for r in audit.list_runs(jdir, runbook="ports-cutover")] == [
        "20250310-dry-bb22"
    ]
    assert [r.run_id for r in audit.list_runs(jdir, outcome="rolled_back")] == [
        "20250314-real-cc33"
    ]
    since = audit.list_runs(jdir, since=date(2025, 3, 10))
    assert [r.run_id for r in since] == ["20250310-dry-bb22", "20250314-real-cc33"]
    until = audit.list_runs(jdir, until=date(2025, 3, 10))
    assert [r.run_id for r in until] == ["20250307-rehearsal-aa11", "20250310-dry-bb22"]
    text = audit.format_listing(runs)
    assert "rehearsal" in text and "dry run" in text and "rolled_back" in text


def test_list_without_or_with_stale_index(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    expected = [r.to_dict() for r in audit.list_runs(jdir)]
    index = jdir / INDEX_NAME
    lines = index.read_text(encoding="utf-8").splitlines()
    # Stale: the index forgets the last run and has a torn line.
    index.write_text(
        "\n".join(x for x in lines if "real-cc33" not in x) + '\n{"run_id": "x', encoding="utf-8"
    )
    assert [r.to_dict() for r in audit.list_runs(jdir)] == expected
    index.unlink()
    assert [r.to_dict() for r in audit.list_runs(jdir)] == expected


def test_unfinished_run_listed_by_scanning(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "half-run")
    journal.append("run.started", runbook_name="rb", timezone="UTC")
    journal.append("step.started", step="a")
    journal.close()
    (run,) = audit.list_runs(tmp_path, outcome="unfinished")
    assert run.run_id == "half-run" and run.outcome is None


def test_an_interrupted_run_is_listed_as_such_until_resumed(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "stopped-run")
    journal.append("run.started", runbook_name="rb", timezone="UTC")
    journal.append(
        "run.interrupted",
        signal="SIGTERM",
        hard=False,
        steps_done=["a"],
        steps_in_flight=[],
        changed=True,
        resume_command="cutbook resume stopped-run",
    )
    (run,) = audit.list_runs(tmp_path, outcome="interrupted")
    assert run.run_id == "stopped-run"
    summary = summarize(journal.path)
    assert summary.interrupted is not None and summary.interrupted["signal"] == "SIGTERM"
    journal.append("run.resumed", by="ops")
    journal.close()
    assert audit.list_runs(tmp_path, outcome="interrupted") == []
    (run,) = audit.list_runs(tmp_path, outcome="unfinished")
    assert run.run_id == "stopped-run"


def test_prefix_resolution(night: tuple[Path, Path]) -> None:
    jdir, path = night
    assert audit.resolve_run(jdir, "20250314") == path
    with pytest.raises(UsageError, match="ambiguous"):
        audit.resolve_run(jdir, "2025")
    with pytest.raises(UsageError, match="no run"):
        audit.resolve_run(jdir, "1999")
    with pytest.raises(UsageError):
        audit.resolve_run(jdir, "../etc")


def test_show_timeline(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    text = audit.show(jdir, "20250314", verbose=True)
    for needle in (
        "run.started",
        "gate.answered",
        "sari.cio",
        "move-ou",
        "rollback.finished",
        "+07:00",
        "OK: ",
        "times in Asia/Jakarta (+07:00)",
    ):
        assert needle in text
    assert CANARY not in text
    summary = audit.show(jdir, "20250314")
    assert "run.started" not in summary and len(summary.splitlines()) < len(text.splitlines())
    assert CANARY not in summary


def test_summary_deviations(night: tuple[Path, Path]) -> None:
    _, path = night
    summary = summarize(path)
    kinds = {(d.step, d.kind) for d in summary.deviations}
    assert ("move-ou", "late") in kinds
    assert ("move-ou", "retried") in kinds
    assert ("move-ou", "rolled_back") in kinds
    assert ("repoint-dns", "failed") in kinds
    assert ("notify-offices", "skipped") in kinds
    assert (None, "run") in kinds
    assert ("freeze-intake", "late") not in kinds  # 5 s late is within tolerance
    strict = summarize(path, late_tolerance=timedelta(seconds=1))
    assert ("freeze-intake", "late") in {(d.step, d.kind) for d in strict.deviations}
    (gate,) = summary.approvals
    assert gate.by == "sari.cio" and gate.approved and gate.approvers == ["budi.lead", "sari.cio"]
    assert summary.rollbacks[0].ok is True


def test_verify_and_anchor(night: tuple[Path, Path]) -> None:
    jdir, path = night
    result = audit.verify_run(jdir, "20250314", hmac_key=KEY)
    assert result.ok and result.complete and result.hmac_ok is True
    assert result.runbook_hash_ok is True
    head = audit.anchor(jdir, "20250314", hmac_key=KEY)
    assert set(head) == {"run_id", "seq", "hash", "hmac"}
    assert audit.verify_run(jdir, "20250314", hmac_key=KEY, anchor=format_anchor(head)).ok
    assert not audit.verify_run(jdir, "20250314", hmac_key=b"wrong").ok
    results = dict(audit.verify_all(jdir))
    assert len(results) == 3 and all(r.ok for r in results.values())
    # Cut the last two records: only the anchor can tell.
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    assert audit.verify_run(jdir, "20250314").ok
    cut = audit.verify_run(jdir, "20250314", anchor=head)
    assert not cut.ok and "cut off the end" in (cut.problem or "")


RESOURCE = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//|url\(|@import""", re.I)


def test_report_html(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    html = audit.report(jdir, "20250314", "html", hmac_key=KEY)
    assert html.startswith("<!DOCTYPE html>")
    for sid, *_ in PLAN:
        assert sid in html
    for needle in (
        "sari.cio",
        "budi.lead",
        "late",
        "retried",
        "failed",
        "skipped",
        "rolled back",
        "503 Service Unavailable",
        "Verified:",
        "How to read this report",
        "OU=Customs,KPU-PRIOK: 12 users moved",
        "rina.operator",
        "cutover-01",
        "<svg",
        "point of no return",
    ):
        assert needle in html, needle
    head = audit.anchor(jdir, "20250314", hmac_key=KEY)
    assert head["hash"] in html and head["hmac"] in html
    assert CANARY not in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not RESOURCE.search(html)
    assert "http://" not in html and "https://" not in html
    assert "REHEARSAL" not in html and "DRY RUN" not in html


def test_report_md_and_json(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    md = audit.report(jdir, "20250314", "md", hmac_key=KEY)
    for needle in (
        "move-ou",
        "repoint-dns",
        "sari.cio",
        "retried",
        "skipped",
        "rolled back",
        "verified",
        "| Step | Kind | Detail |",
    ):
        assert needle in md, needle
    assert CANARY not in md and "<script>" not in md
    head = audit.anchor(jdir, "20250314", hmac_key=KEY)
    assert format_anchor(head) in md  # pasteable verbatim

    data = json.loads(audit.report(jdir, "20250314", "json", hmac_key=KEY))
    assert CANARY not in json.dumps(data)
    assert data["verification"]["ok"] is True and data["verification"]["hmac_ok"] is True
    assert data["anchor"]["hash"] == head["hash"]
    assert [s["id"] for s in data["steps"]] == [p[0] for p in PLAN]
    assert data["approvals"][0]["by"] == "sari.cio"
    kinds = {d["kind"] for d in data["deviations"]}
    assert {"late", "retried", "failed", "skipped", "rolled_back"} <= kinds
    assert data["run"]["mode"] == "real" and data["run"]["banner"] is None
    assert data["rollbacks"][0]["steps"] == ["move-ou", "freeze-intake"]
    move = next(s for s in data["steps"] if s["id"] == "move-ou")
    assert move["retried"] and move["attempts"][0]["item"] == "KPU-PRIOK"
    assert data["run"]["variables"]["db_password"] == "***"


def test_report_marks_rehearsal_and_dry_run(night: tuple[Path, Path]) -> None:
    jdir, _ = night
    html = audit.report(jdir, "20250307", "html")
    assert 'id="mode-banner"' in html and "REHEARSAL" in html and "[REHEARSAL]" in html
    dry = audit.report(jdir, "20250310", "md")
    assert "DRY RUN" in dry


def test_report_on_tampered_journal(night: tuple[Path, Path]) -> None:
    jdir, path = night
    lines = path.read_bytes().splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if b"gate.answered" in line)
    lines[n] = lines[n].replace(b"sari.cio", b"mallory")
    path.write_bytes(b"".join(lines))
    html = audit.report(jdir, "20250314", "html")
    banner = html.index("JOURNAL FAILED VERIFICATION")
    assert banner < html.index("How to read this report")
    assert f"line {n + 1}" in html
    md = audit.report(jdir, "20250314", "md")
    assert "JOURNAL FAILED VERIFICATION" in md.split("## How to read")[0]
    data = json.loads(audit.report(jdir, "20250314", "json"))
    assert data["verification"]["ok"] is False and data["verification"]["first_bad_line"] == n + 1
    assert data["anchor"] is None
    with pytest.raises(ChainBroken):
        audit.anchor(jdir, "20250314")


def test_report_on_unparsable_line_still_renders(night: tuple[Path, Path]) -> None:
    jdir, path = night
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"gate.requested") - 3] = ord("\n")
    path.write_bytes(bytes(raw))
    html = audit.report(jdir, "20250314", "html")
    assert "JOURNAL FAILED VERIFICATION" in html


def test_report_without_plan_or_fields(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "bare")
    journal.append("run.started")
    journal.append("step.finished", step="x", status="succeeded")
    journal.close()
    foreign_append(journal.path, "mystery.event", foo=1)
    html = audit.report(tmp_path, "bare", "html")
    assert "mystery.event" in html and "x" in html
    assert 'id="incomplete"' in html
    assert audit.report(tmp_path, "bare", "md")
    assert json.loads(audit.report(tmp_path, "bare", "json"))["run"]["outcome"] == "unfinished"
