"""Auditor commands under ``cutbook audit``: read-only over the journal, no Prefect.

Exit codes: 0 when the thing asked for is fine (a chain that verifies), 1 when
it is not (tampering, truncation), 2 for bad input (unknown run, bad option).
"""

from __future__ import annotations

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
    str, typer.Argument(help="A run id, or any unique prefix of one.", show_default=False)
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
        help="Where journals live. [default: <data-dir>/journal]",
        show_default=False,
    ),
]


class Fmt(StrEnum):
    html = "html"
    md = "md"
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


def list_command(
    runbook: Annotated[str | None, typer.Option(help="Only runs of this runbook.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Only runs that ended so.")] = None,
    since: Annotated[str | None, typer.Option(help="Started on or after (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Started on or before (YYYY-MM-DD).")] = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """List journalled runs: id, runbook, start, outcome, and whether it was real,
    a rehearsal or a dry run."""
    from cutbook.audit import format_listing, list_runs

    runs = list_runs(
        _dir(journal_dir, data_dir),
        runbook=runbook,
        outcome=outcome.value if outcome else None,
        since=_date(since, "--since"),
        until=_date(until, "--until"),
    )
    typer.echo(format_listing(runs))


def show_command(
    run: RunArg,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Every record, not a summary.")
    ] = False,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print a run's timeline: who started it, each step planned versus actual,
    attempts, approvals, rollbacks and the outcome."""
    from cutbook.audit import show

    typer.echo(show(_dir(journal_dir, data_dir), run, verbose=verbose))


def verify_command(
    run: Annotated[str | None, typer.Argument(help="A run id or unique prefix.")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Verify every journalled run.")] = False,
    key_file: KeyFile = None,
    anchor: Annotated[
        str | None, typer.Option(help="The anchor line kept elsewhere: proves nothing was cut.")
    ] = None,
    runbook: Annotated[
        Path | None, typer.Option(help="Check the runbook file still has the recorded hash.")
    ] = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Check a journal's hash chain. Exit 0 when intact and ended by run.finished;
    1 naming the first bad record on any edit, deletion, insertion, reordering,
    record after run.finished, missing or bad HMAC, anchor mismatch or truncation
    (no run.finished, unless RUN.lock says the run is live). A torn last line from
    a crash is reported as exactly that, and also exits 1.

    Then re-checks every signed answer against the key its runbook lists for the
    approver (`signatures: N verified`, or each problem); a bad signature, one made
    for another runbook, or an unsigned approval of a signed step also exits 1."""
    from cutbook.audit import verify_all, verify_run, verify_signatures

    folder = _dir(journal_dir, data_dir)
    key = _key(key_file)
    if all_runs == (run is not None):
        raise UsageError("give a RUN or --all (not both)")
    if all_runs:
        results = verify_all(folder, hmac_key=key)
    else:
        assert run is not None
        result = verify_run(folder, run, hmac_key=key, anchor=anchor, runbook_path=runbook)
        results = [(result.run_id or run, result)]
    bad = 0
    for run_id, result in results:
        typer.echo(f"{run_id}: {result.describe()}")
        # the argument, not the id the records name: that is the file verify read
        signatures = verify_signatures(folder, run if run is not None else run_id)
        first, *rest = signatures.lines()
        typer.echo(f"{run_id}: {first}")
        for line in rest:
            typer.echo(line)
        bad += 0 if result.passed and signatures.passed else 1
    if not results:
        typer.echo("no journals found")
    if bad:
        raise typer.Exit(1)


def report_command(
    run: RunArg,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="html, md or json.")] = Fmt.html,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    key_file: KeyFile = None,
    anchor: Annotated[str | None, typer.Option(help="An anchor line to check against.")] = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the audit report: identity and hash of the runbook, who started and
    approved what, planned versus actual with a Gantt chart, attempts, deviations,
    rollbacks, and the result of verifying the chain. HTML is one self-contained page."""
    from cutbook.audit import report

    text = report(
        _dir(journal_dir, data_dir), run, fmt.value, hmac_key=_key(key_file), anchor=anchor
    )
    write_output(text, output)


def anchor_command(
    run: RunArg,
    key_file: KeyFile = None,
    fmt: Annotated[Fmt | None, typer.Option("--format", "-f", help="json for tools.")] = None,
    journal_dir: JournalDir = None,
    data_dir: DataDirOption = None,
) -> None:
    """Print the journal's head (sequence and hash, HMAC-signed with a key) to keep
    outside cutbook, in a ticket or an email: later it proves nothing was cut off.
    Exit 1, anchoring nothing, if the journal fails verification. A run without
    run.finished is anchored with a note saying it was unfinished."""
    from cutbook.audit import anchor
    from cutbook.journal import format_anchor

    head = anchor(_dir(journal_dir, data_dir), run, _key(key_file))
    typer.echo(json.dumps(head) if fmt is Fmt.json else format_anchor(head))
    if head.get("finished") is False:
        typer.echo(
            f"note: run {head['run_id']} has no run.finished: this anchors an unfinished "
            "run's head (live, crashed or cut); anchor again once it finishes",
            err=True,
        )
