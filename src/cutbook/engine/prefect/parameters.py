"""A run as Prefect records it: the flow run's parameters and tags.

The parameters are a complete, JSON-serialisable description of the run, so
a flow run started from a deployment gets exactly the settings ``cutbook
run`` would have used: :func:`to_parameters` and :func:`to_settings` are
inverses for every :class:`RunSettings` field (tested field by field). The
runbook's text and hash travel too, so the UI shows exactly what ran. No
Prefect import here: building parameters needs none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

from cutbook import paths
from cutbook.engine.session import RunSettings
from cutbook.validation import LoadedRunbook


class FlowParameters(TypedDict):
    runbook_name: str
    window_start: str
    """With ``runbook_name``, the flow run's name: what the UI lists."""
    runbook_path: str
    runbook_sha256: str
    """A deployment's run refuses a runbook whose text changed since it was submitted."""
    runbook_text: str
    data_sha256: dict[str, str]
    """Each data file's sha256 by its path as the runbook names it: frozen with the text."""
    variables: dict[str, Any]
    run_id: str
    settings: dict[str, Any]
    """Every other :class:`RunSettings` field, JSON-encoded by :data:`SETTINGS_CODECS`."""


def _start_out(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _start_in(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _store_out(value: str | None) -> str | None:
    """The audit store without its password: Prefect shows parameters to anyone with the UI;
    the worker's ``CUTBOOK_AUDIT_STORE`` (or the driver's own sources) supplies it."""
    if not value:
        return None
    from cutbook.journal.store import without_password

    return without_password(value)


def _store_in(value: Any) -> str | None:
    return str(value) if value else None


SETTINGS_CODECS: Mapping[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "data_dir": (str, Path),
    "clock": (str, str),
    "speed": (float, float),
    "start": (_start_out, _start_in),
    "dry_run": (bool, bool),
    "preflight": (bool, bool),
    "auto_approve": (bool, bool),
    "started_by": (str, str),
    "executor": (str, str),
    "audit_store": (_store_out, _store_in),
}
"""How each setting becomes JSON and back; ``run_id`` is a parameter of its own."""


def to_parameters(
    loaded: LoadedRunbook, settings: RunSettings, *, resumed: bool = False
) -> FlowParameters:
    """The flow's parameters for this runbook and these settings (``run_id`` must be chosen)."""
    if not settings.run_id:
        raise ValueError("choose the run id before building the flow's parameters")
    rb = loaded.runbook
    shift = (settings.start - rb.window_start) if settings.start else timedelta(0)
    return FlowParameters(
        runbook_name=rb.name,
        window_start=(rb.window_start + shift).isoformat(timespec="minutes")
        + (" (resumed)" if resumed else "")
        + (" REHEARSAL" if is_rehearsal(settings) else ""),
        runbook_path=str(loaded.path.resolve()),
        runbook_sha256=loaded.sha256,
        runbook_text=loaded.text,
        data_sha256=data_hashes(loaded),
        variables=dict(loaded.vars),
        run_id=settings.run_id,
        settings={
            name: encode(getattr(settings, name)) for name, (encode, _) in SETTINGS_CODECS.items()
        },
    )


def data_files(loaded: LoadedRunbook) -> dict[str, Path]:
    """The data files a runbook reads, by the path it names them with (relative to it)."""
    base = loaded.path.parent
    return {rel: (base / rel).resolve() for rel in loaded.runbook.data.values()}


def data_hashes(loaded: LoadedRunbook) -> dict[str, str]:
    """What a scheduled run checks its data files against when it starts."""
    return {rel: sha256_of(path) for rel, path in data_files(loaded).items()}


def sha256_of(path: Path) -> str:
    """A file's sha256, or ``"missing"`` when it is gone (a difference worth naming)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def to_settings(parameters: Mapping[str, Any]) -> RunSettings:
    """The settings a flow run's parameters describe; absent ones take RunSettings' defaults."""
    given = dict(parameters.get("settings") or {})
    chosen = {
        name: decode(given[name])
        for name, (_, decode) in SETTINGS_CODECS.items()
        if name in given and name != "data_dir"
    }
    return RunSettings(
        data_dir=paths.data_dir(Path(given["data_dir"]) if given.get("data_dir") else None),
        run_id=parameters.get("run_id") or None,
        **chosen,
    )


def run_tag(run_id: str) -> str:
    """The tag that finds a run's flow runs again (``cutbook approve``)."""
    return f"cutbook-run:{run_id}"


def is_rehearsal(settings: RunSettings) -> bool:
    """Not the night: a compressed clock or a dry run. Named and tagged so nobody confuses
    a rehearsal's flow runs (and their pauses) with the real one's."""
    return settings.clock != "real" or settings.dry_run


def run_tags(
    runbook_name: str, run_id: str, *, resumed: bool = False, rehearsal: bool = False
) -> tuple[str, ...]:
    return (
        "cutover",
        runbook_name,
        run_tag(run_id),
        *(("resumed",) if resumed else ()),
        *(("rehearsal",) if rehearsal else ()),
    )
