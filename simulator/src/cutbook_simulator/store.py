"""The estate's state in SQLite, so a restart with the same file keeps it.

One connection guarded by a lock: the simulator is a single process and every
operation is a few milliseconds, so serialising them costs nothing and makes
each mutation atomic with respect to every other.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cutbook_simulator import pki
from cutbook_simulator.seed import (
    OfficeRow,
    parse_offices,
    pre_reorg_budget_code,
    pre_reorg_treasury_account,
    pre_reorg_treasury_code,
)

__all__ = ["SATELLITES", "Store", "StoreError"]

SCHEMA_VERSION = "1"
SATELLITES = ("e-manifest", "e-cargo", "risk-management", "tax-accounting", "e-payment")
INITIAL_SATELLITE_CONFIG: dict[str, Any] = {"org_model": "2020"}
INITIAL_CATALOGUE_VERSION = "2024"
PATCHABLE = ("name", "budget_code", "treasury_account", "treasury_code")

# The declaration queue: arrivals while intake is open (up to a cap), draining
# while stopped. Computed from the estate clock's timestamps, so no background
# work is needed and a rehearsal's skipped minutes drain it too (see clock.py).
QUEUE_INITIAL = 120.0
QUEUE_ARRIVAL_PER_S = 2.0
QUEUE_DRAIN_PER_S = 30.0
QUEUE_CAP = 300.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offices (
    code TEXT PRIMARY KEY, position INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL,
    budget_code TEXT NOT NULL, treasury_account TEXT NOT NULL, treasury_code TEXT NOT NULL,
    region TEXT NOT NULL, intake TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS satellites (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, intake TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS portal_units (
    old_code TEXT PRIMARY KEY, old_name TEXT NOT NULL, new_code TEXT NOT NULL,
    new_name TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, body TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS owners (
    owner TEXT PRIMARY KEY, position INTEGER NOT NULL, kind TEXT NOT NULL, unit TEXT NOT NULL,
    current_serial TEXT);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY, seq INTEGER NOT NULL, owner TEXT NOT NULL, subject TEXT NOT NULL,
    organization TEXT, status TEXT NOT NULL, pem TEXT NOT NULL, issued_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS certificates_owner ON certificates (owner);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL,
    body BLOB NOT NULL, content_type TEXT NOT NULL, applied INTEGER NOT NULL,
    replayed INTEGER NOT NULL, created_at REAL NOT NULL);
"""

_ESTATE_TABLES = ("offices", "satellites", "portal_units", "notices", "owners", "certificates")


class StoreError(Exception):
    """A request the estate refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


def _changed(before: Any, after: Any) -> dict[str, Any]:
    return {"changed": before != after, "before": before, "after": after}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Store:
    """All estate reads and writes; every public method is atomic."""

    def __init__(
        self,
        path: Path,
        seed_text: str | None = None,
        seed_source: str = "",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._now = clock
        """The estate's time (wall time skewed to follow a rehearsal): every timestamp."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            with self._conn:
                self._conn.executescript(_SCHEMA)
            if self._meta("schema") is None:
                if seed_text is None:
                    raise StoreError(500, "new state file and no office list to seed it from")
                rows = parse_offices(seed_text, seed_source or "<seed>")
                with self._tx() as cur:
                    self._set_meta(cur, "schema", SCHEMA_VERSION)
                    self._set_meta(cur, "seed_csv", seed_text)
                    self._set_meta(cur, "seed_source", seed_source)
                    ca = pki.CertificateAuthority.generate()
                    self._set_meta(cur, "ca_key", ca.key_pem())
                    self._set_meta(cur, "ca_cert", ca.cert_pem())
                    self._seed(cur, rows, ca)
            elif self._meta("schema") != SCHEMA_VERSION:
                raise StoreError(500, f"{self.path} has an unknown schema version")
            key_pem, cert_pem = self._meta("ca_key"), self._meta("ca_cert")
            assert key_pem is not None and cert_pem is not None
            self.ca = pki.CertificateAuthority.from_pem(key_pem, cert_pem)
            seed_csv = self._meta("seed_csv") or ""
            self.seed_source = self._meta("seed_source") or ""
            self.offices_csv = parse_offices(seed_csv, self.seed_source or "<seed>")

    # -- plumbing -----------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock, self._conn:
            yield self._conn.cursor()

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(cur: sqlite3.Cursor, key: str, value: str) -> None:
        cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _seed(
        self, cur: sqlite3.Cursor, rows: list[OfficeRow], ca: pki.CertificateAuthority
    ) -> None:
        """The pre-reorganisation estate: old codes and names, old accounts."""
        for table in _ESTATE_TABLES:
            cur.execute(f"DELETE FROM {table}")
        cur.execute("DELETE FROM sqlite_sequence WHERE name = 'notices'")
        now = self._now()
        self._set_meta(
            cur,
            "intake",
            json.dumps({"state": "open", "queue": QUEUE_INITIAL, "since": now}),
        )
        self._set_meta(cur, "catalogue_version", INITIAL_CATALOGUE_VERSION)
        for position, row in enumerate(rows):
            cur.execute(
                "INSERT INTO offices VALUES (?, ?, ?, 'active', ?, ?, ?, ?, 'open')",
                (
                    row.old_code,
                    position,
                    row.old_name,
                    pre_reorg_budget_code(row.budget_code),
                    pre_reorg_treasury_account(row.treasury_account),
                    pre_reorg_treasury_code(row.treasury_code),
                    row.region,
                ),
            )
        for position, name in enumerate(SATELLITES):
            cur.execute(
                "INSERT INTO satellites VALUES (?, ?, 'on', ?)",
                (name, position, json.dumps(INITIAL_SATELLITE_CONFIG)),
            )
        seq = 0
        for position, row in enumerate(rows):
            owners = [(f"org:{row.old_code}", "org")] + [
                (f"person:{row.old_code}:{n}", "person") for n in (1, 2)
            ]
            for offset, (owner, kind) in enumerate(owners):
                serial, cert = ca.issue_seed(owner, row.old_name)
                text = pki.serial_text(serial)
                cur.execute(
                    "INSERT INTO owners VALUES (?, ?, ?, ?, ?)",
                    (owner, position * 3 + offset, kind, row.old_code, text),
                )
                seq += 1
                cur.execute(
                    "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, 'current', ?, ?)",
                    (
                        text,
                        seq,
                        owner,
                        cert.subject.rfc4514_string(),
                        row.old_name,
                        pki.cert_pem(cert),
                        now,
                    ),
                )

    def reset(self) -> None:
        """Back to the seeded estate; the CA and the office list are kept."""
        with self._tx() as cur:
            self._seed(cur, self.offices_csv, self.ca)
            cur.execute("DELETE FROM idempotency")

    # -- VNACCS intake ------------------------------------------------------

    def _intake_raw(self) -> dict[str, Any]:
        raw = json.loads(self._meta("intake") or "{}")
        return dict(raw)

    @staticmethod
    def _queue_now(raw: Mapping[str, Any], now: float) -> float:
        elapsed = max(0.0, now - float(raw["since"]))
        queue = float(raw["queue"])
        if raw["state"] == "open":
            return min(QUEUE_CAP, queue + QUEUE_ARRIVAL_PER_S * elapsed)
        return max(0.0, queue - QUEUE_DRAIN_PER_S * elapsed)

    def intake(self) -> dict[str, Any]:
        with self._lock:
            raw = self._intake_raw()
            return {"state": raw["state"], "queue": int(self._queue_now(raw, self._now()))}

    def set_intake(self, state: str) -> dict[str, Any]:
        with self._tx() as cur:
            raw = self._intake_raw()
            now = self._now()
            queue = self._queue_now(raw, now)
            before = {"state": raw["state"], "queue": int(queue)}
            if raw["state"] != state:
                self._set_meta(
                    cur, "intake", json.dumps({"state": state, "queue": queue, "since": now})
                )
            after = {"state": state, "queue": int(queue)}
            return {"changed": raw["state"] != state, "before": before, "after": after}

    def office_intake(self, code: str) -> dict[str, Any]:
        with self._lock:
            office = self._office_row(code)
            return {"code": code, "state": office["intake"]}

    def set_office_intake(self, code: str, state: str) -> dict[str, Any]:
        with self._tx() as cur:
            office = self._office_row(code)
            cur.execute("UPDATE offices SET intake = ? WHERE code = ?", (state, code))
            return _changed(
                {"code": code, "state": office["intake"]}, {"code": code, "state": state}
            )

    # -- satellites ---------------------------------------------------------

    @staticmethod
    def _satellite_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {"name": row["name"], "intake": row["intake"], "config": json.loads(row["config"])}

    def satellites(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM satellites ORDER BY position").fetchall()
            return [self._satellite_dict(r) for r in rows]

    def satellite(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._conn.execute("SELECT * FROM satellites WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(
                    404, f"no satellite system {name!r}; known: {', '.join(SATELLITES)}"
                )
            return self._satellite_dict(row)

    def set_satellite_intake(self, name: str, intake: str) -> dict[str, Any]:
        with self._tx() as cur:
            before = self.satellite(name)
            cur.execute("UPDATE satellites SET intake = ? WHERE name = ?", (intake, name))
            return _changed(before, {**before, "intake": intake})

    def set_satellite_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        with self._tx() as cur:
            before = self.satellite(name)
            cur.execute(
                "UPDATE satellites SET config = ? WHERE name = ?",
                (json.dumps(config, sort_keys=True), name),
            )
            return _changed(before, {**before, "config": config})

    # -- catalogue ----------------------------------------------------------

    def _office_row(self, code: str) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM offices WHERE code = ?", (code,)).fetchone()
        if row is None:
            raise StoreError(404, f"no customs office with code {code!r}")
        return cast(sqlite3.Row, row)

    @staticmethod
    def _office_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "code": row["code"],
            "name": row["name"],
            "status": row["status"],
            "budget_code": row["budget_code"],
            "treasury_account": row["treasury_account"],
            "treasury_code": row["treasury_code"],
            "region": row["region"],
        }

    def offices(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM offices ORDER BY position").fetchall()
            return [self._office_dict(r) for r in rows]

    def office(self, code: str) -> dict[str, Any]:
        with self._lock:
            return self._office_dict(self._office_row(code))

    def patch_office(self, code: str, changes: Mapping[str, str]) -> dict[str, Any]:
        with self._tx() as cur:
            before = self._office_dict(self._office_row(code))
            for field, value in changes.items():
                if field not in PATCHABLE:
                    raise StoreError(422, f"cannot change {field!r}; only {', '.join(PATCHABLE)}")
                cur.execute(
                    f"UPDATE offices SET {field} = ? WHERE code = ?",
                    (value, code),
                )
            return _changed(before, {**before, **changes})

    def set_office_status(self, code: str, status: str) -> dict[str, Any]:
        with self._tx() as cur:
            before = self._office_dict(self._office_row(code))
            cur.execute("UPDATE offices SET status = ? WHERE code = ?", (status, code))
            return _changed(before, {**before, "status": status})

    def catalogue_version(self) -> dict[str, Any]:
        with self._lock:
            return {"version": self._meta("catalogue_version")}

    def set_catalogue_version(self, version: str) -> dict[str, Any]:
        with self._tx() as cur:
            before = {"version": self._meta("catalogue_version")}
            self._set_meta(cur, "catalogue_version", version)
            return _changed(before, {"version": version})

    # -- portal -------------------------------------------------------------

    @staticmethod
    def _unit_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "old_code": row["old_code"],
            "old_name": row["old_name"],
            "new_code": row["new_code"],
            "new_name": row["new_name"],
        }

    def units(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM portal_units ORDER BY old_code").fetchall()
            return [self._unit_dict(r) for r in rows]

    def _unit(self, old_code: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT * FROM portal_units WHERE old_code = ?", (old_code,)
        ).fetchone()
        return None if row is None else self._unit_dict(row)

    def put_unit(
        self, old_code: str, old_name: str, new_code: str, new_name: str
    ) -> dict[str, Any]:
        with self._tx() as cur:
            before = self._unit(old_code)
            after = {
                "old_code": old_code,
                "old_name": old_name,
                "new_code": new_code,
                "new_name": new_name,
            }
            if before != after:
                cur.execute(
                    "INSERT OR REPLACE INTO portal_units VALUES (?, ?, ?, ?, ?)",
                    (old_code, old_name, new_code, new_name, self._now()),
                )
            return _changed(before, after)

    def delete_unit(self, old_code: str) -> dict[str, Any]:
        with self._tx() as cur:
            before = self._unit(old_code)
            cur.execute("DELETE FROM portal_units WHERE old_code = ?", (old_code,))
            return _changed(before, None)

    @staticmethod
    def _notice_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "title": row["title"],
            "body": row["body"],
            "created_at": _iso(row["created_at"]),
        }

    def notices(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM notices ORDER BY id").fetchall()
            return [self._notice_dict(r) for r in rows]

    def add_notice(self, title: str, body: str) -> dict[str, Any]:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO notices (title, body, created_at) VALUES (?, ?, ?)",
                (title, body, self._now()),
            )
            row = cur.execute("SELECT * FROM notices WHERE id = ?", (cur.lastrowid,)).fetchone()
            notice = self._notice_dict(row)
            return {"changed": True, **notice, "before": None, "after": notice}

    # -- Edoc CA ------------------------------------------------------------

    def _owner_row(self, owner: str) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM owners WHERE owner = ?", (owner,)).fetchone()
        if row is None:
            raise StoreError(404, f"no certificate owner {owner!r}")
        return cast(sqlite3.Row, row)

    def _owner_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        subject = organization = None
        if row["current_serial"] is not None:
            cert = self._conn.execute(
                "SELECT subject, organization FROM certificates WHERE serial = ?",
                (row["current_serial"],),
            ).fetchone()
            if cert is not None:
                subject, organization = cert["subject"], cert["organization"]
        return {
            "owner": row["owner"],
            "kind": row["kind"],
            "unit": row["unit"],
            "current_serial": row["current_serial"],
            "subject": subject,
            "organization": organization,
        }

    def owners(self, unit: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if unit is None:
                rows = self._conn.execute("SELECT * FROM owners ORDER BY position").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM owners WHERE unit = ? ORDER BY position", (unit,)
                ).fetchall()
            return [self._owner_dict(r) for r in rows]

    def owner(self, owner: str) -> dict[str, Any]:
        with self._lock:
            return self._owner_dict(self._owner_row(owner))

    @staticmethod
    def _cert_dict(row: sqlite3.Row, with_pem: bool = True) -> dict[str, Any]:
        out = {
            "serial": row["serial"],
            "owner": row["owner"],
            "subject": row["subject"],
            "organization": row["organization"],
            "status": row["status"],
            "issued_at": _iso(row["issued_at"]),
        }
        if with_pem:
            out["certificate"] = row["pem"]
        return out

    def _cert_row(self, serial: str) -> sqlite3.Row:
        row = self._conn.execute(
            "SELECT * FROM certificates WHERE serial = ?", (serial.upper(),)
        ).fetchone()
        if row is None:
            raise StoreError(404, f"no certificate with serial {serial!r}")
        return cast(sqlite3.Row, row)

    def certificate(self, serial: str) -> dict[str, Any]:
        with self._lock:
            return self._cert_dict(self._cert_row(serial))

    def certificates(self, owner: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if owner is None:
                rows = self._conn.execute("SELECT * FROM certificates ORDER BY seq").fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM certificates WHERE owner = ? ORDER BY seq", (owner,)
                ).fetchall()
            return [self._cert_dict(r) for r in rows]

    def ca_pem(self) -> str:
        return self.ca.cert_pem()

    def issue(self, owner: str, csr_pem: str) -> dict[str, Any]:
        """Sign a CSR for an existing owner; the subject's CN must name the owner."""
        try:
            csr = pki.parse_csr(csr_pem)
        except ValueError as exc:
            raise StoreError(422, str(exc)) from None
        cn = pki.common_name_of(csr.subject)
        if cn != owner:
            raise StoreError(422, f"the CSR subject's CN is {cn!r}; it must be the owner {owner!r}")
        with self._tx() as cur:
            self._owner_row(owner)
            serial, cert = self.ca.sign_csr(csr)
            text = pki.serial_text(serial)
            seq = cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM certificates").fetchone()[0]
            cur.execute(
                "INSERT INTO certificates VALUES (?, ?, ?, ?, ?, 'issued', ?, ?)",
                (
                    text,
                    seq,
                    owner,
                    cert.subject.rfc4514_string(),
                    pki.organisation_of(cert.subject),
                    pki.cert_pem(cert),
                    self._now(),
                ),
            )
            record = self._cert_dict(self._cert_row(text))
            return {"changed": True, **record, "before": None, "after": _no_pem(record)}

    def make_current(self, owner: str, serial: str) -> dict[str, Any]:
        with self._tx() as cur:
            owner_row = self._owner_row(owner)
            cert = self._cert_row(serial)
            serial = cert["serial"]
            if cert["owner"] != owner:
                raise StoreError(
                    409, f"certificate {serial} belongs to {cert['owner']}, not {owner}"
                )
            if cert["status"] == "revoked":
                raise StoreError(409, f"certificate {serial} is revoked and cannot become current")
            previous = owner_row["current_serial"]
            before = {"owner": owner, "current_serial": previous}
            after = {"owner": owner, "current_serial": serial}
            if previous != serial:
                if previous is not None:
                    cur.execute(
                        "UPDATE certificates SET status = 'superseded' WHERE serial = ?",
                        (previous,),
                    )
                cur.execute(
                    "UPDATE certificates SET status = 'current' WHERE serial = ?", (serial,)
                )
                cur.execute("UPDATE owners SET current_serial = ? WHERE owner = ?", (serial, owner))
            return _changed(before, after)

    def revoke(self, serial: str) -> dict[str, Any]:
        with self._tx() as cur:
            cert = self._cert_row(serial)
            serial = cert["serial"]
            before = self._cert_dict(cert, with_pem=False)
            cur.execute("UPDATE certificates SET status = 'revoked' WHERE serial = ?", (serial,))
            cur.execute(
                "UPDATE owners SET current_serial = NULL WHERE current_serial = ?", (serial,)
            )
            return _changed(before, {**before, "status": "revoked"})

    # -- idempotency --------------------------------------------------------

    def stored_response(self, key: str) -> StoredResponse | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT fingerprint, status, body, content_type FROM idempotency WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            return StoredResponse(row[0], int(row[1]), bytes(row[2]), str(row[3]))

    def store_response(
        self, key: str, fingerprint: str, status: int, body: bytes, content_type: str
    ) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?, 1, 0, ?)",
                (key, fingerprint, status, body, content_type, self._now()),
            )

    def count_replay(self, key: str) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE idempotency SET replayed = replayed + 1 WHERE key = ?", (key,))

    def idempotency(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, applied, replayed FROM idempotency ORDER BY created_at"
            ).fetchall()
            return {r[0]: {"applied": int(r[1]), "replayed": int(r[2])} for r in rows}

    # -- snapshot -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole estate as JSON-ready data; what :func:`check_final_state` reads."""
        with self._lock:
            offices = []
            for row in self._conn.execute("SELECT * FROM offices ORDER BY position"):
                offices.append({**self._office_dict(row), "intake": row["intake"]})
            return {
                "intake": self.intake(),
                "catalogue_version": self._meta("catalogue_version"),
                "offices": offices,
                "satellites": self.satellites(),
                "portal": {"units": self.units(), "notices": self.notices()},
                "edoc": {
                    "ca_subject": self.ca.cert.subject.rfc4514_string(),
                    "owners": self.owners(),
                    "certificates": [
                        self._cert_dict(r, with_pem=False)
                        for r in self._conn.execute("SELECT * FROM certificates ORDER BY seq")
                    ],
                },
                "seed": {"source": self.seed_source, "offices": len(self.offices_csv)},
            }


def _no_pem(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "certificate"}
