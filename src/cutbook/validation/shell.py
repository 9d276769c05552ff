"""Templates handed to a shell as a command string: a data value would run as code.

The shell adapter runs an argv list so values never meet a shell, but
``argv: [sh, -c, "echo {{ item.note }}"]`` brings the shell back: a value with
``;`` or ``$(...)`` in it becomes a command. Validation warns and shows the argv form.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import PureWindowsPath
from typing import Any

from cutbook import templating
from cutbook.model import Runbook, Step
from cutbook.validation.report import PathKey, Report

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "fish", "cmd", "powershell", "pwsh"})
# The option after which the next argument is a command string, per shell.
COMMAND_FLAGS = {"cmd": ("/c", "/k"), "powershell": ("-c", "-command"), "pwsh": ("-c", "-command")}
_SUFFIX = re.compile(r"\.exe$", re.I)
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def shell_name(program: str) -> str | None:
    """The shell ``program`` names (``/bin/sh``, ``bash``, ``cmd.exe``), or None."""
    base = _SUFFIX.sub("", PureWindowsPath(program).name).lower()
    return base if base in SHELLS else None


def command_index(argv: list[Any]) -> int | None:
    """Where the command string of a ``<shell> -c <string>`` argv is, or None.

    Combined flags such as ``-ec`` or ``-lc`` count too: ``c`` among short options.
    """
    if not argv or not isinstance(argv[0], str):
        return None
    shell = shell_name(argv[0])
    if shell is None:
        return None
    flags = COMMAND_FLAGS.get(shell)
    for i, arg in enumerate(argv[1:], 1):
        if not isinstance(arg, str):
            return None
        low = arg.lower()
        if flags is not None:
            if low in flags:
                return i + 1 if i + 1 < len(argv) else None
            continue
        if low.startswith("-") and not low.startswith("--") and "c" in low[1:]:
            return i + 1 if i + 1 < len(argv) else None
        if not low.startswith("-"):
            return None  # a script file: its arguments are not shell code
    return None


def check_shell_strings(report: Report, rb: Runbook, step: Step) -> None:
    """Warn for each shell command string with a template, in with, verify and rollback."""
    sp = report.step_path(step)
    calls: list[tuple[str | None, Mapping[str, Any], PathKey]] = [
        (step.target, step.with_, (*sp, "with"))
    ]
    if step.verify is not None and step.verify.action is not None:
        calls.append(
            (step.verify.target or step.target, step.verify.with_, (*sp, "verify", "with"))
        )
    if step.rollback is not None and step.rollback.action is not None:
        calls.append(
            (step.rollback.target or step.target, step.rollback.with_, (*sp, "rollback", "with"))
        )
    for target, args, base in calls:
        spec = rb.targets.get(target) if target is not None else None
        if spec is None or spec.adapter != "shell":
            continue
        argv = args.get("argv")
        if not isinstance(argv, list):
            continue
        at = command_index(argv)
        if at is None or not templating.is_template(argv[at]):
            continue
        flag = argv[at - 1]
        where = ".".join(str(k) for k in base[len(sp) :])
        report.warn(
            (*base, "argv", at),
            f"step {step.id!r}: {where}.argv[{at}] passes a template to a shell "
            f"(`{shell_name(argv[0])} {flag}`): a value with `;` or `$(...)` would run as a "
            f"command; put each value in its own argv element instead: {_argv_form(argv[at])}",
        )


def _argv_form(command: str) -> str:
    """The command string split into argv elements, to show what to write instead."""
    found: list[str] = []

    def hide(m: re.Match[str]) -> str:
        found.append(m.group(0))
        return f"\x00{len(found) - 1}\x00"

    hidden = _TEMPLATE.sub(hide, command)
    try:
        split = shlex.split(hidden)
    except ValueError:
        split = hidden.split()
    words = [re.sub("\x00(\\d+)\x00", lambda m: found[int(m.group(1))], w) for w in split]
    shown = [f"'{w}'" if templating.is_template(w) or not w.isprintable() else w for w in words]
    return "[" + ", ".join(shown) + "]"
