"""Telling Prefect what happened, from a thread of its own, never on a step's path.

Prefect is for watching: a slow or dead API must not delay a step, block a
log line or hang the exit. So the engine only records what Prefect *should*
show (task-run states, log lines, the table) in this reporter, which returns
at once, and a daemon thread with its own event loop brings the server up to
date: every call has a short timeout, and the first failure switches to
"the UI is behind" mode (one warning), probing ``/health`` until the server
answers again (one more line), then catching up.

What waits is bounded by construction: task runs and the artifact are kept
as their *latest* desired state (one entry per step attempt, one table), and
log lines in a ring buffer that drops the oldest when full (the journal and
the console have every line). Closing waits a bounded time for the last
updates and the flow run's final state, then leaves the thread behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

import httpx
import structlog
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.objects import State
from prefect.exceptions import PrefectException
from prefect.tasks import Task

from cutbook.logs import EVENT_ATTR, LOGGER_NAME, RedactingFilter

log = structlog.get_logger("cutbook.prefect")

T = TypeVar("T")

CALL_TIMEOUT_S = 5.0
"""One API call's limit: a stalled server costs the reporter this, never a step."""
PROBE_EVERY_S = 2.0
LOG_BUFFER = 5000
LOG_BATCH = 200
ARTIFACT_EVERY_S = 1.0

UNREACHABLE: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    OSError,
    TimeoutError,
)
"""The server is not there (refused, reset, stalled): switch to "the UI is behind"."""
REFUSED: tuple[type[BaseException], ...] = (
    httpx.HTTPStatusError,
    PrefectException,
    ValueError,
    RuntimeError,
    KeyError,
)
"""The server answered but refused one update: drop that update, keep going."""


class Unreachable(Exception):
    """The Prefect API did not answer in time (raised to the bridge's own waits only)."""


def _noop() -> None:
    return None


@dataclass
class FlowRunSpec:
    """The flow run to create when the run is not already inside one (``cutbook run``)."""

    flow: Any
    name: str
    parameters: dict[str, Any]
    tags: list[str]


@dataclass
class _TaskRun:
    id: UUID
    name: str
    dynamic_key: str
    state: State[Any]
    created: bool = False
    sent: State[Any] | None = None


class Reporter:
    """The Prefect side of one run: desired states in, best-effort delivery out."""

    def __init__(
        self,
        api_url: str | None,
        artifact_key: str,
        *,
        flow_run_id: UUID | None = None,
        create: FlowRunSpec | None = None,
        call_timeout: float = CALL_TIMEOUT_S,
    ) -> None:
        self.api_url = api_url or "the Prefect API"
        self.artifact_key = artifact_key
        self.flow_run_id = flow_run_id
        self._create = create
        self.call_timeout = call_timeout
        self._lock = threading.Lock()
        self._tasks: OrderedDict[UUID, _TaskRun] = OrderedDict()
        self._task_objects: dict[str, Task[..., Any]] = {}
        self._logs: deque[dict[str, Any]] = deque(maxlen=LOG_BUFFER)
        self._logs_dropped = 0
        self._artifact: tuple[str, float] | None = None
        self._artifact_sent_at = 0.0
        self._progress_id: UUID | None = None
        self._final: State[Any] | None = None
        self._final_sent = False
        self._force_running = False
        self._down = False
        self._last_probe = 0.0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._nudged = False
        """A wake-up is already on its way: later nudges until it lands cost nothing."""
        self._started = threading.Event()
        self._ready = threading.Event()
        if flow_run_id is not None:
            self._ready.set()
        self._client: PrefectClient | None = None
        self._thread = threading.Thread(
            target=self._thread_main, name="cutbook-prefect", daemon=True
        )
        self.handler = _LogShipper(self)

    # -- the engine's side: every method returns at once ------------------------------

    def start(self) -> None:
        self._thread.start()
        self._started.wait(timeout=5.0)

    @property
    def behind(self) -> bool:
        """Whether the server is currently unreachable (the UI shows an older picture)."""
        return self._down

    def task_state(self, task_run_id: UUID | None, name: str, state: State[Any]) -> UUID:
        """The step attempt ``task_run_id`` (new if ``None``) should now show ``state``."""
        with self._lock:
            if task_run_id is None or task_run_id not in self._tasks:
                task_run_id = task_run_id or uuid4()
                self._tasks[task_run_id] = _TaskRun(task_run_id, name, str(task_run_id), state)
            else:
                self._tasks[task_run_id].state = state
                self._tasks.move_to_end(task_run_id)
        self._nudge()
        return task_run_id

    def log(self, entry: dict[str, Any]) -> None:
        if len(self._logs) == self._logs.maxlen:
            self._logs_dropped += 1
        self._logs.append(entry)
        self._nudge()

    def artifact(self, markdown: str, progress: float) -> None:
        self._artifact = (markdown, progress)
        self._nudge()

    def force_running(self) -> None:
        """After a timed-out pause: the flow run must accept task runs again."""
        self._force_running = True
        self._nudge()

    def finish(self, state: State[Any] | None) -> None:
        """The flow run's final state, or ``None`` when Prefect's flow engine sets it."""
        self._final = state
        self._final_sent = state is None
        self._nudge()

    def wait_ready(self, timeout: float) -> UUID | None:
        """The flow run's id once it exists, waiting at most ``timeout`` real seconds."""
        self._ready.wait(timeout=timeout)
        return self.flow_run_id

    async def call(self, fn: Callable[[PrefectClient], Awaitable[T]], timeout: float) -> T:
        """Run ``fn`` on the reporter's loop; :class:`Unreachable` after ``timeout``.

        For the bridge's own waits (a gate's pause), which wait for a person anyway.
        """
        loop = self._loop
        if loop is None or self._down:
            raise Unreachable(self.api_url)

        async def run() -> T:
            client = await self._open()
            return await asyncio.wait_for(fn(client), timeout)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 1.0)
        except UNREACHABLE as exc:
            future.cancel()
            self._went_down(exc)
            raise Unreachable(self.api_url) from None
        except REFUSED as exc:
            log.debug(f"Prefect refused a call: {exc}")
            raise Unreachable(str(exc)) from None

    def close(self, wait: float) -> bool:
        """Deliver what is left within ``wait`` real seconds; True if everything arrived."""
        self._stopping = True
        self._nudge()
        self._thread.join(timeout=wait)
        logging.getLogger(LOGGER_NAME).removeHandler(self.handler)
        return not self._thread.is_alive() and self._idle()

    # -- the reporter's thread -----------------------------------------------------------

    def _nudge(self) -> None:
        """Wake the reporter's loop, once per batch: a burst of fifty items' updates
        costs one cross-thread wake-up, not fifty (each is a syscall on the engine's thread)."""
        if self._nudged:
            return
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            self._nudged = True
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        """On the reporter's loop: updates from now on need a new nudge."""
        self._nudged = False
        if self._wake is not None:
            self._wake.set()

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._started.set()
        try:
            while not (self._stopping and self._idle()):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)
                self._wake.clear()
                if self._down and not await self._probe():
                    continue
                try:
                    await self._sync()
                except UNREACHABLE as exc:
                    self._went_down(exc)
                except REFUSED as exc:
                    log.debug(f"Prefect refused an update: {exc}")
                    await asyncio.sleep(1.0)
        finally:
            if self._client is not None:
                try:
                    await asyncio.wait_for(self._client.__aexit__(None, None, None), 2.0)
                except (*UNREACHABLE, *REFUSED):
                    pass

    def _idle(self) -> bool:
        with self._lock:
            tasks_done = all(t.created and t.sent is t.state for t in self._tasks.values())
        created = self._create is None or self.flow_run_id is not None
        return (
            created
            and tasks_done
            and not self._logs
            and self._artifact is None
            and self._final_sent
            and not self._force_running
        )

    async def _open(self) -> PrefectClient:
        if self._client is None:
            client = get_client(httpx_settings={"timeout": httpx.Timeout(self.call_timeout)})
            await asyncio.wait_for(client.__aenter__(), self.call_timeout)
            self._client = client
        return self._client

    async def _api(self, fn: Callable[[PrefectClient], Awaitable[T]]) -> T:
        client = await self._open()
        return await asyncio.wait_for(fn(client), self.call_timeout)

    async def _probe(self) -> bool:
        if time.monotonic() - self._last_probe < PROBE_EVERY_S:
            await asyncio.sleep(0.2)
            return False
        self._last_probe = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                answer = await http.get(self.api_url.rstrip("/") + "/health")
            up = answer.status_code == 200
        except UNREACHABLE:
            up = False
        if up:
            self._down = False
            dropped = f" ({self._logs_dropped} log lines dropped)" if self._logs_dropped else ""
            log.warning(f"the Prefect API answers again: the UI is catching up{dropped}")
        return up

    def _went_down(self, exc: BaseException) -> None:
        if self._down:
            return
        self._down = True
        self._last_probe = time.monotonic()
        why = type(exc).__name__
        log.warning(
            f"the Prefect API at {self.api_url} is unreachable ({why}): the UI is behind. "
            "Steps go on; the journal is the record"
        )

    async def _sync(self) -> None:
        if self.flow_run_id is None:
            if self._create is None:
                return
            await self._create_flow_run(self._create)
        assert self.flow_run_id is not None
        await self._sync_tasks(self.flow_run_id)
        await self._ship_logs(self.flow_run_id)
        await self._sync_artifact(self.flow_run_id)
        if self._force_running:
            await self._set_flow_state(self.flow_run_id, _running(), force=True)
            self._force_running = False
        if self._final is not None and not self._final_sent and not self._pending_tasks():
            await self._set_flow_state(self.flow_run_id, self._final, force=True)
            self._final_sent = True

    async def _create_flow_run(self, spec: FlowRunSpec) -> None:
        from prefect.states import Running

        async def create(client: PrefectClient) -> UUID:
            run = await client.create_flow_run(
                spec.flow,
                name=spec.name,
                parameters=spec.parameters,
                tags=spec.tags,
                state=Running(),
            )
            return run.id

        self.flow_run_id = await self._api(create)
        self._ready.set()

    def _pending_tasks(self) -> list[_TaskRun]:
        with self._lock:
            return [t for t in self._tasks.values() if not (t.created and t.sent is t.state)]

    def _task_object(self, name: str) -> Task[..., Any]:
        if name not in self._task_objects:
            task: Task[..., Any] = Task(fn=_noop, name=name, retries=0)
            task.task_key = f"cutbook-step-{name}"
            self._task_objects[name] = task
        return self._task_objects[name]

    async def _sync_tasks(self, flow_run_id: UUID) -> None:
        for run in self._pending_tasks():
            state = run.state
            task = self._task_object(run.name)
            send = functools.partial(
                self._send_task, flow_run_id=flow_run_id, run=run, task=task, state=state
            )
            try:
                await self._api(send)
            except REFUSED as exc:
                log.debug(f"Prefect refused the task run update for {run.name}: {exc}")
                if not run.created:
                    run.created = True  # perhaps it exists: the next pass sets its state
                    continue
            run.sent = state

    @staticmethod
    async def _send_task(
        client: PrefectClient,
        *,
        flow_run_id: UUID,
        run: _TaskRun,
        task: Task[..., Any],
        state: State[Any],
    ) -> None:
        if not run.created:
            made = await client.create_task_run(
                task, flow_run_id, run.dynamic_key, id=run.id, name=run.name, state=state
            )
            run.created = True
            # A create that timed out may still have landed (a stalled server answers it
            # later); creating again then returns that run with its *old* state.
            if made.state is None or made.state.type != state.type:
                await client.set_task_run_state(made.id, state, force=True)
        else:
            await client.set_task_run_state(run.id, state, force=True)

    async def _ship_logs(self, flow_run_id: UUID) -> None:
        while self._logs:
            batch = [self._logs.popleft() for _ in range(min(LOG_BATCH, len(self._logs)))]
            payload = [{**entry, "flow_run_id": str(flow_run_id)} for entry in batch]

            async def send(client: PrefectClient, payload: list[dict[str, Any]] = payload) -> None:
                await client.create_logs(payload)

            try:
                await self._api(send)
            except UNREACHABLE:
                self._logs.extendleft(reversed(batch))  # kept for later, oldest first
                raise
            except REFUSED as exc:
                log.debug(f"Prefect refused {len(batch)} log lines: {exc}")

    async def _sync_artifact(self, flow_run_id: UUID) -> None:
        latest = self._artifact
        if latest is None:
            return
        wait = ARTIFACT_EVERY_S - (time.monotonic() - self._artifact_sent_at)
        if wait > 0 and not self._stopping:
            loop = asyncio.get_running_loop()
            loop.call_later(wait, self._nudge)
            return
        markdown, progress = latest
        key = self.artifact_key

        async def table(client: PrefectClient) -> None:
            # Raw requests: the client's artifact methods also emit events through
            # Prefect's EventsWorker, whose unbounded drain at exit hangs on a dead server.
            await client.request(
                "POST",
                "/artifacts/",
                json=_dump(
                    ArtifactCreate(
                        key=key,
                        type="markdown",
                        data=markdown,
                        description="Planned versus actual, updated as steps finish",
                        flow_run_id=flow_run_id,
                    )
                ),
            )
            if self._progress_id is None:
                bar = ArtifactCreate(
                    key=f"{key}-progress", type="progress", data=progress, flow_run_id=flow_run_id
                )
                made = await client.request("POST", "/artifacts/", json=_dump(bar))
                self._progress_id = UUID(str(made.json()["id"]))
            else:
                await client.request(
                    "PATCH",
                    "/artifacts/{id}",
                    path_params={"id": self._progress_id},
                    json=_dump(ArtifactUpdate(data=progress)),
                )

        try:
            await self._api(table)
        except REFUSED as exc:
            log.debug(f"Prefect refused the artifact: {exc}")
        self._artifact_sent_at = time.monotonic()
        if self._artifact is latest:
            self._artifact = None

    async def _set_flow_state(self, flow_run_id: UUID, state: State[Any], *, force: bool) -> None:
        async def send(client: PrefectClient) -> None:
            await client.set_flow_run_state(flow_run_id, state, force=force)

        try:
            await self._api(send)
        except REFUSED as exc:
            log.debug(f"Prefect refused the flow run state {state.type}: {exc}")


def _dump(model: ArtifactCreate | ArtifactUpdate) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", exclude_unset=True)
    return dumped


def _running() -> State[Any]:
    from prefect.states import Running

    return Running()


class _LogShipper(logging.Handler):
    """``cutbook`` log lines for the flow run's log, queued without waiting for anyone.

    The UI shows each line's time and level itself, so the text is the message and
    its context only. A fan-out item's routine INFO lines (each call it makes) stay
    in the journal and the console: the flow run's log gets per-step lines, and an
    item's warnings and errors.
    """

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(level=logging.INFO)
        self.reporter = reporter
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, EVENT_ATTR, None)
        if isinstance(event, dict):
            if record.levelno < logging.WARNING and event.get("item"):
                return
            message = prefect_message(event)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = str(record.msg)
        self.reporter.log(
            {
                "name": record.name,
                "level": record.levelno,
                "message": message[:10_000],
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            }
        )


_SHOWN_BY_PREFECT = frozenset({"event", "timestamp", "level", "logger", "run_id"})


def prefect_message(event: dict[str, Any]) -> str:
    """``step=close-office item=HQ: message key=value``: no time or level (Prefect shows them)."""
    where = " ".join(f"{k}={event[k]}" for k in ("step", "item") if event.get(k))
    rest = " ".join(
        f"{k}={v}"
        for k, v in event.items()
        if k not in _SHOWN_BY_PREFECT and k not in ("step", "item") and v not in (None, "")
    )
    text = str(event.get("event", ""))
    return " ".join(part for part in (f"{where}:" if where else "", text, rest) if part)
