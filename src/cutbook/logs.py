"""The structlog pipeline: every log line is scrubbed before anyone sees it.

Pipeline: level filter → contextvars (``run_id``, ``step``, ``item`` bound by
the engine) → logger name, level, UTC timestamp → exceptions to text → the
:class:`~cutbook.redact.Redactor` over every key and value (the message
too) → one readable line handed to the stdlib logger ``cutbook``.

Routing through stdlib ``cutbook`` is what puts the same lines in the Prefect
run log: during a run the Prefect bridge's reporter adds a handler there that
only queues each line (a dead or slow server must never block one), and its
own thread delivers them in batches; Prefect's own API log handler, which
waits on the server at exit, is taken off ``cutbook`` for the run. Prefect
(configured with ``PREFECT_LOGGING_EXTRA_LOGGERS=cutbook``) also attaches
handlers to ``cutbook`` itself, and records from child
loggers (``cutbook.engine``…) reach those handlers without passing the parent
logger's filters, so plain stdlib records are scrubbed where they are *made*:
a record factory wraps the current one for ``cutbook.*`` names. The same
scrubbing is also available as :class:`RedactingFilter` for any handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from cutbook.errors import UsageError
from cutbook.redact import Redactor

LOGGER_NAME = "cutbook"
_EXTRA_KEY = "cutbook_event"
EVENT_ATTR = _EXTRA_KEY
"""The LogRecord attribute holding the scrubbed structlog event dict, for handlers
that render it their own way (the Prefect log shipper)."""
_HANDLER_MARK = "_cutbook_handler"

_state: dict[str, Any] = {"redactor": None, "factory_installed": False}


def _active_redactor() -> Redactor | None:
    redactor = _state["redactor"]
    return redactor if isinstance(redactor, Redactor) else None


def _scrub_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Fold msg % args into one scrubbed string, exception text included."""
    if getattr(record, "_cutbook_scrubbed", False):
        return
    try:
        message = record.getMessage()
    except (TypeError, ValueError):
        message = f"{record.msg!r} {record.args!r}"
    record.msg = redactor.scrub_text(str(message))
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redactor.scrub_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.scrub_text(record.stack_info)
    event = getattr(record, _EXTRA_KEY, None)
    if isinstance(event, dict):
        setattr(record, _EXTRA_KEY, redactor.scrub(event))
    record._cutbook_scrubbed = True


class RedactingFilter(logging.Filter):
    """Scrubs a stdlib LogRecord's message, args and exception text in place.

    Never drops a record. Attach it to any handler that may see ``cutbook``
    records (for instance Prefect's API handler).
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor or _active_redactor()
        if redactor is not None:
            _scrub_record(record, redactor)
        return True


def _install_record_factory() -> None:
    """Scrub ``cutbook.*`` records at creation, before any handler runs."""
    if _state["factory_installed"]:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redactor = _active_redactor()
        name = record.name
        if redactor is not None and (name == LOGGER_NAME or name.startswith(LOGGER_NAME + ".")):
            _scrub_record(record, redactor)
        return record

    logging.setLogRecordFactory(factory)
    _state["factory_installed"] = True


def _plain_renderer() -> structlog.dev.ConsoleRenderer:
    return structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0, pad_level=False)


def _hand_to_stdlib(
    render: Callable[[WrappedLogger, str, EventDict], str | bytes],
) -> Processor:
    """Final processor: the readable line becomes the stdlib message; the
    scrubbed event dict rides along for handlers that want structure."""

    def processor(
        logger: WrappedLogger, method: str, event_dict: EventDict
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        line = render(logger, method, dict(event_dict))
        text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
        return (text,), {"extra": {_EXTRA_KEY: dict(event_dict)}}

    return processor


class _ConsoleFormatter(logging.Formatter):
    """Readable lines; colour only when the stream is a terminal."""

    def __init__(self, colors: bool) -> None:
        super().__init__("%(asctime)s [%(levelname)s] %(name)s: %(message)s")
        self._renderer = structlog.dev.ConsoleRenderer(colors=colors) if colors else None

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, _EXTRA_KEY, None)
        if isinstance(event, dict):
            if self._renderer is not None:
                rendered = self._renderer(None, record.levelname.lower(), dict(event))
                return rendered if isinstance(rendered, str) else str(rendered)
            return record.getMessage()
        return super().format(record)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: the scrubbed structlog event, or a stdlib record."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, _EXTRA_KEY, None)
        if not isinstance(event, dict):
            event = {
                "timestamp": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": record.getMessage(),
            }
            if record.exc_text:
                event["exception"] = record.exc_text
        return json.dumps(event, ensure_ascii=False, default=str)


def _stamper(zone: tzinfo | None) -> Processor:
    """ISO time with its offset (``2025-03-14T23:00:05.123+07:00``), in ``zone``."""
    where = zone or UTC

    def processor(
        _logger: WrappedLogger, _method: str, event_dict: EventDict
    ) -> MutableMapping[str, Any]:
        event_dict["timestamp"] = datetime.now(where).isoformat(timespec="milliseconds")
        return event_dict

    return processor


def _scrub_processor(redactor: Redactor) -> Processor:
    def processor(
        _logger: WrappedLogger, _method: str, event_dict: EventDict
    ) -> MutableMapping[str, Any]:
        scrubbed: dict[str, Any] = redactor.scrub(dict(event_dict))
        return scrubbed

    return processor


def configure(
    *,
    redactor: Redactor,
    console: bool = True,
    json_file: Path | None = None,
    level: str | None = None,
    stream: TextIO | None = None,
    zone: tzinfo | None = None,
) -> None:
    """Set up structlog and the ``cutbook`` stdlib logger; safe to call again.

    ``level`` defaults to ``CUTBOOK_LOG_LEVEL``, else INFO (``debug`` adds every
    fan-out item's own lines); ``stream`` defaults to ``sys.stderr`` at call time.
    ``zone`` is the runbook's: people compare log lines with the plan's times, so
    each line is stamped in that zone, its offset written out (UTC without one).
    """
    if level is None:
        level = os.environ.get("CUTBOOK_LOG_LEVEL") or "INFO"
    _state["redactor"] = redactor
    _install_record_factory()

    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise UsageError(
            f"unknown log level {level!r} (CUTBOOK_LOG_LEVEL): use debug, info, warning or error"
        )

    base = logging.getLogger(LOGGER_NAME)
    for handler in list(base.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            base.removeHandler(handler)
            handler.close()
    for existing in list(base.filters):
        if isinstance(existing, RedactingFilter):
            base.removeFilter(existing)
    base.addFilter(RedactingFilter(redactor))
    base.setLevel(numeric)

    if console:
        out = stream if stream is not None else sys.stderr
        console_handler = logging.StreamHandler(out)
        console_handler.setFormatter(_ConsoleFormatter(colors=_isatty(out)))
        _own(base, console_handler, redactor)
        # Our console handler prints these; don't let the root print them again.
        base.propagate = False
    else:
        base.propagate = True
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(json_file, encoding="utf-8")
        file_handler.setFormatter(_JsonFormatter())
        _own(base, file_handler, redactor)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            _stamper(zone),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _scrub_processor(redactor),
            _hand_to_stdlib(_plain_renderer()),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def _own(base: logging.Logger, handler: logging.Handler, redactor: Redactor) -> None:
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactingFilter(redactor))
    base.addHandler(handler)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):
        return False


def get_logger(name: str = LOGGER_NAME, **initial: Any) -> Any:
    """A structlog logger under ``cutbook`` (other names are nested beneath it)."""
    if name != LOGGER_NAME and not name.startswith(LOGGER_NAME + "."):
        name = f"{LOGGER_NAME}.{name}"
    return structlog.get_logger(name, **initial)
