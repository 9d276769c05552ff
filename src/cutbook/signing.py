"""Ed25519 signatures on people's answers: keys, the signed payload, signing, checking.

Why: the journal's hash chain proves nothing was edited after it was written, but
whoever can write the file can write a whole consistent, false chain. A signature
made with an approver's private key, which never sits on the cutover host, proves
that this person answered this question of this run of this runbook.

Why Ed25519: a public key fits on one line of a runbook, signatures are
deterministic, and there are no parameters to get wrong (see docs/decisions.md).

The payload is canonical JSON so anyone can rebuild it by hand (docs/auditing-a-cutover.md).
A leaf: imports only the standard library, ``cryptography`` and :mod:`cutbook.errors`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cutbook.errors import CutbookError

PUBLIC_PREFIX: Final = "ed25519:"
PAYLOAD_TAG: Final = "approval/v1"
"""Names the payload's layout, so a later layout can never be mistaken for this one."""

_RAW_PUBLIC_LEN: Final = 32
_SIGNATURE_LEN: Final = 64
_MAX_KEY_FILE: Final = 64 * 1024


class SignatureError(CutbookError):
    """A key that cannot be used: malformed public key text, or an unusable private key file.

    Exit 2 like other bad input: the person gave cutbook the wrong thing.
    """

    exit_code = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def new_key() -> tuple[bytes, str]:
    """A fresh key pair: the private key as unencrypted PKCS8 PEM, and its public text.

    Unencrypted because the file's mode (0600) and its owner protect it, as with ssh keys
    made without a passphrase; a passphrase prompt at 3 a.m. helps nobody.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_text(key.public_key())


def public_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the 32 raw bytes>``: the form written in a runbook."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_PREFIX + _b64(raw)


def _raw_public(text: str) -> bytes:
    """The 32 raw bytes of a public key text, or a message saying what is wrong with it."""
    if not isinstance(text, str):
        raise SignatureError(f"a public key must be text like {PUBLIC_PREFIX}<base64>")
    text = text.strip()
    shown = text if len(text) <= 60 else text[:57] + "..."
    if not text.startswith(PUBLIC_PREFIX):
        raise SignatureError(
            f"public key {shown!r}: must start with {PUBLIC_PREFIX!r} "
            "(make one with: cutbook keys new NAME)"
        )
    try:
        raw = base64.b64decode(text[len(PUBLIC_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"public key {shown!r}: not valid base64") from None
    if len(raw) != _RAW_PUBLIC_LEN:
        raise SignatureError(
            f"public key {shown!r}: {len(raw)} bytes, an Ed25519 key has {_RAW_PUBLIC_LEN}"
        )
    return raw


def parse_public(text: str) -> Ed25519PublicKey:
    """Read a runbook's public key text; :class:`SignatureError` says what is wrong."""
    return Ed25519PublicKey.from_public_bytes(_raw_public(text))


def fingerprint(public: str) -> str:
    """``SHA256:`` and 16 hex digits: short enough for people to compare aloud."""
    return "SHA256:" + hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def load_private(path: Path) -> Ed25519PrivateKey:
    """Read an approver's private key file, refusing one that others could read.

    Like ssh: a key anyone else on the machine can read proves nothing about who
    signed, so it is refused rather than used with a warning.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SignatureError(f"key file {path}: no such file") from None
    except OSError as exc:
        raise SignatureError(f"key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SignatureError(f"key file {path}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if os.name == "posix" and mode & 0o077:
        raise SignatureError(
            f"key file {path}: permissions {mode:04o} let others read it; run: chmod 600 {path}"
        )
    if info.st_size > _MAX_KEY_FILE:
        raise SignatureError(f"key file {path}: {info.st_size} bytes is not a key file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"key file {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SignatureError(
            f"key file {path}: the key is encrypted; cutbook keys are unencrypted, "
            "protected by the file's mode (make one with: cutbook keys new NAME)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            f"key file {path}: not a PEM private key (make one with: cutbook keys new NAME)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey") or "another"
        raise SignatureError(
            f"key file {path}: holds a key of type {kind}, not Ed25519 "
            "(make one with: cutbook keys new NAME)"
        )
    return key


def payload(*, run_id: str, step: str, decision: str, runbook_sha256: str, signed_at: str) -> bytes:
    """The exact bytes signed for one answer: canonical JSON, keys sorted, no spaces.

    Binding run, step, decision, runbook hash and time means a signature cannot be
    replayed on another run, another question, another answer or an edited runbook.
    """
    body = {
        "cutbook": PAYLOAD_TAG,
        "run_id": run_id,
        "step": step,
        "decision": decision,
        "runbook_sha256": runbook_sha256,
        "signed_at": signed_at,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    """The signature as standard base64 on one line, as the journal stores it."""
    return _b64(key.sign(data))


def verify(public: str, data: bytes, signature: str) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``data``.

    False, never an exception, for a wrong or malformed signature: a journal's content
    is evidence to judge, not input to trust. A malformed *public key* raises
    :class:`SignatureError`, because that is the runbook's fault, not the answer's.
    """
    key = parse_public(public)
    if not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) != _SIGNATURE_LEN:
        return False
    try:
        key.verify(raw, data)
    except InvalidSignature:
        return False
    return True


__all__ = [
    "PAYLOAD_TAG",
    "PUBLIC_PREFIX",
    "SignatureError",
    "fingerprint",
    "load_private",
    "new_key",
    "parse_public",
    "payload",
    "public_text",
    "sign",
    "verify",
]
