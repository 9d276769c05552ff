"""Helpers shared by the built-in adapters: scrubbing, truncation, JSON matching.

Kept private: third-party adapters should depend on :mod:`cutbook.adapter`
and :mod:`cutbook.testing` only.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
import re
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

from cutbook import AdapterError, BaseAdapter, Call, Result, TransientError

SUMMARY_CHARS = 240
"""Summaries are one line in a table; the full detail is in ``output``."""

DEFAULT_MAX_BYTES = 64 * 1024

TRANSIENT_STATUS = frozenset({408, 425, 429, 502, 503, 504})
"""HTTP statuses a later attempt may get past; everything else is permanent."""

_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<user>[^/\s:@]*):[^/\s@]*@"
)
"""Credentials in a URL. A scheme starts where no scheme character precedes it and is
short: otherwise every letter of a long body would start a scan to its end (quadratic)."""


PHASES = ("check", "apply", "verify", "rollback")

Phase = Callable[[Any, Call], Awaitable[Result]]


def _scrubbing(method: Phase) -> Phase:
    """Wrap one phase so nothing it returns or raises can carry a secret."""

    @functools.wraps(method)
    async def wrapper(self: ScrubbingAdapter, call: Call) -> Result:
        try:
            result = await method(self, call)
        except TransientError as exc:
            text = self.scrub(str(exc))
            if text == str(exc):
                raise
            raise TransientError(text, retry_after=exc.retry_after) from None
        except AdapterError as exc:
            text = self.scrub(str(exc))
            if text == str(exc):
                raise
            raise type(exc)(text) from None
        return replace(
            result, summary=self.scrub(result.summary), output=self.scrub_value(result.output)
        )

    return wrapper


class ScrubbingAdapter(BaseAdapter):
    """BaseAdapter that scrubs every result and error, and knows its own secrets.

    A bearer token or a password in target options is a secret even when the
    runbook author forgot to declare it under ``secrets:``. Each subclass's
    phases are wrapped when the class is created, so a forgotten ``scrub``
    call cannot leak: explicit scrubbing inside an adapter is only for log lines.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in PHASES:
            if name in cls.__dict__:
                setattr(cls, name, _scrubbing(cls.__dict__[name]))

    def add_secrets(self, values: Iterable[str | None]) -> None:
        """Secrets the adapter met itself (a password in a DSN), scrubbed like the run's."""
        self.redactor.add(*(v for v in values if v))

    def scrub(self, text: str) -> str:
        return _URL_USERINFO.sub(r"\g<scheme>\g<user>:***@", super().scrub(text))

    def scrub_value(self, value: Any) -> Any:
        """Scrub every string inside a JSON-like value, keys included."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(str(k)): self.scrub_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_value(v) for v in value]
        return value


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    dropped = len(text) - limit
    return f"{text[:limit]}…[{dropped} more]"


def one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    return truncate(" ".join(text.split()), limit)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def json_safe(value: Any) -> Any:
    """Turn database and library values into what the journal can store."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def json_mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """Where ``actual`` fails to contain ``expected``, or None if it does.

    Mappings match as subsets (extra keys are fine), lists must have the same
    length with each element matching, scalars must be equal. Numbers compare
    by value, so ``1`` matches ``1.0`` but ``True`` does not match ``1``.
    """
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return f"{path}: expected an object, got {_kind(actual)}"
        for key, sub in expected.items():
            if key not in actual:
                return f"{path}.{key}: missing"
            found = json_mismatch(sub, actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: expected a list, got {_kind(actual)}"
        if len(expected) != len(actual):
            return f"{path}: expected {len(expected)} items, got {len(actual)}"
        for i, (sub, got) in enumerate(zip(expected, actual, strict=True)):
            found = json_mismatch(sub, got, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(expected, bool) or isinstance(actual, bool):
        same = isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    else:
        same = bool(expected == actual)
    if same:
        return None
    return f"{path}: expected {compact_json(expected)}, got {truncate(compact_json(actual), 80)}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def retry_after_seconds(header: str | None) -> float | None:
    """Parse Retry-After as seconds or an HTTP date; None when absent or garbled."""
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def min_timeout(*values: float | None) -> float | None:
    """The tightest of several optional timeouts, in seconds."""
    given = [v for v in values if v is not None]
    return min(given) if given else None


def tls_context(
    verify: bool | str, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """One SSL context for server verification and an optional client certificate."""
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif verify is True:
        ctx = ssl.create_default_context()
    else:
        ctx = ssl.create_default_context(cafile=verify)
    if cert:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    return ctx
