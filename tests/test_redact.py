"""Secret scrubbing: values, token shapes, and every path a log line can take."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus
from zoneinfo import ZoneInfo

import pytest
import structlog

from cutbook import logs
from cutbook.errors import UsageError
from cutbook.redact import PLACEHOLDER, Redactor

CANARY = "c4nary-Secret-0420"


def test_canary_everywhere_in_nested_data() -> None:
    redactor = Redactor([CANARY])
    data: dict[str, Any] = {
        "plain": f"prefix {CANARY} suffix",
        CANARY: "secret as a key",
        f"key-{CANARY}": 1,
        "list": [CANARY, {"deeper": (f"x{CANARY}y", 3)}],
        "n": 42,
        "flag": True,
        "none": None,
    }
    out = redactor.scrub(data)
    assert CANARY not in json.dumps(out)
    assert out["plain"] == f"prefix {PLACEHOLDER} suffix"
    assert out[PLACEHOLDER] == "secret as a key"
    assert out["list"][1]["deeper"] == (f"x{PLACEHOLDER}y", 3)
    assert (out["n"], out["flag"], out["none"]) == (42, True, None)
    assert data["plain"] == f"prefix {CANARY} suffix"  # input untouched


def test_longest_secret_first_and_variants() -> None:
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.scrub_text("xabcdefghx abcd") == "x***x ***"
    redactor = Redactor(["p@ss w/rd"])
    assert redactor.scrub_text("https://h/?pw=p%40ss%20w%2Frd") == "https://h/?pw=***"
    assert redactor.scrub_text('{"v": "p@ss w/rd"}') == '{"v": "***"}'
    redactor = Redactor(['q"uote\\d'])
    assert redactor.scrub_text(json.dumps({"v": 'q"uote\\d'})) == '{"v": "***"}'


def test_short_values_are_not_secrets() -> None:
    redactor = Redactor(["abc", "", "ok"])
    assert redactor.secret_count == 0
    assert redactor.scrub_text("abc ok") == "abc ok"


def test_numbers_equal_to_a_secret() -> None:
    assert Redactor(["918273"]).scrub({"pin": 918273, "other": 5}) == {"pin": "***", "other": 5}


def test_objects_leaking_through_repr() -> None:
    class Conn:
        def __repr__(self) -> str:
            return f"Conn(password={CANARY})"

    out = Redactor([CANARY]).scrub({"conn": Conn(), "err": RuntimeError(CANARY)})
    assert CANARY not in repr(out)


def test_no_secrets_is_identity_for_ordinary_data() -> None:
    data = {"step": "move-ou", "summary": "12 users moved to OU=Customs", "items": ["a", 1]}
    assert Redactor().scrub(data) == data


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("curl -H 'authorization: Basic dXNlcjpwYXNz'", "dXNlcjpwYXNz"),
        ("token is Bearer 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
        ("connect password=hunter2xyz host=db", "hunter2xyz"),
        ('login {"password": "hunter2 with space"}', "hunter2 with space"),
        ("PASSWORD = 'quoted val'", "quoted val"),
        ("api_key: k-123456", "k-123456"),
        ("client_secret=cs-998877&x=1", "cs-998877"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl ok",
            "eyJzdWIiOiJhZG1pbiJ9",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE done", "AKIAIOSFODNN7EXAMPLE"),
        ("postgres://app:dbpa55word@db.internal:5432/x", "dbpa55word"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc\n"
            "-----END RSA PRIVATE KEY-----",
            "MIIEpAIBAAKCAQEA7",
        ),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk cut off", "b3BlbnNzaC1rZXk"),
    ],
)
def test_token_shapes(text: str, leak: str) -> None:
    scrubbed = Redactor().scrub_text(text)
    assert leak not in scrubbed
    assert PLACEHOLDER in scrubbed
    assert Redactor().scrub_text(scrubbed) == scrubbed  # idempotent


def test_sensitive_keys() -> None:
    out = Redactor().scrub(
        {"password": "x1", "Api-Key": "x2", "client_secret": 7, "token_count": 3, "secret": ""}
    )
    assert out == {
        "password": "***",
        "Api-Key": "***",
        "client_secret": "***",
        "token_count": 3,
        "secret": "",
    }


def test_url_keeps_user_and_host() -> None:
    assert (
        Redactor().scrub_text("https://ops:pw1234@gw.example/x") == "https://ops:***@gw.example/x"
    )


# ---------------------------------------------------------------- logging pipeline


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Put the ``cutbook`` logger and structlog back as they were."""
    base = logging.getLogger("cutbook")
    saved = (list(base.handlers), list(base.filters), base.level, base.propagate)
    yield
    for handler in list(base.handlers):
        base.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for flt in list(base.filters):
        base.removeFilter(flt)
    for handler in saved[0]:
        base.addHandler(handler)
    for flt in saved[1]:
        base.addFilter(flt)
    base.setLevel(saved[2])
    base.propagate = saved[3]
    logs._state["redactor"] = None
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


@pytest.mark.usefixtures("clean_logging")
def test_structlog_pipeline_scrubs_console_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redactor = Redactor()
    json_file = tmp_path / "log.jsonl"
    logs.configure(redactor=redactor, json_file=json_file)
    redactor.add(CANARY)  # resolved after configure, as at run time
    structlog.contextvars.bind_contextvars(run_id="r-1", step="move-ou", item=CANARY)
    log = logs.get_logger("engine")
    log.info(f"connecting with {CANARY}", dsn=f"postgres://u:{CANARY}@db/x", extra={CANARY: 1})
    log.warning("headers", headers={"Authorization": "Bearer zyxwvutsrq"})
    try:
        raise RuntimeError(f"boom {CANARY}")
    except RuntimeError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "connecting with ***" in err and "run_id=r-1" in err and "step=move-ou" in err
    assert "RuntimeError: boom ***" in err
    assert "\x1b[" not in err  # no colours when not a terminal
    lines = [json.loads(x) for x in json_file.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["event"] == "connecting with ***" and lines[0]["run_id"] == "r-1"
    assert lines[0]["logger"] == "cutbook.engine" and lines[0]["level"] == "info"
    everything = err + json_file.read_text(encoding="utf-8")
    assert CANARY not in everything and "zyxwvutsrq" not in everything


@pytest.mark.usefixtures("clean_logging")
def test_stdlib_records_are_scrubbed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    redactor = Redactor([CANARY])
    logs.configure(redactor=redactor)
    # Like Prefect's handler: attached to "cutbook" itself, fed by child loggers.
    logging.getLogger("cutbook").addHandler(caplog.handler)
    child = logging.getLogger("cutbook.engine.tasks")
    child.warning("token %s for %s", CANARY, "user")
    try:
        raise ValueError(CANARY)
    except ValueError:
        child.exception("oops %s", CANARY)
    err = capsys.readouterr().err
    assert "token *** for user" in err and "ValueError: ***" in err
    assert caplog.records and all(CANARY not in r.getMessage() for r in caplog.records)
    assert CANARY not in caplog.text and CANARY not in err
    logging.getLogger("cutbook").removeHandler(caplog.handler)


@pytest.mark.usefixtures("clean_logging")
def test_redacting_filter_on_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(logs.RedactingFilter(Redactor([CANARY])))
    with caplog.at_level(logging.INFO, logger="elsewhere"):
        logging.getLogger("elsewhere").info("value=%s", CANARY)
    assert caplog.records[0].getMessage() == "value=***"


@pytest.mark.usefixtures("clean_logging")
def test_configure_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        logs.configure(redactor=Redactor([CANARY]), json_file=tmp_path / "l.jsonl", level="debug")
    ours = [h for h in logging.getLogger("cutbook").handlers if getattr(h, "_cutbook_handler", 0)]
    assert len(ours) == 2
    logs.get_logger().debug("once")
    assert capsys.readouterr().err.count("once") == 1
    with pytest.raises(UsageError, match="CUTBOOK_LOG_LEVEL"):
        logs.configure(redactor=Redactor(), level="loud")


@pytest.mark.usefixtures("clean_logging")
def test_log_lines_are_stamped_in_the_runbooks_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """People compare log lines with the plan's times: both in the runbook's zone."""
    log_file = tmp_path / "l.jsonl"
    logs.configure(redactor=Redactor(), json_file=log_file, zone=ZoneInfo("Asia/Ho_Chi_Minh"))
    logs.get_logger().info("intake stopped")
    assert re.search(
        r"T\d\d:\d\d:\d\d\.\d{3}\+07:00 \[info\] intake stopped", capsys.readouterr().err
    )
    stamped = json.loads(log_file.read_text().splitlines()[-1])["timestamp"]
    assert stamped.endswith("+07:00")
    # The level comes from the environment when not given; a bad one says where it came from.
    monkeypatch.setenv("CUTBOOK_LOG_LEVEL", "warning")
    logs.configure(redactor=Redactor())
    logs.get_logger().info("quiet")
    logs.get_logger().warning("loud")
    err = capsys.readouterr().err
    assert (
        "loud" in err
        and "quiet" not in err
        and re.search(r"\d\dZ \[warning\]|\+00:00 \[warning\]", err)
    )


def test_template_references_are_names_not_credentials() -> None:
    """Runbook text is journalled verbatim; scrubbing a template would break its hash."""
    redactor = Redactor()
    text = (
        'headers: {Authorization: "Bearer {{ secrets.VNACCS_TOKEN }}"}\n'
        'password: "{{ secrets.DB_PASSWORD }}"\n'
        "token={{ secrets.API_TOKEN }}\n"
    )
    assert redactor.scrub_text(text) == text
    assert redactor.scrub_text('password: "hunter2-real"') == 'password: "***"'
    assert redactor.scrub_text("Authorization: Bearer abc.def.ghi") == "Authorization: ***"


# --- Encoded forms: a target echoing a header or URL must not leak the secret through them.

SECRET = "s3cr3t/Pa ss+wd"


def _b64_forms(data: bytes) -> list[str]:
    std = base64.b64encode(data).decode()
    url = base64.urlsafe_b64encode(data).decode()
    return [std, std.rstrip("="), url, url.rstrip("=")]


@pytest.mark.parametrize("encoded", _b64_forms(SECRET.encode()))
def test_base64_of_the_secret_all_alphabets_and_padding(encoded: str) -> None:
    redactor = Redactor([SECRET], shapes=False)
    assert redactor.scrub_text(f"echo [{encoded}] done") == f"echo [{PLACEHOLDER}] done"
    assert redactor.contains_secret(encoded)


@pytest.mark.parametrize("user", ["", "u", "ad", "admin", "service-account@corp"])
def test_basic_auth_token_for_any_user_is_replaced_whole(user: str) -> None:
    redactor = Redactor([SECRET], shapes=False)
    for token in _b64_forms(f"{user}:{SECRET}".encode()):
        out = redactor.scrub_text(f"you sent Basic {token}, thanks")
        assert out == f"you sent Basic {PLACEHOLDER}, thanks", token


@pytest.mark.parametrize("lead", [b"", b"x", b"xy", b"prefix-bytes "])
def test_base64_of_longer_data_at_every_alignment(lead: bytes) -> None:
    redactor = Redactor([SECRET], shapes=False)
    token = base64.b64encode(lead + SECRET.encode() + b" and a tail").decode()
    assert redactor.scrub_text(f"blob={token};") == f"blob={PLACEHOLDER};"


def test_short_secret_found_by_decoding_candidate_tokens() -> None:
    # 4-character secrets have base64 cores too short to match safely: decoding does it.
    redactor = Redactor(["k9#z"], shapes=False)
    token = base64.b64encode(b"user:k9#z").decode()
    assert redactor.scrub_text(f"Basic {token}") == f"Basic {PLACEHOLDER}"
    other = base64.b64encode(b"user:other").decode()
    assert redactor.scrub_text(f"Basic {other} words everywhere") == (
        f"Basic {other} words everywhere"
    )


@pytest.mark.parametrize("encoded", [quote(SECRET, safe=""), quote(SECRET), quote_plus(SECRET)])
def test_percent_encoded_forms(encoded: str) -> None:
    redactor = Redactor([SECRET], shapes=False)
    assert redactor.scrub_text(f"GET /login?pw={encoded}&x=1") == f"GET /login?pw={PLACEHOLDER}&x=1"


def test_json_escaped_forms() -> None:
    secret = 'qu"ote\\é/x'
    redactor = Redactor([secret], shapes=False)
    for dumped in (json.dumps(secret), json.dumps(secret, ensure_ascii=False)):
        assert redactor.scrub_text(f'{{"v": {dumped}}}') == f'{{"v": "{PLACEHOLDER}"}}'
    escaped_slash = json.dumps(secret)[1:-1].replace("/", "\\/")
    assert redactor.scrub_text(f'{{"v": "{escaped_slash}"}}') == f'{{"v": "{PLACEHOLDER}"}}'


def test_ordinary_text_and_other_base64_are_left_alone() -> None:
    redactor = Redactor([SECRET, "hunter2hunter2", "k9#z"], shapes=False)
    texts = [
        "The deployment configuration successfully applied to OU=Customs on db-01.internal",
        "request_id=Ab12Cd34Ef56 sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15",
        "Basic " + base64.b64encode(b"admin:not-the-secret").decode(),
        base64.urlsafe_b64encode(bytes(range(200))).decode(),
        base64.b64encode(SECRET.encode()[:-3] + b"...").decode(),
    ]
    for text in texts:
        assert redactor.scrub_text(text) == text
        assert not redactor.contains_secret(text)


def test_encodings_scrubbed_in_nested_data() -> None:
    redactor = Redactor([SECRET])
    token = base64.b64encode(f"svc:{SECRET}".encode()).decode()
    out = redactor.scrub({"body": {"echo": [f"Basic {token}"]}, "url": quote_plus(SECRET)})
    assert out == {"body": {"echo": [f"Basic {PLACEHOLDER}"]}, "url": PLACEHOLDER}
