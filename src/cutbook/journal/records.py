"""A record's bytes: canonical encoding, hashing, and reading lines back.

Why one module: the writer, the verifier and every reader must agree on the
exact bytes of a record, byte for byte, for as long as journals are kept.
Each line is the canonical JSON of the record without ``hash`` (keys sorted,
no spaces, UTF-8) with ``,"hash":"<64 hex>"`` inserted before the closing
brace; ``hash`` is the sha256 of that canonical JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac as hmac_mod
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path, PurePath
from typing import Any, Final, Literal

from cutbook.errors import ChainBroken

GENESIS: Final = "0" * 64
HASH_MARK: Final = b',"hash":"'
TAIL_LEN: Final = len(HASH_MARK) + 64 + 2  # ,"hash":"<64>"}


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The exact bytes a record's hash covers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def encode_line(body: bytes, digest: str) -> bytes:
    """The line as written: the hash goes last so the body's bytes are hashed as they are."""
    return body[:-1] + HASH_MARK + digest.encode("ascii") + b'"}\n'


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
class CheckedLine:
    """A parsed, self-consistent line (its own hash checks out) or why not."""

    record: dict[str, Any] | None
    problem: str | None


def check_line(line: bytes) -> CheckedLine:
    """Parse one line and check its own hash; says nothing about the chain."""
    if len(line) <= TAIL_LEN or line[-TAIL_LEN:-66] != HASH_MARK or line[-2:] != b'"}':
        return CheckedLine(None, "not a journal record: its hash field is missing or damaged")
    try:
        obj = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return CheckedLine(None, "not valid JSON: bytes were changed, added or removed")
    if not isinstance(obj, dict):
        return CheckedLine(None, "not a JSON object")
    digest = obj.pop("hash", None)
    body = canonical(obj)
    if body[:-1] != line[:-TAIL_LEN] or digest != line[-66:-2].decode("ascii", "replace"):
        return CheckedLine(None, "bytes differ from the record as written (edited)")
    if hashlib.sha256(body).hexdigest() != digest:
        return CheckedLine(None, "hash mismatch: the record's content was edited")
    obj["hash"] = digest
    return CheckedLine(obj, None)


def classify_fragment(fragment: bytes) -> Literal["torn", "tampered"]:
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
    return "torn" if check_line(fragment).record is not None else "tampered"


def _common_prefix(marks: list[bytes]) -> bytes:
    if not marks:
        return b""
    low, high = min(marks), max(marks)  # the sorted extremes share what all share
    n = 0
    while n < min(len(low), len(high)) and low[n] == high[n]:
        n += 1
    return low[:n]


def read_records(
    path: Path | str, *, skip_bad: bool = False, events: Collection[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield each complete record as a dict, skipping a torn final fragment.

    No verification: use :func:`verify` for that. An unparsable line raises
    :class:`ChainBroken` naming it, or is skipped with ``skip_bad`` (reports
    on a damaged journal still show what can be read). ``events`` keeps only
    those events, and skips the others' lines by a byte search before any
    JSON parsing: listing many journals needs only a few lines of each.
    """
    marks = [b'"event":"%s"' % e.encode() for e in events or ()]
    common = _common_prefix(marks)  # one search rules most lines out
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):
                return  # torn last line from a crash
            if events is not None and (
                common not in line or not any(mark in line for mark in marks)
            ):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                if skip_bad:
                    continue
                raise ChainBroken(f"{path}: line {number} is not a journal record") from None
            if isinstance(obj, dict) and (events is None or obj.get("event") in events):
                yield obj
