"""A small but real certificate authority for the Edoc system.

EC P-256 keeps key generation and signing fast enough to reseed a hundred
certificates on every ``/admin/reset``.
"""

from __future__ import annotations

import datetime as dt
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

__all__ = [
    "CertificateAuthority",
    "new_serial",
    "organisation_of",
    "parse_csr",
]

_CA_NAME = "Edoc Simulated Customs CA"
_CURVE = ec.SECP256R1()


def new_serial() -> int:
    """A random positive 63-bit serial: unique enough, short enough for URLs."""
    return (int.from_bytes(os.urandom(8), "big") >> 1) | 1


def serial_text(serial: int) -> str:
    return format(serial, "016X")


def organisation_of(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(attrs[0].value) if attrs else None


def common_name_of(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None


def parse_csr(pem: str) -> x509.CertificateSigningRequest:
    """Load a PEM CSR and check its self-signature; ValueError when it is not one."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not match its public key")
    return csr


class CertificateAuthority:
    """The CA key and certificate, persisted by the store as PEM."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def generate(cls) -> CertificateAuthority:
        key = ec.generate_private_key(_CURVE)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Simulated Customs"),
                x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(new_serial())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def from_pem(cls, key_pem: str, cert_pem: str) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("stored CA key is not an EC key")
        return cls(key, x509.load_pem_x509_certificate(cert_pem.encode()))

    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(
        self, subject: x509.Name, public_key: CertificatePublicKeyTypes
    ) -> tuple[int, x509.Certificate]:
        """Issue a two-year end-entity certificate for ``subject``."""
        serial = new_serial()
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return serial, cert

    def issue_seed(self, owner: str, organisation: str) -> tuple[int, x509.Certificate]:
        """A certificate for a seeded owner; its private key is thrown away."""
        key = ec.generate_private_key(_CURVE)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                x509.NameAttribute(NameOID.COMMON_NAME, owner),
            ]
        )
        return self.sign(subject, key.public_key())

    def sign_csr(self, csr: x509.CertificateSigningRequest) -> tuple[int, x509.Certificate]:
        return self.sign(csr.subject, csr.public_key())


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()
