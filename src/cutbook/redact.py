"""Secret scrubbing for everything cutbook writes down: journal, logs, reports.

Secrets are resolved at run time, so the :class:`Redactor` learns their values
as they appear (:meth:`Redactor.add`) and replaces every occurrence with
``***``. It also scrubs well-known credential shapes that nobody registered
(bearer tokens, ``Authorization:`` headers, ``password=`` values, JWTs, AWS
access key ids, PEM private keys, passwords in URLs), because an adapter that
echoes a response body should not be able to leak a token into the journal.

Scrubbing is applied *before* anything is serialised, so nothing downstream
(the journal's hash chain included) ever sees the clear value.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

PLACEHOLDER = "***"
MIN_SECRET_LENGTH = 6
"""The shortest secret a run accepts; the engine refuses shorter ones before anything runs.
Below this, scrubbing a value out of every line would mangle ordinary text, and not
scrubbing it would leak it."""
SCRUB_FLOOR = 4
"""The shortest value a :class:`Redactor` scrubs at all (shorter ones are ignored). Never
above :data:`MIN_SECRET_LENGTH`, so every secret a run accepts is scrubbed; lower, so
values registered outside a run (tests, embedding code) are still scrubbed down to 4."""
assert SCRUB_FLOOR <= MIN_SECRET_LENGTH

T = TypeVar("T")

# Key names whose values are credentials whatever they contain (compared after
# lower-casing and dropping "-" and "_").
SENSITIVE_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "sessiontoken",
        "authtoken",
        "apikey",
        "authorization",
        "proxyauthorization",
        "clientsecret",
        "privatekey",
        "secretkey",
        "secretaccesskey",
        "cookie",
        "setcookie",
    }
)

_KEYWORDS = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|token|access[_-]?token|"
    r"refresh[_-]?token|api[_-]?key|secret[_-]?key|private[_-]?key"
)

# Cheap pre-check: a string that matches none of these cannot hold a shape.
_TRIGGER = re.compile(
    r"(?i)bearer|authori[sz]ation|pass|pwd|secret|token|api[_-]?key|private|eyJ|AKIA|ASIA|://"
)

_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
# A value that is a template reference ("{{ secrets.X }}") names a secret, it is not one:
# runbook text is journalled verbatim and must still hash to what was run.
_TEMPLATE = r"""(?!["']?(?:bearer\s+|basic\s+)?\{\{)"""
_AUTH_HEADER = re.compile(
    r"(?im)\b((?:proxy-)?authori[sz]ation\s*+[:=]\s*+)" + _TEMPLATE + r"(?!\*\*\*)[^\r\n]+"
)
_JSON_AUTH = re.compile(
    r'(?i)("(?:proxy-)?authori[sz]ation"\s*:\s*")((?:[^"\\]|\\.)*)(")',
)
_BEARER = re.compile(r"(?i)\b(bearer\s++)(?!\*\*\*)[A-Za-z0-9\-._~+/]+=*")
_JSON_KV = re.compile(
    r'(?i)("(?:' + _KEYWORDS + r')"\s*:\s*")((?:[^"\\]|\\.)*)(")',
)
_TEXT_KV_QUOTED = re.compile(
    r"(?i)\b(" + _KEYWORDS + r")(\s*+[=:]\s*+)(['\"])(?!\*\*\*['\"])(?!\{\{)"
    r"(?:\\.|(?!\3)[^\\\n])*\3",
)
_TEXT_KV = re.compile(
    r"(?i)\b(" + _KEYWORDS + r")(\s*+[=:]\s*+)(?!['\"])(?!\*\*\*)(?!\{\{)[^\s&,;)}\]]+",
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s:@]*):([^/\s@]+)@")


def _scrub_shapes(text: str) -> str:
    """Replace credential-shaped substrings; order matters (widest first)."""
    if "-----BEGIN" in text:
        text = _PEM.sub(
            f"-----BEGIN \\1PRIVATE KEY-----{PLACEHOLDER}-----END PRIVATE KEY-----", text
        )
    if _TRIGGER.search(text) is None:
        return text
    text = _JSON_AUTH.sub(rf"\g<1>{PLACEHOLDER}\g<3>", text)
    text = _AUTH_HEADER.sub(rf"\g<1>{PLACEHOLDER}", text)
    text = _BEARER.sub(rf"\g<1>{PLACEHOLDER}", text)
    text = _JSON_KV.sub(rf"\g<1>{PLACEHOLDER}\g<3>", text)
    text = _TEXT_KV_QUOTED.sub(rf"\g<1>\g<2>\g<3>{PLACEHOLDER}\g<3>", text)
    text = _TEXT_KV.sub(rf"\g<1>\g<2>{PLACEHOLDER}", text)
    text = _JWT.sub(PLACEHOLDER, text)
    text = _AWS_KEY.sub(PLACEHOLDER, text)
    return _URL_USERINFO.sub(rf"\g<1>\g<2>:{PLACEHOLDER}@", text)


def _normal_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


class Redactor:
    """Knows the run's secret values and scrubs them out of any JSON-like value.

    Thread-safe: the engine adds secrets while other tasks log. With no secrets
    registered only the (pre-filtered) shape patterns run, so it stays cheap.
    """

    def __init__(self, secrets: Iterable[str] = (), *, shapes: bool = True) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._shapes = shapes
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register secret values; values shorter than 4 characters are ignored
        (scrubbing "abc" everywhere would destroy the record, not protect it)."""
        new: set[str] = set()
        for value in values:
            if not isinstance(value, str) or len(value) < SCRUB_FLOOR:
                continue
            # The same secret as it appears inside URLs and JSON text.
            for variant in (value, quote(value, safe=""), json.dumps(value)[1:-1]):
                if len(variant) >= SCRUB_FLOOR:
                    new.add(variant)
        if not new:
            return
        with self._lock:
            if new <= self._values:
                return
            self._values |= new
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    @property
    def secret_count(self) -> int:
        return len(self._values)

    def scrub_text(self, text: str) -> str:
        """Scrub one string: registered values (longest first), then shapes."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(PLACEHOLDER, text)
        if self._shapes:
            text = _scrub_shapes(text)
        return text

    def scrub(self, obj: T) -> T:
        """Return a scrubbed copy of ``obj`` (dicts, lists, tuples, strings).

        Dict keys are scrubbed too, and values under credential-named keys
        (``password``, ``token``, ``authorization``…) are replaced outright.
        Other objects are kept unless their ``repr`` would leak a secret, in
        which case they become the scrubbed ``repr`` string.
        """
        return self._scrub(obj)  # type: ignore[no-any-return]

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub_text(obj)
        if obj is None or isinstance(obj, bool):
            return obj
        if isinstance(obj, int | float):
            if self._pattern is not None and str(obj) in self._values:
                return PLACEHOLDER
            return obj
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for key, value in obj.items():
                new_key = self.scrub_text(key) if isinstance(key, str) else key
                if (
                    isinstance(key, str)
                    and self._shapes
                    and _normal_key(key) in SENSITIVE_KEYS
                    and isinstance(value, str | int | float)
                    and not isinstance(value, bool)
                    and value != ""
                ):
                    out[new_key] = PLACEHOLDER
                else:
                    out[new_key] = self._scrub(value)
            return out
        if isinstance(obj, list):
            return [self._scrub(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._scrub(v) for v in obj)
        if isinstance(obj, set | frozenset):
            return [self._scrub(v) for v in sorted(obj, key=repr)]
        if isinstance(obj, bytes | bytearray):
            text = bytes(obj).decode("utf-8", "replace")
            scrubbed = self.scrub_text(text)
            return obj if scrubbed == text else scrubbed
        text = repr(obj)
        scrubbed = self.scrub_text(text)
        return obj if scrubbed == text else scrubbed

    def contains_secret(self, text: str) -> bool:
        """True when ``text`` holds a registered value (used by tests and checks)."""
        pattern = self._pattern
        return pattern is not None and pattern.search(text) is not None

    def __call__(self, _logger: object, _method: str, event_dict: Any) -> Any:
        """Act as a structlog processor: scrub every key and value, message included."""
        return self._scrub(event_dict)
