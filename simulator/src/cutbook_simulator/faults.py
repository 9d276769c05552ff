"""Fault injection: what can go wrong on a cutover night, on demand and reproducibly.

Rules are plain dicts (from YAML, JSON or a named profile) turned into
:class:`FaultRule`. The middleware asks :meth:`FaultEngine.decide` *before* a
request reaches its handler, so a faulted request never changes the estate and
never consumes an idempotency key.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutbook_simulator.errors import SimulatorUsageError

__all__ = [
    "PROFILES",
    "Decision",
    "FaultConfig",
    "FaultEngine",
    "FaultRule",
    "load_faults",
    "parse_rule",
]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_METHOD_ALIASES = {"MUTATING": MUTATING, "*": None, "ANY": None}
_KNOWN_KEYS = frozenset(
    {
        "name",
        "method",
        "path",
        "error_rate",
        "status",
        "retry_after",
        "latency",
        "outage",
        "nth",
        "hang",
        "hang_s",
        "permanent",
        "times",
    }
)
DEFAULT_HANG_S = 300.0


@dataclass(frozen=True)
class Outage:
    start: float
    end: float


@dataclass
class FaultRule:
    """One rule; counters are live and shown by ``GET /admin/faults``."""

    name: str
    spec: dict[str, Any]
    methods: frozenset[str] | None = None
    path: str = "*"
    error_rate: float = 0.0
    status: tuple[int, ...] = ()
    retry_after: int | None = None
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    spike_p: float = 0.0
    spike_ms: float = 0.0
    outages: tuple[Outage, ...] = ()
    nth: frozenset[int] = frozenset()
    hang: float = 0.0
    hang_s: float = DEFAULT_HANG_S
    permanent: float = 0.0
    times: int | None = None
    matched: int = 0
    injected: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return fnmatch.fnmatchcase(path, self.path)

    def statuses(self, default: int) -> tuple[int, ...]:
        return self.status or (default,)

    def spent(self) -> bool:
        return self.times is not None and self.injected >= self.times

    def describe(self) -> dict[str, Any]:
        return {**self.spec, "name": self.name, "matched": self.matched, "injected": self.injected}


@dataclass
class FaultConfig:
    """A named set of rules plus the seed that makes them reproducible."""

    name: str = "calm"
    seed: int | None = None
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Decision:
    """What to do to one request before (or instead of) handling it."""

    delay_s: float = 0.0
    hang_s: float | None = None
    status: int | None = None
    retry_after: int | None = None
    rule: str | None = None
    reason: str = ""


def _number(value: Any, what: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, not {value!r}")
    number = float(value)
    if lo is not None and number < lo:
        raise ValueError(f"{what} must be at least {lo:g}, not {value!r}")
    if hi is not None and number > hi:
        raise ValueError(f"{what} must be at most {hi:g}, not {value!r}")
    return number


def _probability(value: Any, what: str) -> float:
    if value is True:
        return 1.0
    if value is False or value is None:
        return 0.0
    return _number(value, what, 0.0, 1.0)


def _statuses(value: Any, what: str) -> tuple[int, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 400 <= item <= 599:
            raise ValueError(f"{what} must be an HTTP error status 400..599, not {item!r}")
        out.append(item)
    if not out:
        raise ValueError(f"{what} must not be empty")
    return tuple(out)


def _moment(value: Any, what: str, now: float) -> float:
    """Seconds from now (a number) or an absolute ISO time (naive means UTC)."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{what} must be seconds from now or an ISO time, not {value!r}"
            ) from None
    else:
        return now + _number(value, what)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _outages(value: Any, now: float) -> tuple[Outage, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[Outage] = []
    for i, item in enumerate(items):
        what = f"outage[{i}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{what} must be {{start, end}} or {{start, duration}}")
        extra = set(item) - {"start", "end", "duration"}
        if extra:
            raise ValueError(f"{what} has unknown key(s) {', '.join(sorted(map(str, extra)))}")
        start = _moment(item.get("start", 0), f"{what}.start", now)
        if "end" in item:
            end = _moment(item["end"], f"{what}.end", now)
        elif "duration" in item:
            end = start + _number(item["duration"], f"{what}.duration", 0.0)
        else:
            raise ValueError(f"{what} needs end or duration")
        if end <= start:
            raise ValueError(f"{what} ends before it starts")
        out.append(Outage(start, end))
    return tuple(out)


def _methods(value: Any) -> frozenset[str] | None:
    names = value.split("|") if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"method must be a name, a|b|c or a list, not {value!r}")
    out: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"method must be a string, not {name!r}")
        key = name.strip().upper()
        if key in _METHOD_ALIASES:
            alias = _METHOD_ALIASES[key]
            if alias is None:
                return None
            out |= alias
        else:
            out.add(key)
    return frozenset(out)


def parse_rule(raw: Mapping[str, Any], *, index: int = 0, now: float | None = None) -> FaultRule:
    """Validate one rule; ValueError with a one-line message when it is wrong."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"rule {index + 1} must be a mapping, not {type(raw).__name__}")
    unknown = set(raw) - _KNOWN_KEYS
    name = str(raw.get("name") or f"rule-{index + 1}")
    if unknown:
        raise ValueError(
            f"fault rule {name!r}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            f"known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    now = time.time() if now is None else now
    try:
        rule = FaultRule(name=name, spec=dict(raw))
        rule.methods = _methods(raw.get("method", "*"))
        path = raw.get("path", "*")
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a glob string, not {path!r}")
        rule.path = path
        rule.error_rate = _probability(raw.get("error_rate"), "error_rate")
        if "status" in raw:
            rule.status = _statuses(raw["status"], "status")
        if raw.get("retry_after") is not None:
            rule.retry_after = int(_number(raw["retry_after"], "retry_after", 0))
        latency = raw.get("latency")
        if latency is not None:
            if not isinstance(latency, Mapping):
                raise ValueError("latency must be {min_ms, max_ms} and/or {p, ms}")
            extra = set(latency) - {"min_ms", "max_ms", "p", "ms"}
            if extra:
                raise ValueError(f"latency has unknown key(s) {', '.join(sorted(extra))}")
            lo = _number(latency.get("min_ms", 0), "latency.min_ms", 0)
            hi = _number(latency.get("max_ms", lo), "latency.max_ms", lo)
            rule.latency_min_ms, rule.latency_max_ms = lo, hi
            if "p" in latency or "ms" in latency:
                rule.spike_p = _probability(latency.get("p", 1.0), "latency.p")
                rule.spike_ms = _number(latency.get("ms", 0), "latency.ms", 0)
        if raw.get("outage") is not None:
            rule.outages = _outages(raw["outage"], now)
        if raw.get("nth") is not None:
            nth = raw["nth"] if isinstance(raw["nth"], list) else [raw["nth"]]
            rule.nth = frozenset(int(_number(n, "nth", 1)) for n in nth)
        rule.hang = _probability(raw.get("hang"), "hang")
        if raw.get("hang_s") is not None:
            rule.hang_s = _number(raw["hang_s"], "hang_s", 0)
        rule.permanent = _probability(raw.get("permanent"), "permanent")
        if raw.get("times") is not None:
            rule.times = int(_number(raw["times"], "times", 1))
    except ValueError as exc:
        raise ValueError(f"fault rule {name!r}: {exc}") from None
    return rule


_FLAKY: list[dict[str, Any]] = [
    {
        "name": "flaky-transient",
        "method": "MUTATING",
        "path": "*",
        "error_rate": 0.3,
        "status": [502, 503, 504],
    },
    {
        "name": "flaky-latency",
        "method": "*",
        "path": "*",
        "latency": {"min_ms": 1, "max_ms": 25, "p": 0.05, "ms": 400},
    },
]

_HOSTILE: list[dict[str, Any]] = [
    *_FLAKY,
    {
        "name": "hostile-reads",
        "method": "GET",
        "path": "*",
        "error_rate": 0.05,
        "status": 503,
        "retry_after": 1,
    },
    {
        "name": "hostile-permanent",
        "method": "MUTATING",
        "path": "/catalogue/offices/*",
        "permanent": 0.05,
        "status": [409, 422],
    },
    {"name": "hostile-hang", "method": "*", "path": "*", "hang": 0.01, "hang_s": 120},
]

PROFILES: dict[str, FaultConfig] = {
    "calm": FaultConfig("calm", None, []),
    "flaky": FaultConfig("flaky", 2025, _FLAKY),
    "hostile": FaultConfig("hostile", 2025, _HOSTILE),
}


def _config_from_document(doc: Any, source: str) -> FaultConfig:
    if isinstance(doc, list):
        doc = {"rules": doc}
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise SimulatorUsageError(f"{source}: expected a mapping with 'rules' or a list of rules")
    unknown = set(doc) - {"seed", "rules", "extends"}
    if unknown:
        raise SimulatorUsageError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
        )
    rules: list[dict[str, Any]] = []
    seed: int | None = None
    if doc.get("extends") is not None:
        base = PROFILES.get(str(doc["extends"]))
        if base is None:
            raise SimulatorUsageError(
                f"{source}: extends {doc['extends']!r}, not a profile ({', '.join(PROFILES)})"
            )
        rules += [dict(r) for r in base.rules]
        seed = base.seed
    raw_rules = doc.get("rules") or []
    if not isinstance(raw_rules, list):
        raise SimulatorUsageError(f"{source}: 'rules' must be a list")
    rules += raw_rules
    if doc.get("seed") is not None:
        if isinstance(doc["seed"], bool) or not isinstance(doc["seed"], int):
            raise SimulatorUsageError(f"{source}: seed must be an integer")
        seed = doc["seed"]
    for i, rule in enumerate(rules):
        try:
            parse_rule(rule, index=i)
        except ValueError as exc:
            raise SimulatorUsageError(f"{source}: {exc}") from None
    return FaultConfig(source, seed, rules)


def load_faults(spec: str | None, seed_random: int | None = None) -> FaultConfig:
    """A profile name or a YAML/JSON file path; SimulatorUsageError when neither works."""
    if spec is None or spec == "":
        config = FaultConfig("calm", None, [])
    elif spec in PROFILES:
        base = PROFILES[spec]
        config = FaultConfig(base.name, base.seed, [dict(r) for r in base.rules])
    else:
        path = Path(spec)
        if not path.is_file():
            raise SimulatorUsageError(
                f"--faults {spec!r} is neither a profile ({', '.join(PROFILES)}) nor a file"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SimulatorUsageError(f"cannot read faults file {spec}: {exc}") from None
        import yaml  # only needed for files; keeps startup lean

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
            raise SimulatorUsageError(f"faults file {spec} is not valid YAML: {first}") from None
        config = _config_from_document(doc, spec)
    if seed_random is not None:
        config.seed = seed_random
    return config


def _fraction(*parts: object) -> float:
    """A stable number in [0, 1) for the same inputs, across processes and restarts."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FaultEngine:
    """The live rule set. Thread-safe; counters reset with the rules."""

    def __init__(
        self, config: FaultConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._now = clock
        """The estate's time: outage windows follow a rehearsal's skipped minutes too."""
        self._lock = threading.Lock()
        self._initial = config or FaultConfig()
        self.rules: list[FaultRule] = []
        self.seed: int | None = None
        self.name = "calm"
        self._rng = random.Random()
        self.reset()

    def reset(self) -> None:
        """Back to the start-up configuration, with the random sequence restarted."""
        with self._lock:
            now = self._now()
            self.name = self._initial.name
            self.seed = self._initial.seed
            self._rng = random.Random(self.seed)
            self.rules = [
                parse_rule(raw, index=i, now=now) for i, raw in enumerate(self._initial.rules)
            ]

    def add(self, raws: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Append rules (all or none: one bad rule rejects the batch)."""
        now = self._now()
        with self._lock:
            start = len(self.rules)
            parsed = [parse_rule(raw, index=start + i, now=now) for i, raw in enumerate(raws)]
            self.rules.extend(parsed)
            return parsed

    def set_seed(self, seed: int | None) -> None:
        with self._lock:
            self.seed = seed
            self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self.rules = []

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "profile": self.name,
                "seed": self.seed,
                "rules": [r.describe() for r in self.rules],
            }

    def decide(self, method: str, path: str) -> Decision:
        """Roll the dice for one request; the first failing rule wins, delays add up."""
        method = method.upper()
        with self._lock:
            now = self._now()
            delay_ms = 0.0
            for rule in self.rules:
                if not rule.matches(method, path):
                    continue
                rule.matched += 1
                rng = self._rng
                roll_hang, roll_error, roll_spike = rng.random(), rng.random(), rng.random()
                delay_ms += self._latency(rule, roll_spike)
                if rule.spent():
                    continue
                failure = self._failure(rule, method, path, now, roll_hang, roll_error)
                if failure is not None:
                    rule.injected += 1
                    return Decision(
                        delay_s=delay_ms / 1000.0,
                        hang_s=failure.hang_s,
                        status=failure.status,
                        retry_after=failure.retry_after,
                        rule=rule.name,
                        reason=failure.reason,
                    )
            return Decision(delay_s=delay_ms / 1000.0)

    def _latency(self, rule: FaultRule, roll_spike: float) -> float:
        ms = 0.0
        if rule.latency_max_ms > 0:
            ms += self._rng.uniform(rule.latency_min_ms, rule.latency_max_ms)
        if rule.spike_ms > 0 and roll_spike < rule.spike_p:
            ms += rule.spike_ms
        return ms

    def _failure(
        self,
        rule: FaultRule,
        method: str,
        path: str,
        now: float,
        roll_hang: float,
        roll_error: float,
    ) -> Decision | None:
        for outage in rule.outages:
            if outage.start <= now < outage.end:
                remaining = max(1, int(outage.end - now + 0.999))
                return Decision(status=503, retry_after=remaining, reason="outage")
        if rule.matched in rule.nth:
            status = rule.statuses(500)[0]
            return Decision(status=status, retry_after=rule.retry_after, reason="nth call")
        if rule.permanent > 0 and _fraction(self.seed, rule.name, method, path) < rule.permanent:
            choices = rule.statuses(422)
            status = choices[int(_fraction("status", rule.name, method, path) * len(choices))]
            return Decision(status=status, reason="permanent")
        if rule.hang > 0 and roll_hang < rule.hang:
            return Decision(hang_s=rule.hang_s, status=504, reason="hang")
        if rule.error_rate > 0 and roll_error < rule.error_rate:
            choices = rule.statuses(503)
            status = choices[self._rng.randrange(len(choices))]
            return Decision(status=status, retry_after=rule.retry_after, reason="error rate")
        return None
