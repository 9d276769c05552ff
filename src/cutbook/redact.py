"""Secret scrubbing for everything cutbook writes down: journal, logs, reports.

Secrets are resolved at run time, so the :class:`Redactor` learns their values
as they appear (:meth:`Redactor.add`) and replaces every occurrence with
``***``, in the encodings a target may echo them back in too: percent-encoded (URLs,
forms), JSON-escaped, and base64 in either alphabet, padded or not, alone or inside longer
data such as the ``user:secret`` of a basic-auth header (the whole base64 token goes). It
also scrubs well-known credential shapes that nobody registered
(bearer tokens, ``Authorization:`` headers, ``password=`` values, JWTs, AWS
access key ids, PEM private keys, passwords in URLs), because an adapter that
echoes a response body should not be able to leak a token into the journal.

Scrubbing is applied *before* anything is serialised, so nothing downstream
(the journal's hash chain included) ever sees the clear value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

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
_URL_USERINFO = re.compile(
    r"(?i)(?<![a-z0-9+.\-])([a-z][a-z0-9+.\-]{0,31}://)([^/\s:@]*):([^/\s@]+)@"
)


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


CORE_FLOOR = 6
"""The shortest base64 core matched as a substring: shorter ones (4-character secrets) would
hit unrelated tokens, so those secrets are only found by decoding a whole candidate token."""

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
_TO_STANDARD = str.maketrans("-_", "+/")
_TO_URLSAFE = str.maketrans("+/", "-_")
# A base64-looking run (either alphabet) of 8+ characters: "u:" plus a 4-character secret
# is 8 characters of base64. Greedy, so every match starts where a run starts.
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")


def _text_variants(value: str) -> set[str]:
    """The secret as it appears inside URLs (quote, quote_plus) and JSON strings."""
    variants = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    for ensure_ascii in (True, False):
        escaped = json.dumps(value, ensure_ascii=ensure_ascii)[1:-1]
        variants |= {escaped, escaped.replace("/", "\\/")}
    return variants


def _b64_cores(raw: bytes) -> tuple[set[str], bool]:
    """The base64 characters that depend on ``raw`` alone, at each of the 3 byte alignments,
    and whether all 3 are long enough to match on (else only decoding finds ``raw``).

    Base64 of ``raw`` inside longer data (``user:secret``) is not a substring of base64 of
    ``raw``, but one of these cores always is a substring of it, in either alphabet: so
    basic-auth tokens are caught for any user name without decoding anything.
    """
    cores: set[str] = set()
    complete = True
    bits = 8 * len(raw)
    for lead in range(3):
        encoded = base64.b64encode(b"\0" * lead + raw + b"\0\0").decode("ascii")
        first = -(-8 * lead // 6)
        last = (8 * lead + bits - 6) // 6
        core = encoded[first : last + 1]
        if len(core) >= CORE_FLOOR:
            cores |= {core, core.translate(_TO_URLSAFE)}
        else:
            complete = False
    return cores, complete


def _run_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a match to the whole base64 run around it, padding included."""
    while start > 0 and text[start - 1] in _B64_ALPHABET:
        start -= 1
    size = len(text)
    while end < size and text[end] in _B64_ALPHABET:
        end += 1
    pad = 0
    while end < size and pad < 2 and text[end] == "=":
        end, pad = end + 1, pad + 1
    return start, end


def _b64_decode(token: str) -> bytes | None:
    """Decode a standard or URL-safe token, padded or not; None if it is not base64."""
    body = token.rstrip("=").translate(_TO_STANDARD)
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class _Patterns:
    """One consistent snapshot of what to scrub, swapped whole so readers need no lock."""

    values: re.Pattern[str]
    """Registered values and their URL/JSON forms, replaced where they stand."""
    value_list: tuple[str, ...]
    """The same, for a cheap ``in`` pre-check (much faster than a miss of the regex)."""
    cores: tuple[str, ...]
    """Base64 cores of the values; a hit redacts the whole base64 run around it."""
    decoded: re.Pattern[bytes] | None
    """Values as bytes, looked for in decoded base64 runs; only set when some value is too
    short for its cores to be matched safely (cores cover every other case)."""


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
        self._cores: set[str] = set()
        self._uncovered = False
        self._patterns: _Patterns | None = None
        self._shapes = shapes
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register secret values; values shorter than 4 characters are ignored
        (scrubbing "abc" everywhere would destroy the record, not protect it)."""
        new: set[str] = set()
        for value in values:
            if not isinstance(value, str) or len(value) < SCRUB_FLOOR:
                continue
            new |= {v for v in _text_variants(value) if len(v) >= SCRUB_FLOOR}
        if not new:
            return
        with self._lock:
            if new <= self._values:
                return
            self._values |= new
            for variant in new:
                cores, complete = _b64_cores(variant.encode("utf-8"))
                self._cores |= cores
                self._uncovered |= not complete
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            value_pattern = re.compile("|".join(re.escape(v) for v in ordered))
            decoded = re.compile(b"|".join(re.escape(v.encode("utf-8")) for v in ordered))
            self._patterns = _Patterns(
                values=value_pattern,
                value_list=tuple(ordered),
                cores=tuple(sorted(self._cores)),
                decoded=decoded if self._uncovered else None,
            )

    @property
    def secret_count(self) -> int:
        return len(self._values)

    def scrub_text(self, text: str) -> str:
        """Scrub one string: registered values (longest first), then shapes."""
        patterns = self._patterns
        if patterns is not None:
            text = _scrub_values(patterns, text)
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
            if self._patterns is not None and str(obj) in self._values:
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
        """True when ``text`` holds a registered value in any form it is scrubbed in
        (used by tests and checks)."""
        patterns = self._patterns
        return patterns is not None and _scrub_values(patterns, text) != text

    def __call__(self, _logger: object, _method: str, event_dict: Any) -> Any:
        """Act as a structlog processor: scrub every key and value, message included."""
        return self._scrub(event_dict)


def _scrub_values(patterns: _Patterns, text: str) -> str:
    """Replace registered values, then any base64 run that encodes one (whole run)."""
    if any(value in text for value in patterns.value_list):
        text = patterns.values.sub(PLACEHOLDER, text)
    present = [core for core in patterns.cores if core in text]
    if present:
        text = _redact_runs(text, present)
    if patterns.decoded is None or _B64_RUN.search(text) is None:
        return text
    pieces: list[str] = []
    last = 0
    for match in _B64_RUN.finditer(text):
        token = match.group()
        if token.isalpha() and token[1:].islower():
            continue  # an ordinary word, not an encoding
        decoded = _b64_decode(token)
        if decoded is None or patterns.decoded.search(decoded) is None:
            continue
        pieces += (text[last : match.start()], PLACEHOLDER)
        last = match.end()
    return "".join(pieces) + text[last:] if pieces else text


def _redact_runs(text: str, cores: Iterable[str]) -> str:
    """Replace every base64 run holding one of ``cores`` (all present in ``text``) with the
    marker: replacing only the core would leave bits of the secret in its neighbours."""
    spans: list[tuple[int, int]] = []
    for core in cores:
        at = text.find(core)
        while at >= 0:
            spans.append(_run_bounds(text, at, at + len(core)))
            at = text.find(core, spans[-1][1])
    pieces: list[str] = []
    last = 0
    for start, end in sorted(spans):
        if start >= last:
            pieces += (text[last:start], PLACEHOLDER)
        last = max(last, end)
    return "".join(pieces) + text[last:]
