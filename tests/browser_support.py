"""Helpers for the browser test: build the two HTML pages, drive headless Chromium, read PNGs.

A plain module (conftest is not for importing). Chromium runs as a subprocess
with a fresh profile, no background networking and every host name resolving
to nothing, so a page that tried to fetch anything would show it in the net
log instead of silently succeeding.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cutbook import audit
from cutbook.journal import Journal
from cutbook.plan_render import render
from cutbook.planning import Plan, plan
from cutbook.validation import load

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = REPO / "runbooks" / "customs-reorg-2025.yaml"
RUN_ID = "20250314-customs-real-0001"
APPROVER = "lan.nguyen"
OPERATOR = "minh.tran"
FAILED_STEP = "reset-budget-codes"
RETRIED_STEP = "stop-satellites"
FAILURE = "PermanentError: 409 Conflict: relation code 2991 is locked by the treasury"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


# --- the two pages -------------------------------------------------------------------


def plan_html() -> tuple[str, Plan]:
    """The plan page for the real customs runbook, as ``cutbook plan --format html`` makes it."""
    loaded = load(RUNBOOK)
    forecast = plan(loaded.runbook, item_counts=loaded.item_counts)
    return render(forecast, loaded.runbook, "html"), forecast


class _HostClock:
    """The journal's record clock, moved to each event's moment; it never goes backwards
    (steps run in parallel, so their records interleave on the host)."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def at(self, moment: datetime) -> None:
        self.current = max(self.current, moment)

    def now(self) -> datetime:
        return self.current


def write_journal(journal_dir: Path) -> Path:
    """The real night of the customs runbook, going wrong at ``reset-budget-codes``.

    Written through the Journal API like the engine does: the plan recorded in
    run.started, a late start, a transient failure retried, a gate answered, a
    permanent failure, a rollback of everything done, the always-run steps, the
    rest skipped, then run.finished.
    """
    loaded = load(RUNBOOK)
    forecast = plan(loaded.runbook, item_counts=loaded.item_counts)
    planned = {s.id: s for s in forecast.steps}
    clock = _HostClock(forecast.window_start - timedelta(minutes=5))
    journal = Journal.create(journal_dir, RUN_ID, now=clock.now, fsync=False)
    journal.append(
        "run.started",
        runbook_name=loaded.runbook.name,
        runbook_path=str(RUNBOOK),
        runbook_sha256=loaded.sha256,
        runbook_text=loaded.text,
        variables=loaded.vars,
        started_by=OPERATOR,
        host="cutover-01.customs.local",
        versions={"cutbook": "0.1.0", "adapters": {"http": "0.1.0", "pki": "0.1.0"}},
        window={
            "start": forecast.window_start.isoformat(),
            "end": forecast.window_end.isoformat(),
        },
        timezone=loaded.runbook.timezone,
        clock="real",
        speed=1.0,
        dry_run=False,
        auto_approve=False,
        plan=forecast.to_json(),
    )

    delay = timedelta(0)
    done: list[str] = []

    def run_step(
        sid: str, *, late: timedelta = timedelta(0), extra: timedelta = timedelta(0)
    ) -> None:
        nonlocal delay
        delay += late
        st = planned[sid]
        start = st.start + delay
        finish = st.finish + delay + extra
        clock.at(start)
        journal.append("step.started", step=sid, items=[])
        if sid == RETRIED_STEP:
            clock.at(start + timedelta(seconds=20))
            journal.append(
                "step.attempt",
                step=sid,
                item="e-cargo",
                attempt=1,
                error="TransientError: 503 Service Unavailable from e-cargo",
                transient=True,
                next_delay_s=2.0,
            )
        if st.gate:
            journal.append(
                "gate.requested",
                step=sid,
                approvers=[APPROVER, "hoa.pham"],
                timeout_s=1800,
            )
            clock.at(finish - timedelta(minutes=1))
            journal.append(
                "gate.answered",
                step=sid,
                by=APPROVER,
                approved=True,
                comment="Backups confirmed by both DBAs; go.",
                auto=False,
            )
        clock.at(finish)
        journal.append(
            "step.outcome",
            step=sid,
            item=None,
            phase="apply",
            ok=True,
            changed=not st.gate,
            summary=f"{st.title}: done",
        )
        journal.append(
            "step.finished",
            step=sid,
            status="succeeded",
            error=None,
            started=start.isoformat(),
            finished=finish.isoformat(),
        )
        done.append(sid)

    run_step("on-duty-roll-call")
    run_step("notify-businesses")
    run_step("stop-intake", late=timedelta(minutes=4))
    run_step("drain-queue", extra=timedelta(minutes=3))
    run_step(RETRIED_STEP)
    run_step("stop-epayment")
    delay += timedelta(minutes=3)
    run_step("backups-confirmed")
    run_step("go-no-go")
    run_step("update-catalogue")
    run_step("reconfigure-satellites")
    run_step("close-ceased-offices")

    bad = planned[FAILED_STEP]
    start = bad.start + delay
    clock.at(start)
    journal.append("step.started", step=FAILED_STEP, items=["01BB", "02BB"])
    clock.at(start + timedelta(minutes=2))
    journal.append(
        "step.attempt",
        step=FAILED_STEP,
        item="02BB",
        attempt=1,
        error=FAILURE,
        transient=False,
        next_delay_s=None,
    )
    failed_at = start + timedelta(minutes=3)
    clock.at(failed_at)
    journal.append(
        "step.finished",
        step=FAILED_STEP,
        status="failed",
        error=FAILURE,
        started=start.isoformat(),
        finished=failed_at.isoformat(),
    )
    undo = [s for s in reversed(done) if planned[s].rollback_s]
    journal.append("rollback.started", reason=f"{FAILED_STEP} failed", steps=undo)
    moment = failed_at
    for sid in undo:
        st = planned[sid]
        moment += timedelta(minutes=2)
        clock.at(moment)
        journal.append(
            "step.outcome",
            step=sid,
            item=None,
            phase="rollback",
            ok=True,
            changed=True,
            summary=f"{st.title}: undone",
        )
        journal.append(  # as the engine writes it: the step's run times stay as they were
            "step.finished",
            step=sid,
            status="rolled_back",
            error=f"undone after {FAILED_STEP} failed",
        )
    clock.at(moment)
    journal.append("rollback.finished", ok=True)
    for st in forecast.steps:
        if st.id in done or st.id == FAILED_STEP:
            continue
        if st.always:
            clock.at(moment)
            journal.append("step.started", step=st.id, items=[])
            moment += timedelta(seconds=st.estimate_s)
            clock.at(moment)
            journal.append(
                "step.finished",
                step=st.id,
                status="succeeded",
                error=None,
                started=(moment - timedelta(seconds=st.estimate_s)).isoformat(),
                finished=moment.isoformat(),
            )
        else:
            journal.append(
                "step.finished", step=st.id, status="skipped", error=f"{FAILED_STEP} failed"
            )
    clock.at(moment + timedelta(seconds=5))
    journal.append("run.finished", outcome="rolled_back", error=f"{FAILED_STEP}: 409 Conflict")
    journal.close()
    return journal.path


def report_html(journal_dir: Path) -> str:
    """The audit report page for the journal :func:`write_journal` wrote."""
    return audit.report(journal_dir, RUN_ID, "html")


# --- chromium ----------------------------------------------------------------------


@dataclass
class Shot:
    """One headless run: its exit code, its stderr and the net log it wrote."""

    returncode: int
    stderr: str
    netlog: Path


def _chromium(
    binary: str, work: Path, *args: str, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    profile = Path(tempfile.mkdtemp(prefix="profile-", dir=work))
    env = {**os.environ, "HOME": str(work), "XDG_CONFIG_HOME": str(work / ".config")}
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def screenshot(
    binary: str,
    page: Path,
    png: Path,
    *,
    size: tuple[int, int] = (1400, 2000),
    timeout: float = 90,
) -> Shot:
    """Render ``page`` to ``png``, recording every network event in a net log."""
    netlog = png.with_suffix(".netlog.json")
    proc = _chromium(
        binary,
        png.parent,
        f"--screenshot={png}",
        f"--window-size={size[0]},{size[1]}",
        f"--log-net-log={netlog}",
        "--net-log-capture-mode=Default",
        page.as_uri(),
        timeout=timeout,
    )
    return Shot(proc.returncode, proc.stderr.decode("utf-8", "replace"), netlog)


def dump_dom(binary: str, page: Path, *, timeout: float = 90) -> str:
    """The DOM after parsing and layout, as headless Chromium serialises it."""
    proc = _chromium(binary, page.parent, "--dump-dom", page.as_uri(), timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")[-2000:]
    return proc.stdout.decode("utf-8")


def print_pdf(binary: str, page: Path, pdf: Path, *, timeout: float = 90) -> int:
    proc = _chromium(
        binary,
        pdf.parent,
        f"--print-to-pdf={pdf}",
        "--no-pdf-header-footer",
        page.as_uri(),
        timeout=timeout,
    )
    return proc.returncode


def page_requests(netlog: Path) -> list[str]:
    """URLs the *page* asked the network stack for, read from a ``--log-net-log`` file.

    Chromium's own background requests (update checks, network time) carry the
    initiator "not an origin"; anything a ``file://`` page loads carries the
    page's opaque origin ("null") as initiator. The caller should check with a
    page that does fetch something that this still tells the two apart.
    """
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip()
    try:
        log: dict[str, Any] = json.loads(text)
    except ValueError:
        # Chromium may exit before closing the JSON; the events are still there.
        log = json.loads(text.rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls: list[str] = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event.get("type") != start_job or "url" not in params:
            continue
        if params.get("initiator") == "not an origin":
            continue
        urls.append(str(params["url"]))
    return urls


# --- PNG ---------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        row = self.rows[y]
        c = self.channels
        return tuple(row[x * c : x * c + c])

    def colours(self, step: int = 1) -> dict[tuple[int, int, int], int]:
        """How many (sampled) pixels have each RGB colour."""
        counts: dict[tuple[int, int, int], int] = {}
        c = self.channels
        for row in self.rows[::step]:
            for i in range(0, len(row), c * step):
                rgb = (row[i], row[i + 1], row[i + 2])
                counts[rgb] = counts.get(rgb, 0) + 1
        return counts


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: Path) -> Image:
    """Decode an 8-bit RGB or RGBA, non-interlaced PNG with the standard library only."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG")
    pos = len(PNG_SIGNATURE)
    idat = bytearray()
    header: tuple[int, ...] | None = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: bad CRC in {kind!r} chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError(f"{path}: no IHDR chunk")
    width, height, depth, colour_type, _comp, _filter, interlace = header
    channels = {2: 3, 6: 4}.get(colour_type)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: unsupported PNG (depth {depth}, colour type {colour_type})")
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{path}: image data is {len(raw)} bytes, expected more or fewer")
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        base = y * (stride + 1)
        filt = raw[base]
        line = bytearray(raw[base + 1 : base + 1 + stride])
        if filt == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif filt == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif filt == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif filt == 4:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                upleft = prev[i - channels] if i >= channels else 0
                line[i] = (line[i] + _paeth(left, prev[i], upleft)) & 0xFF
        elif filt != 0:
            raise ValueError(f"{path}: unknown filter type {filt} on row {y}")
        prev = bytes(line)
        rows.append(prev)
    return Image(width, height, channels, rows)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def near(counts: dict[tuple[int, int, int], int], colour: str, tolerance: int = 6) -> int:
    """How many counted pixels are within ``tolerance`` per channel of ``colour``."""
    want = hex_rgb(colour)
    return sum(
        n
        for rgb, n in counts.items()
        if all(abs(a - b) <= tolerance for a, b in zip(rgb, want, strict=True))
    )


def external_references(html: str) -> list[str]:
    """Every resource ``html`` would load: ``src``/``href``-like attributes, CSS ``url()``
    and ``@import``, other than links to a place on the page itself. (A URL written as
    text, such as a runbook variable's value, loads nothing and is not counted.)"""
    found: list[str] = []
    patterns: Sequence[str] = (
        r"""\b(?:src|href|srcset|poster|data|action|xlink:href)\s*=\s*["']?\s*([^"'\s>]+)""",
        r"""url\(\s*["']?([^"')]+)""",
        r"""@import\s+["']([^"']+)""",
    )
    for pattern in patterns:
        for match in re.finditer(pattern, html, re.I):
            target = match.group(1)
            if not target.startswith("#"):
                found.append(target)
    return found
