"""The ``cutbook`` command: the Typer app, its root options and ``main``.

Exit codes are the same everywhere: 0 success, 1 the thing checked or run
failed (a run that rolled back, a chain that does not verify), 2 bad input
(an invalid runbook, a wrong flag). Errors are one-line messages, never
tracebacks. Heavy modules (Prefect, FastAPI) are imported inside the commands
that need them, so ``validate`` and ``plan`` start fast.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cutbook import __version__, paths
from cutbook.cli import audit, demo, keys, preflight, run, runbook, schedule, server
from cutbook.cli.console import err, out
from cutbook.errors import CutbookError


def _plain_help_types() -> None:
    """Typer 0.29 labels each parameter with its Python type: ``--strict <bool>`` reads as if
    the flag took a value, and ``<list[Path]>`` is the implementation talking. A flag
    shows nothing; an argument is named by its metavar (``RUNBOOK``); options keep
    their own ``<path>``-style metavars and their choices."""
    from typer.core import TyperArgument, TyperOption

    option_type = TyperOption.display_type_rich

    def option_display(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and not self.count else option_type(self, ctx)

    def argument_display(self: TyperArgument, ctx: Any) -> str | None:
        return None

    TyperOption.display_type_rich = option_display  # type: ignore[method-assign]
    TyperArgument.display_type_rich = argument_display  # type: ignore[method-assign, assignment]


_plain_help_types()

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


def _legacy_notice(old: Path, new: Path) -> None:
    """Journals in an old ``./.cutbook`` stay in sight: say where they are and how to use them."""
    runs = paths.legacy_journals()
    err.print(
        f"note: {old} holds {runs} journalled run{'s' if runs != 1 else ''} from before "
        f"cutbook kept one data directory per user; this command uses {new}. To keep using "
        f"the old one: --data-dir {paths.LEGACY_DATA_DIR} "
        f"or CUTBOOK_DATA_DIR={shlex.quote(str(old))}",
        style="yellow",
        markup=False,
        soft_wrap=True,
    )


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
    paths.on_legacy_data_dir(_legacy_notice)


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
