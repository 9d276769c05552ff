"""Approvers' signing keys under ``cutbook keys``: make one, show its public half.

Why a command of its own: an approver makes the key on their own machine, keeps
the private file, and hands only the printed public line to whoever writes the
runbook. Nothing here touches a journal or a run.

Exit codes: 0 done, 2 bad input (an existing file, an unusable key file).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Final

import typer

from cutbook.errors import UsageError

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_PLAIN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

NEW_HELP: Final = """Make a signing key for approver NAME.

Writes the private key to --out (default ./NAME.key, mode 600, never overwritten)
and prints the line the operations lead puts in the runbook, plus the key's
fingerprint to read back to them. Keep the file on your own machine, never on
the cutover host; `cutbook approve --key FILE` signs your answers with it.

Example:

    $ cutbook keys new ops-lead --out ~/.cutbook/ops-lead.key

    approvers: {ops-lead: {key: "ed25519:…"}}

    fingerprint SHA256:1f0c…
"""

SHOW_HELP: Final = """Print the runbook line and fingerprint of a private key FILE.

For when the operations lead needs your public key again: nothing secret is
printed. NAME in the line is --name, or the file's name without .key.

Example:

    $ cutbook keys show ~/.cutbook/ops-lead.key
"""


def register(app: typer.Typer) -> None:
    app.command(name="new", help=NEW_HELP)(new_command)
    app.command(name="show", help=SHOW_HELP)(show_command)


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"approver name {name!r}: use letters, digits and . _ @ - (as in the runbook)"
        )
    return name


def _runbook_line(name: str, public: str) -> str:
    """The flow-style YAML line, quoting the name only when YAML would need it."""
    shown = name if _PLAIN.match(name) else json.dumps(name)
    return f'approvers: {{{shown}: {{key: "{public}"}}}}'


def _write_exclusive(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600, refusing an existing file: a key is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{path} exists: not overwriting a key (choose another --out, or remove it first)"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may only narrow it; say so explicitly anyway
        os.write(fd, data)
        os.fsync(fd)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def new_command(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The approver's name, as the runbook lists it.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the private key. [default: ./NAME.key]"),
    ] = None,
) -> None:
    from cutbook.signing import fingerprint, new_key

    _check_name(name)
    path = out if out is not None else Path(f"{name}.key")
    pem, public = new_key()
    _write_exclusive(path, pem)
    typer.echo(
        f"wrote {name}'s private key to {path} (mode 600): keep it to yourself, "
        "never on the cutover host",
        err=True,
    )
    typer.echo(_runbook_line(name, public))
    typer.echo(f"fingerprint {fingerprint(public)}")


def show_command(
    file: Annotated[
        Path,
        typer.Argument(metavar="KEY_FILE", help="A private key file made by cutbook keys new."),
    ],
    name: Annotated[
        str | None, typer.Option(help="The approver's name. [default: FILE without .key]")
    ] = None,
) -> None:
    from cutbook.signing import fingerprint, load_private, public_text

    stem = file.name.removesuffix(".key")
    default = stem if _NAME.match(stem) else "NAME"
    shown = _check_name(name) if name is not None else default
    public = public_text(load_private(file).public_key())
    typer.echo(_runbook_line(shown, public))
    typer.echo(f"fingerprint {fingerprint(public)}")
