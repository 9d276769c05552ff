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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from cutbook import __version__, registry, templating
from cutbook.adapter import Adapter, AdapterContext
from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.resume import Recovered, reconstruct
from cutbook.engine.runner import (
    Answer,
    Bridge,
    Outcome,
    Question,
    Runner,
    RunOptions,
    StepReport,
)
from cutbook.errors import RunbookError, UsageError
from cutbook.journal import Journal
from cutbook.planning import Plan
from cutbook.planning import plan as make_plan
from cutbook.redact import Redactor
from cutbook.validation import LoadedRunbook

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
        return Path(os.environ.get("CUTBOOK_JOURNAL_DIR") or self.data_dir / "journal")


def new_run_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{pysecrets.token_hex(2)}"


MIN_SECRET_LENGTH = 6
"""Below this, scrubbing a value out of every log line would mangle ordinary text."""


def secret_block_name(name: str) -> str:
    return name.lower().replace("_", "-")


async def resolve_secrets(names: list[str]) -> dict[str, str]:
    """Environment first, then a Prefect Secret block named like the secret in kebab case."""
    values: dict[str, str] = {}
    missing = []
    for name in names:
        if os.environ.get(name):
            values[name] = os.environ[name]
            continue
        value = await _from_block(secret_block_name(name))
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
        raise UsageError(
            "secret(s) not found: "
            + ", ".join(missing)
            + " — set them in the environment, or create Prefect Secret blocks named "
            + ", ".join(secret_block_name(m) for m in missing)
        )
    return values


async def _from_block(block: str) -> str | None:
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        loaded: Any = await Secret.aload(block)
    except (ObjectNotFound, ValueError):
        return None
    value: object = loaded.get()
    return str(value)


def _versions(adapters: dict[str, type[Adapter]]) -> dict[str, Any]:
    found: dict[str, str] = {}
    for entry in registry.available():
        if entry.name in {cls.name for cls in adapters.values()}:
            try:
                found[entry.name] = f"{entry.distribution} {version(entry.distribution)}"
            except PackageNotFoundError:
                found[entry.name] = entry.distribution
    return {"cutbook": __version__, "adapters": found}


class _Watched:
    def __init__(self, inner: Bridge, observers: list[Callable[[Runner], None]]) -> None:
        self.inner = inner
        self.observers = observers

    async def task(self, name: str, body: Callable[[], Awaitable[StepReport]]) -> StepReport:
        return await self.inner.task(name, body)

    async def ask(self, question: Question) -> Answer:
        return await self.inner.ask(question)

    def publish(self, runner: Runner) -> None:
        self.inner.publish(runner)
        for observer in self.observers:
            observer(runner)


class Session:
    def __init__(self, loaded: LoadedRunbook, settings: RunSettings) -> None:
        self.loaded = loaded
        self.settings = settings
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
        self.observers: list[Callable[[Runner], None]] = []
        self.on_flow_run: Callable[[str], None] | None = None

    def watch(self, bridge: Bridge) -> Bridge:
        """Let in-process observers (the terminal view) see every change the UI sees."""
        return _Watched(bridge, self.observers) if self.observers else bridge

    def flow_run_url(self, flow_run_id: object) -> str | None:
        from cutbook.engine.server import ui_url

        api = os.environ.get("PREFECT_API_URL")
        url = ui_url(api, flow_run_id) if api else None
        if self.on_flow_run is not None:
            self.on_flow_run(url or str(flow_run_id))
        return url

    @classmethod
    def resume(cls, run_id: str, settings: RunSettings) -> Session:
        """A session that continues ``run_id`` from its journal, with the same runbook
        text (checked by hash), variables, window and clock."""
        from cutbook.audit import resolve_run
        from cutbook.journal import read_records
        from cutbook.validation import load

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
        session = cls(loaded, settings)
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
        self.secrets = await resolve_secrets(rb.secrets)
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

    @cached_property
    def forecast(self) -> Plan:
        """The plan for this run's window, computed once: journalled and given to the runner."""
        rb = self.loaded.runbook
        return make_plan(
            rb, start=rb.window_start + self.shift, item_counts=self.loaded.item_counts
        )

    def runner_for(self, bridge: Bridge) -> Runner:
        assert self.journal is not None
        forecast = self.forecast
        if isinstance(self.clock, VirtualClock):
            resume_at = self.recovered.last_time if self.recovered else None
            self.clock.restart(resume_at)
        self.runner = Runner(
            self.loaded,
            self.adapters,
            self.journal,
            bridge,
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
        )
        self.runner.point_of_no_return = forecast.point_of_no_return
        if self.recovered is not None:
            self.runner.restore(self.recovered)
        return self.runner

    def attach_flow_run(self, flow_run_id: str | None, ui: str | None) -> None:
        """Link this process's Prefect flow run to the journal (a resume makes a new one)."""
        assert self.journal is not None
        if self.recovered is None:
            self.journal.append("run.flow", flow_run_id=flow_run_id, flow_run_url=ui)
            return
        self.journal.append(
            "run.resumed",
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
            "run.started",
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
        for adapter in self.adapters.values():
            await adapter.aclose()
        if self.journal is not None:
            failure = self.runner.failure if self.runner else None
            self.journal.append("run.finished", outcome=outcome or "failed", error=error or failure)
            self.journal.close()
