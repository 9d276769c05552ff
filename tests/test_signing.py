"""Signed approvals' cryptographic core and ``cutbook keys``, with real Ed25519 keys.

Why real keys and the real console script: a signature scheme is only as good as
the refusals around it (bad files, loose permissions, malformed text), and those
are what an approver meets at 3 a.m. as one line and exit 2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cutbook import signing
from cutbook.signing import SignatureError

CUTBOOK = str(Path(sys.executable).with_name("cutbook"))
FIELDS = {
    "run_id": "20250314-2300-7f3a",
    "step": "go-live",
    "decision": "approve",
    "runbook_sha256": "ab" * 32,
    "signed_at": "2025-03-15T02:10:00+07:00",
}


def private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def key_file(directory: Path, pem: bytes, mode: int = 0o600, name: str = "a.key") -> Path:
    path = directory / name
    path.write_bytes(pem)
    path.chmod(mode)
    return path


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CUTBOOK, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "NO_COLOR": "1", "COLUMNS": "200"},
        timeout=60,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


# ---------------------------------------------------------------- keys and payload


def test_new_key_is_pkcs8_pem_and_its_public_text_has_32_raw_bytes() -> None:
    pem, public = signing.new_key()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert public.startswith(signing.PUBLIC_PREFIX)
    raw = base64.b64decode(public.removeprefix("ed25519:"), validate=True)
    assert len(raw) == 32
    assert signing.public_text(private(pem).public_key()) == public
    assert signing.public_text(signing.parse_public(public)) == public


def test_fingerprint_is_sha256_of_the_raw_key_cut_to_16_hex() -> None:
    _, public = signing.new_key()
    raw = base64.b64decode(public.removeprefix("ed25519:"))
    assert signing.fingerprint(public) == "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]
    assert signing.fingerprint(f"  {public}\n") == signing.fingerprint(public)


def test_payload_is_canonical_json_with_its_layout_named() -> None:
    data = signing.payload(**FIELDS)
    assert data == (
        b'{"cutbook":"approval/v1","decision":"approve","run_id":"20250314-2300-7f3a",'
        b'"runbook_sha256":"' + b"ab" * 32 + b'","signed_at":"2025-03-15T02:10:00+07:00",'
        b'"step":"go-live"}'
    )
    assert signing.payload(**{**FIELDS, "step": "café"}).decode() == json.dumps(
        {**FIELDS, "step": "café", "cutbook": "approval/v1"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def test_sign_and_verify_round_trip() -> None:
    pem, public = signing.new_key()
    data = signing.payload(**FIELDS)
    signature = signing.sign(private(pem), data)
    assert "\n" not in signature and len(base64.b64decode(signature)) == 64
    assert signing.verify(public, data, signature)


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_a_signature_binds_every_field(field: str) -> None:
    pem, public = signing.new_key()
    signature = signing.sign(private(pem), signing.payload(**FIELDS))
    changed = {**FIELDS, field: FIELDS[field] + "x"}
    assert not signing.verify(public, signing.payload(**changed), signature)


def test_a_flipped_bit_in_signature_or_payload_fails() -> None:
    pem, public = signing.new_key()
    data = signing.payload(**FIELDS)
    raw = bytearray(base64.b64decode(signing.sign(private(pem), data)))
    for i in (0, 31, 63):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        assert not signing.verify(public, data, base64.b64encode(bytes(bad)).decode())
    good = base64.b64encode(bytes(raw)).decode()
    for i in (0, len(data) // 2, len(data) - 1):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        assert not signing.verify(public, bytes(flipped), good)


def test_another_keys_signature_fails() -> None:
    pem, _ = signing.new_key()
    _, other_public = signing.new_key()
    data = signing.payload(**FIELDS)
    assert not signing.verify(other_public, data, signing.sign(private(pem), data))


@pytest.mark.parametrize(
    "signature",
    ["", "not base64!", "QUJD", "A" * 87, "é" * 88, "A" * 86 + "==\n" + "A" * 4, "=" * 88],
)
def test_malformed_signatures_are_false_never_errors(signature: str) -> None:
    _, public = signing.new_key()
    assert signing.verify(public, signing.payload(**FIELDS), signature) is False


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "must start with 'ed25519:'"),
        ("ed25519:not base64!", "not valid base64"),
        ("ed25519:" + base64.b64encode(b"x" * 31).decode(), "31 bytes, an Ed25519 key has 32"),
        ("", "must start with"),
    ],
)
def test_bad_public_key_text_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(SignatureError, match="public key") as caught:
        signing.parse_public(text)
    assert says in str(caught.value)
    assert caught.value.exit_code == 2
    with pytest.raises(SignatureError):
        signing.fingerprint(text)
    with pytest.raises(SignatureError):
        signing.verify(text, b"data", "QUJD")


# ---------------------------------------------------------------- private key files


def test_load_private_reads_a_0600_file(tmp_path: Path) -> None:
    pem, public = signing.new_key()
    key = signing.load_private(key_file(tmp_path, pem))
    assert signing.public_text(key.public_key()) == public


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_private_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    pem, _ = signing.new_key()
    path = key_file(tmp_path, pem, mode)
    with pytest.raises(SignatureError) as caught:
        signing.load_private(path)
    message = str(caught.value)
    assert f"permissions {mode:04o}" in message and f"chmod 600 {path}" in message
    assert "\n" not in message


def test_load_private_refuses_what_is_not_an_ed25519_pem(tmp_path: Path) -> None:
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    encrypted = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    _, public = signing.new_key()
    cases = {
        "rsa.key": (rsa_pem, "type RSA, not Ed25519"),
        "enc.key": (encrypted, "is encrypted"),
        "pub.key": (public.encode(), "not a PEM private key"),
        "empty.key": (b"", "not a PEM private key"),
    }
    for name, (data, says) in cases.items():
        with pytest.raises(SignatureError, match=says):
            signing.load_private(key_file(tmp_path, data, name=name))
    with pytest.raises(SignatureError, match="no such file"):
        signing.load_private(tmp_path / "missing.key")
    with pytest.raises(SignatureError, match="not a regular file"):
        signing.load_private(tmp_path)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl to cross-check with")
def test_openssl_verifies_what_cutbook_signed(tmp_path: Path) -> None:
    """The by-hand check in docs/auditing-a-cutover.md works: nothing cutbook-specific."""
    pem, public = signing.new_key()
    data = signing.payload(**FIELDS)
    (tmp_path / "payload").write_bytes(data)
    (tmp_path / "sig").write_bytes(base64.b64decode(signing.sign(private(pem), data)))
    raw = base64.b64decode(public.removeprefix("ed25519:"))
    spki = bytes.fromhex("302a300506032b6570032100") + raw  # the DER header of an Ed25519 key
    (tmp_path / "pub.der").write_bytes(spki)
    done = subprocess.run(
        [
            *("openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER"),
            *("-inkey", "pub.der", "-rawin", "-in", "payload", "-sigfile", "sig"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "Signature Verified Successfully" in done.stdout, done


# ---------------------------------------------------------------- cutbook keys


def test_keys_new_writes_0600_and_prints_the_runbook_line(tmp_path: Path) -> None:
    done = cli(tmp_path, "keys", "new", "ops-lead")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "ops-lead.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    public = signing.public_text(signing.load_private(path).public_key())
    assert done.stdout.splitlines() == [
        f'approvers: {{ops-lead: {{key: "{public}"}}}}',
        f"fingerprint {signing.fingerprint(public)}",
    ]
    assert "never on the cutover host" in done.stderr


def test_keys_new_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "keys" / "cio.key"
    out.parent.mkdir()
    out.write_text("precious")
    message = one_line_error(cli(tmp_path, "keys", "new", "cio", "--out", str(out)))
    assert f"{out} exists" in message
    assert out.read_text() == "precious"


def test_keys_new_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert cli(tmp_path, "keys", "new", "cio", "-o", "k").returncode == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_keys_new_refuses_a_name_that_is_no_file_name(tmp_path: Path) -> None:
    message = one_line_error(cli(tmp_path, "keys", "new", "../ops"))
    assert "approver name '../ops'" in message
    assert list(tmp_path.iterdir()) == []


def test_keys_show_prints_what_new_printed(tmp_path: Path) -> None:
    made = cli(tmp_path, "keys", "new", "ops-lead")
    shown = cli(tmp_path, "keys", "show", "ops-lead.key")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == made.stdout
    renamed = cli(tmp_path, "keys", "show", "ops-lead.key", "--name", "j.doe@example.org")
    assert renamed.stdout.startswith('approvers: {"j.doe@example.org": {key: "ed25519:')


def test_keys_show_refuses_a_readable_key_in_one_line(tmp_path: Path) -> None:
    pem, _ = signing.new_key()
    key_file(tmp_path, pem, 0o644, "loose.key")
    message = one_line_error(cli(tmp_path, "keys", "show", "loose.key"))
    assert (
        message
        == "key file loose.key: permissions 0644 let others read it; run: chmod 600 loose.key"
    )
    message = one_line_error(cli(tmp_path, "keys", "show", "nowhere.key"))
    assert message == "key file nowhere.key: no such file"


def test_keys_help_teaches_with_an_example(tmp_path: Path) -> None:
    text = " ".join(cli(tmp_path, "keys", "new", "--help").stdout.split())
    assert "cutbook keys new ops-lead --out" in text and "mode 600" in text
    assert "cutbook approve --key FILE" in text
    listing = cli(tmp_path, "keys", "--help").stdout
    assert "new" in listing and "show" in listing
