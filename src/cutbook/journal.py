"""The tamper-evident audit journal: one hash-chained JSON line per event.

Why a chain: an auditor must be able to tell, long after the night, that no
record was edited, deleted, inserted or reordered. Each record carries the
previous record's hash (``prev``) and its own ``hash`` = sha256 of its
canonical JSON without ``hash``, so any change breaks the chain *at that line*.

File layout (``<journal_dir>/<run_id>.jsonl``): each line is the canonical JSON
of the record without ``hash`` (keys sorted, no spaces, UTF-8) with
``,"hash":"<64 hex>"`` inserted before the closing brace. An independent check
needs nothing from cutbook::

    obj = json.loads(line); h = obj.pop("hash")
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(body.encode()).hexdigest() == h

Durability: each line is written with one ``os.write`` on an ``O_APPEND`` fd
and ``os.fsync``'d before :meth:`Journal.append` returns, so the engine only
acts after its intent is on disk. Any OS failure raises
:class:`~cutbook.errors.JournalWriteError`: the run stops rather than carry on
unrecorded. Everything appended passes through the :class:`Redactor` first.

Pure Python: no Prefect here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac as hmac_mod
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Final, Literal, TypedDict

from cutbook.errors import ChainBroken, JournalError, JournalWriteError
from cutbook.redact import Redactor

GENESIS: Final = "0" * 64
INDEX_NAME: Final = "index.jsonl"
RESERVED_FIELDS: Final = frozenset({"seq", "ts", "run_id", "event", "prev", "hash"})
DEFAULT_LATE_TOLERANCE: Final = timedelta(minutes=1)

# ---------------------------------------------------------------- vocabulary

RUN_STARTED: Final = "run.started"
RUN_RESUMED: Final = "run.resumed"
STEP_WAITING: Final = "step.waiting"
STEP_STARTED: Final = "step.started"
STEP_INTENT: Final = "step.intent"
STEP_ATTEMPT: Final = "step.attempt"
STEP_OUTCOME: Final = "step.outcome"
STEP_FINISHED: Final = "step.finished"
GATE_REQUESTED: Final = "gate.requested"
GATE_ANSWERED: Final = "gate.answered"
ROLLBACK_STARTED: Final = "rollback.started"
ROLLBACK_FINISHED: Final = "rollback.finished"
RUN_FINISHED: Final = "run.finished"
JOURNAL_REPAIRED: Final = "journal.repaired"

StepStatus = Literal["succeeded", "failed", "skipped", "rolled_back", "dry_run"]
RunOutcome = Literal["succeeded", "failed", "rolled_back", "aborted"]
Phase = Literal["apply", "rollback", "verify", "check"]


class PlannedStep(TypedDict, total=False):
    id: str
    title: str
    start: str
    finish: str
    critical: bool


class Plan(TypedDict, total=False):
    fits_window: bool
    finish: str
    point_of_no_return: str | None
    steps: list[PlannedStep]


class RunStarted(TypedDict, total=False):
    runbook_name: str
    runbook_path: str
    runbook_sha256: str
    runbook_text: str
    variables: dict[str, Any]
    started_by: str
    host: str
    versions: dict[str, Any]
    window: dict[str, str]
    timezone: str
    clock: str
    speed: float
    dry_run: bool
    plan: Plan


class RunResumed(TypedDict, total=False):
    by: str
    host: str
    flow_run_id: str
    reason: str


class StepWaiting(TypedDict, total=False):
    step: str
    until: str


class StepStarted(TypedDict, total=False):
    step: str
    items: list[Any]


class StepIntent(TypedDict, total=False):
    step: str
    item: Any
    phase: Phase
    action: str
    target: str
    idempotency_key: str


class StepAttempt(TypedDict, total=False):
    step: str
    item: Any
    attempt: int
    error: str
    transient: bool
    next_delay_s: float | None


class StepOutcome(TypedDict, total=False):
    step: str
    item: Any
    phase: Phase
    ok: bool
    changed: bool
    summary: str
    output: dict[str, Any]


class StepFinished(TypedDict, total=False):
    step: str
    status: StepStatus
    error: str | None
    started: str
    finished: str


class GateRequested(TypedDict, total=False):
    step: str
    approvers: list[str]
    timeout_s: float


class GateAnswered(TypedDict, total=False):
    step: str
    by: str
    approved: bool
    comment: str
    auto: bool


class RollbackStarted(TypedDict, total=False):
    reason: str
    steps: list[str]


class RollbackFinished(TypedDict, total=False):
    ok: bool


class RunFinished(TypedDict, total=False):
    outcome: RunOutcome
    error: str | None
    head_hmac: str


class JournalRepaired(TypedDict, total=False):
    bytes: int
    offset: int
    fragment_sha256: str
    reason: str


EVENT_TYPES: Final[dict[str, type]] = {
    RUN_STARTED: RunStarted,
    RUN_RESUMED: RunResumed,
    STEP_WAITING: StepWaiting,
    STEP_STARTED: StepStarted,
    STEP_INTENT: StepIntent,
    STEP_ATTEMPT: StepAttempt,
    STEP_OUTCOME: StepOutcome,
    STEP_FINISHED: StepFinished,
    GATE_REQUESTED: GateRequested,
    GATE_ANSWERED: GateAnswered,
    ROLLBACK_STARTED: RollbackStarted,
    ROLLBACK_FINISHED: RollbackFinished,
    RUN_FINISHED: RunFinished,
    JOURNAL_REPAIRED: JournalRepaired,
}
EVENTS: Final = tuple(EVENT_TYPES)

# ---------------------------------------------------------------- encoding

_HASH_MARK: Final = b',"hash":"'
_TAIL_LEN: Final = len(_HASH_MARK) + 64 + 2  # ,"hash":"<64>"}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes a record's hash covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def _encode_line(body: bytes, digest: str) -> bytes:
    return body[:-1] + _HASH_MARK + digest.encode("ascii") + b'"}\n'


def head_hmac(key: bytes, run_id: str, seq: int, digest: str) -> str:
    """HMAC-SHA256 over ``run_id:seq:hash``: proves a head came from a key holder."""
    message = f"{run_id}:{seq}:{digest}".encode()
    return hmac_mod.new(key, message, hashlib.sha256).hexdigest()


def jsonable(obj: Any) -> Any:
    """Turn engine values (datetimes, paths, enums, dataclasses, models) into JSON."""
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((jsonable(v) for v in obj), key=repr)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Enum):
        return jsonable(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, bytes | bytearray):
        return bytes(obj).decode("utf-8", "replace")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return jsonable(dump(mode="json"))
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return str(obj)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_journal_dir() -> Path:
    """``$CUTBOOK_DATA_DIR/journal``, or ``./.cutbook/journal``."""
    return Path(os.environ.get("CUTBOOK_DATA_DIR") or ".cutbook") / "journal"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append_fsync(path: Path, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """One written journal record, as it is on disk."""

    seq: int
    ts: str
    run_id: str
    event: str
    prev: str
    hash: str
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.fields,
            "seq": self.seq,
            "ts": self.ts,
            "run_id": self.run_id,
            "event": self.event,
            "prev": self.prev,
            "hash": self.hash,
        }


@dataclass
class _Line:
    """A parsed, self-consistent line (its own hash checks out) or why not."""

    record: dict[str, Any] | None
    problem: str | None


def _check_line(line: bytes) -> _Line:
    """Parse one line and check its own hash; says nothing about the chain."""
    if len(line) <= _TAIL_LEN or line[-_TAIL_LEN:-66] != _HASH_MARK or line[-2:] != b'"}':
        return _Line(None, "not a journal record: its hash field is missing or damaged")
    try:
        obj = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return _Line(None, "not valid JSON: bytes were changed, added or removed")
    if not isinstance(obj, dict):
        return _Line(None, "not a JSON object")
    digest = obj.pop("hash", None)
    body = canonical(obj)
    if body[:-1] != line[:-_TAIL_LEN] or digest != line[-66:-2].decode("ascii", "replace"):
        return _Line(None, "bytes differ from the record as written (edited)")
    if hashlib.sha256(body).hexdigest() != digest:
        return _Line(None, "hash mismatch: the record's content was edited")
    obj["hash"] = digest
    return _Line(obj, None)


def _classify_fragment(fragment: bytes) -> Literal["torn", "tampered"]:
    """A final piece without newline: a crashed write, or an altered line ending?

    A crashed writer leaves a prefix of ``record + "\\n"``. A complete record
    followed by more bytes is not such a prefix: its newline was changed.
    """
    text = fragment.decode("utf-8", "replace")
    try:
        _obj, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return "torn"
    if end != len(text):
        return "tampered"
    return "torn" if _check_line(fragment).record is not None else "tampered"


def read_records(path: Path | str, *, skip_bad: bool = False) -> Iterator[dict[str, Any]]:
    """Yield each complete record as a dict, skipping a torn final fragment.

    No verification: use :func:`verify` for that. An unparsable line raises
    :class:`ChainBroken` naming it, or is skipped with ``skip_bad`` (reports
    on a damaged journal still show what can be read).
    """
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return  # torn last line from a crash
            try:
                obj = json.loads(line)
            except ValueError:
                if skip_bad:
                    continue
                raise ChainBroken(f"{path}: line {number} is not a journal record") from None
            if isinstance(obj, dict):
                yield obj


# ---------------------------------------------------------------- writer


class Journal:
    """An open journal for one run: append-only, fsync'd, hash-chained.

    ``append`` holds a :class:`threading.Lock` for the whole write, so threads
    and the event loop thread may share one instance.
    """

    def __init__(
        self,
        path: Path,
        run_id: str,
        fd: int,
        *,
        seq: int,
        prev: str,
        hmac_key: bytes | None,
        redactor: Redactor | None,
        now: Callable[[], datetime] | None,
        fsync: bool,
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.redactor = redactor if redactor is not None else Redactor()
        self._fd: int | None = fd
        self._seq = seq
        self._prev = prev
        self._hmac_key = hmac_key
        self._now = now or _utcnow
        self._fsync = fsync
        self._lock = threading.Lock()

    # -- opening

    @classmethod
    def create(
        cls,
        directory: Path | str,
        run_id: str,
        *,
        hmac_key: bytes | None = None,
        redactor: Redactor | None = None,
        now: Callable[[], datetime] | None = None,
        fsync: bool = True,
    ) -> Journal:
        """Start ``<directory>/<run_id>.jsonl``, or continue it if it exists."""
        if not _RUN_ID.match(run_id) or run_id == INDEX_NAME.removesuffix(".jsonl"):
            raise JournalError(f"{run_id!r} cannot be a run id (letters, digits, . _ - only)")
        directory = Path(directory)
        path = directory / f"{run_id}.jsonl"
        try:
            if path.exists() and path.stat().st_size > 0:
                return cls.open(path, hmac_key=hmac_key, redactor=redactor, now=now, fsync=fsync)
            made_dir = not directory.is_dir()
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if fsync:
                _fsync_dir(directory)
                if made_dir:
                    _fsync_dir(directory.parent)
        except OSError as exc:
            raise JournalWriteError(f"cannot create journal {path}: {exc}") from exc
        return cls(
            path,
            run_id,
            fd,
            seq=0,
            prev=GENESIS,
            hmac_key=hmac_key,
            redactor=redactor,
            now=now,
            fsync=fsync,
        )

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        hmac_key: bytes | None = None,
        redactor: Redactor | None = None,
        now: Callable[[], datetime] | None = None,
        fsync: bool = True,
    ) -> Journal:
        """Continue an existing chain (resume after a crash or a pause).

        Checks the tail link (last two records and the record count), and cuts
        away a torn final line left by a crash, recording the repair. Anything
        else wrong raises :class:`ChainBroken`: a damaged journal is not
        silently extended.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise JournalWriteError(f"cannot read journal {path}: {exc}") from exc
        cut = data.rfind(b"\n") + 1
        fragment = data[cut:]
        if fragment and _classify_fragment(fragment) == "tampered":
            raise ChainBroken(f"{path}: the last line is damaged, not torn by a crash; run verify")
        lines = data[:cut].split(b"\n")[:-1]
        seq, prev, run_id = 0, GENESIS, path.stem
        if lines:
            last = _check_line(lines[-1])
            if last.record is None:
                raise ChainBroken(f"{path}: line {len(lines)}: {last.problem}")
            rec = last.record
            expected_prev = GENESIS
            if len(lines) > 1:
                before = _check_line(lines[-2])
                if before.record is None:
                    raise ChainBroken(f"{path}: line {len(lines) - 1}: {before.problem}")
                expected_prev = before.record["hash"]
            if rec.get("seq") != len(lines) - 1 or rec.get("prev") != expected_prev:
                raise ChainBroken(f"{path}: the chain's tail does not link up; run verify")
            seq, prev, run_id = len(lines), str(rec["hash"]), str(rec.get("run_id", run_id))
        try:
            if fragment:
                fd = os.open(path, os.O_RDWR)
                try:
                    os.ftruncate(fd, cut)
                    if fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise JournalWriteError(f"cannot open journal {path} for append: {exc}") from exc
        journal = cls(
            path,
            run_id,
            fd,
            seq=seq,
            prev=prev,
            hmac_key=hmac_key,
            redactor=redactor,
            now=now,
            fsync=fsync,
        )
        if fragment:
            journal.append(
                JOURNAL_REPAIRED,
                bytes=len(fragment),
                offset=cut,
                fragment_sha256=hashlib.sha256(fragment).hexdigest(),
                reason="torn last line left by a crash mid-write was cut away",
            )
        return journal

    # -- writing

    @property
    def seq(self) -> int:
        """The seq the next record will get."""
        return self._seq

    @property
    def head(self) -> str:
        return self._prev

    def append(self, event: str, **fields: Any) -> Record:
        """Scrub, chain, write and fsync one record; return it once durable."""
        clash = RESERVED_FIELDS.intersection(fields)
        if clash:
            raise ValueError(f"journal fields {sorted(clash)} are reserved")
        clean = self.redactor.scrub(jsonable(fields))
        with self._lock:
            fd = self._fd
            if fd is None:
                raise JournalWriteError(f"journal {self.path} is closed")
            if event == RUN_FINISHED and self._hmac_key is not None and self._seq > 0:
                clean["head_hmac"] = head_hmac(
                    self._hmac_key, self.run_id, self._seq - 1, self._prev
                )
            ts = self._now().astimezone(UTC).isoformat(timespec="microseconds")
            body_obj = {
                **clean,
                "seq": self._seq,
                "ts": ts,
                "run_id": self.run_id,
                "event": event,
                "prev": self._prev,
            }
            body = canonical(body_obj)
            digest = hashlib.sha256(body).hexdigest()
            line = _encode_line(body, digest)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write: {written} of {len(line)} bytes")
                if self._fsync:
                    os.fsync(fd)
            except OSError as exc:
                raise JournalWriteError(
                    f"journal {self.path}: could not write record {self._seq} "
                    f"({event}): {exc}; stopping rather than acting unrecorded"
                ) from exc
            record = Record(self._seq, ts, self.run_id, event, self._prev, digest, clean)
            self._seq += 1
            self._prev = digest
        if event in (RUN_STARTED, RUN_RESUMED, RUN_FINISHED):
            self._index(record)
        return record

    def _index(self, record: Record) -> None:
        entry: dict[str, Any] = {"run_id": self.run_id, "path": self.path.name}
        if record.event == RUN_STARTED:
            entry |= {
                "runbook": record.fields.get("runbook_name"),
                "started_at": record.ts,
                "timezone": record.fields.get("timezone"),
                "dry_run": record.fields.get("dry_run"),
                "clock": record.fields.get("clock"),
                "outcome": None,
            }
        elif record.event == RUN_RESUMED:
            entry |= {"outcome": None, "resumed_at": record.ts}
        else:
            entry |= {"outcome": record.fields.get("outcome"), "finished_at": record.ts}
        line = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        index = self.path.parent / INDEX_NAME
        try:
            if self._fsync:
                new_file = not index.exists()
                _append_fsync(index, line)
                if new_file:
                    _fsync_dir(self.path.parent)
            else:
                with open(index, "ab") as fh:
                    fh.write(line)
        except OSError as exc:
            raise JournalWriteError(f"cannot update journal index: {exc}") from exc

    def anchor(self) -> dict[str, Any]:
        """The current head, to keep outside this machine (ticket, e-mail)."""
        with self._lock:
            if self._seq == 0:
                raise JournalError(f"journal {self.path} has no records to anchor")
            return make_anchor(self.run_id, self._seq - 1, self._prev, self._hmac_key)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    os.close(fd)
                except OSError as exc:
                    raise JournalWriteError(f"closing journal {self.path}: {exc}") from exc

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def make_anchor(run_id: str, seq: int, digest: str, key: bytes | None) -> dict[str, Any]:
    anchor: dict[str, Any] = {"run_id": run_id, "seq": seq, "hash": digest}
    if key is not None:
        anchor["hmac"] = head_hmac(key, run_id, seq, digest)
    return anchor


def format_anchor(anchor: Mapping[str, Any]) -> str:
    """One line an auditor can paste into a ticket and later give back to verify."""
    keys = ("run_id", "seq", "hash", "hmac")
    return json.dumps({k: anchor[k] for k in keys if k in anchor}, separators=(",", ":"))


def parse_anchor(text: str) -> dict[str, Any]:
    """Read an anchor back: the JSON line, or ``run_id=… seq=… hash=… hmac=…``."""
    text = text.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = dict(part.split("=", 1) for part in text.replace(",", " ").split() if "=" in part)
    if not isinstance(obj, dict) or "seq" not in obj or "hash" not in obj:
        raise JournalError("an anchor needs at least seq and hash")
    try:
        obj["seq"] = int(obj["seq"])
    except (TypeError, ValueError):
        raise JournalError(f"anchor seq {obj['seq']!r} is not a number") from None
    if not re.fullmatch(r"[0-9a-f]{64}", str(obj["hash"])):
        raise JournalError("anchor hash must be 64 lowercase hex digits")
    return obj


# ---------------------------------------------------------------- verifier


@dataclass
class VerifyResult:
    """What verification found; ``problem`` locates the first break for a human."""

    ok: bool
    records: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    problem: str | None = None
    torn_tail: bool = False
    head_hash: str | None = None
    hmac_ok: bool | None = None
    runbook_hash_ok: bool | None = None
    complete: bool = False
    head_seq: int | None = None
    torn_offset: int | None = None
    anchor_ok: bool | None = None
    run_id: str | None = None
    path: str | None = None
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines an auditor can read without knowing the format."""
        where = f"{self.path}: " if self.path else ""
        if self.ok:
            head = f"{where}OK: {self.records} records verify"
            if self.head_hash:
                head += f"; head seq {self.head_seq} hash {self.head_hash}"
        else:
            head = f"{where}FAILED: {self.problem}"
        lines = [head]
        if self.ok and self.problem:
            lines.append(f"note: {self.problem}")
        if self.hmac_ok is not None:
            lines.append(f"hmac: {'ok' if self.hmac_ok else 'BAD'}")
        if self.runbook_hash_ok is not None:
            lines.append(f"runbook hash: {'matches' if self.runbook_hash_ok else 'DIFFERS'}")
        if self.anchor_ok is not None:
            lines.append(f"anchor: {'matches' if self.anchor_ok else 'DOES NOT MATCH'}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        if not self.ok:
            raise ChainBroken(self.describe())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def verify(
    path: Path | str,
    *,
    hmac_key: bytes | None = None,
    runbook_path: Path | str | None = None,
    anchor: Mapping[str, Any] | str | None = None,
) -> VerifyResult:
    """Check every record's hash and link; locate the first break.

    A torn final line (crash mid-write) is reported as such, not as tampering.
    """
    path = Path(path)
    result = VerifyResult(ok=True, records=0, path=str(path))
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.ok = False
        result.problem = f"cannot read the journal: {exc}"
        return result
    anchor_obj = parse_anchor(anchor) if isinstance(anchor, str) else anchor
    cut = data.rfind(b"\n") + 1
    fragment = data[cut:]
    lines = data[:cut].split(b"\n")[:-1]

    prev = GENESIS
    run_id: str | None = None
    last_ts = ""
    last_event: str | None = None
    started: dict[str, Any] | None = None
    hmac_checks: list[tuple[int, str, str, str]] = []  # line, run_id, prev, hmac
    seq = 0

    def fail(line_no: int, problem: str, bad_seq: int | None) -> VerifyResult:
        result.ok = False
        result.first_bad_line = line_no
        result.first_bad_seq = bad_seq
        result.problem = f"line {line_no} (seq {bad_seq}): {problem}"
        return result

    sha256 = hashlib.sha256
    loads = json.loads
    mark = _HASH_MARK
    for seq, line in enumerate(lines):
        line_no = seq + 1
        # Hash the bytes as written (they are the canonical JSON, so this is the
        # documented hash, and any changed byte shows); then parse. Kept inline:
        # this loop must do 100k records well inside 2 s.
        if len(line) <= _TAIL_LEN or line[-_TAIL_LEN:-66] != mark or line[-2:] != b'"}':
            return _finish(fail(line_no, "not a journal record: hash field damaged", seq))
        digest = line[-66:-2].decode("ascii", "replace")
        if sha256(line[:-_TAIL_LEN] + b"}").hexdigest() != digest:
            return _finish(fail(line_no, "hash mismatch: the record was edited", seq))
        try:
            obj = loads(line)
        except ValueError:
            return _finish(fail(line_no, "not valid JSON although its hash matches", seq))
        if type(obj) is not dict or obj.get("hash") != digest:
            return _finish(fail(line_no, "not a well-formed journal record", seq))
        got = obj.get("seq")
        if got != seq:
            if isinstance(got, int) and got > seq:
                why = (
                    f"seq jumps from {seq - 1} to {got}: {got - seq} record(s) deleted before "
                    "this line"
                )
            elif isinstance(got, int):
                why = f"seq {got} again where {seq} belongs: record inserted, copied or reordered"
            else:
                why = "seq is missing or not a number"
            return _finish(fail(line_no, why, got if isinstance(got, int) else seq))
        if obj.get("prev") != prev:
            return _finish(
                fail(line_no, "prev does not match the record before: inserted or replaced", seq)
            )
        rid = obj.get("run_id")
        if run_id is None:
            run_id = rid
            result.run_id = str(rid)
        elif rid != run_id:
            return _finish(fail(line_no, f"run_id {rid!r} differs from {run_id!r}", seq))
        event = obj.get("event")
        if not isinstance(event, str):
            return _finish(fail(line_no, "event is missing", seq))
        ts = obj.get("ts")
        if isinstance(ts, str):
            if ts < last_ts and not any("clock went back" in w for w in result.warnings):
                result.warnings.append(f"host clock went backwards at line {line_no}")
            last_ts = ts
        if event == RUN_STARTED and started is None:
            started = obj
        hm = obj.get("head_hmac")
        if hm is not None and seq > 0:
            hmac_checks.append((line_no, str(rid), prev, str(hm)))
        last_event = event
        prev = digest
        result.records = line_no

    if lines and result.records == len(lines):
        result.head_hash = prev
        result.head_seq = len(lines) - 1

    if fragment:
        offset = cut
        if _classify_fragment(fragment) == "tampered":
            line_no = len(lines) + 1
            return _finish(
                fail(
                    line_no,
                    f"damaged last line at byte {offset} (its line ending or content was "
                    "altered; a crash leaves only a cut-off line)",
                    len(lines),
                )
            )
        result.torn_tail = True
        result.torn_offset = offset
        result.problem = (
            f"torn last line at byte {offset}: the writer crashed mid-write; earlier records verify"
        )

    result.complete = last_event == RUN_FINISHED
    if not result.complete:
        result.warnings.append(
            "the journal ends without run.finished: the run is still going, crashed, "
            "or records were cut off the end (an anchor kept elsewhere would tell)"
        )

    # HMACs written into run.finished records.
    if hmac_checks:
        if hmac_key is None:
            result.warnings.append("head_hmac present but no key given: not checked")
        else:
            for line_no, rid, link, mac in hmac_checks:
                expected = head_hmac(hmac_key, rid, line_no - 2, link)
                if not hmac_mod.compare_digest(expected, mac):
                    result.hmac_ok = False
                    return _finish(
                        fail(line_no, "head_hmac does not match: wrong key or forged", line_no - 1)
                    )
            result.hmac_ok = True
    elif hmac_key is not None and not (anchor_obj and "hmac" in anchor_obj):
        result.warnings.append("a key was given but the journal holds no head_hmac to check")

    if anchor_obj is not None:
        _check_anchor(result, lines, anchor_obj, hmac_key, run_id)
        if not result.ok:
            return _finish(result)

    _check_runbook(result, started, runbook_path)
    return _finish(result)


def _finish(result: VerifyResult) -> VerifyResult:
    if not result.ok:
        result.complete = False
    return result


def _check_anchor(
    result: VerifyResult,
    lines: Sequence[bytes],
    anchor: Mapping[str, Any],
    key: bytes | None,
    run_id: str | None,
) -> None:
    aseq, ahash = int(anchor["seq"]), str(anchor["hash"])
    arun = anchor.get("run_id")
    if arun is not None and run_id is not None and arun != run_id:
        result.anchor_ok = False
        result.ok = False
        result.problem = f"the anchor is for run {arun!r}, this journal is {run_id!r}"
        return
    if key is not None and "hmac" in anchor:
        expected = head_hmac(key, str(arun or run_id), aseq, ahash)
        if not hmac_mod.compare_digest(expected, str(anchor["hmac"])):
            result.hmac_ok = False
            result.anchor_ok = False
            result.ok = False
            result.problem = "the anchor's hmac does not match this key"
            return
        if result.hmac_ok is None:
            result.hmac_ok = True
    if aseq >= len(lines):
        result.anchor_ok = False
        result.ok = False
        result.first_bad_seq = len(lines)
        result.first_bad_line = len(lines) + 1
        missing = aseq - len(lines) + 1
        result.problem = (
            f"the chain ends at seq {len(lines) - 1} but the anchor says seq {aseq} existed: "
            f"{missing} record(s) were cut off the end"
        )
        return
    got = _check_line(lines[aseq]).record
    if got is None or got.get("hash") != ahash:
        result.anchor_ok = False
        result.ok = False
        result.first_bad_seq = aseq
        result.first_bad_line = aseq + 1
        result.problem = (
            f"line {aseq + 1} (seq {aseq}): hash differs from the anchor: the chain was "
            "rewritten after the anchor was taken"
        )
        return
    result.anchor_ok = True


def _check_runbook(
    result: VerifyResult, started: Mapping[str, Any] | None, runbook_path: Path | str | None
) -> None:
    if started is None:
        if result.records:
            result.warnings.append("no run.started record: runbook identity unknown")
        return
    recorded = started.get("runbook_sha256")
    text = started.get("runbook_text")
    if (
        isinstance(text, str)
        and recorded
        and hashlib.sha256(text.encode("utf-8")).hexdigest() != recorded
    ):
        result.warnings.append(
            "the runbook text stored in run.started does not hash to runbook_sha256 "
            "(expected if the text held credential-shaped strings that were scrubbed)"
        )
    explicit = runbook_path is not None
    candidate = Path(runbook_path) if runbook_path is not None else None
    if candidate is None and isinstance(started.get("runbook_path"), str):
        candidate = Path(str(started["runbook_path"]))
        if not candidate.is_file():
            return
    if candidate is None or not recorded:
        return
    actual = _sha256_file(candidate)
    if actual is None:
        result.runbook_hash_ok = False
        result.warnings.append(f"cannot read runbook {candidate}")
        if explicit:
            result.ok = False
            result.problem = f"cannot read runbook {candidate}"
        return
    result.runbook_hash_ok = actual == recorded
    if not result.runbook_hash_ok:
        msg = (
            f"runbook {candidate} has sha256 {actual} but the run recorded {recorded}: "
            "this is not the runbook text that ran"
        )
        if explicit:
            result.ok = False
            result.problem = msg
        else:
            result.warnings.append(msg + " (the file may have been edited since)")


# ---------------------------------------------------------------- summary


@dataclass
class Attempt:
    item: Any
    attempt: int | None
    error: str | None
    transient: bool | None
    next_delay_s: float | None
    ts: str | None


@dataclass
class Outcome:
    item: Any
    phase: str | None
    ok: bool | None
    changed: bool | None
    summary: str
    ts: str | None


@dataclass
class StepSummary:
    id: str
    title: str
    critical: bool = False
    planned_start: datetime | None = None
    planned_finish: datetime | None = None
    actual_start: datetime | None = None
    actual_finish: datetime | None = None
    status: str | None = None
    error: str | None = None
    items: list[Any] = field(default_factory=list)
    waited_until: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    planned: bool = False

    @property
    def start_delay(self) -> timedelta | None:
        if self.actual_start and self.planned_start:
            return self.actual_start - self.planned_start
        return None

    @property
    def retried(self) -> bool:
        return any(
            a.next_delay_s is not None or (a.attempt is not None and a.attempt > 1)
            for a in self.attempts
        )

    @property
    def changed(self) -> bool:
        return any(o.changed for o in self.outcomes)


@dataclass
class Approval:
    step: str
    approvers: list[str] = field(default_factory=list)
    requested_at: str | None = None
    timeout_s: float | None = None
    answered_at: str | None = None
    by: str | None = None
    approved: bool | None = None
    comment: str = ""
    auto: bool = False


@dataclass
class Rollback:
    reason: str | None
    steps: list[str]
    started_at: str | None
    finished_at: str | None = None
    ok: bool | None = None


@dataclass
class Deviation:
    step: str | None
    kind: Literal[
        "late",
        "overran",
        "retried",
        "failed",
        "skipped",
        "rolled_back",
        "not_run",
        "unplanned",
        "run",
    ]
    detail: str


@dataclass
class RunSummary:
    run_id: str
    records: int = 0
    runbook_name: str | None = None
    runbook_path: str | None = None
    runbook_sha256: str | None = None
    started_by: str | None = None
    host: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    outcome: str | None = None
    error: str | None = None
    timezone: str | None = None
    clock: str | None = None
    speed: float | None = None
    dry_run: bool = False
    window: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    plan_fits_window: bool | None = None
    plan_finish: str | None = None
    point_of_no_return: str | None = None
    steps: list[StepSummary] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    rollbacks: list[Rollback] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    unknown_events: dict[str, int] = field(default_factory=dict)

    @property
    def rehearsal(self) -> bool:
        """True when this was not a real run against real systems at real time."""
        return self.dry_run or (self.clock not in (None, "real", "wall"))


def parse_ts(value: Any) -> datetime | None:
    """Lenient ISO parsing: the report must survive odd or missing times."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def summarize(
    path: Path | str, *, late_tolerance: timedelta = DEFAULT_LATE_TOLERANCE
) -> RunSummary:
    """Fold a journal into what happened, step by step, against the plan.

    Tolerant by design: unknown events are counted, missing fields left empty.
    """
    path = Path(path)
    summary = RunSummary(run_id=path.stem)
    steps: dict[str, StepSummary] = {}
    gates: dict[str, Approval] = {}

    def step_of(step_id: Any) -> StepSummary:
        key = str(step_id)
        if key not in steps:
            steps[key] = StepSummary(id=key, title=key)
        return steps[key]

    for rec in read_records(path, skip_bad=True):
        summary.records += 1
        event = rec.get("event")
        ts = _str(rec.get("ts"))
        if "run_id" in rec and summary.records == 1:
            summary.run_id = str(rec["run_id"])
        if event == RUN_STARTED:
            summary.runbook_name = _str(rec.get("runbook_name"))
            summary.runbook_path = _str(rec.get("runbook_path"))
            summary.runbook_sha256 = _str(rec.get("runbook_sha256"))
            summary.started_by = _str(rec.get("started_by"))
            summary.host = _str(rec.get("host"))
            summary.started_at = ts
            summary.timezone = _str(rec.get("timezone"))
            summary.clock = _str(rec.get("clock"))
            speed = rec.get("speed")
            summary.speed = float(speed) if isinstance(speed, int | float) else None
            summary.dry_run = bool(rec.get("dry_run"))
            for attr in ("window", "versions", "variables"):
                value = rec.get(attr)
                if isinstance(value, dict):
                    setattr(summary, attr, value)
            plan = rec.get("plan")
            if isinstance(plan, dict):
                fits = plan.get("fits_window")
                summary.plan_fits_window = fits if isinstance(fits, bool) else None
                summary.plan_finish = _str(plan.get("finish"))
                summary.point_of_no_return = _str(plan.get("point_of_no_return"))
                for planned in plan.get("steps") or []:
                    if not isinstance(planned, dict) or "id" not in planned:
                        continue
                    st = step_of(planned["id"])
                    st.planned = True
                    st.title = str(planned.get("title") or st.id)
                    st.critical = bool(planned.get("critical"))
                    st.planned_start = parse_ts(planned.get("start"))
                    st.planned_finish = parse_ts(planned.get("finish"))
        elif event == RUN_RESUMED:
            summary.resumes.append({k: rec.get(k) for k in ("by", "host", "reason")} | {"ts": ts})
            summary.outcome = None
            summary.finished_at = None
        elif event == JOURNAL_REPAIRED:
            summary.repairs.append(
                {"ts": ts, "bytes": rec.get("bytes"), "offset": rec.get("offset")}
            )
        elif event == STEP_WAITING and "step" in rec:
            step_of(rec["step"]).waited_until = _str(rec.get("until"))
        elif event == STEP_STARTED and "step" in rec:
            st = step_of(rec["step"])
            items = rec.get("items")
            if isinstance(items, list):
                st.items = items
            start = parse_ts(rec.get("at") or rec.get("started"))
            if start is None and summary.clock in (None, "real", "wall"):
                start = parse_ts(ts)
            if start is not None and st.actual_start is None:
                st.actual_start = start
        elif event == STEP_ATTEMPT and "step" in rec:
            attempt = rec.get("attempt")
            delay = rec.get("next_delay_s")
            transient = rec.get("transient")
            step_of(rec["step"]).attempts.append(
                Attempt(
                    item=rec.get("item"),
                    attempt=attempt if isinstance(attempt, int) else None,
                    error=_str(rec.get("error")),
                    transient=transient if isinstance(transient, bool) else None,
                    next_delay_s=float(delay) if isinstance(delay, int | float) else None,
                    ts=ts,
                )
            )
        elif event == STEP_OUTCOME and "step" in rec:
            step_of(rec["step"]).outcomes.append(
                Outcome(
                    item=rec.get("item"),
                    phase=_str(rec.get("phase")),
                    ok=rec.get("ok") if isinstance(rec.get("ok"), bool) else None,
                    changed=rec.get("changed") if isinstance(rec.get("changed"), bool) else None,
                    summary=str(rec.get("summary") or ""),
                    ts=ts,
                )
            )
        elif event == STEP_FINISHED and "step" in rec:
            st = step_of(rec["step"])
            st.status = _str(rec.get("status"))
            st.error = _str(rec.get("error"))
            st.actual_start = parse_ts(rec.get("started")) or st.actual_start
            st.actual_finish = parse_ts(rec.get("finished")) or st.actual_finish
            real_clock = summary.clock in (None, "real", "wall")
            if st.actual_finish is None and st.actual_start is not None and real_clock:
                st.actual_finish = parse_ts(ts)
        elif event == GATE_REQUESTED and "step" in rec:
            approvers = rec.get("approvers")
            timeout = rec.get("timeout_s")
            gate = Approval(
                step=str(rec["step"]),
                approvers=[str(a) for a in approvers] if isinstance(approvers, list) else [],
                requested_at=ts,
                timeout_s=float(timeout) if isinstance(timeout, int | float) else None,
            )
            gates[gate.step] = gate
            summary.approvals.append(gate)
        elif event == GATE_ANSWERED and "step" in rec:
            gate = gates.get(str(rec["step"])) or Approval(step=str(rec["step"]))
            if gate not in summary.approvals:
                summary.approvals.append(gate)
            gate.answered_at = ts
            gate.by = _str(rec.get("by"))
            approved = rec.get("approved")
            gate.approved = approved if isinstance(approved, bool) else None
            gate.comment = str(rec.get("comment") or "")
            gate.auto = bool(rec.get("auto"))
        elif event == ROLLBACK_STARTED:
            rb_steps = rec.get("steps")
            summary.rollbacks.append(
                Rollback(
                    reason=_str(rec.get("reason")),
                    steps=[str(s) for s in rb_steps] if isinstance(rb_steps, list) else [],
                    started_at=ts,
                )
            )
        elif event == ROLLBACK_FINISHED:
            if summary.rollbacks and summary.rollbacks[-1].finished_at is None:
                rb = summary.rollbacks[-1]
            else:
                rb = Rollback(reason=None, steps=[], started_at=None)
                summary.rollbacks.append(rb)
            rb.finished_at = ts
            ok = rec.get("ok")
            rb.ok = ok if isinstance(ok, bool) else None
        elif event == RUN_FINISHED:
            summary.outcome = _str(rec.get("outcome"))
            summary.error = _str(rec.get("error"))
            summary.finished_at = ts
        elif isinstance(event, str) and event not in EVENT_TYPES:
            summary.unknown_events[event] = summary.unknown_events.get(event, 0) + 1

    summary.steps = sorted(
        steps.values(),
        key=lambda s: (
            s.planned_start or s.actual_start or datetime.max.replace(tzinfo=UTC),
            s.id,
        ),
    )
    summary.deviations = _deviations(summary, late_tolerance)
    return summary


def _deviations(summary: RunSummary, tolerance: timedelta) -> list[Deviation]:
    out: list[Deviation] = []
    for st in summary.steps:
        delay = st.start_delay
        if delay is not None and delay > tolerance:
            out.append(Deviation(st.id, "late", f"started {_minutes(delay)} after plan"))
        if st.actual_finish and st.planned_finish:
            over = st.actual_finish - st.planned_finish
            if over > tolerance:
                out.append(Deviation(st.id, "overran", f"finished {_minutes(over)} after plan"))
        if st.retried:
            errors = [a.error for a in st.attempts if a.error]
            detail = f"{len(st.attempts)} failed attempt(s)"
            if errors:
                detail += f"; last error: {errors[-1]}"
            out.append(Deviation(st.id, "retried", detail))
        if st.status == "failed":
            out.append(Deviation(st.id, "failed", st.error or "failed"))
        elif st.status == "skipped":
            out.append(Deviation(st.id, "skipped", st.error or "skipped"))
        elif st.status == "rolled_back":
            out.append(Deviation(st.id, "rolled_back", st.error or "rolled back"))
        elif st.planned and st.status is None and summary.outcome is not None:
            out.append(Deviation(st.id, "not_run", "planned but never finished"))
        if not st.planned and summary.plan_finish is not None:
            out.append(Deviation(st.id, "unplanned", "ran but was not in the plan"))
    if summary.outcome not in (None, "succeeded"):
        out.append(
            Deviation(None, "run", f"run {summary.outcome}: {summary.error or 'no error given'}")
        )
    return out


def _minutes(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
