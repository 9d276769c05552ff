"""Auditor commands under ``cutbook audit``: read-only over the journal, no Prefect.

Exit codes: 0 when the thing asked for is fine (a chain that verifies), 1 when
it is not (tampering, truncation, divergence), 2 for bad input (unknown run, bad
option). With ``--store`` (or ``CUTBOOK_AUDIT_STORE``) runs are read from the
shared audit store instead of the journal directory; ``sync`` fills the store
from this worker's journals.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cutbook import paths
from cutbook.cli.console import write_output
from cutbook.cli.options import DataDirOption
from cutbook.errors import UsageError

RunArg = Annotated[
    str,
    typer.Argument(
        metavar="RUN", help="A run id, or any unique prefix of one.", show_default=False
    ),
]
KeyFile = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        help="File holding the HMAC key the run was journalled with (or CUTBOOK_JOURNAL_KEY).",
    ),
]
JournalDir = Annotated[
    Path | None,
    typer.Option(
        "--journal-dir",
        envvar="CUTBOOK_JOURNAL_DIR",
        metavar="DIR",
        # the rule, not a path: "<data-dir>" would be eaten as an HTML tag by the
        # Markdown help renderer, leaving "[default: /journal]"
        help="Where journals live. [default: DATA-DIR/journal]",
        show_default=False,
    ),
]

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CUTBOOK_AUDIT_STORE",
        metavar="URL",
        help="Read runs from the shared audit store at this SQLAlchemy URL "
        "(postgresql+asyncpg://... or sqlite+aiosqlite:///...) instead of the journal directory.",
        show_default=False,
    ),
]


class Fmt(StrEnum):
    """What ``report`` writes."""

    html = "html"
    md = "md"
    json = "json"


class AnchorFmt(StrEnum):
    """What ``anchor`` prints: only these two, so ``-f html`` is refused, not ignored."""

    text = "text"
    json = "json"


class Outcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    rolled_back = "rolled_back"
    aborted = "aborted"
    unfinished = "unfinished"
    interrupted = "interrupted"


def _dir(journal_dir: Path | None, data_dir: Path | None) -> Path:
    return journal_dir if journal_dir is not None else paths.journal_dir(data_dir)


def _key(key_file: Path | None) -> bytes | None:
    if key_file is not None:
        try:
            return key_file.read_bytes().strip()
        except OSError as exc:
            raise UsageError(f"--key-file {key_file}: {exc.strerror}") from None
    env = os.environ.get("CUTBOOK_JOURNAL_KEY")
    return env.encode() if env else None


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: write a date such as 2025-03-14") from None


def register(app: typer.Typer) -> None:
    app.command(name="list")(list_command)
    app.command(name="show")(show_command)
    app.command(name="verify")(verify_command)
    app.command(name="report")(report_command)
    app.command(name="anchor")(anchor_command)
    app.command(name="sync")(sync_command)


def _relabel(text: str, temporary: Path, label: str, fmt: str = "text") -> str:
    """Name a run read from the store by the store, not by its temporary file."""
    if fmt == "html":
        label = html.escape(label)
    elif fmt == "json":
        label = json.dumps(label)[1:-1]
    return text.replace(str(temporary), label)


def list_command(
    runbook: Annotated[str | None, typer.Option(help="Only runs of this runbook.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only runs that ended so.")] = None,
    since: Annotated[str | None, typer.Option(help="Started on or after (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Started on or before (YYYY-MM-DD).")] = None,
    store: StoreOption = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """List journalled runs: id, runbook, start, outcome, and whether it was real,
    a rehearsal or a dry run (from the shared audit store with --store)."""
    from cutbook.audit import format_listing, list_runs

    first, last = _date(since, "--since"), _date(until, "--until")

    def listing(folder: Path) -> str:
        return format_listing(
            list_runs(
                folder,
                runbook=runbook,
                outcome=outcome.value if outcome else None,
                since=first,
                until=last,
            )
        )

    if not store:
        typer.echo(listing(_dir(journal_dir, data_dir)))
        return
    from cutbook.audit.store import materialised

    with materialised(store, run_level_only=True) as got:
        typer.echo(listing(got.journal_dir))


def show_command(
    run: RunArg,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Every record, one line each, not the summary.")
    ] = False,
    store: StoreOption = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print a one-screen summary of a run: the runbook and its sha256, the window and
    the outcome, who ran it and when, one line per step (status, start, finish, items,
    who answered, how late, how often retried), the gates, the work done, whether the
    journal verifies and where the report is. Times in the runbook's zone, named once.

    With --verbose, every record of the journal instead, one line each."""
    from cutbook.audit import show

    reports = paths.reports_dir(data_dir)
    if not store:
        typer.echo(show(_dir(journal_dir, data_dir), run, verbose=verbose, reports_dir=reports))
        return
    from cutbook.audit.store import materialised

    with materialised(store, [run]) as got:
        run_id = got.run_ids[0]
        text = show(got.journal_dir, run_id, verbose=verbose, reports_dir=reports)
        typer.echo(_relabel(text, got.path(run_id), got.label(run_id)))


def verify_command(
    run: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="A run id, or any unique prefix of one (or --all)."),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Verify every journalled run.")] = False,
    key_file: KeyFile = None,
    anchor: Annotated[
        str | None, typer.Option(help="The anchor line kept elsewhere: proves nothing was cut.")
    ] = None,
    runbook: Annotated[
        Path | None, typer.Option(help="Check the runbook file still has the recorded hash.")
    ] = None,
    store: StoreOption = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check a journal's hash chain and its signed answers, and say the verdict once per
    run: RUN: OK, or RUN: FAILED and the first reason, then the evidence indented.

    Exit 0 when intact and ended by run.finished; 1 naming the first bad record on
    any edit, deletion, insertion, reordering, record after run.finished, missing or
    bad HMAC, anchor mismatch or truncation (no run.finished, unless RUN.lock says
    the run is live). A torn last line from a crash is reported as exactly that, and
    also exits 1. Every signed answer is checked against the key its runbook lists
    for the approver (signatures: N verified, or each problem); a bad signature, one
    made for another runbook, or an unsigned approval of a signed step also exits 1.
    Exit 2 for bad input (an unknown run, RUN and --all together).

    With --store, runs are read from the shared audit store. A run the journal
    directory here also holds is verified from its file and compared with the store
    record by record: a different record exits 1 naming its seq; a store that is
    only behind is a warning (cutbook audit sync sends the rest)."""
    from cutbook.audit import verdict, verify_all, verify_run, verify_signatures

    folder = _dir(journal_dir, data_dir)
    key = _key(key_file)
    if all_runs == (run is not None):
        raise UsageError("give a RUN or --all (not both)")
    if store:
        failed, total = _verify_from_store(
            store, folder, run, key=key, anchor=anchor, runbook=runbook
        )
    else:
        if all_runs:
            results = verify_all(folder, hmac_key=key)
        else:
            assert run is not None
            result = verify_run(folder, run, hmac_key=key, anchor=anchor, runbook_path=runbook)
            results = [(result.run_id or run, result)]
        failed = 0
        for run_id, result in results:
            # the argument, not the id the records name: that is the file verify read
            signatures = verify_signatures(folder, run if run is not None else run_id)
            lines, passed = verdict(run_id, result, signatures)
            typer.echo("\n".join(lines))
            failed += 0 if passed else 1
        total = len(results)
        if not results:
            typer.echo(f"no journals found in {folder}")
    if all_runs and total:
        typer.echo(f"{total} run(s): {total - failed} verified, {failed} failed")
    if failed:
        raise typer.Exit(1)


def _verify_from_store(
    store: str,
    local_dir: Path,
    run: str | None,
    *,
    key: bytes | None,
    anchor: str | None,
    runbook: Path | None,
) -> tuple[int, int]:
    """Verify runs read from the store, or this worker's file compared with the store when
    it has one; print each verdict and return how many failed, of how many."""
    from cutbook.audit import verdict, verify_signatures
    from cutbook.audit.store import compare, materialised
    from cutbook.journal import journal_files, resolve_run, verify

    mine: list[Path] = []
    if run is None:
        mine = journal_files(local_dir)
    else:
        with contextlib.suppress(UsageError):
            mine = [resolve_run(local_dir, run)]
    bad = 0
    runs = None if run is None else [run]
    with materialised(store, runs, missing_ok=bool(mine)) as got:
        compared = compare(local_dir, got)
        unsent = [p for p in mine if p.stem not in got.stored]
        checked = [*got.run_ids, *(p.stem for p in unsent)]
        for run_id in checked:
            local = compared.get(run_id)
            from_store = run_id in got.stored and local is None
            path = got.path(run_id) if from_store else local_dir / f"{run_id}.jsonl"
            result = verify(path, hmac_key=key, anchor=anchor, runbook_path=runbook)
            if from_store:
                result.path = got.label(run_id)
                if result.ok and not result.complete:
                    result.warnings.append(
                        "read from the audit store: a run still going, or one whose worker "
                        "has not sent every record yet (cutbook audit sync there), looks "
                        "unfinished here"
                    )
            prefix = f"{run_id}: "
            compared_lines = [
                line.removeprefix(prefix) for line in (local.lines(got.shown) if local else ())
            ]
            if run_id not in got.stored:
                compared_lines.append(
                    f"warning: not in the audit store {got.shown} yet: "
                    f"cutbook audit sync {run_id} --store '{got.shown}'"
                )
            lines, passed = verdict(
                run_id,
                result,
                verify_signatures(path.parent, run_id),
                store=compared_lines,
                store_passed=local is None or local.passed,
            )
            typer.echo("\n".join(lines))
            bad += 0 if passed else 1
        if not checked:
            typer.echo(f"no runs in the audit store {got.shown}")
    return bad, len(checked)


def report_command(
    run: RunArg,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="html, md or json.")] = Fmt.html,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    key_file: KeyFile = None,
    anchor: Annotated[str | None, typer.Option(help="An anchor line to check against.")] = None,
    store: StoreOption = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the audit report: identity and hash of the runbook, who started and
    approved what, planned versus actual with a Gantt chart, attempts, deviations,
    rollbacks, and the result of verifying the chain. HTML is one self-contained page."""
    from cutbook.audit import report

    if not store:
        text = report(
            _dir(journal_dir, data_dir), run, fmt.value, hmac_key=_key(key_file), anchor=anchor
        )
        write_output(text, output)
        return
    from cutbook.audit.store import materialised

    with materialised(store, [run]) as got:
        run_id = got.run_ids[0]
        text = report(got.journal_dir, run_id, fmt.value, hmac_key=_key(key_file), anchor=anchor)
        text = _relabel(text, got.path(run_id), got.label(run_id), fmt.value)
    write_output(text, output)


def anchor_command(
    run: RunArg,
    key_file: KeyFile = None,
    fmt: Annotated[
        AnchorFmt,
        typer.Option(
            "--format",
            "-f",
            help="text: the one line to paste into a ticket; json: an object for tools "
            '(with "finished": false for an unfinished run).',
        ),
    ] = AnchorFmt.text,
    store: StoreOption = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the journal's head (sequence and hash, HMAC-signed with a key) to keep
    outside cutbook, in a ticket or an email: later it proves nothing was cut off.
    Exit 1, anchoring nothing, if the journal fails verification. A run without
    run.finished is anchored with a note saying it was unfinished."""
    from cutbook.audit import anchor
    from cutbook.journal import format_anchor

    if store:
        from cutbook.audit.store import materialised

        with materialised(store, [run]) as got:
            head = anchor(got.journal_dir, got.run_ids[0], _key(key_file))
    else:
        head = anchor(_dir(journal_dir, data_dir), run, _key(key_file))
    typer.echo(json.dumps(head) if fmt is AnchorFmt.json else format_anchor(head))
    if head.get("finished") is False:
        typer.echo(
            f"note: run {head['run_id']} has no run.finished: this anchors an unfinished "
            "run's head (live, crashed or cut); anchor again once it finishes",
            err=True,
        )


def sync_command(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="RUN", help="Run ids or unique prefixes (or --all).", show_default=False
        ),
    ] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="Every journal in the journal directory.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="CUTBOOK_AUDIT_STORE",
            metavar="URL",
            help="The shared audit store to send to (a SQLAlchemy URL).",
            show_default=False,
        ),
    ] = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Send what this worker's journals hold and the shared audit store lacks (after the
    store was down or unreachable), and report the counts per run.

    Records already in the store are compared, never overwritten: a different record
    for the same seq exits 1 naming the run and seq. Exit 2 without a store."""
    from cutbook.audit.store import format_sync, sync
    from cutbook.journal.store import show_url

    if not store:
        raise UsageError("give the audit store: --store URL, or set CUTBOOK_AUDIT_STORE")
    if all_runs == bool(runs):
        raise UsageError("give RUN... or --all (not both)")
    folder = _dir(journal_dir, data_dir)
    results = sync(store, folder, None if all_runs else runs)
    shown = show_url(store)
    for result in results:
        for line in format_sync(result, shown):
            typer.echo(line)
    if not results:
        typer.echo(f"no journals found in {folder}")
    sent = sum(r.sent for r in results)
    present = sum(r.present for r in results)
    diverged = sum(len(r.diverged) for r in results)
    typer.echo(
        f"{sent} record(s) sent to {shown}, {present} already there"
        + (f", {diverged} DIVERGED (not overwritten)" if diverged else "")
    )
    if diverged:
        raise typer.Exit(1)
