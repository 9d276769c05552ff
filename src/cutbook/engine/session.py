"""Everything a run needs, prepared before anything is touched.

Preparing resolves secrets, builds every target's adapter and opens the
journal; any problem there stops the run before its first step, so a run is
never half-started. The flow then only executes.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import platform
import secrets as pysecrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from cutbook import __version__, paths, registry, templating
from cutbook.adapter import Adapter, AdapterContext
from cutbook.clock import RealClock, VirtualClock
from cutbook.engine.notify import Notifier, build_channels
from cutbook.engine.observe import RunObserver, Watched
from cutbook.engine.resume import Recovered, reconstruct
from cutbook.engine.runner import Runner
from cutbook.engine.secrets import SecretStore, resolve_secrets
from cutbook.engine.signals import StopSignals
from cutbook.engine.state import Bridge, Halt, Outcome, RunOptions
from cutbook.errors import JournalError, JournalWriteError, LeaseHeld, RunbookError, UsageError
from cutbook.journal import Journal, read_records, resolve_run
from cutbook.journal.events import Event
from cutbook.journal.lease import Lease, estate_lock, holder, run_lock
from cutbook.journal.writer import LineMirror
from cutbook.planning import Plan
from cutbook.planning import plan as make_plan
from cutbook.redact import Redactor
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
    preflight: bool = False
    """A pre-flight check: read-only checks now, whatever the window; no estate lease."""
    auto_approve: bool = False
    run_id: str | None = None
    started_by: str = field(default_factory=lambda: f"{getpass.getuser()}@{platform.node()}")
    executor: str = field(default_factory=getpass.getuser)
    """Who runs the night (``--as NAME``): a gate with ``executor_may_approve: false``
    refuses their answers."""
    audit_store: str | None = None
    """The shared audit store's URL (``--audit-store``; none: ``CUTBOOK_AUDIT_STORE``):
    every journal line is copied there after its fsync. Not journalled, and flow
    parameters carry it without its password."""

    @property
    def journal_dir(self) -> Path:
        return paths.journal_dir(self.data_dir)


def new_run_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{name}-{stamp}-{pysecrets.token_hex(2)}"


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
        self.notifier: Notifier | None = None
        """Tells the runbook's ``notify:`` channels about milestones; None without channels."""
        self.leases: list[Lease] = []
        self.fingerprint: str | None = None
        """The estate this run acts on: runbook name and rendered targets, secrets scrubbed."""
        self.stop = StopSignals(self)
        self.rollback_on_resume = False
        """``cutbook resume --rollback``: undo what changed instead of going on."""

    @classmethod
    def resume(
        cls, run_id: str, settings: RunSettings, *, secret_store: SecretStore | None = None
    ) -> Session:
        """A session that continues ``run_id`` from its journal, with the same runbook
        text (checked by hash), variables, window and clock."""
        path = resolve_run(settings.journal_dir, run_id)
        live = holder(settings.journal_dir, path.stem)
        if live is not None:
            raise LeaseHeld(_still_running(path.stem, live.describe()))
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
        if self.clock.kind != "real" or self.recovered is not None or self.settings.preflight:
            return
        end = self.loaded.runbook.window_end + self.shift
        if self.clock.now() >= end:
            raise UsageError(
                f"the window ended at {end.isoformat(timespec='minutes')}; place it with "
                "--start, or rehearse with --clock virtual"
            )

    async def prepare(self) -> None:
        """Take the run's lease, resolve secrets, build adapters, take the estate's lease,
        open the journal: all or nothing, and one actor per run and per estate."""
        self.check_window()
        rb = self.loaded.runbook
        self._take_run_lease()
        self.secrets = await resolve_secrets(rb.secrets, self.secret_store)
        self.redactor.add(*self.secrets.values())
        ctx = self.loaded.static_context(self.secrets)
        context = AdapterContext(
            clock=self.clock,
            log=lambda msg: log.info(msg),
            secret_values=frozenset(self.secrets.values()),
        )
        rendered: dict[str, Any] = {}
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
            rendered[name] = {"adapter": spec.adapter, "config": config.model_dump(mode="json")}
        if not self.settings.preflight:  # reads only: it may check an estate a run holds
            self._take_estate_lease(rendered)
        key = os.environ.get("CUTBOOK_JOURNAL_KEY")
        mirror = self._audit_mirror()
        try:
            self.journal = Journal.create(
                self.settings.journal_dir,
                self.run_id,
                hmac_key=key.encode() if key else None,
                redactor=self.redactor,
                mirror=mirror,
            )
        except JournalError:
            if mirror is not None:
                mirror.close(0)
            raise
        if self.recovered is None:
            self._record_started()
        if rb.notify and not self.settings.preflight:
            channels = build_channels(rb.notify, ctx, self.redactor)
            self.notifier = Notifier(rb, channels, self.journal, self.redactor, self.run_id)
            self.observers.append(self.notifier)
        for observer in self.observers:
            observer.run_prepared(self.run_id)

    def _audit_mirror(self) -> LineMirror | None:
        """The shared audit store's mirror, when a store is configured; its password is
        scrubbed from everything the run writes or logs."""
        from cutbook.journal.store import StoreMirror, password_of, resolve_url

        url = resolve_url(self.settings.audit_store)
        if not url:
            return None
        password = password_of(url)
        if password:
            self.redactor.add(password)
        return StoreMirror(url)

    def _take_run_lease(self) -> None:
        """One process per run; a fresh run never takes over another run's id."""
        journal_dir = self.settings.journal_dir
        try:
            lease = Lease.acquire(
                run_lock(journal_dir, self.run_id),
                run_id=self.run_id,
                runbook=self.loaded.runbook.name,
                estate="",
                what=f"run {self.run_id}",
            )
        except LeaseHeld as exc:
            live = holder(journal_dir, self.run_id)
            if self.recovered is not None and live is not None:
                raise LeaseHeld(_still_running(self.run_id, live.describe())) from None
            raise LeaseHeld(f"run id {self.run_id} is in use: {exc}") from None
        self.leases.append(lease)
        journal = journal_dir / f"{self.run_id}.jsonl"
        if self.recovered is None and journal.exists():
            raise UsageError(
                f"run id {self.run_id} is taken: {journal} exists, and run ids are never "
                f"reused. Pick another --run-id, or continue that run with "
                f"cutbook resume {self.run_id}"
            )

    def _take_estate_lease(self, rendered: dict[str, Any]) -> None:
        """One run per estate: same runbook, same rendered targets (secrets scrubbed)."""
        name = self.loaded.runbook.name
        body = json.dumps(
            {"runbook": name, "targets": self.redactor.scrub(rendered)},
            sort_keys=True,
            default=str,
        )
        self.fingerprint = hashlib.sha256(body.encode()).hexdigest()[:16]
        try:
            self.leases.append(
                Lease.acquire(
                    estate_lock(self.settings.journal_dir, self.fingerprint),
                    run_id=self.run_id,
                    runbook=name,
                    estate=self.fingerprint,
                    what=f"the estate of runbook {name} (fingerprint {self.fingerprint})",
                )
            )
        except LeaseHeld as exc:
            raise LeaseHeld(
                f"{exc}: one run per estate at a time. Wait for that run to end, or stop it "
                "(Ctrl-C, or kill -TERM its pid) and continue it with cutbook resume"
            ) from None

    def release(self) -> None:
        """Let the leases go (the kernel would at exit; a long-lived embedder needs this)."""
        while self.leases:
            self.leases.pop().release()

    @property
    def halted(self) -> Halt | None:
        """Why the run stopped without finishing and is left for resume; None otherwise."""
        runner = self.runner
        if runner is None or runner.outcome is not None:
            return None
        return runner.state.halted

    @property
    def resume_command(self) -> str:
        return f"cutbook resume {self.run_id}"

    def halt_report(self) -> list[str]:
        """What the operator must know after a halt: the estate's state and what to type."""
        halt = self.halted
        if halt is None or self.runner is None:
            return []
        state = self.runner.state
        done = state.done()
        flight = state.in_flight()
        if halt.cause == "signal":
            head = (
                f"stopped by {halt.detail}; the run is left for resume: nothing was rolled "
                "back and no always steps ran"
            )
        else:
            head = f"stopped: {halt.detail}"
        lines = [head, f"  completed: {', '.join(done) or 'none'}"]
        if flight:
            how = "cancelled" if halt.hard else "unfinished"
            lines.append(
                f"  in flight ({how}): {', '.join(flight)}; their intents are journalled "
                "and resume settles each change by verification"
            )
        else:
            lines.append("  in flight: none")
        if state.changed():
            lines.append(
                "  the estate: changed; the run is past its first change (for the customs "
                "runbook: intake is stopped until the run is resumed or rolled back)"
            )
        else:
            lines.append("  the estate: unchanged (no change had been made)")
        if halt.cause == "journal":
            lines.append("  fix the journal's disk first (free space, permissions), then continue")
        lines.append(f"  to continue: {self.resume_command}")
        lines.append(
            f"  to roll back instead: {self.resume_command} --rollback "
            "(undoes what changed, then runs the always steps)"
        )
        if self.journal is not None:
            lines.append(f"  journal: {self.journal.path}")
        return lines

    @cached_property
    def forecast(self) -> Plan:
        """The plan for this run's window, computed once: journalled and given to the runner."""
        rb = self.loaded.runbook
        return make_plan(
            rb,
            start=rb.window_start + self.shift,
            item_counts=self.loaded.item_counts,
            read_only=self.loaded.read_only_steps(),
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
                executor=self.settings.executor,
                clock=self.clock,
                dry_run=self.settings.dry_run,
                auto_approve=self.settings.auto_approve,
                secrets=self.secrets,
                shift=self.shift,
            ),
            plan={s.id: (s.start, s.finish) for s in forecast.steps},
            point_of_no_return=forecast.point_of_no_return,
            forecast_plan=forecast,
        )
        if self.recovered is not None:
            self.runner.restore(self.recovered)
            if self.rollback_on_resume:
                self.runner.state.rollback_requested = (
                    f"{self.settings.started_by} chose to roll back on resume (--rollback)"
                )
        self.stop.arm()  # the flow replaced SIGTERM's handler: ours again, inside the flow
        self.stop.apply(self.runner)
        return self.runner

    def attach_flow_run(self, flow_run_id: str | None, ui: str | None) -> None:
        """Link this process's flow run to the journal (a resume makes a new one); the
        run starts from here, so observers hear of it."""
        try:
            self._record_flow_run(flow_run_id, ui)
        except JournalWriteError as exc:
            if self.runner is None:
                raise
            self.runner.state.halt(Halt("journal", str(exc)))
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
            executor=self.settings.executor,
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
            **({"preflight": True} if self.settings.preflight else {}),
            auto_approve=self.settings.auto_approve,
            plan=forecast.to_json(),
        )

    async def finish(self, outcome: Outcome | None, error: str | None = None) -> None:
        """Close adapters and the journal; observers hear last, whatever failed before.

        A halted run (a signal, an unwritable journal) gets no run.finished: it is not
        over, and ``cutbook resume`` continues it. A signal's stop is journalled as
        run.interrupted instead."""
        try:
            for adapter in self.adapters.values():
                await adapter.aclose()
            if self.notifier is not None:  # its records must come before run.finished
                await self.notifier.finish(self.runner.state if self.runner else None, outcome)
            if self.journal is not None:
                self._record_end(outcome, error)
                self.journal.close()
        finally:
            self.stop.settle()
            self.release()
            if self.runner is not None:
                for observer in self.observers:
                    observer.run_finished(self.runner.state, outcome)

    def _record_end(self, outcome: Outcome | None, error: str | None) -> None:
        assert self.journal is not None
        runner = self.runner
        halt = runner.state.halted if runner is not None and outcome is None else None
        try:
            if halt is None:
                failure = runner.failure if runner else None
                self.journal.append(
                    Event.RUN_FINISHED, outcome=outcome or "failed", error=error or failure
                )
            elif halt.cause == "signal" and runner is not None:
                state = runner.state
                self.journal.append(
                    Event.RUN_INTERRUPTED,
                    signal=halt.detail,
                    hard=halt.hard,
                    steps_done=state.done(),
                    steps_in_flight=state.in_flight(),
                    changed=state.changed(),
                    resume_command=self.resume_command,
                )
        except JournalWriteError as exc:
            if runner is None:
                raise
            runner.state.outcome = None  # not recorded, so not over: resume will finish it
            runner.state.halt(Halt("journal", str(exc)))


def _still_running(run_id: str, who: str) -> str:
    return (
        f"run {run_id} is still running: {who} holds it. Resuming now would make two "
        "processes act on one estate. Watch it, or stop it (Ctrl-C in its terminal, or "
        f"kill -TERM its pid), then: cutbook resume {run_id}"
    )
