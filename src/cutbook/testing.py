"""Test helpers and the shared contract suite every adapter should pass.

Third-party adapter authors subclass :class:`AdapterContract` in a pytest
module::

    from cutbook.testing import AdapterContract
    from cutbook_echo import EchoAdapter

    class TestEchoContract(AdapterContract):
        adapter_class = EchoAdapter

        def sample_calls(self):
            yield "say", {"text": "hello"}

and get a dozen tests for free: declared actions and models, strict
arguments, a side-effect-free ``check``, JSON-serialisable results, secret
scrubbing, ``aclose`` idempotence and the ``Adapter`` protocol.

This module does not import pytest at import time; tests run their coroutines
with :func:`asyncio.run`, so no async pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from cutbook.adapter import (
    ActionSpec,
    Adapter,
    AdapterContext,
    BaseAdapter,
    Call,
    Confirm,
    Confirmation,
    Result,
)
from cutbook.errors import AdapterError

__all__ = [
    "CANARY",
    "AdapterContract",
    "FakeClock",
    "auto_confirm",
    "make_call",
    "make_context",
    "run",
]

T = TypeVar("T")

CANARY = "cutbook-canary-7Qx9s3"
"""A fake secret value; it must never appear in anything an adapter reports."""

MAX_OUTPUT_BYTES = 1024 * 1024
"""Outputs are journaled: one call should never produce more than this as JSON."""

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class FakeClock:
    """Virtual runbook time: ``sleep`` returns at once and moves ``now`` forward."""

    def __init__(self, start: datetime | None = None) -> None:
        self.start = start or datetime(2025, 3, 14, 23, 0, tzinfo=UTC)
        self.slept = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.slept)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.slept += max(0.0, seconds)
        await asyncio.sleep(0)


def auto_confirm(*, by: str = "tester", approved: bool = True, comment: str = "done") -> Confirm:
    """A ``call.confirm`` that answers at once and records what it was asked."""
    asked: list[tuple[str, str]] = []

    async def confirm(title: str, instructions: str) -> Confirmation:
        asked.append((title, instructions))
        return Confirmation(by=by, approved=approved, comment=comment, at=datetime.now(UTC))

    confirm.asked = asked  # type: ignore[attr-defined]
    return confirm


def make_context(
    secrets: Iterable[str] = (), clock: FakeClock | None = None, log: list[str] | None = None
) -> AdapterContext:
    """An AdapterContext for tests; log lines are appended to ``log`` if given."""
    sink = log if log is not None else []
    return AdapterContext(
        clock=clock or FakeClock(), log=sink.append, secret_values=frozenset(secrets)
    )


def make_call(
    adapter_class: type[Any],
    action: str,
    args: Mapping[str, Any] | BaseModel,
    *,
    phase: str = "apply",
    prior: Result | None = None,
    clock: FakeClock | None = None,
    confirm: Confirm | None = None,
    timeout: float | None = None,
    step_id: str = "test-step",
    item_key: str | None = None,
    run_id: str = "test-run",
    idempotency_key: str | None = None,
    log: list[str] | None = None,
) -> Call:
    """A Call as the engine would build it, with ``args`` validated by the action's model."""
    spec: ActionSpec = adapter_class.actions[action]
    model = args if isinstance(args, BaseModel) else spec.args.model_validate(dict(args))
    sink = log if log is not None else []
    key = idempotency_key or f"{run_id}:{step_id}:{item_key or '-'}"
    return Call(
        action=action,
        args=model,
        run_id=run_id,
        step_id=step_id,
        item_key=item_key,
        idempotency_key=key,
        clock=clock or FakeClock(),
        log=sink.append,
        timeout=timeout,
        prior=prior,
        confirm=confirm,
        phase=phase,  # type: ignore[arg-type]
    )


def run(coro: Awaitable[T]) -> T:
    """Run one coroutine to completion on a fresh event loop."""

    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def _extra_forbidden(model: type[BaseModel]) -> bool:
    return model.model_config.get("extra") == "forbid"


def _inject(value: Any, canary: str) -> Iterator[Any]:
    """Variants of ``value`` with the canary woven into one string at a time."""
    if isinstance(value, str):
        yield f"{value}{canary}"
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            for variant in _inject(sub, canary):
                yield {**value, key: variant}
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            for variant in _inject(sub, canary):
                yield [*value[:i], variant, *value[i + 1 :]]


class AdapterContract:
    """Inherit this in a ``Test…`` class to run the adapter contract suite.

    Provide ``adapter_class`` and ``sample_calls()``; override
    ``target_options()`` (or ``make_adapter()``) when the adapter needs
    options, ``snapshot()`` to let the suite prove that ``check`` changes
    nothing, and set ``apply_is_safe = True`` when ``apply`` may run against
    the test environment (the suite then also checks ``apply``/``verify``
    results). Pytest fixtures work as usual: an ``autouse`` fixture in the
    subclass can start a server and set attributes before each test.
    """

    adapter_class: ClassVar[type[Any]]
    apply_is_safe: ClassVar[bool] = False
    uncovered_actions: ClassVar[frozenset[str]] = frozenset()
    """Actions the samples may leave out (say why in a comment)."""

    # -- hooks -------------------------------------------------------------------

    def sample_calls(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        """(action, args) pairs that are valid for this adapter."""
        raise NotImplementedError("yield (action, args) pairs from sample_calls()")

    def target_options(self) -> Mapping[str, Any]:
        """The ``targets.<name>`` mapping minus ``adapter``."""
        return {}

    def make_adapter(self, context: AdapterContext) -> Any:
        config = self.adapter_class.Config.model_validate(dict(self.target_options()))
        return self.adapter_class(config, context)

    def make_call(self, action: str, args: Mapping[str, Any], **kw: Any) -> Call:
        kw.setdefault("confirm", auto_confirm(comment=f"evidence {CANARY}"))
        kw.setdefault("timeout", 30.0)
        # Like the engine: distinct calls get distinct keys, a repeated call the same one.
        digest = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode())
        kw.setdefault("idempotency_key", f"contract:{action}:{digest.hexdigest()[:16]}")
        return make_call(self.adapter_class, action, args, **kw)

    def snapshot(self) -> Any:
        """Observable state of the system under test; None means "not observable"."""
        return None

    # -- helpers -----------------------------------------------------------------

    def _samples(self) -> list[tuple[str, dict[str, Any]]]:
        samples = [(action, dict(args)) for action, args in self.sample_calls()]
        assert samples, "sample_calls() yielded nothing"
        return samples

    def _assert_result(self, result: Any, where: str) -> None:
        assert isinstance(result, Result), f"{where} returned {type(result).__name__}, not Result"
        assert isinstance(result.summary, str), f"{where}: summary is not a str"
        try:
            text = json.dumps(dict(result.output), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{where}: output is not JSON-serialisable: {exc}") from None
        assert len(text.encode()) <= MAX_OUTPUT_BYTES, f"{where}: output is {len(text)} bytes"

    def _assert_no_canary(self, result: Result, where: str) -> None:
        blob = result.summary + json.dumps(dict(result.output), default=str)
        assert CANARY not in blob, f"{where} leaked a secret value: {blob[:300]}"

    # -- the contract ------------------------------------------------------------

    def test_declares_name_config_actions(self) -> None:
        cls = self.adapter_class
        assert isinstance(cls.name, str) and _NAME.match(cls.name), f"bad name {cls.name!r}"
        assert isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)
        assert isinstance(cls.actions, Mapping) and cls.actions, "declares no actions"
        for action, spec in cls.actions.items():
            assert _NAME.match(action), f"bad action name {action!r}"
            assert isinstance(spec, ActionSpec), f"{action}: not an ActionSpec"
            assert spec.description, f"{action}: give the ActionSpec a description"

    def test_models_forbid_unknown_keys_and_have_schemas(self) -> None:
        cls = self.adapter_class
        assert _extra_forbidden(cls.Config), "Config must forbid unknown options"
        cls.Config.model_json_schema()
        for action, spec in cls.actions.items():
            assert isinstance(spec.args, type) and issubclass(spec.args, BaseModel), action
            assert _extra_forbidden(spec.args), f"{action}: args must forbid unknown keys"
            spec.args.model_json_schema()

    def test_unknown_option_rejected(self) -> None:
        options = {**self.target_options(), "no_such_option_xyz": 1}
        try:
            self.adapter_class.Config.model_validate(options)
        except ValidationError:
            return
        raise AssertionError("an unknown target option was accepted")

    def test_samples_valid_and_cover_actions(self) -> None:
        seen = set()
        for action, args in self._samples():
            assert action in self.adapter_class.actions, f"sample uses unknown action {action!r}"
            self.adapter_class.actions[action].args.model_validate(args)
            seen.add(action)
        missing = set(self.adapter_class.actions) - seen - set(self.uncovered_actions)
        assert not missing, f"no sample call for: {sorted(missing)}"

    def test_unknown_arg_rejected(self) -> None:
        for action, args in self._samples():
            model = self.adapter_class.actions[action].args
            try:
                model.model_validate({**args, "no_such_arg_xyz": 1})
            except ValidationError:
                continue
            raise AssertionError(f"{action}: an unknown argument was accepted")

    def test_satisfies_protocol(self) -> None:
        async def go() -> None:
            adapter = self.make_adapter(make_context())
            try:
                assert isinstance(adapter, Adapter), "does not satisfy cutbook.adapter.Adapter"
            finally:
                await adapter.aclose()

        run(go())

    def test_check_changes_nothing(self) -> None:
        async def go() -> None:
            before = self.snapshot()
            adapter = self.make_adapter(make_context())
            try:
                for action, args in self._samples():
                    call = self.make_call(action, args, phase="check")
                    result = await adapter.check(call)
                    self._assert_result(result, f"check({action})")
            finally:
                await adapter.aclose()
            assert self.snapshot() == before, "check changed the system"

        run(go())

    def test_reversible_actions_implement_rollback(self) -> None:
        cls = self.adapter_class
        for action, spec in cls.actions.items():
            if spec.mutating and spec.reversible and issubclass(cls, BaseAdapter):
                assert cls.rollback is not BaseAdapter.rollback, (
                    f"{action} is declared reversible but rollback is BaseAdapter's refusal"
                )

    def test_secret_canary_never_reported(self) -> None:
        async def go() -> None:
            adapter = self.make_adapter(make_context(secrets=[CANARY]))
            try:
                for action, args in self._samples():
                    model = self.adapter_class.actions[action].args
                    for variant in _inject(args, CANARY):
                        try:
                            model.model_validate(variant)
                        except ValidationError:
                            continue
                        phases = ["check", "apply"] if self.apply_is_safe else ["check"]
                        for phase in phases:
                            call = self.make_call(action, variant, phase=phase)
                            where = f"{phase}({action})"
                            try:
                                result = await getattr(adapter, phase)(call)
                            except AdapterError as exc:
                                # Failing is fine (a canary can make args unusable);
                                # leaking through the error message is not.
                                assert CANARY not in str(exc), f"{where} leaked: {exc}"
                                continue
                            self._assert_no_canary(result, where)
            finally:
                await adapter.aclose()

        run(go())

    def test_apply_and_verify_results(self) -> None:
        if not self.apply_is_safe:
            import pytest

            pytest.skip("apply_is_safe is False")

        async def go() -> None:
            adapter = self.make_adapter(make_context())
            applied: list[tuple[str, dict[str, Any], Result]] = []
            try:
                for action, args in self._samples():
                    result = await adapter.apply(self.make_call(action, args))
                    self._assert_result(result, f"apply({action})")
                    verified = await adapter.verify(
                        self.make_call(action, args, phase="verify", prior=result)
                    )
                    self._assert_result(verified, f"verify({action})")
                    assert verified.ok, f"verify({action}) after apply: {verified.summary}"
                    applied.append((action, args, result))
                # Like a failed run: undo the reversible steps, newest first.
                for action, args, result in reversed(applied):
                    spec = self.adapter_class.actions[action]
                    if spec.mutating and spec.reversible:
                        undone = await adapter.rollback(
                            self.make_call(action, args, phase="rollback", prior=result)
                        )
                        self._assert_result(undone, f"rollback({action})")
            finally:
                await adapter.aclose()

        run(go())

    def test_aclose_idempotent(self) -> None:
        async def go() -> None:
            unused = self.make_adapter(make_context())
            await unused.aclose()
            await unused.aclose()
            used = self.make_adapter(make_context())
            action, args = self._samples()[0]
            await used.check(self.make_call(action, args, phase="check"))
            await used.aclose()
            await used.aclose()

        run(go())
