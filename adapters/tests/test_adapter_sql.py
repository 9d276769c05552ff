"""The sql adapter against real SQLite files."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cutbook.errors import PermanentError, TransientError
from cutbook.testing import AdapterContract, make_call, make_context, run
from cutbook_adapters.sql import SqlAdapter, SqlConfig


def make_db(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(
            """
            CREATE TABLE offices (code TEXT PRIMARY KEY, name TEXT NOT NULL, budget REAL);
            INSERT INTO offices VALUES ('13A2', 'Old Hanoi', 1.5), ('14B3', 'Hoa Binh', NULL);
            """
        )
    return path


def dump(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT * FROM offices ORDER BY code").fetchall()


def adapter(db: Path, secrets: Iterable[str] = ()) -> SqlAdapter:
    return SqlAdapter(SqlConfig(url=f"sqlite:///{db}"), make_context(secrets))


async def act(a: SqlAdapter, action: str, args: Mapping[str, Any], **kw: Any) -> Any:
    phase = kw.pop("phase", "apply")
    try:
        return await getattr(a, phase)(make_call(SqlAdapter, action, args, phase=phase, **kw))
    finally:
        await a.aclose()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_db(tmp_path / "estate.db")


RENAME = {
    "sql": "UPDATE offices SET name = :name WHERE code = :code",
    "params": {"name": "Hanoi", "code": "13A2"},
}


class TestSqlContract(AdapterContract):
    adapter_class = SqlAdapter
    apply_is_safe = True

    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.db = make_db(tmp_path / "contract.db")

    def target_options(self) -> Mapping[str, Any]:
        return {"url": f"sqlite:///{self.db}"}

    def snapshot(self) -> Any:
        return dump(self.db)

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        yield "execute", {**RENAME, "capture": {"sql": "SELECT * FROM offices"}}
        yield "query", {"sql": "SELECT name FROM offices WHERE code = :c", "params": {"c": "14B3"}}


def test_execute_is_one_transaction_with_rowcounts_and_capture(db: Path) -> None:
    args = {
        "statements": [
            {**RENAME, "expect_rowcount": 1},
            {"sql": "UPDATE offices SET budget = :b WHERE budget IS NULL", "params": {"b": 2}},
        ],
        "capture": {
            "sql": "SELECT code, name FROM offices WHERE code = :c",
            "params": {"c": "13A2"},
        },
    }
    result = run(act(adapter(db), "execute", args))
    assert result.changed and result.output["rowcounts"] == [1, 1]
    assert result.output["before"] == [{"code": "13A2", "name": "Old Hanoi"}]
    assert dump(db) == [("13A2", "Hanoi", 1.5), ("14B3", "Hoa Binh", 2.0)]
    again = run(act(adapter(db), "execute", {**RENAME}))
    assert again.output["rowcounts"] == [1]


def test_failure_rolls_everything_back(db: Path) -> None:
    args = {
        "statements": [
            RENAME,
            {"sql": "INSERT INTO offices VALUES (:c, :n, NULL)", "params": {"c": "14B3", "n": "x"}},
        ]
    }
    with pytest.raises(PermanentError, match="UNIQUE constraint failed"):
        run(act(adapter(db), "execute", args))
    assert dump(db)[0] == ("13A2", "Old Hanoi", 1.5)


def test_rowcount_expectation_rolls_back(db: Path) -> None:
    args = {**RENAME, "params": {"name": "X", "code": "NOPE"}, "expect_rowcount": 1}
    with pytest.raises(PermanentError, match="changed 0 row"):
        run(act(adapter(db), "execute", args))


def test_params_are_bound_not_interpolated(db: Path) -> None:
    evil = "x'); DROP TABLE offices; --"
    run(act(adapter(db), "execute", {**RENAME, "params": {"name": evil, "code": "13A2"}}))
    assert dump(db)[0][1] == evil


def test_query_expectations(db: Path) -> None:
    q = {"sql": "SELECT code, budget FROM offices ORDER BY code"}
    rows = [{"code": "13A2", "budget": 1.5}, {"code": "14B3", "budget": None}]
    assert run(act(adapter(db), "query", {**q, "expect": {"rows": rows}})).ok
    assert run(act(adapter(db), "query", {**q, "expect": {"count": 2}})).ok
    scalar = {"sql": "SELECT COUNT(*) FROM offices", "expect": {"scalar": 2}}
    assert run(act(adapter(db), "query", scalar, phase="verify")).ok
    bad = run(act(adapter(db), "query", {**q, "expect": {"count": 3}}, phase="verify"))
    assert not bad.ok and "3 row(s), got 2" in bad.summary
    with pytest.raises(PermanentError):
        run(act(adapter(db), "query", {**q, "expect": {"count": 3}}))


def test_check_runs_capture_but_changes_nothing(db: Path) -> None:
    args = {**RENAME, "capture": {"sql": "SELECT * FROM offices"}}
    result = run(act(adapter(db), "execute", args, phase="check"))
    assert result.changed and "capture finds 2 row(s)" in result.summary
    assert dump(db)[0][1] == "Old Hanoi"


def test_errors_classified(db: Path, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="no such table"):
        run(act(adapter(db), "query", {"sql": "SELECT * FROM nope"}))
    with pytest.raises(PermanentError, match="syntax error"):
        run(act(adapter(db), "execute", {"sql": "UPDAT offices"}))
    missing_dir = tmp_path / "missing" / "x.db"
    with pytest.raises(PermanentError, match="unable to open"):
        run(act(adapter(missing_dir), "query", {"sql": "SELECT 1"}))


def test_locked_database_is_transient_and_timeout_interrupts(db: Path) -> None:
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        a = SqlAdapter(SqlConfig(url=f"sqlite:///{db}?timeout=0.2"), make_context())
        with pytest.raises(TransientError, match="database is locked"):
            run(act(a, "execute", RENAME))
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"timed out after 0\.3s|database is locked"):
            run(act(adapter(db), "execute", RENAME, timeout=0.3))
        assert time.monotonic() - started < 3
    finally:
        holder.rollback()
        holder.close()
    assert dump(db)[0][1] == "Old Hanoi"


def test_timeout_interrupts_a_long_statement(db: Path) -> None:
    slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT COUNT(*) FROM n"
    started = time.monotonic()
    with pytest.raises(TransientError, match="interrupted"):
        run(act(adapter(db), "query", {"sql": slow}, timeout=0.3))
    assert time.monotonic() - started < 3
    assert threading.active_count() < 20


def test_password_in_url_never_reported(tmp_path: Path) -> None:
    a = SqlAdapter(SqlConfig(url="postgresql+nosuchdriver://u:pw-s3cret@h/db"), make_context())
    with pytest.raises(PermanentError) as info:
        run(act(a, "query", {"sql": "SELECT 1"}))
    assert "pw-s3cret" not in str(info.value)


def test_models_are_strict() -> None:
    ex = SqlAdapter.actions["execute"].args
    for bad in (
        {},
        {"sql": "x", "statements": [{"sql": "y"}]},
        {"statements": [{"sql": "y"}], "params": {"a": 1}},
        {"statements": []},
    ):
        with pytest.raises(ValidationError):
            ex.model_validate(bad)
    q = SqlAdapter.actions["query"].args
    with pytest.raises(ValidationError):
        q.model_validate({"sql": "x", "expect": {"count": 1, "scalar": 1}})
    with pytest.raises(ValidationError):
        q.model_validate({"sql": "x", "expect": {}})
    assert q.model_validate({"sql": "x", "expect": {"scalar": None}})
    schema = ex.model_json_schema()
    assert "x-cutbook-no-templates" in str(schema)
