"""Everything a run needs, prepared before anything is touched.

Preparing resolves secrets, builds every target's adapter and opens the
journal; any problem there stops the run before its first step, so a run is
never half-started. The flow then only executes.
"""

from __future__ import annotations

import getpass
import os
import platform
import secrets as pysecrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from cutbook import __version__, paths, registry, templating
from cutbook.adapter import Adapter, AdapterContext
from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.observe import RunObserver, Watched
from cutbook.engine.resume import Recovered, reconstruct
from cutbook.engine.runner import Runner
from cutbook.engine.state import Bridge, Outcome, RunOptions
from cutbook.errors import RunbookError, UsageError
from cutbook.journal import Journal, read_records, resolve_run
from cutbook.journal.events import Event
from cutbook.planning import Plan
from cutbook.planning import plan as make_plan
from cutbook.redact import MIN_SECRET_LENGTH, Redactor
from cutbook.validation import LoadedRunbook, load

log = structlog.get_logger("cutbook.engine")


@dataclass
class RunSettings:
    """What the operator chose on the command line (all of it journalled)."""

    data_dir: Path
    clock: str = "real"
    speed: float = 360.0
    start: datetime | None = None
    dry_run: bool = False
    auto_approve: bool = False
    run_id: str | None = None
    started_by: str = field(default_factory=lambda: f"{getpass.getuser()}@{platform.node()}")

    @property
    def journal_dir(self) -> Path:
        return paths.journal_dir(self.data_dir)


def new_run_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{pysecrets.token_hex(2)}"


class SecretStore(Protocol):
    """Where a secret the environment does not hold is looked up (Prefect Secret blocks)."""

    async def lookup(self, name: str) -> str | None: ...

    def hint(self, missing: list[str]) -> str:
        """How an operator would provide the missing secrets there."""
        ...


async def resolve_secrets(names: list[str], store: SecretStore | None = None) -> dict[str, str]:
    """Environment first, then the store; too-short or missing secrets stop the run."""
    values: dict[str, str] = {}
    missing = []
    for name in names:
        if os.environ.get(name):
            values[name] = os.environ[name]
            continue
        value = await store.lookup(name) if store is not None else None
        if value is None:
            missing.append(name)
        else:
            values[name] = value
    short = [n for n, v in values.items() if len(v) < MIN_SECRET_LENGTH]
    if short:
        raise UsageError(
            f"secret(s) {', '.join(short)} shorter than {MIN_SECRET_LENGTH} characters: "
            "too short to scrub from logs reliably"
        )
    if missing:
        elsewhere = f", or {store.hint(missing)}" if store is not None else ""
        raise UsageError(
            "secret(s) not found: "
            + ", ".join(missing)
            + " — set them in the environment"
            + elsewhere
        )
    return values


def _versions(adapters: dict[str, type[Adapter]]) -> dict[str, Any]:
    found: dict[str, str] = {}
    for entry in registry.available():
        if entry.name in {cls.name for cls in adapters.values()}:
            try:
                found[entry.name] = f"{entry.distribution} {version(entry.distribution)}"
            except PackageNotFoundError:
                found[entry.name] = entry.distribution
    return {"cutbook": __version__, "adapters": found}


class Session:
    def __init__(
        self,
        loaded: LoadedRunbook,
        settings: RunSettings,
        *,
        secret_store: SecretStore | None = None,
    ) -> None:
        self.loaded = loaded
        self.settings = settings
        self.secret_store = secret_store
        """Where secrets missing from the environment are looked up; none: environment only."""
        rb = loaded.runbook
        self.run_id = settings.run_id or new_run_id(rb.name)
        self.shift = (settings.start - rb.window_start) if settings.start else timedelta(0)
        origin = rb.window_start + self.shift
        self.clock: RealClock | VirtualClock
        if settings.clock == "virtual":
            self.clock = VirtualClock(origin, settings.speed)
        elif settings.clock == "real":
            self.clock = RealClock()
        else:
            raise UsageError(f"--clock {settings.clock!r}: use real or virtual")
        self.redactor = Redactor()
        self.secrets: dict[str, str] = {}
        self.adapters: dict[str, Adapter] = {}
        self.journal: Journal | None = None
        self.runner: Runner | None = None
        self.recovered: Recovered | None = None
        self.observers: list[RunObserver] = []

    @classmethod
    def resume(
        cls, run_id: str, settings: RunSettings, *, secret_store: SecretStore | None = None
    ) -> Session:
        """A session that continues ``run_id`` from its journal, with the same runbook
        text (checked by hash), variables, window and clock."""
        path = resolve_run(settings.journal_dir, run_id)
        rec = reconstruct(read_records(path, skip_bad=True))
        started = rec.started
        runbook = Path(str(started.get("runbook_path", "")))
        loaded = load(runbook, overrides=dict(started.get("variables") or {}))
        if loaded.sha256 != started.get("runbook_sha256"):
            raise UsageError(
                f"{runbook} has changed since run {rec.run_id} started (its sha256 differs); "
                "resume only continues the exact runbook that was started"
            )
        window = started.get("window") or {}
        settings.run_id = rec.run_id
        settings.clock = str(started.get("clock", "real"))
        settings.speed = float(started.get("speed") or 360.0)
        settings.dry_run = bool(started.get("dry_run"))
        if window.get("start"):
            settings.start = datetime.fromisoformat(window["start"])
        session = cls(loaded, settings, secret_store=secret_store)
        session.recovered = rec
        return session

    def check_window(self) -> None:
        if self.clock.kind != "real" or self.recovered is not None:
            return
        end = self.loaded.runbook.window_end + self.shift
        if self.clock.now() >= end:
            raise UsageError(
                f"the window ended at {end.isoformat(timespec='minutes')}; place it with "
                "--start, or rehearse with --clock virtual"
            )

    async def prepare(self) -> None:
        """Resolve secrets, build adapters, open the journal: all or nothing."""
        self.check_window()
        rb = self.loaded.runbook
        self.secrets = await resolve_secrets(rb.secrets, self.secret_store)
        self.redactor.add(*self.secrets.values())
        ctx = self.loaded.static_context(self.secrets)
        context = AdapterContext(
            clock=self.clock,
            log=lambda msg: log.info(msg),
            secret_values=frozenset(self.secrets.values()),
        )
        for name, spec in rb.targets.items():
            cls = self.loaded.adapters.get(name) or registry.load(spec.adapter)
            try:
                options = templating.render(spec.options, ctx)
                config = cls.Config.model_validate(options)
            except templating.TemplateError as exc:
                raise RunbookError(
                    f"target {name!r}: {self.redactor.scrub_text(str(exc))}"
                ) from None
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                raise RunbookError(f"target {name!r}: option {where}: {first['msg']}") from None
            self.adapters[name] = cls(config, context)  # type: ignore[call-arg]
        key = os.environ.get("CUTBOOK_JOURNAL_KEY")
        self.journal = Journal.create(
            self.settings.journal_dir,
            self.run_id,
            hmac_key=key.encode() if key else None,
            redactor=self.redactor,
        )
        if self.recovered is None:
            self._record_started()
        for observer in self.observers:
            observer.run_prepared(self.run_id)

    @cached_property
    def forecast(self) -> Plan:
        """The plan for this run's window, computed once: journalled and given to the runner."""
        rb = self.loaded.runbook
        return make_plan(
            rb, start=rb.window_start + self.shift, item_counts=self.loaded.item_counts
        )

    def runner_for(self, bridge: Bridge) -> Runner:
        """The runner for this run; observers see every change the bridge publishes."""
        assert self.journal is not None
        forecast = self.forecast
        if isinstance(self.clock, VirtualClock):
            resume_at = self.recovered.last_time if self.recovered else None
            self.clock.restart(resume_at)
        self.runner = Runner(
            self.loaded,
            self.adapters,
            self.journal,
            Watched(bridge, self.observers) if self.observers else bridge,
            RunOptions(
                run_id=self.run_id,
                started_by=self.settings.started_by,
                clock=self.clock,
                dry_run=self.settings.dry_run,
                auto_approve=self.settings.auto_approve,
                secrets=self.secrets,
                shift=self.shift,
            ),
            plan={s.id: (s.start, s.finish) for s in forecast.steps},
            point_of_no_return=forecast.point_of_no_return,
        )
        if self.recovered is not None:
            self.runner.restore(self.recovered)
        return self.runner

    def attach_flow_run(self, flow_run_id: str | None, ui: str | None) -> None:
        """Link this process's flow run to the journal (a resume makes a new one); the
        run starts from here, so observers hear of it."""
        self._record_flow_run(flow_run_id, ui)
        if self.runner is not None:
            for observer in self.observers:
                observer.run_started(self.runner.state, ui or flow_run_id)

    def _record_flow_run(self, flow_run_id: str | None, ui: str | None) -> None:
        assert self.journal is not None
        if self.recovered is None:
            self.journal.append(Event.RUN_FLOW, flow_run_id=flow_run_id, flow_run_url=ui)
            return
        self.journal.append(
            Event.RUN_RESUMED,
            by=self.settings.started_by,
            host=platform.node(),
            flow_run_id=flow_run_id,
            flow_run_url=ui,
            previous_flow_runs=self.recovered.flow_runs,
            reason="resumed from the journal after the run stopped without finishing",
            resumed_at=self.clock.now().isoformat(),
            steps_done=sorted(
                s for s, status in self.recovered.statuses.items() if status == "succeeded"
            ),
        )

    def _record_started(self) -> None:
        """The first record, written before anything can act: a run exists from here on."""
        assert self.journal is not None
        rb = self.loaded.runbook
        forecast = self.forecast
        self.journal.append(
            Event.RUN_STARTED,
            runbook_name=rb.name,
            runbook_path=str(self.loaded.path.resolve()),
            runbook_sha256=self.loaded.sha256,
            runbook_text=self.loaded.text,
            variables=self.loaded.vars,
            started_by=self.settings.started_by,
            host=platform.node(),
            versions=_versions(self.loaded.adapters),
            window={
                "start": (rb.window_start + self.shift).isoformat(),
                "end": (rb.window_end + self.shift).isoformat(),
            },
            timezone=rb.timezone,
            clock=self.clock.kind,
            speed=self.clock.speed,
            dry_run=self.settings.dry_run,
            auto_approve=self.settings.auto_approve,
            plan=forecast.to_json(),
        )

    async def finish(self, outcome: Outcome | None, error: str | None = None) -> None:
        """Close adapters and the journal; observers hear last, whatever failed before."""
        try:
            for adapter in self.adapters.values():
                await adapter.aclose()
            if self.journal is not None:
                failure = self.runner.failure if self.runner else None
                self.journal.append(
                    Event.RUN_FINISHED, outcome=outcome or "failed", error=error or failure
                )
                self.journal.close()
        finally:
            if self.runner is not None:
                for observer in self.observers:
                    observer.run_finished(self.runner.state, outcome)
