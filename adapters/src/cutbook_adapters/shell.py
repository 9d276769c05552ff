"""The ``shell`` adapter: run a program from an argv list, never a shell string.

Templated values end up as single argv elements, so they never meet a shell
parser. Each process runs in its own session; a timeout or a cancelled run
kills the whole process group, not just the direct child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from cutbook import (
    ActionSpec,
    AdapterContext,
    Args,
    Call,
    Duration,
    PermanentError,
    Result,
    TargetConfig,
    TransientError,
)
from cutbook_adapters._common import DEFAULT_MAX_BYTES, ScrubbingAdapter, one_line

KILL_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL for a timed-out process group (wall clock)."""

MINIMAL_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "TMPDIR")
"""What a child inherits unless the target says ``inherit_env: true``."""


class ShellConfig(TargetConfig):
    """Options of a ``shell`` target: where and with what environment programs run."""

    cwd: str | None = Field(
        None, description="Working directory for every command", examples=["/opt/customs"]
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for every command",
        examples=[{"PGPASSWORD": "{{ secrets.DB_PASSWORD }}"}],
    )
    inherit_env: bool = Field(
        False,
        description="Pass the whole cutbook environment, not just PATH/HOME/locale",
        examples=[True],
    )


class CommandArgs(Args):
    """How to run one program: ``probe``'s arguments, and the base of ``run``'s."""

    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments; no shell is involved",
        examples=[["./scripts/reindex.sh", "--office", "{{ item.code }}"]],
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment variables",
        examples=[{"OFFICE": "{{ item.code }}"}],
    )
    cwd: str | None = Field(
        None, description="Working directory (overrides the target's)", examples=["scripts"]
    )
    stdin: str | None = Field(
        None, description="Text written to standard input", examples=["yes\n"]
    )
    ok_codes: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        description="Exit codes that mean success",
        examples=[[0, 3]],
    )
    transient_codes: list[int] = Field(
        default_factory=list, description="Exit codes worth retrying", examples=[[75]]
    )
    timeout: Duration | None = Field(
        None, description="Kill the process group after this", examples=["10m"]
    )
    transient_on_timeout: bool = Field(
        False,
        description="Treat a timeout as retryable (only if the command is safe to rerun)",
        examples=[True],
    )
    max_output_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=256,
        description="Bytes of stdout and of stderr kept",
        examples=[DEFAULT_MAX_BYTES],
    )


class RunArgs(CommandArgs):
    """``run``'s arguments: a command, plus an optional read-only check for the pre-flight."""

    check: list[str] | None = Field(
        None,
        min_length=1,
        description="A read-only command (argv) the pre-flight runs instead of the change, "
        "with the same env, cwd and timeout; a non-zero exit blocks the night",
        examples=[["./scripts/reindex.sh", "--check", "--office", "{{ item.code }}"]],
    )


class _Capture:
    """Keeps the head and tail of a stream within a byte budget."""

    def __init__(self, limit: int) -> None:
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - self.half)]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if dropped > 0:
            return f"{head}\n…[{dropped} bytes omitted]…\n{tail}"
        return head + tail


async def _pump(stream: asyncio.StreamReader | None, capture: _Capture) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        capture.feed(chunk)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ShellAdapter(ScrubbingAdapter):
    """Runs local programs; ``run`` changes things, ``probe`` only reads."""

    name: ClassVar[str] = "shell"
    Config: ClassVar[type[BaseModel]] = ShellConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "run": ActionSpec(
            args=RunArgs,
            description="Run a program; success is an exit code in ok_codes",
            mutating=True,
            reversible=False,
        ),
        "probe": ActionSpec(
            args=CommandArgs,
            description="Run a read-only program (a health or state check); "
            "also run by pre-flight checks",
            mutating=False,
            reversible=False,
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, ShellConfig)
        self.cfg = config

    def _env(self, args: CommandArgs) -> dict[str, str]:
        if self.cfg.inherit_env:
            env = dict(os.environ)
        else:
            env = {k: os.environ[k] for k in MINIMAL_ENV if k in os.environ}
        env.update(self.cfg.env)
        env.update(args.env)
        return env

    def _shown(self, args: CommandArgs) -> str:
        return self.scrub(shlex.join(args.argv))

    async def check(self, call: Call) -> Result:
        """Probes run, and so does a ``run``'s declared read-only ``check`` command;
        otherwise ``run`` only checks that the program and directory exist."""
        args = self._args(call)
        if not self.actions[call.action].mutating:
            return await self._execute(call, args, raise_on_failure=False)
        if isinstance(args, RunArgs) and args.check is not None:
            # The run's env, cwd and timeout; success is exit 0, whatever the run's codes.
            only = {"argv": args.check, "check": None, "stdin": None}
            probe = args.model_copy(update={**only, "ok_codes": [0], "transient_codes": []})
            done = await self._execute(call, probe, raise_on_failure=False)
            summary = f"would run: {self._shown(args)}; check: {done.summary}"
            return Result(
                changed=True, ok=done.ok, summary=one_line(self.scrub(summary)), output=done.output
            )
        problems = []
        env = self._env(args)
        cwd = args.cwd or self.cfg.cwd
        if cwd is not None and not os.path.isdir(cwd):
            problems.append(f"working directory {cwd!r} does not exist")
        program = args.argv[0]
        if shutil.which(program, path=env.get("PATH"), mode=os.X_OK) is None and not (
            os.sep in program and cwd and os.access(os.path.join(cwd, program), os.X_OK)
        ):
            problems.append(f"program {program!r} not found or not executable")
        summary = f"would run: {self._shown(args)}"
        if problems:
            summary += " — " + "; ".join(problems)
        return Result(changed=True, ok=not problems, summary=one_line(self.scrub(summary)))

    async def apply(self, call: Call) -> Result:
        return await self._execute(call, self._args(call), raise_on_failure=True)

    async def verify(self, call: Call) -> Result:
        """Probes rerun and judge; ``run`` is never repeated."""
        args = self._args(call)
        if self.actions[call.action].mutating:
            code = call.prior.output.get("exit_code") if call.prior else None
            return Result(ok=True, summary=f"exited {code}; no read-back defined")
        return await self._execute(call, args, raise_on_failure=False)

    def _args(self, call: Call) -> CommandArgs:
        if call.action not in self.actions or not isinstance(call.args, CommandArgs):
            raise PermanentError(f"shell: no action {call.action!r} with these args")
        return call.args

    async def _execute(self, call: Call, args: CommandArgs, *, raise_on_failure: bool) -> Result:
        timeout_arg = args.timeout.total_seconds() if args.timeout is not None else None
        limit = min(
            (t for t in (timeout_arg, call.timeout) if t is not None),
            default=None,
        )
        shown = self._shown(args)
        call.log(one_line(f"shell: {shown}"))
        try:
            proc = await asyncio.create_subprocess_exec(
                *args.argv,
                stdin=asyncio.subprocess.PIPE
                if args.stdin is not None
                else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=args.cwd or self.cfg.cwd,
                env=self._env(args),
                start_new_session=True,
            )
        except OSError as exc:
            raise PermanentError(self.scrub(f"cannot start {shown}: {exc}")) from exc
        out = _Capture(args.max_output_bytes)
        err = _Capture(args.max_output_bytes)
        timed_out = False
        try:
            async with asyncio.timeout(limit):
                if proc.stdin is not None:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        proc.stdin.write((args.stdin or "").encode())
                        await proc.stdin.drain()
                    proc.stdin.close()
                await asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err), proc.wait())
        except TimeoutError:
            timed_out = True
        finally:
            # Reached on timeout and on cancellation alike: leave nothing running.
            if proc.returncode is None or timed_out:
                await self._terminate(proc)
        output: dict[str, Any] = {
            "exit_code": proc.returncode,
            "stdout": self.scrub(out.text()),
            "stderr": self.scrub(err.text()),
        }
        if timed_out:
            message = f"{shown}: timed out after {limit:g}s; process group killed"
            if args.transient_on_timeout:
                raise TransientError(message)
            raise PermanentError(message)
        code = proc.returncode
        tail = (output["stderr"] or output["stdout"]).strip().splitlines()[-3:]
        summary = one_line(f"{shown} → exit {code}" + (f": {' / '.join(tail)}" if tail else ""))
        if code in args.ok_codes:
            return Result(
                changed=self.actions[call.action].mutating, summary=summary, output=output
            )
        if not raise_on_failure and code not in args.transient_codes:
            return Result(ok=False, summary=summary, output=output)
        if code in args.transient_codes:
            raise TransientError(summary)
        raise PermanentError(summary)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after a grace period."""
        pgid = proc.pid  # start_new_session: the child leads its own group
        _kill_group(pgid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
        _kill_group(pgid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
