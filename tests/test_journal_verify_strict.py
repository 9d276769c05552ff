"""Red-team cases: forged, extended, stripped, cut and reordered journals must fail verify.

Why a file of its own: each test tampers with the bytes as an attacker would,
re-chaining hashes where the attack needs it, so a lenient verdict shows here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cutbook import audit
from cutbook.errors import ChainBroken
from cutbook.journal import Event, Journal, format_anchor, verify
from cutbook.journal.lease import Lease
from cutbook.journal.records import GENESIS, canonical, encode_line

KEY = b"k" * 32
RUN = "run-1"
CUTBOOK = str(Path(sys.executable).with_name("cutbook"))


def build(directory: Path, n: int = 12, *, key: bytes | None = None, finish: bool = True) -> Path:
    """A real journal of ``n`` records, ending with run.finished when ``finish``."""
    journal = Journal.create(directory, RUN, hmac_key=key, fsync=False)
    journal.append(
        Event.RUN_STARTED, runbook_name="rb", runbook_sha256="0" * 64, plan={"steps": []}
    )
    for i in range(n - 2 if finish else n - 1):
        journal.append(
            Event.STEP_OUTCOME, step=f"s{i}", item={"n": i}, summary=f"ok {i}", output={}, ok=True
        )
    if finish:
        journal.append(Event.RUN_FINISHED, outcome="succeeded", error=None)
    journal.close()
    return journal.path


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def rechain(path: Path, recs: list[dict[str, Any]]) -> None:
    """Write records back as a forger would: renumbered, every prev and hash recomputed."""
    prev, out = GENESIS, []
    for seq, rec in enumerate(recs):
        body_obj = {k: v for k, v in rec.items() if k != "hash"}
        body_obj.update(seq=seq, prev=prev)
        body = canonical(body_obj)
        prev = hashlib.sha256(body).hexdigest()
        out.append(encode_line(body, prev))
    path.write_bytes(b"".join(out))


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUTBOOK, "audit", *args, "--journal-dir", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "NO_COLOR": "1"},
    )


# ---------------------------------------------------------------- 1. after run.finished


def test_records_after_run_finished_fail_even_with_key_and_anchor(tmp_path: Path) -> None:
    path = build(tmp_path, key=KEY)
    head = audit.anchor(tmp_path, RUN, hmac_key=KEY)
    recs = records(path)
    recs.append(dict(recs[-2], step="forged", summary="rolled back cleanly"))
    rechain(path, recs)
    result = verify(path, hmac_key=KEY, anchor=head)
    assert not result.ok and not result.passed
    assert result.first_bad_line == len(recs)
    assert "step.outcome after run.finished" in (result.problem or "")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    line = format_anchor(head)
    done = cli(tmp_path, "verify", RUN, "--key-file", str(key_file), "--anchor", line)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "after run.finished" in done.stdout


# ---------------------------------------------------------------- 2. anchors


def test_anchor_mismatch_after_rewrite_fails(tmp_path: Path) -> None:
    path = build(tmp_path)
    head = audit.anchor(tmp_path, RUN)
    recs = records(path)
    recs[3]["summary"] = "edited, then the whole chain re-hashed"
    rechain(path, recs)
    assert verify(path).passed  # without the anchor a re-hash is invisible…
    result = verify(path, anchor=head)  # …with it, not
    assert not result.passed and result.anchor_ok is False
    assert "rewritten after the anchor" in (result.problem or "")


def test_anchor_of_live_head_allows_later_records(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, RUN, fsync=False)
    journal.append(Event.RUN_STARTED, runbook_name="rb", runbook_sha256="0" * 64, plan={})
    head = journal.anchor()  # taken while the run was going
    journal.append(Event.RUN_FINISHED, outcome="succeeded", error=None)
    journal.close()
    result = verify(journal.path, anchor=head)
    assert result.passed and result.anchor_ok is True


def test_anchor_of_finished_head_refuses_later_records(tmp_path: Path) -> None:
    path = build(tmp_path)
    head = audit.anchor(tmp_path, RUN)
    recs = records(path)
    recs.append(dict(recs[1], summary="appended after anchoring"))
    rechain(path, recs)
    # The anchored head is untouched (same prefix), yet the run had ended there.
    result = verify(path, anchor=head)
    assert not result.passed and "after run.finished" in (result.problem or "")


# ---------------------------------------------------------------- 3. head_hmac


def test_stripped_head_hmac_with_key_fails(tmp_path: Path) -> None:
    path = build(tmp_path, key=KEY)
    recs = records(path)
    del recs[-1]["head_hmac"]
    recs[-1]["outcome"] = "failed"
    rechain(path, recs)
    assert verify(path).passed  # no key: nothing to check it against
    result = verify(path, hmac_key=KEY)
    assert not result.passed and result.hmac_ok is False
    assert "no head_hmac" in (result.problem or "")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    done = cli(tmp_path, "verify", RUN, "--key-file", str(key_file))
    assert done.returncode == 1 and "no head_hmac" in done.stdout


# ---------------------------------------------------------------- 4. truncation


@pytest.mark.parametrize("drop", [1, 5, 100])
def test_truncation_without_run_finished_fails(tmp_path: Path, drop: int) -> None:
    path = build(tmp_path, 120)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-drop]))
    result = verify(path)
    assert result.ok and not result.passed and not result.complete
    assert result.problem == (
        "no run.finished: the run is still running, or it crashed "
        f"(resume it with cutbook resume {RUN}), or the journal was cut"
    )
    done = cli(tmp_path, "verify", RUN)
    assert done.returncode == 1
    assert "FAILED: no run.finished" in done.stdout


def test_live_run_holding_its_lease_passes_and_a_stale_lock_does_not(tmp_path: Path) -> None:
    path = build(tmp_path, finish=False)
    lock = path.with_name(f"{RUN}.lock")
    lease = Lease.acquire(lock, run_id=RUN, runbook="rb", estate="", what=f"run {RUN}")
    try:
        result = verify(path)
        assert result.passed and result.live and not result.complete
        assert any("still going" in w for w in result.warnings)
        assert cli(tmp_path, "verify", RUN).returncode == 0
    finally:
        lease.release()
    # A lock file nobody holds is what a kill -9 leaves behind: a crash, not a live run.
    lock.write_text("1234\n")
    result = verify(path)
    assert not result.passed and not result.live
    assert cli(tmp_path, "verify", RUN).returncode == 1


def test_torn_line_is_reported_as_a_crash_and_fails(tmp_path: Path) -> None:
    path = build(tmp_path, finish=False)
    with open(path, "ab") as fh:
        fh.write(b'{"event":"step.outc')
    result = verify(path)
    assert result.ok and result.torn_tail and not result.passed
    assert (result.problem or "").startswith("torn last line at byte")
    done = cli(tmp_path, "verify", RUN)
    assert done.returncode == 1
    assert "the writer crashed mid-write" in done.stdout
    assert f"resume it with cutbook resume {RUN}" in done.stdout


def test_verify_help_promises_exit_1_on_truncation(tmp_path: Path) -> None:
    done = subprocess.run(
        [CUTBOOK, "audit", "verify", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "200"},
    )
    text = " ".join(done.stdout.split())
    assert "truncation" in text and "1 naming" in text and "run.finished" in text


# ---------------------------------------------------------------- 5. reordering


@pytest.mark.parametrize(("a", "b"), [(0, 1), (4, 5), (3, 8)])
def test_swapped_records_are_named(tmp_path: Path, a: int, b: int) -> None:
    path = build(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[a], lines[b] = lines[b], lines[a]
    path.write_bytes(b"".join(lines))
    result = verify(path)
    assert not result.ok and result.first_bad_line == a + 1
    assert f"records {a} and {b} are out of order (swapped)" in (result.problem or "")
    assert "deleted" not in (result.problem or "")


def test_moved_record_is_not_called_deleted(tmp_path: Path) -> None:
    path = build(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    moved = lines.pop(3)
    lines.insert(7, moved)
    path.write_bytes(b"".join(lines))
    result = verify(path)
    assert not result.ok and "out of order" in (result.problem or "")
    assert "deleted" not in (result.problem or "")


def test_real_deletion_still_says_deleted(tmp_path: Path) -> None:
    path = build(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[4]
    path.write_bytes(b"".join(lines))
    assert "1 record(s) deleted" in (verify(path).problem or "")


# ---------------------------------------------------------------- 6. anchor refuses


def test_anchor_refuses_a_broken_journal(tmp_path: Path) -> None:
    path = build(tmp_path)
    recs = records(path)
    recs.append(dict(recs[1]))
    rechain(path, recs)
    with pytest.raises(ChainBroken, match="not anchoring"):
        audit.anchor(tmp_path, RUN)
    done = cli(tmp_path, "anchor", RUN)
    assert done.returncode == 1 and "not anchoring" in (done.stdout + done.stderr)


def test_anchor_of_unfinished_run_says_so(tmp_path: Path) -> None:
    build(tmp_path, finish=False)
    head = audit.anchor(tmp_path, RUN)
    assert head["finished"] is False
    assert "finished" not in format_anchor(head)  # the pasted line is the head alone
    done = cli(tmp_path, "anchor", RUN)
    assert done.returncode == 0
    assert "has no run.finished" in done.stderr
    finished = build(tmp_path / "other")
    assert "finished" not in audit.anchor(finished.parent, RUN)
