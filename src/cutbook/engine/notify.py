"""Telling people about the night's milestones (``notify:``), never in the night's way.

The :class:`Notifier` is a run observer: it reads transitions off the run's
state (a step failed, a milestone step succeeded, the run turned to rollback),
hears questions put to people, and the session tells it when the run starts
and ends. Each send runs in a daemon thread through apprise and is never
awaited by a step: a slow or dead channel costs the night nothing. A send that
has not finished in :data:`SEND_TIMEOUT_S` counts as failed; at the run's end
pending sends get at most :data:`FINAL_WAIT_S`, so their records come before
``run.finished``. Every send is journalled as ``notification.sent`` with the
channel's name, never its URLs (which usually carry a token): apprise's own
log lines name hosts and paths, so they are kept from the logs and used,
scrubbed, only as the send's error.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import structlog

from cutbook import templating
from cutbook.engine.observe import RunObserver
from cutbook.engine.state import Outcome, Question, Recorder, RunState
from cutbook.errors import JournalWriteError
from cutbook.journal.events import Event
from cutbook.model import NotifyChannel, Runbook
from cutbook.redact import Redactor

log = structlog.get_logger("cutbook.engine")

SEND_TIMEOUT_S = 10.0
"""Real seconds one send (all URLs of one channel) may take before it counts as failed."""
FINAL_WAIT_S = 10.0
"""Real seconds the run's end waits for sends still on their way."""
_SOCKET_TIMEOUT_S = 4.0

Level = Literal["info", "success", "warning", "failure"]


@dataclass(frozen=True)
class Message:
    milestone: str
    title: str
    body: str
    level: Level = "info"
    step: str | None = None


@dataclass
class Channel:
    """One ``notify:`` entry, its URLs rendered (secrets in them) and checked by apprise."""

    label: str
    on: frozenset[str]
    urls: list[str]
    plugins: list[Any] = field(default_factory=list)
    problem: str | None = None
    """Why it cannot send at all (a URL that did not render or that apprise cannot use)."""
    todo: queue.SimpleQueue[_Send | None] | None = None
    """Sends waiting for the channel's one worker thread, so messages arrive in order."""

    def scrub(self, text: str, redactor: Redactor) -> str:
        """Each URL, its host, path, user, password and query values become ``<url N>``."""
        for n, url in enumerate(self.urls, start=1):
            parts = urlsplit(url)
            pieces = {url, parts.netloc, parts.path, parts.query, parts.hostname or ""}
            pieces |= {parts.username or "", parts.password or ""}
            pieces |= set(parts.path.split("/")) | {v for _, v in parse_qsl(parts.query)}
            for piece in sorted(pieces, key=len, reverse=True):
                if len(piece) >= 4:
                    text = text.replace(piece, f"<url {n}>")
        return redactor.scrub_text(text)


@dataclass
class _Send:
    channel: Channel
    message: Message
    done: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None
    settled: bool = False


class _AppriseLines(logging.Handler):
    """Apprise's warnings, per sending thread: the reason a send failed, for the journal."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = self.lines.get(threading.get_ident())
        if found is not None:
            try:
                found.append(record.getMessage())
            except (TypeError, ValueError):
                found.append(str(record.msg))

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        key = threading.get_ident()
        lines: list[str] = []
        self.lines[key] = lines
        try:
            yield lines
        finally:
            self.lines.pop(key, None)


_LINES = _AppriseLines()


def _quiet_apprise() -> None:
    """Apprise logs URLs' hosts and paths: its lines go only to :data:`_LINES`."""
    logger = logging.getLogger("apprise")
    if _LINES not in logger.handlers:
        logger.addHandler(_LINES)
    logger.propagate = False


def build_channels(
    channels: Sequence[NotifyChannel], context: Mapping[str, Any], redactor: Redactor
) -> list[Channel]:
    """Render every URL with the run's variables and secrets and let apprise parse it now,
    so a bad URL is one warning at the start, not a surprise at 3 a.m."""
    import apprise

    _quiet_apprise()
    built = []
    for i, spec in enumerate(channels, start=1):
        channel = Channel(label=spec.name or str(i), on=frozenset(spec.on), urls=[])
        for n, raw in enumerate(spec.urls, start=1):
            try:
                url = str(templating.render_string(raw, context))
            except templating.TemplateError as exc:
                channel.problem = f"url {n} could not be rendered: {redactor.scrub_text(str(exc))}"
                break
            channel.urls.append(url)
            with _LINES.capture():  # its lines quote the URL, shortened but not enough
                plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
            if plugin is None:
                scheme = urlsplit(url).scheme or "none"
                channel.problem = channel.scrub(
                    f"apprise cannot use url {n} (scheme {scheme!r}: unknown, or the URL "
                    "is malformed; `apprise --details` lists the schemes)",
                    redactor,
                )
                break
            plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, _SOCKET_TIMEOUT_S)
            plugin.socket_read_timeout = min(plugin.socket_read_timeout, _SOCKET_TIMEOUT_S)
            channel.plugins.append(plugin)
        if channel.problem:
            log.warning(f"notify channel {channel.label} cannot send: {channel.problem}")
        built.append(channel)
    return built


def _deliver(channel: Channel, message: Message) -> tuple[bool, str | None]:
    """In a worker thread: every URL of the channel; the first reason one failed."""
    import apprise

    kind = {
        "info": apprise.NotifyType.INFO,
        "success": apprise.NotifyType.SUCCESS,
        "warning": apprise.NotifyType.WARNING,
        "failure": apprise.NotifyType.FAILURE,
    }[message.level]
    errors = []
    for n, plugin in enumerate(channel.plugins, start=1):
        with _LINES.capture() as lines:
            try:
                ok = bool(plugin.notify(body=message.body, title=message.title, notify_type=kind))
            except (OSError, ValueError, TypeError, LookupError, RuntimeError) as exc:
                ok = False
                lines.append(f"{type(exc).__name__}: {exc}")
        if not ok:
            errors.append(f"url {n}: {lines[-1] if lines else 'not delivered'}")
    return (not errors, "; ".join(errors) or None)


class Notifier(RunObserver):
    """Sends the runbook's milestones to its ``notify:`` channels and journals each send."""

    def __init__(
        self,
        rb: Runbook,
        channels: list[Channel],
        journal: Recorder,
        redactor: Redactor,
        run_id: str,
    ) -> None:
        self.rb = rb
        self.channels = channels
        self.journal = journal
        self.redactor = redactor
        self.run_id = run_id
        self.run: RunState | None = None
        self._seen: dict[str, str] = {}
        self._rollback_told = False
        self._alarms_told: set[str] = set()
        self._asked: set[tuple[str, str, str]] = set()
        self._pending: list[_Send] = []
        self._closed = False

    # -- what the run tells us

    def run_started(self, run: RunState, where: str | None) -> None:
        self.run = run
        self._seen = {sid: st.status for sid, st in run.states.items()}
        self._rollback_told = run.mode == "rollback"
        how = "resumed" if run.recovered is not None else "started"
        window = f"{self._hm(run.window_start)}–{self._hm(run.window_end)}"
        body = [
            f"Run {run.opts.run_id} {how} at {self._now(run)} by {run.opts.started_by}.",
            f"Window: {window}. {len(run.states)} steps.",
        ]
        if where:
            body.append(f"Watch it: {where}")
        self._fire(Message("run-started", run.opts.run_id, "\n".join(body)))

    def run_changed(self, run: RunState) -> None:
        self.run = run
        for sid, st in run.states.items():
            before = self._seen.get(sid, "pending")
            if st.status == before:
                continue
            self._seen[sid] = st.status
            step = st.step
            if st.status == "failed":
                self._fire(
                    Message(
                        "step-failed",
                        sid,
                        f"Step {sid} ({step.title}) failed at {self._now(run)}: {st.error}.\n"
                        f"On failure: {self.rb.on_failure_of(step)}. Run {run.opts.run_id}.",
                        "failure",
                        sid,
                    )
                )
            elif st.status == "succeeded" and step.milestone:
                self._fire(
                    Message(
                        step.milestone,
                        sid,
                        f"{step.title} ({sid}) done at {self._now(run)}. Run {run.opts.run_id}.",
                        "success",
                        sid,
                    )
                )
        alarm = run.guard_alarm
        if alarm is not None and alarm.key not in self._alarms_told:
            self._alarms_told.add(alarm.key)
            self._fire(
                Message(
                    "guard-alarm",
                    run.opts.run_id,
                    f"Run {run.opts.run_id}: the deadline guard asks go/no-go at "
                    f"{self._now(run)}.\n{alarm.text}",
                    "failure",
                    "guard",
                )
            )
        if run.mode == "rollback" and not self._rollback_told:
            self._rollback_told = True
            self._fire(
                Message(
                    "rollback-started",
                    run.opts.run_id,
                    f"Run {run.opts.run_id} is rolling back since {self._now(run)}: "
                    f"{run.failure or 'no reason given'}.\nNothing to do: cutbook undoes what "
                    "changed, newest first, then runs the always steps.",
                    "warning",
                )
            )

    def asking(self, question: Question) -> None:
        run = self.run
        if run is None or question.kind == "guard":
            return  # the guard's question went out as guard-alarm, with its forecast
        st = run.states.get(question.step_id)
        started = st.started.isoformat() if st is not None and st.started else ""
        key = (question.step_id, question.kind, started)
        if key in self._asked:
            return  # asked again after an answer from someone who may not decide
        self._asked.add(key)
        rid, sid = run.opts.run_id, question.step_id
        until = run.clock.now() + timedelta(seconds=question.timeout_s)
        who = ", ".join(question.approvers) or "any operator"
        command = f"cutbook approve {rid} {sid} --by NAME" + (
            " --key FILE" if question.signed else ""
        )
        if question.kind == "gate":
            what = f"Go/no-go '{question.title}' waits for {who}"
            answer = f"Go: {command} --approve   No-go: {command} --reject"
        elif question.kind == "manual":
            what = f"Step {sid} ('{question.title}') waits for {who} to confirm it was done"
            answer = f"Confirm: {command} --approve"
        else:
            what = f"Step {sid} failed and waits for a decision from {who}"
            answer = f"Decide: {command} --decision retry|skip|rollback"
        body = f"{what} until {self._hm(until)} (no answer in time: no-go).\n"
        if question.instructions:
            body += f"{question.instructions}\n"
        self._fire(Message("gate-waiting", sid, body + answer, "warning", sid))

    async def finish(self, run: RunState | None, outcome: Outcome | None) -> None:
        """Say how the night ended, then give sends on their way a bounded time."""
        if self._closed:
            return
        if run is not None:
            self.run_changed(run)  # a last transition no publish showed
            if outcome is not None:
                text = outcome.replace("_", " ")
                failure = f": {run.failure}" if run.failure else ""
                body = f"Run {run.opts.run_id} ended {text}{failure} at {self._now(run)}."
                level: Level = "success" if outcome == "succeeded" else "failure"
            else:
                text = "stopped, left for resume"
                body = (
                    f"Run {run.opts.run_id} stopped at {self._now(run)} without finishing; "
                    f"continue it with: cutbook resume {run.opts.run_id}"
                )
                level = "warning"
            self._fire(Message("run-finished", text, body, level))
        pending = [s.done for s in self._pending if not s.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=FINAL_WAIT_S)
        for send in list(self._pending):
            self._settle(send, False, f"still sending {FINAL_WAIT_S:g} s after the run ended")
        self._closed = True
        for channel in self.channels:
            if channel.todo is not None:
                channel.todo.put(None)  # its worker ends once the send in hand is done

    # -- sending

    def _fire(self, message: Message) -> None:
        if self._closed:
            return
        for channel in self.channels:
            if message.milestone in channel.on:
                self._start(channel, message)

    def _start(self, channel: Channel, message: Message) -> None:
        if channel.problem is not None:
            self._record(channel, message, False, channel.problem)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._record(channel, message, False, "not sent: no event loop to report back on")
            return
        send = _Send(channel, self._titled(message), loop.create_future())
        self._pending.append(send)
        if channel.todo is None:
            channel.todo = queue.SimpleQueue()
            threading.Thread(
                target=self._work,
                args=(loop, channel.todo),
                name=f"cutbook-notify-{channel.label}",
                daemon=True,
            ).start()
        channel.todo.put(send)

    def _work(self, loop: asyncio.AbstractEventLoop, todo: queue.SimpleQueue[_Send | None]) -> None:
        """One thread per channel, sending in order; the loop alone journals and times out."""
        while (send := todo.get()) is not None:
            if send.settled:
                continue  # given up on at the run's end
            try:
                loop.call_soon_threadsafe(self._arm, loop, send)
                ok, error = _deliver(send.channel, send.message)
                loop.call_soon_threadsafe(self._settle, send, ok, error)
            except RuntimeError:  # the loop is gone: the run ended and recorded it
                return

    def _arm(self, loop: asyncio.AbstractEventLoop, send: _Send) -> None:
        if not send.settled:
            send.timer = loop.call_later(
                SEND_TIMEOUT_S, self._settle, send, False, f"no answer within {SEND_TIMEOUT_S:g} s"
            )

    def _settle(self, send: _Send, ok: bool, error: str | None) -> None:
        """On the engine's loop, once per send: the journal is written from one thread."""
        if send.settled:
            return
        send.settled = True
        send.done.set_result(None)
        if send.timer is not None:
            send.timer.cancel()
        if send in self._pending:
            self._pending.remove(send)
        self._record(send.channel, send.message, ok, error)

    def _record(self, channel: Channel, message: Message, ok: bool, error: str | None) -> None:
        scrubbed = channel.scrub(error, self.redactor) if error else None
        if ok:
            log.info(f"told {channel.label}: {message.milestone}", step=message.step)
        else:
            log.warning(
                f"could not tell {channel.label}: {message.milestone}: {scrubbed}",
                step=message.step,
            )
        try:
            self.journal.append(
                Event.NOTIFICATION_SENT,
                milestone=message.milestone,
                channel=channel.label,
                ok=ok,
                error=scrubbed,
                step=message.step,
            )
        except JournalWriteError as exc:
            log.warning(f"notification to {channel.label} not journalled: {exc}")

    # -- wording

    def _titled(self, message: Message) -> Message:
        run = self.run
        rehearsal = run is not None and (run.opts.dry_run or run.clock.kind != "real")
        prefix = f"[{self.rb.name}{' rehearsal' if rehearsal else ''}] {message.milestone}"
        return Message(
            message.milestone,
            f"{prefix}: {message.title}" if message.title else prefix,
            message.body,
            message.level,
            message.step,
        )

    def _now(self, run: RunState) -> str:
        return self._hm(run.clock.now())

    def _hm(self, when: datetime) -> str:
        """A moment in the runbook's zone, as the people of the night read their clocks."""
        local = when.astimezone(self.rb.zone)
        return f"{local:%a %d %b %H:%M} ({self.rb.timezone})"


def tell_now(
    rb: Runbook, context: Mapping[str, Any], redactor: Redactor, message: Message
) -> list[tuple[str, str | None]]:
    """Send one milestone outside any run (``run-scheduled``: the run does not exist yet, so
    there is no journal to record it in); each subscribed channel with why it failed, if it
    did. Waits at most :data:`SEND_TIMEOUT_S` per channel, all of them at once."""
    wanted = [c for c in build_channels(rb.notify, context, redactor) if message.milestone in c.on]
    titled = Message(
        message.milestone,
        f"[{rb.name}] {message.milestone}: {message.title}",
        message.body,
        message.level,
    )
    answers: dict[int, tuple[bool, str | None]] = {}

    def send(n: int, channel: Channel) -> None:
        answers[n] = _deliver(channel, titled)

    threads = [
        threading.Thread(target=send, args=(n, channel), daemon=True)
        for n, channel in enumerate(wanted)
        if channel.problem is None
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + SEND_TIMEOUT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    told: list[tuple[str, str | None]] = []
    for n, channel in enumerate(wanted):
        if channel.problem is not None:
            told.append((channel.label, channel.problem))
            continue
        ok, error = answers.get(n, (False, f"no answer within {SEND_TIMEOUT_S:g}s"))
        told.append((channel.label, None if ok else channel.scrub(error or "", redactor)))
    return told
