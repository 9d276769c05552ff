"""The ``sql`` adapter: parameterised statements in one transaction per call.

Values go in ``params`` and reach the database as bound parameters; the SQL
text itself should never be templated. SQLAlchemy's engine is synchronous, so
each call runs in a worker thread; a timeout interrupts the statement where
the driver allows it, and the transaction rolls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, Field, model_validator
from sqlalchemy import exc as sa_exc

from cutbook import (
    ActionSpec,
    AdapterContext,
    Args,
    Call,
    PermanentError,
    Result,
    TargetConfig,
    TransientError,
)
from cutbook_adapters._common import (
    ScrubbingAdapter,
    compact_json,
    json_mismatch,
    json_safe,
    one_line,
)

T = TypeVar("T")

_NO_TEMPLATES: dict[str, Any] = {"x-cutbook-no-templates": True}
"""Marks SQL text: validation may warn when a template is rendered into it."""
_SQL_HELP = "SQL text with :name placeholders; put values in params, never in the text"
_SQL_EXAMPLE = "UPDATE offices SET parent = :parent WHERE code = :code"
_QUERY_EXAMPLE = "SELECT code, name FROM offices WHERE code = :code"
_PARAMS_EXAMPLE = {"code": "{{ item.code }}", "parent": "{{ item.parent }}"}

_TRANSIENT_HINTS = (
    "database is locked",
    "database is busy",
    "could not connect",
    "connection refused",
    "connection reset",
    "server closed the connection",
    "terminating connection",
    "timeout",
    "timed out",
    "deadlock",
    "could not serialize",
    "too many connections",
)


class SqlConfig(TargetConfig):
    """Options of a ``sql`` target."""

    url: str = Field(
        description="SQLAlchemy URL, e.g. sqlite:///data/app.db or postgresql://…",
        examples=["postgresql://cutbook:{{ secrets.DB_PASSWORD }}@db.internal/customs"],
    )
    echo: bool = Field(
        False, description="Log every statement through SQLAlchemy's logger", examples=[True]
    )


class Statement(Args):
    sql: str = Field(
        min_length=1,
        description=_SQL_HELP,
        examples=[_SQL_EXAMPLE],
        json_schema_extra=_NO_TEMPLATES,
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Bound parameters", examples=[_PARAMS_EXAMPLE]
    )
    expect_rowcount: int | None = Field(
        None,
        ge=0,
        description="Roll back and fail unless exactly this many rows change",
        examples=[1],
    )


class Query(Args):
    sql: str = Field(
        min_length=1,
        description=_SQL_HELP,
        examples=[_QUERY_EXAMPLE],
        json_schema_extra=_NO_TEMPLATES,
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Bound parameters", examples=[_PARAMS_EXAMPLE]
    )


class ExecuteArgs(Args):
    """Either ``sql`` (+ ``params``) or a list of ``statements``, all in one transaction."""

    sql: str | None = Field(
        None,
        min_length=1,
        description=_SQL_HELP,
        examples=[_SQL_EXAMPLE],
        json_schema_extra=_NO_TEMPLATES,
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Bound parameters", examples=[_PARAMS_EXAMPLE]
    )
    expect_rowcount: int | None = Field(
        None,
        ge=0,
        description="Roll back and fail unless exactly this many rows change (with sql)",
        examples=[1],
    )
    statements: list[Statement] | None = Field(
        None,
        min_length=1,
        description="Several statements in one transaction, instead of sql",
        examples=[[{"sql": _SQL_EXAMPLE, "params": _PARAMS_EXAMPLE, "expect_rowcount": 1}]],
    )
    capture: Query | None = Field(
        None,
        description="Query run first in the same transaction; its rows become output.before "
        "(use them in the rollback step)",
        examples=[{"sql": _QUERY_EXAMPLE, "params": _PARAMS_EXAMPLE}],
    )
    max_rows: int = Field(1000, ge=1, description="Rows kept from capture", examples=[1000])

    @model_validator(mode="after")
    def _one_form(self) -> ExecuteArgs:
        if (self.sql is None) == (self.statements is None):
            raise ValueError("give either 'sql' or 'statements'")
        if self.statements is not None and (self.params or self.expect_rowcount is not None):
            raise ValueError("with 'statements', put params and expect_rowcount in each statement")
        return self

    def all_statements(self) -> list[Statement]:
        if self.statements is not None:
            return list(self.statements)
        assert self.sql is not None
        return [Statement(sql=self.sql, params=self.params, expect_rowcount=self.expect_rowcount)]


class QueryExpect(Args):
    """Exactly one of ``rows``, ``scalar`` or ``count``."""

    rows: list[dict[str, Any]] | None = Field(
        None,
        description="The exact rows, in order",
        examples=[[{"code": "2001", "name": "Customs Branch North"}]],
    )
    scalar: Any = Field(
        None, description="The first column of the single row", examples=["closed", 0]
    )
    count: int | None = Field(None, ge=0, description="How many rows", examples=[0])

    @model_validator(mode="after")
    def _exactly_one(self) -> QueryExpect:
        given = [k for k in ("rows", "scalar", "count") if k in self.model_fields_set]
        if len(given) != 1:
            raise ValueError("expect takes exactly one of rows, scalar or count")
        return self


class QueryArgs(Args):
    sql: str = Field(
        min_length=1,
        description=_SQL_HELP,
        examples=[_QUERY_EXAMPLE],
        json_schema_extra=_NO_TEMPLATES,
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Bound parameters", examples=[_PARAMS_EXAMPLE]
    )
    expect: QueryExpect | None = Field(
        None,
        description="What the rows must be: exactly one of rows, scalar or count",
        examples=[{"count": 0}, {"scalar": "closed"}],
    )
    max_rows: int = Field(1000, ge=1, description="Rows kept in the output", examples=[1000])


class _Interruptible:
    """The DBAPI connection of a running call, so a timeout can interrupt it."""

    def __init__(self, driver_error: type[BaseException]) -> None:
        self.lock = threading.Lock()
        self.dbapi: Any = None
        self.cancelled = False
        self.driver_error = driver_error

    def guard(self, *_: object) -> None:
        """Before each statement: stop a transaction whose caller gave up."""
        if self.cancelled:
            raise _Cancelled

    def interrupt(self) -> None:
        with self.lock:
            self.cancelled = True
            conn = self.dbapi
        if conn is None:
            return
        for name in ("interrupt", "cancel"):  # sqlite3 / psycopg
            method = getattr(conn, name, None)
            if callable(method):
                # Already finished or closed means nothing is left to interrupt.
                with contextlib.suppress(self.driver_error, RuntimeError, OSError, ValueError):
                    method()
                return


class SqlAdapter(ScrubbingAdapter):
    """Runs parameterised SQL through SQLAlchemy, one transaction per call."""

    name: ClassVar[str] = "sql"
    Config: ClassVar[type[BaseModel]] = SqlConfig
    actions: ClassVar[Mapping[str, ActionSpec]] = {
        "execute": ActionSpec(
            args=ExecuteArgs,
            description="Run statements in one transaction; output rowcounts (and captured "
            "'before' rows)",
            mutating=True,
            reversible=False,
        ),
        "query": ActionSpec(
            args=QueryArgs,
            description="Read rows and compare them with 'expect'",
            mutating=False,
            reversible=False,
        ),
    }

    def __init__(self, config: BaseModel, context: AdapterContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, SqlConfig)
        self.cfg = config
        with contextlib.suppress(sa_exc.ArgumentError):
            password = sa.make_url(config.url).password
            self.add_secrets([password if isinstance(password, str) else None])
        self._engine: sa.Engine | None = None

    def _get_engine(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = sa.create_engine(self.cfg.url, echo=self.cfg.echo)
            except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as exc:
                raise PermanentError(f"sql: bad url: {self.scrub(str(exc))}") from exc
        return self._engine

    async def _run(self, call: Call, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in one transaction in a thread, enforcing ``call.timeout``."""
        engine = self._get_engine()
        handle = _Interruptible(getattr(engine.dialect.loaded_dbapi, "Error", OSError))

        sqlite = engine.dialect.name == "sqlite"
        busy_ms = int(call.timeout * 1000) if call.timeout is not None else None

        def in_thread() -> T:
            with engine.connect() as conn:
                sa.event.listen(conn, "before_cursor_execute", handle.guard)
                with handle.lock:
                    handle.dbapi = conn.connection.driver_connection
                driver = conn.connection.driver_connection
                if sqlite and busy_ms is not None and driver is not None:
                    # Interrupting cannot cut SQLite's lock wait short, so bound it here.
                    driver.execute(f"PRAGMA busy_timeout = {busy_ms}")
                try:
                    with conn.begin():
                        return work(conn)
                finally:
                    with handle.lock:
                        handle.dbapi = None

        task = asyncio.ensure_future(asyncio.to_thread(in_thread))
        try:
            return await asyncio.wait_for(asyncio.shield(task), call.timeout)
        except TimeoutError as exc:
            handle.interrupt()
            # Wait for the worker: if it committed after all, that is the truth to
            # report; otherwise its transaction has rolled back before we say so.
            try:
                return await task
            except (sa_exc.SQLAlchemyError, _Cancelled):
                pass
            raise TransientError(
                f"sql: timed out after {call.timeout:g}s; statement interrupted, "
                "transaction rolled back"
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sa_exc.SQLAlchemyError) -> Exception:
        orig = getattr(exc, "orig", None)
        message = self.scrub(one_line(str(orig if orig is not None else exc), 400))
        lowered = message.lower()
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return TransientError(f"sql: connection lost: {message}")
        if isinstance(exc, sa_exc.TimeoutError):
            return TransientError(f"sql: connection pool timeout: {message}")
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and any(
            hint in lowered for hint in _TRANSIENT_HINTS
        ):
            return TransientError(f"sql: {message}")
        return PermanentError(f"sql: {message}")

    # -- actions ---------------------------------------------------------------

    async def check(self, call: Call) -> Result:
        """Queries run; ``execute`` connects and runs only its ``capture`` query."""
        if call.action == "query":
            return await self._query(call, raise_on_mismatch=False)
        args = self._execute_args(call)
        statements = args.all_statements()
        before: list[dict[str, Any]] | None = None
        if args.capture is not None:
            capture = args.capture
            before = await self._run(call, lambda c: _rows(c, capture, args.max_rows))
        else:
            await self._run(call, lambda c: c.execute(sa.text("SELECT 1")).all())
        first = one_line(statements[0].sql, 120)
        more = f" (+{len(statements) - 1} more)" if len(statements) > 1 else ""
        summary = f"would execute {first}{more}"
        output: dict[str, Any] = {"statements": len(statements)}
        if before is not None:
            summary += f"; capture finds {len(before)} row(s)"
            output["before"] = self.scrub_value(before)
        return Result(changed=True, summary=one_line(self.scrub(summary)), output=output)

    async def apply(self, call: Call) -> Result:
        if call.action == "query":
            return await self._query(call, raise_on_mismatch=True)
        args = self._execute_args(call)
        statements = args.all_statements()

        def work(conn: sa.Connection) -> tuple[list[dict[str, Any]] | None, list[int]]:
            before = _rows(conn, args.capture, args.max_rows) if args.capture else None
            counts = []
            for i, st in enumerate(statements):
                result = conn.execute(sa.text(st.sql), st.params)
                count = result.rowcount
                if st.expect_rowcount is not None and count != st.expect_rowcount:
                    raise _RowcountMismatch(i, st.expect_rowcount, count)
                counts.append(count)
            return before, counts

        call.log(f"sql: executing {len(statements)} statement(s) in one transaction")
        try:
            before, counts = await self._run(call, work)
        except _RowcountMismatch as exc:
            raise PermanentError(
                f"sql: statement {exc.index + 1} changed {exc.got} row(s), expected "
                f"{exc.expected}; transaction rolled back"
            ) from None
        changed = any(c != 0 for c in counts)
        output: dict[str, Any] = {"rowcounts": counts}
        if before is not None:
            output["before"] = self.scrub_value(before)
        total = sum(c for c in counts if c > 0)
        summary = f"executed {len(counts)} statement(s): {total} row(s) changed {counts}"
        return Result(changed=changed, summary=one_line(summary), output=output)

    async def verify(self, call: Call) -> Result:
        """A ``query`` is rerun and judged; ``execute`` trusts its rowcounts."""
        if call.action == "query":
            return await self._query(call, raise_on_mismatch=False)
        counts = call.prior.output.get("rowcounts") if call.prior else None
        return Result(ok=True, summary=f"rowcounts {counts}; no read-back defined")

    def _execute_args(self, call: Call) -> ExecuteArgs:
        if call.action != "execute" or not isinstance(call.args, ExecuteArgs):
            raise PermanentError(f"sql: no action {call.action!r} with these args")
        return call.args

    async def _query(self, call: Call, *, raise_on_mismatch: bool) -> Result:
        args = call.args
        if not isinstance(args, QueryArgs):
            raise PermanentError("sql: query needs query arguments")
        rows = await self._run(call, lambda c: _rows(c, args, args.max_rows + 1))
        truncated = len(rows) > args.max_rows
        rows = rows[: args.max_rows]
        output: dict[str, Any] = {"rows": self.scrub_value(rows), "count": len(rows)}
        if truncated:
            output["truncated"] = True
        summary = f"{len(rows)}{'+' if truncated else ''} row(s)"
        if rows:
            summary += f": {compact_json(rows[0])}" + (" …" if len(rows) > 1 else "")
        mismatch = _judge(args.expect, rows) if args.expect is not None else None
        if mismatch:
            summary = f"{summary} — expected {mismatch}"
        summary = one_line(self.scrub(summary))
        if mismatch and raise_on_mismatch:
            raise PermanentError(summary)
        return Result(changed=False, ok=mismatch is None, summary=summary, output=output)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.dispose)


class _Cancelled(Exception):
    """Raised inside the worker thread once the caller has timed out."""


class _RowcountMismatch(Exception):
    def __init__(self, index: int, expected: int, got: int) -> None:
        super().__init__(index, expected, got)
        self.index, self.expected, self.got = index, expected, got


def _rows(conn: sa.Connection, query: Query | QueryArgs, limit: int) -> list[dict[str, Any]]:
    result = conn.execute(sa.text(query.sql), query.params)
    if not result.returns_rows:
        return []
    return [json_safe(dict(row)) for row in result.mappings().fetchmany(limit)]


def _judge(expect: QueryExpect, rows: list[dict[str, Any]]) -> str | None:
    if "count" in expect.model_fields_set:
        return None if len(rows) == expect.count else f"{expect.count} row(s), got {len(rows)}"
    if "rows" in expect.model_fields_set:
        return json_mismatch(expect.rows, rows, "rows")
    if len(rows) != 1 or len(rows[0]) < 1:
        return f"one row for a scalar, got {len(rows)}"
    value = next(iter(rows[0].values()))
    return json_mismatch(json_safe(expect.scalar), value, "scalar")
