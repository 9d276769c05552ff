"""The ``pki`` adapter: re-issue certificates under a new subject name.

When an office is renamed, its signing certificates must carry the new
organisation name. For each owner the adapter makes a fresh key and CSR,
has the CA sign it, checks the certificate locally (signature by the CA,
issuer, validity, subject, public key) and only then makes it current.
Rollback makes the previous certificate current again and revokes the new one.

One change, one certificate: every request the adapter sends is keyed by the
call's idempotency key (which names the change, not the attempt) and the owner.
A retry in the same process resubmits the very same CSR, so the CA replays its
answer; a resumed process that lost the key adopts the certificate an earlier
attempt left issued but never made current, instead of issuing another.

Private keys never leave memory unless ``key_dir`` is set; they are never
logged or put in outputs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote

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
from cutbook_adapters._common import (
    TRANSIENT_STATUS,
    ScrubbingAdapter,
    min_timeout,
    one_line,
    retry_after_seconds,
)
from cutbook_adapters._lazy import LazyModule

if TYPE_CHECKING:
    import httpx
    from cryptography import exceptions as crypto_exceptions
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509 import oid
else:
    httpx = LazyModule("httpx")
    crypto_exceptions = LazyModule("cryptography.exceptions")
    x509 = LazyModule("cryptography.x509")
    hashes = LazyModule("cryptography.hazmat.primitives.hashes")
    serialization = LazyModule("cryptography.hazmat.primitives.serialization")
    ec = LazyModule("cryptography.hazmat.primitives.asymmetric.ec")
    rsa = LazyModule("cryptography.hazmat.primitives.asymmetric.rsa")
    oid = LazyModule("cryptography.x509.oid")

if TYPE_CHECKING:
    PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_ATTR_NAMES = (
    ("C", "COUNTRY_NAME"),
    ("O", "ORGANIZATION_NAME"),
    ("OU", "ORGANIZATIONAL_UNIT_NAME"),
    ("CN", "COMMON_NAME"),
)


def _attrs() -> list[tuple[str, x509.ObjectIdentifier]]:
    """Subject attributes cutbook sets, by short name (looked up on first use)."""
    return [(short, getattr(oid.NameOID, name)) for short, name in _ATTR_NAMES]


class PkiConfig(TargetConfig):
    """Options of a ``pki`` target."""

    ca_url: str = Field(
        description="Root of the CA's API, e.g. http://127.0.0.1:8765/edoc",
        examples=["{{ vars.estate_url }}/edoc"],
    )
    key_type: Literal["ec-p256", "rsa-2048"] = Field(
        "ec-p256", description="New key algorithm", examples=["rsa-2048"]
    )
    timeout: Duration = Field(
        timedelta(seconds=30), description="Per-request time limit", examples=["30s"]
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Sent with every request",
        examples=[{"Authorization": "Bearer {{ secrets.CA_TOKEN }}"}],
    )
    key_dir: str | None = Field(
        None,
        description="Directory for new private keys (files 0600); default: keep them in memory "
        "only. With it, a retried call resubmits the same CSR instead of issuing another.",
        examples=["/var/lib/cutbook/keys"],
    )


class UnitSubject(Args):
    """Attributes to change; anything not given is kept from the current certificate."""

    O: str = Field(  # noqa: E741
        min_length=1,
        max_length=64,
        description="Organisation: the new office name",
        examples=["{{ item.new_name }}"],
    )
    OU: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Organisational unit; default: the current one",
        examples=["Customs Branch North"],
    )
    C: str | None = Field(
        None, min_length=2, max_length=2, description="Two-letter country", examples=["VN"]
    )


class Subject(UnitSubject):
    CN: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Common name; default: the current one",
        examples=["{{ item.person }}"],
    )


class ReissueArgs(Args):
    owner: str = Field(
        min_length=1,
        description="Certificate owner, e.g. org:2001 or person:2001:1",
        examples=["org:{{ item.code }}"],
    )
    subject: Subject = Field(
        description="The new subject's attributes; those not given are kept",
        examples=[{"O": "{{ item.new_name }}"}],
    )


class ReissueUnitArgs(Args):
    unit: str = Field(
        min_length=1,
        description="Office code whose owners are all re-issued",
        examples=["{{ item.code }}"],
    )
    subject: UnitSubject = Field(
        description="The new subject's attributes; those not given are kept",
        examples=[{"O": "{{ item.new_name }}"}],
    )


@dataclass
class _Owner:
    owner: str
    current_serial: str | None
    cert: x509.Certificate | None


def _name_dict(name: x509.Name) -> dict[str, str]:
    out: dict[str, str] = {}
    for short, attr_oid in _attrs():
        attrs = name.get_attributes_for_oid(attr_oid)
        if attrs:
            out[short] = str(attrs[0].value)
    return out


def _build_name(attrs: Mapping[str, str]) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(o, attrs[short]) for short, o in _attrs() if attrs.get(short)]
    )


def _spki(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


class PkiAdapter(ScrubbingAdapter):
    """Drives an Edoc-style CA over HTTP; verifies every certificate it gets back."""

    name: ClassVar[str] = "pki"
    Config: ClassVar[type[BaseModel]] = PkiConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "reissue": ActionSpec(
            args=ReissueArgs,
            description="Issue one owner a certificate with a new subject and make it current",
            mutating=True,
            reversible=True,
        ),
        "reissue_unit": ActionSpec(
            args=ReissueUnitArgs,
            description="Re-issue every certificate owner of an office under the new subject",
            mutating=True,
            reversible=True,
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, PkiConfig)
        self.cfg = config
        self._client: httpx.AsyncClient | None = None
        self._ca: x509.Certificate | None = None
        # Entries already changed per (run, step, item): a retried or failed
        # reissue_unit still knows what to report and what to roll back.
        self._progress: dict[tuple[str, str, str | None], dict[str, dict[str, Any]]] = {}
        # The key pair and CSR of each (change, owner): a retry must resend the same
        # bytes, or the CA would see a new request and issue a second certificate.
        self._pending: dict[tuple[str, str], tuple[PrivateKey, str, Path | None]] = {}

    # -- HTTP ----------------------------------------------------------------------

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.cfg.ca_url.rstrip("/") + "/",
                headers=self.cfg.headers,
                timeout=self.cfg.timeout.total_seconds(),
            )
        return self._client

    async def _request(
        self,
        call: Call,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": key} if key else {}
        limit = min_timeout(self.cfg.timeout.total_seconds(), call.timeout)
        where = f"{method} {path}"
        try:
            async with asyncio.timeout(limit):
                resp = await self._get_client().request(
                    method, path, json=json, params=params, headers=headers, timeout=limit
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise TransientError(f"pki: {where}: timed out after {limit:g}s") from exc
        except httpx.TransportError as exc:
            raise TransientError(self.scrub(f"pki: {where}: {type(exc).__name__}: {exc}")) from exc
        except httpx.HTTPError as exc:
            raise PermanentError(self.scrub(f"pki: {where}: {exc}")) from exc
        if resp.is_success:
            try:
                return resp.json()
            except ValueError as exc:
                raise PermanentError(f"pki: {where}: answer is not JSON") from exc
        message = one_line(self.scrub(f"pki: {where} → {resp.status_code} {resp.text}"))
        if resp.status_code in TRANSIENT_STATUS:
            retry = retry_after_seconds(resp.headers.get("Retry-After"))
            raise TransientError(message, retry_after=retry)
        raise PermanentError(message)

    async def _ca_cert(self, call: Call) -> x509.Certificate:
        if self._ca is None:
            body = await self._request(call, "GET", "ca")
            self._ca = _load_cert(body, "the CA certificate")
        return self._ca

    async def _owner(self, call: Call, owner: str) -> _Owner:
        body = await self._request(call, "GET", f"owners/{quote(owner, safe=':')}")
        serial = body.get("current_serial") if isinstance(body, Mapping) else None
        cert = await self._cert(call, serial) if serial else None
        return _Owner(owner=owner, current_serial=serial, cert=cert)

    async def _cert(self, call: Call, serial: str) -> x509.Certificate:
        body = await self._request(call, "GET", f"certificates/{quote(serial)}")
        return _load_cert(body, f"certificate {serial}")

    async def _unit_owners(self, call: Call, unit: str) -> list[str]:
        body = await self._request(call, "GET", "owners", params={"unit": unit})
        if not isinstance(body, list):
            raise PermanentError(f"pki: owners of unit {unit!r}: expected a list")
        owners = [str(o["owner"]) for o in body if isinstance(o, Mapping) and "owner" in o]
        if not owners:
            raise PermanentError(f"pki: unit {unit!r} has no certificate owners")
        return owners

    # -- certificates --------------------------------------------------------------

    def _target_subject(self, current: _Owner, subject: UnitSubject) -> dict[str, str]:
        attrs = _name_dict(current.cert.subject) if current.cert is not None else {}
        attrs.setdefault("CN", current.owner)
        for short, value in subject.model_dump(exclude_none=True).items():
            attrs[short] = value
        return attrs

    def _problems(
        self, ca: x509.Certificate, cert: x509.Certificate, wanted: Mapping[str, str]
    ) -> list[str]:
        """Everything wrong with ``cert`` as a current certificate under ``wanted``."""
        problems = []
        if cert.issuer != ca.subject:
            problems.append(f"issuer {cert.issuer.rfc4514_string()} is not the CA")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
            problems.append("signature does not verify with the CA key")
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            problems.append(
                f"not valid now ({cert.not_valid_before_utc:%Y-%m-%d}"
                f"..{cert.not_valid_after_utc:%Y-%m-%d})"
            )
        got = _name_dict(cert.subject)
        if got != dict(wanted):
            problems.append(f"subject is {cert.subject.rfc4514_string()}")
        return problems

    def _key_path(self, call: Call, owner: str) -> Path | None:
        """Where key_dir keeps this change's key for ``owner`` (None without key_dir)."""
        if self.cfg.key_dir is None:
            return None
        digest = hashlib.sha256(f"{call.idempotency_key}|{owner}".encode()).hexdigest()[:16]
        return Path(self.cfg.key_dir) / f"{_safe_filename(owner)}-{digest}.key.pem"

    async def _orphan(
        self, call: Call, ca: x509.Certificate, owner: str, wanted: Mapping[str, str]
    ) -> x509.Certificate | None:
        """A certificate an interrupted attempt had issued for this change but not made
        current: adopting it keeps one certificate per change across a resume.

        Only without key_dir (the key lived in memory and went with the process, as
        every key does there once the run ends); with key_dir the stored CSR replays.
        """
        body = await self._request(call, "GET", "certificates", params={"owner": owner})
        if not isinstance(body, list):
            return None
        for record in reversed(body):
            if not isinstance(record, Mapping) or record.get("status") != "issued":
                continue
            cert = _load_cert(record, f"certificate {record.get('serial')}")
            if not self._problems(ca, cert, wanted):
                call.log(f"pki: {owner}: adopting {record.get('serial')}, issued earlier")
                return cert
        return None

    def _new_key(self, call: Call, owner: str) -> tuple[PrivateKey, Path | None]:
        """A new key, or the one a previous attempt of this very call left in key_dir."""
        path = self._key_path(call, owner)
        if path is not None and path.exists():
            try:
                loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (OSError, ValueError) as exc:
                raise PermanentError(f"pki: cannot read key file {path}: {exc}") from exc
            if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                return loaded, path
        key: PrivateKey
        if self.cfg.key_type == "rsa-2048":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
        if path is not None:
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(pem)
            except OSError as exc:
                raise PermanentError(f"pki: cannot write key file {path}: {exc}") from exc
        return key, path

    def _csr(self, key: PrivateKey, attrs: Mapping[str, str], path: Path | None) -> str:
        """The CSR PEM; with key_dir the same bytes are reused so a retry is a replay."""
        csr_path = path.with_suffix(".csr") if path is not None else None
        if csr_path is not None and csr_path.exists():
            return csr_path.read_text()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_build_name(attrs))
            .sign(key, hashes.SHA256())
        )
        text = csr.public_bytes(serialization.Encoding.PEM).decode()
        if csr_path is not None:
            csr_path.write_text(text)
        return text

    async def _made_current_earlier(self, call: Call, owner: str, serial: str | None) -> str | None:
        """The serial this change replaced, when an earlier attempt (maybe in a process
        that died) made ``serial`` current; None when this change did not.

        The "make current" request is sent again under the key that attempt used: the
        CA replays its stored reply, whose ``before`` names the previous certificate.
        Had this change not made it current, the request is a no-op and ``before`` is
        ``serial`` itself.
        """
        if serial is None:
            return None
        body = await self._request(
            call,
            "POST",
            f"owners/{quote(owner, safe=':')}/current",
            json={"serial": serial},
            key=f"{call.idempotency_key}:current:{owner}:{serial}",
        )
        before = body.get("before") if isinstance(body, Mapping) else None
        previous = before.get("current_serial") if isinstance(before, Mapping) else None
        return str(previous) if previous and previous != serial else None

    async def _reissue_one(
        self, call: Call, owner: str, subject: UnitSubject
    ) -> tuple[dict[str, Any], bool]:
        """The owner's entry, and whether this very call issued its certificate."""
        progress = self._progress.setdefault(_progress_key(call), {})
        ca = await self._ca_cert(call)
        current = await self._owner(call, owner)
        wanted = self._target_subject(current, subject)
        shown = _build_name(wanted).rfc4514_string()
        if current.cert is not None and not self._problems(ca, current.cert, wanted):
            done = progress.get(owner)
            if done is not None and done.get("serial") == current.current_serial:
                return done, False  # changed by an earlier attempt of this same call
            serial = current.current_serial
            previous = await self._made_current_earlier(call, owner, serial)
            kept: dict[str, Any] = {
                "owner": owner,
                "serial": serial,
                "previous_serial": previous,
                "subject": shown,
                "changed": previous is not None,
            }
            if previous is not None:
                kept["not_after"] = current.cert.not_valid_after_utc.isoformat()
                progress[owner] = kept
            return kept, False
        pending = self._pending.get((call.idempotency_key, owner))
        adopted = None
        if pending is None:
            key_path = self._key_path(call, owner)
            if key_path is None or not key_path.exists():
                adopted = await self._orphan(call, ca, owner, wanted)
        if adopted is not None:
            cert, serial, key_path = adopted, format(adopted.serial_number, "016X"), None
            problems = self._problems(ca, cert, wanted)
        else:
            if pending is None:
                key, key_path = self._new_key(call, owner)
                pending = (key, self._csr(key, wanted, key_path), key_path)
                self._pending[(call.idempotency_key, owner)] = pending
            key, csr, key_path = pending
            issued = await self._request(
                call,
                "POST",
                "certificates",
                json={"owner": owner, "csr": csr},
                key=f"{call.idempotency_key}:issue:{owner}",
            )
            cert = _load_cert(issued, f"the certificate issued to {owner}")
            serial = str(issued.get("serial") or format(cert.serial_number, "016X"))
            problems = self._problems(ca, cert, wanted)
            if _spki(cert.public_key()) != _spki(key.public_key()):
                problems.append("public key is not the one in our CSR")
        if problems:
            raise PermanentError(
                f"pki: certificate {serial} for {owner} rejected, not made current: "
                + "; ".join(problems)
            )
        await self._request(
            call,
            "POST",
            f"owners/{quote(owner, safe=':')}/current",
            json={"serial": serial},
            key=f"{call.idempotency_key}:current:{owner}:{serial}",
        )
        entry: dict[str, Any] = {
            "owner": owner,
            "serial": serial,
            "previous_serial": current.current_serial,
            "subject": shown,
            "changed": True,
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
        if key_path is not None:
            entry["key_file"] = str(key_path)
        progress[owner] = entry
        self._pending.pop((call.idempotency_key, owner), None)
        call.log(self.scrub(f"pki: {owner}: {current.current_serial} → {serial} ({shown})"))
        return entry, adopted is None

    async def _owners_for(self, call: Call) -> tuple[list[str], UnitSubject]:
        args = call.args
        if call.action == "reissue" and isinstance(args, ReissueArgs):
            return [args.owner], args.subject
        if call.action == "reissue_unit" and isinstance(args, ReissueUnitArgs):
            return await self._unit_owners(call, args.unit), args.subject
        raise PermanentError(f"pki: no action {call.action!r} with these args")

    # -- the contract ----------------------------------------------------------------

    async def check(self, call: Call) -> Result:
        """Reads owners and reports which certificates would change; issues nothing."""
        owners, subject = await self._owners_for(call)
        ca = await self._ca_cert(call)
        pending = []
        for owner in owners:
            current = await self._owner(call, owner)
            wanted = self._target_subject(current, subject)
            if current.cert is None or self._problems(ca, current.cert, wanted):
                was = current.cert.subject.rfc4514_string() if current.cert else "no certificate"
                pending.append({"owner": owner, "from": was, "to": _rfc(wanted)})
        if not pending:
            return Result(
                changed=False,
                summary=f"{len(owners)} owner(s) already carry the new subject",
                output={"pending": []},
            )
        first = pending[0]
        summary = f"would re-issue {len(pending)} of {len(owners)} owner(s): "
        summary += f"{first['owner']} {first['from']} → {first['to']}"
        return Result(
            changed=True,
            summary=one_line(self.scrub(summary)),
            output=self.scrub_value({"pending": pending}),
        )

    async def apply(self, call: Call) -> Result:
        owners, subject = await self._owners_for(call)
        done = [await self._reissue_one(call, owner, subject) for owner in owners]
        entries = [e for e, _ in done]
        changed = [e for e in entries if e["changed"]]
        # Nothing issued by this call: the output is the change's own account, rebuilt
        # from the CA's stored replies (how a resume gets back what rollback needs).
        replayed = {"replayed": True} if not any(fresh for _, fresh in done) else {}
        if call.action == "reissue":
            e = entries[0]
            if e["changed"]:
                summary = f"{e['owner']}: {e['previous_serial']} → {e['serial']} ({e['subject']})"
            else:
                summary = f"{e['owner']} already carries {e['subject']} ({e['serial']})"
            return Result(
                changed=bool(changed),
                summary=one_line(self.scrub(summary)),
                output=self.scrub_value({**e, **replayed}),
            )
        assert isinstance(call.args, ReissueUnitArgs)
        summary = f"unit {call.args.unit}: re-issued {len(changed)} of {len(entries)} owner(s)"
        output = {"unit": call.args.unit, "certificates": entries, **replayed}
        return Result(
            changed=bool(changed), summary=self.scrub(summary), output=self.scrub_value(output)
        )

    async def verify(self, call: Call) -> Result:
        """Every owner's current certificate chains to the CA and carries the new subject."""
        owners, subject = await self._owners_for(call)
        ca = await self._ca_cert(call)
        expected = {e["owner"]: e["serial"] for e in _entries(call.prior)}
        problems = []
        for owner in owners:
            current = await self._owner(call, owner)
            if current.cert is None:
                problems.append(f"{owner}: no current certificate")
                continue
            wanted = self._target_subject(current, subject)
            issues = self._problems(ca, current.cert, wanted)
            if owner in expected and current.current_serial != expected[owner]:
                issues.append(f"current is {current.current_serial}, not {expected[owner]}")
            problems.extend(f"{owner}: {p}" for p in issues)
        if problems:
            return Result(ok=False, summary=one_line(self.scrub("; ".join(problems)), 400))
        return Result(ok=True, summary=f"{len(owners)} certificate(s) current, chained, renamed")

    async def rollback(self, call: Call) -> Result:
        """Make each previous certificate current again, then revoke the new one."""
        entries = _entries(call.prior) or list(self._progress.get(_progress_key(call), {}).values())
        undone = []
        for e in entries:
            if not e.get("changed") or not e.get("previous_serial"):
                continue
            owner, serial, previous = e["owner"], e["serial"], e["previous_serial"]
            await self._request(
                call,
                "POST",
                f"owners/{quote(owner, safe=':')}/current",
                json={"serial": previous},
                key=f"{call.idempotency_key}:rollback-current:{owner}:{previous}",
            )
            await self._request(
                call,
                "POST",
                f"certificates/{quote(serial)}/revoke",
                key=f"{call.idempotency_key}:rollback-revoke:{serial}",
            )
            undone.append({"owner": owner, "current_serial": previous, "revoked": serial})
        self._progress.pop(_progress_key(call), None)
        summary = f"restored {len(undone)} previous certificate(s), revoked the new ones"
        output = self.scrub_value({"restored": undone})
        return Result(changed=bool(undone), summary=summary, output=output)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _progress_key(call: Call) -> tuple[str, str, str | None]:
    return (call.run_id, call.step_id, call.item_key)


def _entries(prior: Result | None) -> list[dict[str, Any]]:
    if prior is None:
        return []
    out = prior.output
    if "certificates" in out and isinstance(out["certificates"], list):
        return [dict(e) for e in out["certificates"]]
    if "owner" in out:
        return [dict(out)]
    return []


def _rfc(attrs: Mapping[str, str]) -> str:
    return _build_name(attrs).rfc4514_string()


def _load_cert(body: Any, what: str) -> x509.Certificate:
    pem = body.get("certificate") if isinstance(body, Mapping) else None
    if not isinstance(pem, str):
        raise PermanentError(f"pki: {what}: no PEM 'certificate' in the answer")
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise PermanentError(f"pki: {what}: not a PEM certificate: {exc}") from exc
