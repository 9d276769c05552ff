"""The ``cutbook`` command: the Typer app, its root options and ``main``.

Exit codes are the same everywhere: 0 success, 1 the thing checked or run
failed (a run that rolled back, a chain that does not verify), 2 bad input
(an invalid runbook, a wrong flag). Errors are one-line messages, never
tracebacks. Heavy modules (Prefect, FastAPI) are imported inside the commands
that need them, so ``validate`` and ``plan`` start fast.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from cutbook import __version__
from cutbook.cli import audit, demo, keys, preflight, run, runbook, schedule, server
from cutbook.cli.console import err, out
from cutbook.errors import CutbookError

app = typer.Typer(
    name="cutbook",
    help=(
        "Cutover runbooks as code: validate and plan a timed YAML runbook, rehearse it "
        "against a simulator, run it as a Prefect flow, and audit what it did.\n\n"
        "Typical night: cutbook validate → cutbook plan → cutbook run --clock virtual "
        "(rehearsal) → cutbook run → cutbook audit verify."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
audit_app = typer.Typer(
    help="Read and verify the journal of past runs: list, show, verify, report, anchor.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(
    help="Approvers' signing keys: make one (new), or print a key file's public line (show).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
server_app = typer.Typer(
    help="The embedded Prefect server of a data directory: start, status, stop.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")
runbook.register(app)
preflight.register(app)
run.register(app)
schedule.register(app)
demo.register(app)
audit.register(audit_app)
keys.register(keys_app)
server.register(server_app)


def _version(value: bool) -> None:
    if value:
        out.print(f"cutbook {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Cutover runbooks as code."""


def main(argv: list[str] | None = None) -> Any:
    """The console script: every CutbookError becomes one red line and its exit code."""
    try:
        return app(args=argv, prog_name="cutbook")
    except CutbookError as exc:
        err.print(str(exc), style="red", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
