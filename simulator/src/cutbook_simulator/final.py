"""What the estate must look like once the cutover is done, checked from a snapshot.

Pure Python on purpose: ``GET /admin/check`` runs it in the simulator, and a
caller holding a snapshot can run it without FastAPI or a simulator in-process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cutbook_simulator.seed import OfficeRow, parse_offices, read_offices

__all__ = ["FINAL_CATALOGUE_VERSION", "FINAL_ORG_MODEL", "check_final_state", "final_organisation"]

FINAL_CATALOGUE_VERSION = "2025"
FINAL_ORG_MODEL = "2025"


def final_organisation(row: OfficeRow) -> str:
    """The subject O every certificate of this office carries afterwards.

    A renamed office keeps its certificates under its new name; a ceased office's
    people and seal move to the office it merges into, whose name is ``new_name``.
    """
    return row.new_name


def _rows(offices: Path | str | Sequence[OfficeRow]) -> list[OfficeRow]:
    if isinstance(offices, Path):
        return read_offices(offices)[1]
    if isinstance(offices, str):
        if "\n" not in offices and Path(offices).is_file():
            return read_offices(Path(offices))[1]
        return parse_offices(offices)
    return list(offices)


def check_final_state(
    snapshot: Mapping[str, Any], csv: Path | str | Sequence[OfficeRow]
) -> list[str]:
    """Every way ``snapshot`` (``GET /admin/state``) differs from the post-cutover estate.

    ``csv`` is the office list: a CSV path, CSV text, or parsed rows. An
    empty list means the estate is exactly where the cutover should leave it.
    """
    rows = _rows(csv)
    problems: list[str] = []

    intake = snapshot.get("intake", {})
    if intake.get("state") != "open":
        problems.append(f"VNACCS intake is {intake.get('state')!r}, expected 'open'")

    version = snapshot.get("catalogue_version")
    if version != FINAL_CATALOGUE_VERSION:
        problems.append(f"catalogue version is {version!r}, expected {FINAL_CATALOGUE_VERSION!r}")

    for sat in snapshot.get("satellites", []):
        name = sat.get("name")
        if sat.get("intake") != "on":
            problems.append(f"satellite {name}: intake is {sat.get('intake')!r}, expected 'on'")
        config = sat.get("config") or {}
        if config.get("org_model") != FINAL_ORG_MODEL:
            problems.append(
                f"satellite {name}: config org_model is {config.get('org_model')!r}, "
                f"expected {FINAL_ORG_MODEL!r}"
            )

    offices_by_code = {o.get("code"): o for o in snapshot.get("offices", [])}
    units = {u.get("old_code"): u for u in snapshot.get("portal", {}).get("units", [])}
    owners_by_unit: dict[str, list[Mapping[str, Any]]] = {}
    for owner in snapshot.get("edoc", {}).get("owners", []):
        owners_by_unit.setdefault(str(owner.get("unit")), []).append(owner)
    certs = {c.get("serial"): c for c in snapshot.get("edoc", {}).get("certificates", [])}

    for row in rows:
        code = row.old_code
        office = offices_by_code.get(code)
        if office is None:
            problems.append(f"office {code}: missing from the catalogue")
        elif row.status == "ceased":
            if office.get("status") != "closed":
                problems.append(
                    f"office {code}: status {office.get('status')!r}, expected 'closed'"
                )
            if office.get("intake") != "stopped":
                problems.append(
                    f"office {code}: per-office intake {office.get('intake')!r}, expected 'stopped'"
                )
        else:
            if office.get("status") != "active":
                problems.append(
                    f"office {code}: status {office.get('status')!r}, expected 'active'"
                )
            if office.get("intake") != "open":
                problems.append(
                    f"office {code}: per-office intake {office.get('intake')!r}, expected 'open'"
                )
            for field in ("name", "budget_code", "treasury_account", "treasury_code"):
                want = row.new_name if field == "name" else getattr(row, field)
                if office.get(field) != want:
                    problems.append(
                        f"office {code}: {field} is {office.get(field)!r}, expected {want!r}"
                    )

        unit = units.get(code)
        want_unit = {
            "old_code": code,
            "old_name": row.old_name,
            "new_code": row.new_code,
            "new_name": row.new_name,
        }
        if unit is None:
            problems.append(f"portal: unit {code} is not published")
        else:
            for key, value in want_unit.items():
                if unit.get(key) != value:
                    problems.append(
                        f"portal: unit {code} {key} is {unit.get(key)!r}, expected {value!r}"
                    )

        owners = owners_by_unit.get(code, [])
        if not owners:
            problems.append(f"edoc: office {code} has no certificate owners")
        organisation = final_organisation(row)
        for owner in owners:
            name = owner.get("owner")
            serial = owner.get("current_serial")
            cert = certs.get(serial) if serial else None
            if cert is None:
                problems.append(f"edoc: {name} has no current certificate")
                continue
            if cert.get("status") != "current":
                problems.append(f"edoc: {name} certificate {serial} is {cert.get('status')!r}")
            if cert.get("organization") != organisation:
                problems.append(
                    f"edoc: {name} certificate {serial} has O={cert.get('organization')!r}, "
                    f"expected {organisation!r}"
                )
    return problems
