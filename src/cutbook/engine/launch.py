"""Starting, resuming and answering runs: the engine's API for the CLI, the demo, embedders.

A run executes as a Prefect flow run, on the server ``PREFECT_API_URL``
names or on a local one started on demand, so the UI shows it while it runs
and after. Prefect reads its settings from the environment when first
imported, so each function here points the process at a server before
anything imports Prefect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutbook.engine.observe import RunObserver
from cutbook.engine.prefect.secrets import PrefectSecrets
from cutbook.engine.prefect.server import ensure_server, use_running_server
from cutbook.engine.session import RunSettings, Session
from cutbook.engine.state import Choice, Outcome
from cutbook.logs import configure as configure_logs
from cutbook.validation import LoadedRunbook, load

__all__ = ["Launched", "RunObserver", "RunSettings", "answer_gate", "launch", "resume"]


@dataclass(frozen=True)
class Launched:
    """What became of a run: its outcome, and the session for anything more (journal, state)."""

    session: Session
    outcome: Outcome | None
    """``None``: the run stopped before it had one (Prefect refused the flow run)."""

    @property
    def run_id(self) -> str:
        return self.session.run_id

    @property
    def failure(self) -> str | None:
        return self.session.runner.failure if self.session.runner else None

    @property
    def journal_path(self) -> Path | None:
        return self.session.journal.path if self.session.journal else None

    def counts(self) -> dict[str, int]:
        """How many steps ended in each status."""
        counts: dict[str, int] = {}
        if self.session.runner is not None:
            for st in self.session.runner.states.values():
                counts[st.status] = counts.get(st.status, 0) + 1
        return counts


def launch(
    runbook: LoadedRunbook | Path,
    settings: RunSettings,
    *,
    variables: Mapping[str, Any] | None = None,
    observers: Sequence[RunObserver] = (),
) -> Launched:
    """Run a runbook to its end (rollback and ``always`` steps included)."""
    ensure_server(settings.data_dir)
    loaded = runbook if isinstance(runbook, LoadedRunbook) else load(runbook, overrides=variables)
    return _execute(Session(loaded, settings, secret_store=PrefectSecrets()), observers)


def resume(
    run_id: str, settings: RunSettings, *, observers: Sequence[RunObserver] = ()
) -> Launched:
    """Continue a run whose process died, from its journal (``settings`` gives the data
    directory, who resumes and whether gates are auto-approved; the rest is the run's)."""
    ensure_server(settings.data_dir)
    return _execute(Session.resume(run_id, settings, secret_store=PrefectSecrets()), observers)


def answer_gate(run_id: str, step: str, *, choice: Choice, by: str, comment: str = "") -> str:
    """Answer the question a running run waits on at ``step``; says what was answered."""
    use_running_server()
    from cutbook.engine.prefect.gates import answer_gate as answer

    return answer(run_id, step, choice=choice, by=by, comment=comment)


def _execute(session: Session, observers: Sequence[RunObserver]) -> Launched:
    configure_logs(redactor=session.redactor)  # scrubs the secrets prepare() will learn
    session.observers.extend(observers)
    return Launched(session, asyncio.run(_run(session)))


async def _run(session: Session) -> Outcome | None:
    from cutbook.engine.prefect.flow import run_in_process

    await session.prepare()
    await run_in_process(session)
    return session.runner.outcome if session.runner else None
