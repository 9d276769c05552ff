"""The journal: durable appends, resume, torn tails, and tamper detection that locates."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import random
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cutbook.errors import ChainBroken, JournalError, JournalWriteError
from cutbook.journal import (
    GENESIS,
    INDEX_NAME,
    Journal,
    format_anchor,
    jsonable,
    parse_anchor,
    read_records,
    verify,
)
from cutbook.redact import Redactor

SEEDS = range(60)


def make_journal(
    directory: Path, n: int = 30, *, key: bytes | None = None, fsync: bool = True
) -> Path:
    """A finished run with awkward content: unicode, control characters, floats."""
    journal = Journal.create(directory, "run-1", hmac_key=key, fsync=fsync)
    journal.append("run.started", runbook_name="rb", runbook_sha256="0" * 64, plan={"steps": []})
    for i in range(n - 2):
        journal.append(
            "step.outcome",
            step=f"s{i % 5}",
            item={"office": "Kantor Bea Cukai – Tanjung Priok", "n": i},
            summary=f'line\twith\x1fcontrol "quotes" \\ and é ✓ {i}',
            output={"ratio": 1e-05 * i},
            ok=i % 2 == 0,
        )
    journal.append("run.finished", outcome="succeeded", error=None)
    journal.close()
    return journal.path


_PRISTINE: dict[str, bytes] = {}


def tamper_target(directory: Path) -> Path:
    """A copy of one shared 30-record journal (built once: the loops stay fast)."""
    if "data" not in _PRISTINE:
        _PRISTINE["data"] = make_journal(directory / "build", fsync=False).read_bytes()
    path = directory / "run-1.jsonl"
    path.write_bytes(_PRISTINE["data"])
    return path


def line_of(data: bytes, pos: int) -> int:
    """1-based number of the line holding byte ``pos`` (its newline included)."""
    return data.count(b"\n", 0, pos) + 1


# ---------------------------------------------------------------- writing


def test_roundtrip_and_record_format(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r-1")
    first = journal.append(
        "run.started", runbook_name="rb", variables={"when": datetime(2025, 3, 14, tzinfo=UTC)}
    )
    second = journal.append("step.started", step="a", items=["x", "y"])
    journal.close()
    assert (first.seq, second.seq) == (0, 1)
    assert first.prev == GENESIS and second.prev == first.hash
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", first.ts)
    records = list(read_records(journal.path))
    assert records == [first.to_dict(), second.to_dict()]
    assert records[0]["variables"]["when"] == "2025-03-14T00:00:00+00:00"
    # The documented independent check, with nothing from cutbook.
    for line in journal.path.read_bytes().splitlines():
        obj = json.loads(line)
        digest = obj.pop("hash")
        body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(body.encode()).hexdigest() == digest
    result = verify(journal.path)
    assert result.ok and result.records == 2 and result.head_hash == second.hash
    assert not result.complete and not result.passed  # unfinished, no lock: fails
    assert (result.problem or "").startswith("no run.finished: the run is still running")


def test_reserved_fields_rejected(tmp_path: Path) -> None:
    with Journal.create(tmp_path, "r") as journal, pytest.raises(ValueError, match="reserved"):
        journal.append("x", seq=3)


def test_bad_run_id(tmp_path: Path) -> None:
    for bad in ("../x", "", "index", "a/b"):
        with pytest.raises(JournalError):
            Journal.create(tmp_path, bad)


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Thing:
    name: str


def test_jsonable_values() -> None:
    value = jsonable(
        {"p": Path("/a"), "s": {2, 1}, "e": Colour.RED, "d": Thing("x"), 3: float("nan"), "t": (1,)}
    )
    assert value == {"p": "/a", "s": [1, 2], "e": "red", "d": {"name": "x"}, "3": "nan", "t": [1]}


def test_records_are_durable_without_close(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "crashy")
    journal.append("run.started", runbook_name="rb")
    journal.append("step.started", step="a")
    # No close(): a crash. Every acknowledged record is already on disk.
    assert [r["event"] for r in read_records(tmp_path / "crashy.jsonl")] == [
        "run.started",
        "step.started",
    ]
    os.close(journal._fd)  # type: ignore[arg-type]


def test_resume_continues_chain(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.append("run.started", runbook_name="rb")
    last = journal.append("step.started", step="a")
    journal.close()
    resumed = Journal.open(journal.path)
    rec = resumed.append("run.resumed", by="ops", reason="host rebooted")
    assert rec.seq == 2 and rec.prev == last.hash
    resumed.close()
    again = Journal.create(tmp_path, "r")  # create-or-continue
    assert again.append("run.finished", outcome="succeeded").seq == 3
    again.close()
    result = verify(journal.path)
    assert result.ok and result.complete and result.records == 4


def test_index_lines(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.append("run.started", runbook_name="rb", timezone="UTC")
    journal.append("run.finished", outcome="failed")
    journal.close()
    lines = [json.loads(x) for x in (tmp_path / INDEX_NAME).read_text().splitlines()]
    assert lines[0]["runbook"] == "rb" and lines[0]["path"] == "r.jsonl"
    assert lines[1]["outcome"] == "failed"


def test_threads_share_one_journal(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r", fsync=False)

    def work(n: int) -> None:
        for i in range(200):
            journal.append("step.outcome", step=f"t{n}", item=i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close()
    result = verify(journal.path)
    assert result.ok and result.records == 1600


def test_append_scrubs_secrets(tmp_path: Path) -> None:
    redactor = Redactor(["Pa55-canary-word"])
    journal = Journal.create(tmp_path, "r", redactor=redactor)
    journal.append("step.attempt", error="login failed for Pa55-canary-word")
    journal.append(
        "step.outcome",
        output={
            "headers": {"Authorization": "Bearer abcdefghijklmnop"},
            "nested": [{"Pa55-canary-word": "as a key"}],
        },
    )
    journal.redactor.add("late-added-secret")
    journal.append("step.outcome", summary="now late-added-secret appears")
    journal.close()
    raw = journal.path.read_text(encoding="utf-8")
    for leak in ("Pa55-canary-word", "abcdefghijklmnop", "late-added-secret"):
        assert leak not in raw
    assert verify(journal.path).ok


# ---------------------------------------------------------------- write failures


def test_write_error_when_directory_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "journal"
    blocker.write_text("not a directory")
    with pytest.raises(JournalWriteError):
        Journal.create(blocker, "r")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_write_error_when_directory_read_only(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(JournalWriteError):
            Journal.create(tmp_path / "journal", "r")
    finally:
        tmp_path.chmod(0o700)


def test_write_error_when_fd_closed(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.append("run.started")
    os.close(journal._fd)  # type: ignore[arg-type]
    with pytest.raises(JournalWriteError, match="stopping"):
        journal.append("step.started", step="a")
    assert journal.seq == 1  # nothing half-counted


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_error_when_disk_full(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").symlink_to("/dev/full")
    journal = Journal.create(tmp_path, "r", fsync=False)
    with pytest.raises(JournalWriteError):
        journal.append("run.started")


def test_write_error_when_fsync_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal.create(tmp_path, "r")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(JournalWriteError, match="Input/output"):
        journal.append("run.started")


def test_append_after_close(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "r")
    journal.close()
    with pytest.raises(JournalWriteError):
        journal.append("step.started", step="a")


# ---------------------------------------------------------------- torn tails


def test_torn_last_line_verifies_and_is_repaired(tmp_path: Path) -> None:
    path = make_journal(tmp_path, 11)
    # A crash tears a line before run.finished: nothing is ever written after it.
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    good_size = path.stat().st_size
    partial = b'{"event":"step.outcome","item":{"office":"Kantor Bea Cuk'
    with open(path, "ab") as fh:
        fh.write(partial)
    result = verify(path)
    assert result.ok and result.torn_tail and result.records == 10
    assert not result.passed  # intact, but a crashed run does not pass
    assert result.problem == (
        f"torn last line at byte {good_size}: the writer crashed mid-write; earlier records verify"
    )
    journal = Journal.open(path)
    journal.close()
    records = list(read_records(path))
    assert records[-1]["event"] == "journal.repaired"
    assert records[-1]["bytes"] == len(partial) and records[-1]["offset"] == good_size
    after = verify(path)
    assert after.ok and not after.torn_tail and after.records == 11


@pytest.mark.parametrize(
    "tail",
    [b"\x00" * 300, b"{", '{"summary":"caf\u00e9'.encode()[:-1]],
    ids=["zero-filled", "one-byte", "mid-utf8"],
)
def test_torn_tail_shapes(tmp_path: Path, tail: bytes) -> None:
    path = make_journal(tmp_path, 5)
    with open(path, "ab") as fh:
        fh.write(tail)
    result = verify(path)
    assert result.ok and result.torn_tail


def test_complete_record_missing_only_its_newline_is_torn(tmp_path: Path) -> None:
    path = make_journal(tmp_path, 5)
    path.write_bytes(path.read_bytes()[:-1])
    assert verify(path).torn_tail
    Journal.open(path).close()  # the unacknowledged record is cut away
    events = [r["event"] for r in read_records(path)]
    assert events[-1] == "journal.repaired" and events.count("run.finished") == 0


def test_open_refuses_damaged_journal(tmp_path: Path) -> None:
    path = make_journal(tmp_path, 5)
    data = path.read_bytes()
    path.write_bytes(data[:-1] + b"X")  # a complete record then junk: not a crash
    with pytest.raises(ChainBroken):
        Journal.open(path)
    assert path.read_bytes() == data[:-1] + b"X"  # never "repaired"
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2] + lines[-1:]))  # tail link broken
    with pytest.raises(ChainBroken):
        Journal.open(path)


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize("seed", SEEDS)
def test_any_byte_flip_is_detected_at_its_line(tmp_path: Path, seed: int) -> None:
    path = tamper_target(tmp_path)
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for _ in range(5):
        pos = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[pos] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(flipped))
        result = verify(path)
        assert not result.ok, (pos, data[pos : pos + 1])
        assert result.first_bad_line == line_of(bytes(data), pos), (pos, result.problem)
        assert not result.torn_tail


@pytest.mark.parametrize("seed", SEEDS)
def test_deleted_record_is_located(tmp_path: Path, seed: int) -> None:
    path = tamper_target(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    i = random.Random(seed).randrange(len(lines) - 1)
    path.write_bytes(b"".join(lines[:i] + lines[i + 1 :]))
    result = verify(path)
    assert not result.ok and result.first_bad_line == i + 1
    assert "deleted" in (result.problem or "") or "prev" in (result.problem or "")


@pytest.mark.parametrize("seed", SEEDS)
def test_inserted_copy_is_located(tmp_path: Path, seed: int) -> None:
    path = tamper_target(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    rng = random.Random(seed)
    source, at = rng.randrange(len(lines)), rng.randrange(len(lines) + 1)
    path.write_bytes(b"".join([*lines[:at], lines[source], *lines[at:]]))
    result = verify(path)
    assert not result.ok
    # A copy placed right before its original is indistinguishable from it.
    assert result.first_bad_line == (at + 2 if source == at else at + 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_swapped_neighbours_are_located(tmp_path: Path, seed: int) -> None:
    path = tamper_target(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    i = random.Random(seed).randrange(len(lines) - 1)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"".join(lines))
    result = verify(path)
    assert not result.ok and result.first_bad_line == i + 1


@pytest.mark.parametrize("seed", SEEDS)
def test_truncation_detected_against_anchor(tmp_path: Path, seed: int) -> None:
    path = tamper_target(tmp_path)
    head = verify(path)
    assert head.head_seq is not None and head.head_hash is not None
    anchor = {"run_id": "run-1", "seq": head.head_seq, "hash": head.head_hash}
    lines = path.read_bytes().splitlines(keepends=True)
    keep = random.Random(seed).randrange(1, len(lines))
    path.write_bytes(b"".join(lines[:keep]))
    plain = verify(path)
    assert plain.ok and not plain.complete  # looks fine on its own…
    cut = verify(path, anchor=anchor)  # …but not against the anchor
    assert not cut.ok and cut.anchor_ok is False
    assert f"{len(lines) - keep} record(s) were cut off" in (cut.problem or "")


def test_rewritten_chain_detected_against_anchor(tmp_path: Path) -> None:
    path = make_journal(tmp_path, 6)
    anchor = format_anchor({"run_id": "run-1", "seq": 3, "hash": verify(path).head_hash})
    result = verify(path, anchor=anchor)
    assert not result.ok and "rewritten" in (result.problem or "")
    assert parse_anchor("run_id=run-1 seq=5 hash=" + "a" * 64)["seq"] == 5
    with pytest.raises(JournalError):
        parse_anchor("seq=1 hash=zz")


def test_hmac(tmp_path: Path) -> None:
    key = b"k" * 32
    path = make_journal(tmp_path, 6, key=key)
    final = list(read_records(path))[-1]
    assert len(final["head_hmac"]) == 64
    good = verify(path, hmac_key=key)
    assert good.ok and good.hmac_ok is True
    bad = verify(path, hmac_key=b"not the key")
    assert not bad.ok and bad.hmac_ok is False and bad.first_bad_line == 6
    unchecked = verify(path)
    assert unchecked.ok and unchecked.hmac_ok is None
    journal = Journal.open(path, hmac_key=key)
    anchor = journal.anchor()
    journal.close()
    assert verify(path, hmac_key=key, anchor=anchor).hmac_ok is True
    forged = dict(anchor, hmac="0" * 64)
    assert not verify(path, hmac_key=key, anchor=forged).ok


def test_runbook_hash(tmp_path: Path) -> None:
    runbook = tmp_path / "rb.yaml"
    runbook.write_text("apiVersion: cutbook/v1\n", encoding="utf-8")
    journal = Journal.create(tmp_path, "r")
    journal.append(
        "run.started",
        runbook_path=str(runbook),
        runbook_sha256=hashlib.sha256(runbook.read_bytes()).hexdigest(),
        runbook_text=runbook.read_text(encoding="utf-8"),
    )
    journal.close()
    assert verify(journal.path).runbook_hash_ok is True  # recorded path exists
    other = tmp_path / "edited.yaml"
    other.write_text("apiVersion: cutbook/v1\n# edited\n", encoding="utf-8")
    result = verify(journal.path, runbook_path=other)
    assert not result.ok and result.runbook_hash_ok is False
    assert "not the runbook text that ran" in (result.problem or "")
    runbook.write_text("changed later\n", encoding="utf-8")
    implicit = verify(journal.path)
    assert implicit.ok and implicit.runbook_hash_ok is False and implicit.warnings


def test_verify_missing_file(tmp_path: Path) -> None:
    result = verify(tmp_path / "nope.jsonl")
    assert not result.ok and "cannot read" in (result.problem or "")
