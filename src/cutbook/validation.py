"""Turn a runbook file into a checked :class:`LoadedRunbook`, or every reason it cannot be.

All problems are collected and reported at once, each at the file, line and
column of the YAML node that caused it, so an operations lead fixes a runbook
in one pass. Nothing here touches a target system; the engine only ever
receives a runbook that came through :func:`load`.
"""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ValidationError

from cutbook import datafiles, registry, templating, yamlsafe
from cutbook.adapter import ActionSpec, Adapter
from cutbook.diagnostics import Diagnostic, Location
from cutbook.errors import RegistryError, RunbookInvalid, RunbookLoadError, UsageError
from cutbook.model import API_VERSION, Runbook, Step, TimeError, parse_time

PathKey = yamlsafe.PathKey
_JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop"})


@dataclass
class LoadedRunbook:
    """A runbook that passed validation, with everything needed to plan or run it."""

    path: Path
    display: str
    text: str
    sha256: str
    document: yamlsafe.Document
    runbook: Runbook
    data: dict[str, datafiles.Records]
    vars: dict[str, Any]
    item_counts: dict[str, int]
    adapters: dict[str, type[Adapter]] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)

    def static_context(self, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        rb = self.runbook
        return {
            "vars": self.vars,
            "data": self.data,
            "secrets": dict(secrets) if secrets is not None else _secret_placeholders(rb.secrets),
            "runbook": {
                "name": rb.name,
                "window": {"start": rb.window_start, "end": rb.window_end},
                "timezone": rb.timezone,
            },
        }

    def action_spec(self, target: str, action: str) -> ActionSpec:
        return self.adapters[target].actions[action]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``--var key=value`` pairs; values read as YAML scalars (so 3 is a number)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--var {pair!r}: write --var name=value")
        try:
            value = yamlsafe.load_text(raw, "--var").data if raw.strip() else ""
        except RunbookLoadError:
            value = raw
        result[key.strip()] = value if not isinstance(value, dict | list) else raw
    return result


def load(
    path: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    strict: bool = False,
    display: str | None = None,
) -> LoadedRunbook:
    """Load and check ``path``; raise RunbookInvalid carrying every diagnostic."""
    name = display or _display(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise RunbookInvalid([Diagnostic(Location(name), "no such file")]) from None
    except IsADirectoryError:
        raise RunbookInvalid(
            [Diagnostic(Location(name), "is a directory, not a runbook")]
        ) from None
    except OSError as exc:
        raise RunbookInvalid([Diagnostic(Location(name), f"cannot read: {exc.strerror}")]) from None
    try:
        doc = yamlsafe.load_file(path, display=name)
    except RunbookLoadError as exc:
        raise RunbookInvalid([exc.diagnostic]) from None
    checker = _Checker(path, name, doc, dict(overrides or {}))
    loaded = checker.run()
    errors = [d for d in checker.diags if d.severity == "error"]
    warnings = [d for d in checker.diags if d.severity == "warning"]
    if strict:
        errors += [w.as_error() for w in warnings]
        warnings = []
    if errors or loaded is None:
        raise RunbookInvalid(sorted(errors, key=lambda d: (d.location.line, d.location.col)))
    loaded.text = raw_bytes.decode("utf-8")
    loaded.sha256 = hashlib.sha256(raw_bytes).hexdigest()
    loaded.warnings = warnings
    return loaded


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _secret_placeholders(names: Iterable[str]) -> dict[str, str]:
    return {n: f"<secret {n}>" for n in names}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _plural(items: Iterable[str]) -> str:
    listed = sorted(items)
    return ", ".join(listed) if listed else "none"


class _Checker:
    def __init__(self, path: Path, name: str, doc: yamlsafe.Document, overrides: dict[str, Any]):
        self.path = path
        self.name = name
        self.doc = doc
        self.overrides = overrides
        self.diags: list[Diagnostic] = []

    # -- reporting ---------------------------------------------------------
    def err(self, path: PathKey, message: str, *, key: bool = False) -> None:
        self.diags.append(Diagnostic(self.doc.locate(path, key=key), message))

    def warn(self, path: PathKey, message: str) -> None:
        self.diags.append(Diagnostic(self.doc.locate(path), message, "warning"))

    # -- the whole pass ----------------------------------------------------
    def run(self) -> LoadedRunbook | None:
        raw = self.doc.data
        if not isinstance(raw, dict):
            what = "the file is empty" if raw is None else f"the file holds {_kind(raw)}"
            self.err((), f"{what}; a runbook is a mapping with apiVersion, name, window and steps")
            return None
        if raw.get("apiVersion") not in (None, API_VERSION):
            self.err(
                ("apiVersion",),
                f"unknown apiVersion {raw.get('apiVersion')!r}; this cutbook reads {API_VERSION}",
            )
            return None
        steps = self._validate_steps(raw)
        head = {k: v for k, v in raw.items() if k != "steps"}
        if "steps" in raw:
            # Step errors were reported above; a stand-in keeps the model from
            # reporting them again (as a missing id) when no step was valid.
            head["steps"] = [s for _, s in steps] or [Step(id="placeholder")]
        rb = self._validate_model(Runbook, head, ())
        if rb is None:
            return None
        if not steps:
            return None
        rb.steps = [s for _, s in steps]
        self.orig = [i for i, _ in steps]
        self.index = {s.id: i for i, s in reversed(steps)}
        self.raw_ids = {
            s.get("id") for s in raw.get("steps") or [] if isinstance(s, dict) and "id" in s
        }
        if not self._check_time(rb):
            return None
        vars_ = self._check_vars(rb)
        data = self._check_data(rb)
        loaded = LoadedRunbook(
            path=self.path,
            display=self.name,
            text="",
            sha256="",
            document=self.doc,
            runbook=rb,
            data=data,
            vars=vars_,
            item_counts={},
        )
        self._check_ids_and_deps(rb)
        cyclic = self._check_cycles(rb)
        ancestors = {} if cyclic else self._ancestors(rb)
        self._check_at(rb)
        self._check_targets(rb, loaded)
        for step in rb.steps:
            self._check_step(rb, step, loaded, ancestors)
        self._check_policies(rb, loaded, ancestors)
        return loaded

    # -- shapes ------------------------------------------------------------
    def _validate_steps(self, raw: dict[str, Any]) -> list[tuple[int, Step]]:
        items = raw.get("steps")
        if items is None:
            if "steps" in raw:
                self.err(("steps",), "a runbook needs at least one step", key=True)
            return []
        if not isinstance(items, list):
            self.err(("steps",), "steps must be a list of steps")
            return []
        if not items:
            self.err(("steps",), "a runbook needs at least one step")
        good = []
        for i, item in enumerate(items):
            step = self._validate_model(Step, item, ("steps", i))
            if step is not None:
                good.append((i, step))
        return good

    def _validate_model(self, model: type[BaseModel], value: Any, base: PathKey) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            self._pydantic_errors(exc, model, base, value)
            return None

    def _pydantic_errors(
        self, exc: ValidationError, model: type[BaseModel], base: PathKey, value: Any
    ) -> None:
        seen: set[PathKey] = set()
        for e in _merge_unions(exc):
            loc = tuple(e["loc"])
            path = (*base, *loc)
            anchor = self._existing(path)
            if anchor in seen:
                continue
            seen.add(anchor)
            where = self._context(path)
            kind = e["type"]
            last = loc[-1] if loc else ""
            if kind == "extra_forbidden":
                fields = _field_names(_model_at(model, loc[:-1]))
                msg = f"unknown key {last!r}{where}{did_you_mean(str(last), fields)}"
                self.err(path, msg, key=True)
            elif kind == "missing":
                self.err(path[:-1], f"missing required key {last!r}{where}", key=True)
            elif kind == "literal_error":
                expected = e.get("ctx", {}).get("expected", "")
                choices = [
                    c.strip().strip("'") for c in str(expected).replace(" or ", ",").split(",")
                ]
                got = e.get("input")
                hint = did_you_mean(str(got), choices)
                self.err(path, f"{_label(loc)} must be one of {expected}; got {got!r}{hint}")
            elif kind == "string_pattern_mismatch" and last == "id":
                self.err(
                    path, f"step id {e['input']!r} must be lowercase letters, digits and dashes"
                )
            elif kind == "string_pattern_mismatch" and last == "name" and not base:
                self.err(
                    path,
                    f"runbook name {e['input']!r} must be lowercase letters, digits and dashes",
                )
            elif kind == "string_pattern_mismatch" and loc[:1] == ("secrets",) and not base:
                self.err(
                    path,
                    f"secret name {e['input']!r} must be letters, digits and underscores, "
                    "not starting with a digit (it is an environment variable name)",
                )
            else:
                self.err(path, f"{_label(loc)}{where}: {_humanize(e)}")

    def _existing(self, path: PathKey) -> PathKey:
        probe = path
        while probe and probe not in self.doc.positions and probe not in self.doc.key_positions:
            probe = probe[:-1]
        return path if path in self.doc.key_positions else probe

    def _context(self, path: PathKey) -> str:
        if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int):
            steps = self.doc.data.get("steps") if isinstance(self.doc.data, dict) else None
            if (
                isinstance(steps, list)
                and path[1] < len(steps)
                and isinstance(steps[path[1]], dict)
            ):
                sid = steps[path[1]].get("id")
                if isinstance(sid, str):
                    return f" in step {sid!r}"
            return f" in step #{path[1] + 1}"
        if path and path[0] == "targets" and len(path) > 1:
            return f" in target {path[1]!r}"
        return ""

    def step_path(self, step: Step, *rest: str | int) -> PathKey:
        return ("steps", self.index[step.id], *rest)

    # -- time --------------------------------------------------------------
    def _check_time(self, rb: Runbook) -> bool:
        try:
            zone = ZoneInfo(rb.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            import zoneinfo

            hint = did_you_mean(rb.timezone, zoneinfo.available_timezones())
            self.err(("timezone",), f"unknown time zone {rb.timezone!r}{hint}; use an IANA name")
            return False
        ok = True
        start = end = None
        try:
            start = parse_time(rb.window.start, zone)
        except TimeError as exc:
            self.err(("window", "start"), f"window start: {exc}")
            ok = False
        if start is not None:
            try:
                end = parse_time(rb.window.end, zone, after=start)
            except TimeError as exc:
                self.err(("window", "end"), f"window end: {exc}")
                ok = False
        if start and end and end <= start:
            self.err(("window", "end"), f"window ends ({_hm(end)}) before it starts ({_hm(start)})")
            ok = False
        return ok

    def _check_at(self, rb: Runbook) -> None:
        for step in rb.steps:
            if step.at is None:
                continue
            try:
                when = rb.resolve_at(step.at)
            except TimeError as exc:
                self.err(self.step_path(step, "at"), f"step {step.id!r}: {exc}")
                continue
            if not rb.window_start <= when < rb.window_end:
                self.err(
                    self.step_path(step, "at"),
                    f"step {step.id!r} at {_hm(when)} is outside the window "
                    f"{_hm(rb.window_start)} – {_hm(rb.window_end)}",
                )

    # -- inputs ------------------------------------------------------------
    def _check_vars(self, rb: Runbook) -> dict[str, Any]:
        merged = dict(rb.vars)
        for key, value in self.overrides.items():
            if key not in rb.vars:
                self.diags.append(
                    Diagnostic(
                        Location("--var"),
                        f"unknown variable {key!r}{did_you_mean(key, rb.vars)}; "
                        f"the runbook declares: {_plural(rb.vars)}",
                    )
                )
            merged[key] = value
        return merged

    def _check_data(self, rb: Runbook) -> dict[str, datafiles.Records]:
        loaded: dict[str, datafiles.Records] = {}
        base = self.path.parent
        for name, rel in rb.data.items():
            file = (base / rel).resolve()
            shown = _display(file)
            try:
                loaded[name] = datafiles.load(file, shown)
            except datafiles.DataFileError as exc:
                self.diags.append(datafiles.diagnostic(exc, self.doc.locate(("data", name)), name))
                loaded[name] = []
        first: dict[str, int] = {}
        for i, secret in enumerate(rb.secrets):
            if secret in first:
                line = self.doc.locate(("secrets", first[secret])).line
                self.err(
                    ("secrets", i), f"secret {secret!r} is listed twice (first at line {line})"
                )
            else:
                first[secret] = i
        return loaded

    # -- graph -------------------------------------------------------------
    def _check_ids_and_deps(self, rb: Runbook) -> None:
        first: dict[str, int] = {}
        for i, step in enumerate(rb.steps):
            if step.id in first:
                line = self.doc.locate(("steps", self.orig[first[step.id]], "id")).line
                self.err(
                    ("steps", self.orig[i], "id"),
                    f"duplicate step id {step.id!r} (first at line {line})",
                )
            else:
                first[step.id] = i
        ids = set(first) | {i for i in self.raw_ids if isinstance(i, str)}
        for step in rb.steps:
            for j, dep in enumerate(step.depends_on):
                path = self.step_path(step, "depends_on", j)
                if dep == step.id:
                    self.err(path, f"step {step.id!r} depends on itself")
                elif dep not in ids:
                    hint = did_you_mean(dep, ids)
                    self.err(path, f"step {step.id!r} depends on unknown step {dep!r}{hint}")
                elif step.depends_on.index(dep) != j:
                    self.err(path, f"step {step.id!r} lists {dep!r} twice in depends_on")

    def _check_cycles(self, rb: Runbook) -> bool:
        graph = {
            s.id: [d for d in s.depends_on if d in rb.steps_by_id and d != s.id] for s in rb.steps
        }
        state: dict[str, int] = {}
        for root in graph:
            if state.get(root):
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            trail: list[str] = []
            while stack:
                node, i = stack.pop()
                if i == 0:
                    state[node] = 1
                    trail.append(node)
                deps = graph[node]
                if i < len(deps):
                    stack.append((node, i + 1))
                    nxt = deps[i]
                    if state.get(nxt) == 1:
                        cycle = [*trail[trail.index(nxt) :], nxt]
                        where = self.step_path(rb.step(nxt), "depends_on")
                        self.err(where, "dependency cycle: " + " → ".join(reversed(cycle)))
                        return True
                    if not state.get(nxt):
                        stack.append((nxt, 0))
                else:
                    state[node] = 2
                    trail.pop()
        return False

    def _ancestors(self, rb: Runbook) -> dict[str, frozenset[str]]:
        memo: dict[str, frozenset[str]] = {}
        order = _topological(rb)
        for sid in order:
            acc: set[str] = set()
            for dep in rb.step(sid).depends_on:
                if dep in memo:
                    acc.add(dep)
                    acc |= memo[dep]
            memo[sid] = frozenset(acc)
        return memo

    # -- targets and adapters ---------------------------------------------
    def _check_targets(self, rb: Runbook, loaded: LoadedRunbook) -> None:
        known = set(registry.names())
        for tname, spec in rb.targets.items():
            tpath: PathKey = ("targets", tname)
            if spec.adapter not in known:
                hint = did_you_mean(spec.adapter, known)
                self.err(
                    (*tpath, "adapter"),
                    f"target {tname!r} uses unknown adapter {spec.adapter!r}{hint}; "
                    f"installed: {_plural(known)}",
                )
                continue
            try:
                cls = registry.load(spec.adapter)
            except RegistryError as exc:
                self.err((*tpath, "adapter"), f"target {tname!r}: {exc}")
                continue
            loaded.adapters[tname] = cls
            options = spec.options
            self._check_templates(options, tpath, loaded, step=None, ancestors=frozenset())
            self._check_args(cls.Config, options, tpath, loaded, f"options of target {tname!r}")

    def _check_step(
        self,
        rb: Runbook,
        step: Step,
        loaded: LoadedRunbook,
        ancestors: Mapping[str, frozenset[str]],
    ) -> None:
        sp = self.step_path(step)
        mine = ancestors.get(step.id, frozenset())
        if step.approval is not None:
            for key in ("target", "action"):
                if getattr(step, key) is not None:
                    self.err(
                        (*sp, key), f"step {step.id!r} is an approval gate: a gate has no {key}"
                    )
            if step.for_each is not None:
                self.err((*sp, "for_each"), f"approval gate {step.id!r} cannot fan out")
            return
        if step.target is None:
            if step.action is not None or step.with_:
                self.err((*sp, "action"), f"step {step.id!r} has an action but no target")
            return
        if step.target not in rb.targets:
            hint = did_you_mean(step.target, rb.targets)
            self.err((*sp, "target"), f"step {step.id!r} uses unknown target {step.target!r}{hint}")
            return
        cls = loaded.adapters.get(step.target)
        if cls is None:
            return  # the target's own error was reported
        if step.action is None:
            self.err(sp, f"step {step.id!r} needs an action ({_plural(cls.actions)})")
            return
        self._check_for_each(step, loaded, mine)
        # A step with a broken for_each still fans out: do not also call its use of
        # item or index an error.
        ctx_step = step
        self._check_call(
            ctx_step, step.target, step.action, step.with_, (*sp,), loaded, mine, "with"
        )
        if step.verify is not None:
            v = step.verify
            vtarget = v.target or step.target
            vaction = v.action or step.action
            args = dict(v.with_)
            vpath = (*sp, "verify")
            moved: dict[str, PathKey] = {}
            if v.expect is not None:
                args["expect"] = v.expect
                moved["expect"] = (*vpath, "expect")
            if v.action is None:
                self._ignored(step, vpath, "verify", v.target, v.with_, v.expect)
            elif self._known_target(rb, vtarget, (*vpath, "target"), step):
                self._check_call(
                    ctx_step, vtarget, vaction, args, vpath, loaded, mine, "with", moved, True
                )
                spec = loaded.adapters[vtarget].actions.get(vaction)
                if spec is not None and spec.mutating:
                    self.warn(
                        (*vpath, "action"),
                        f"step {step.id!r} verifies with {vaction!r}, which changes things; "
                        "verification should only read",
                    )
        if step.rollback is not None and step.rollback.action is not None:
            r = step.rollback
            rtarget = r.target or step.target
            rpath = (*sp, "rollback")
            if self._known_target(rb, rtarget, (*rpath, "target"), step):
                self._check_call(
                    ctx_step, rtarget, r.action, r.with_, rpath, loaded, mine, "with", {}, True
                )
        elif step.rollback is not None:
            self._ignored(
                step, (*sp, "rollback"), "rollback", step.rollback.target, step.rollback.with_, None
            )
            spec = cls.actions.get(step.action)
            if spec is not None and not spec.reversible:
                self.err(
                    (*sp, "rollback"),
                    f"{rb.targets[step.target].adapter} action {step.action!r} has no built-in "
                    "rollback: give rollback.action",
                )
        if step.item_key is not None:
            self._check_templates(step.item_key, (*sp, "item_key"), loaded, ctx_step, mine)

    def _ignored(
        self,
        step: Step,
        path: PathKey,
        block: str,
        target: str | None,
        args: Mapping[str, Any],
        expect: Any,
    ) -> None:
        """Keys of a verify or rollback without ``action`` that the engine would not use."""
        unused = [
            k
            for k, v in (("target", target), ("with", args or None), ("expect", expect))
            if v is not None
        ]
        if unused:
            keys = " and ".join(f"{block}.{k}" for k in unused)
            self.err(
                (*path, unused[0]),
                f"step {step.id!r}: {block} has no action, so the adapter's own {block} runs "
                f"with the step's own arguments and {keys} would be ignored; give {block}.action",
                key=True,
            )

    def _known_target(self, rb: Runbook, name: str, path: PathKey, step: Step) -> bool:
        if name in rb.targets:
            return True
        self.err(
            path, f"step {step.id!r} uses unknown target {name!r}{did_you_mean(name, rb.targets)}"
        )
        return False

    def _check_for_each(self, step: Step, loaded: LoadedRunbook, mine: frozenset[str]) -> bool:
        if step.for_each is None:
            return False
        path = self.step_path(step, "for_each")
        if isinstance(step.for_each, list):
            loaded.item_counts[step.id] = len(step.for_each)
            return True
        if not templating.is_template(step.for_each):
            self.err(
                path,
                f"step {step.id!r}: for_each is a list or a template such as "
                '"{{ data.offices }}"',
            )
            return False
        if not self._check_templates(
            step.for_each, path, loaded, step.model_copy(update={"for_each": None}), mine
        ):
            return False
        info = templating.analyze(step.for_each)
        if info.names & templating.RUNTIME_NAMES:
            return True
        try:
            value = templating.render(step.for_each, loaded.static_context())
        except templating.TemplateError as exc:
            self.err(path, f"step {step.id!r}: for_each: {exc}")
            return False
        if not isinstance(value, list):
            self.err(path, f"step {step.id!r}: for_each gives {_kind(value)}, not a list")
            return False
        loaded.item_counts[step.id] = len(value)
        return True

    def _check_call(
        self,
        step: Step,
        target: str,
        action: str | None,
        args: Mapping[str, Any],
        base: PathKey,
        loaded: LoadedRunbook,
        mine: frozenset[str],
        args_key: str,
        moved: Mapping[str, PathKey] | None = None,
        output_ok: bool = False,
    ) -> None:
        """Check one action call; ``moved`` says where arguments written outside ``with`` are."""
        moved = moved or {}
        cls = loaded.adapters.get(target)
        if cls is None or action is None:
            return
        adapter = loaded.runbook.targets[target].adapter
        spec = cls.actions.get(action)
        if spec is None:
            hint = did_you_mean(action, cls.actions)
            self.err(
                (*base, "action"),
                f"step {step.id!r}: adapter {adapter!r} has no action {action!r}{hint}; "
                f"it has: {_plural(cls.actions)}",
            )
            return
        plain = {k: v for k, v in args.items() if k not in moved}
        self._check_templates(plain, (*base, args_key), loaded, step, mine, output_ok)
        for key, where in moved.items():
            self._check_templates(args[key], where, loaded, step, mine, output_ok)
        self._check_args(
            spec.args,
            args,
            (*base, args_key),
            loaded,
            f"{adapter}.{action} in step {step.id!r}",
            moved,
        )

    def _check_args(
        self,
        model: type[BaseModel],
        args: Mapping[str, Any],
        base: PathKey,
        loaded: LoadedRunbook,
        what: str,
        moved: Mapping[str, PathKey] | None = None,
    ) -> None:
        """Validate arguments against an adapter's model, leaving run-time templates aside."""
        moved = moved or {}

        def at(loc: tuple[Any, ...]) -> PathKey:
            if loc and loc[0] in moved:
                return (*moved[loc[0]], *loc[1:])
            return (*base, *loc)

        dynamic: list[PathKey] = []
        probe = self._probe(args, (), loaded, dynamic)
        try:
            model.model_validate(probe)
        except ValidationError as exc:
            for e in _merge_unions(exc):
                loc = tuple(e["loc"])
                if any(loc[: len(d)] == d for d in dynamic):
                    continue
                path = at(loc)
                last = loc[-1] if loc else ""
                if e["type"] == "extra_forbidden":
                    fields = _field_names(_model_at(model, loc[:-1]))
                    self.err(
                        path,
                        f"unknown argument {last!r} for {what}{did_you_mean(str(last), fields)}",
                        key=True,
                    )
                elif e["type"] == "missing":
                    self.err(
                        at(loc[:-1]),
                        f"missing argument {last!r} for {what}",
                        key=True,
                    )
                elif not loc:  # a rule about the arguments together
                    self.err(base, f"{what}: {_humanize(e)}", key=True)
                else:
                    self.err(path, f"argument {_label(loc)} for {what}: {_humanize(e)}")

    def _probe(
        self, value: Any, path: PathKey, loaded: LoadedRunbook, dynamic: list[PathKey]
    ) -> Any:
        if templating.is_template(value):
            try:
                info = templating.analyze(value)
            except templating.TemplateProblem:
                dynamic.append(path)
                return value
            # Run-time names have no value yet, and a secret's value is unknown until the
            # run: its placeholder must not be judged (a webhook URL kept as a secret).
            if info.names & (templating.RUNTIME_NAMES | {"secrets"}) or info.unsafe:
                dynamic.append(path)
                return value
            try:
                return templating.render(value, loaded.static_context())
            except templating.TemplateError:
                dynamic.append(path)
                return value
        if isinstance(value, Mapping):
            return {k: self._probe(v, (*path, k), loaded, dynamic) for k, v in value.items()}
        if isinstance(value, list):
            return [self._probe(v, (*path, i), loaded, dynamic) for i, v in enumerate(value)]
        return value

    def _check_templates(
        self,
        value: Any,
        base: PathKey,
        loaded: LoadedRunbook,
        step: Step | None,
        ancestors: frozenset[str],
        output_ok: bool = False,
    ) -> bool:
        """Check templates; ``output`` (this step's own result) only in verify and rollback."""
        ok = True
        rb = loaded.runbook
        for rel, text in templating.walk_strings(value):
            path = (*base, *rel)
            try:
                info = templating.analyze(text)
            except templating.TemplateProblem as exc:
                self.err(path, str(exc))
                ok = False
                continue
            if info.unsafe:
                names = " and ".join(repr(a) for a in sorted(set(info.unsafe)))
                self.err(path, f"template uses {names}, which the sandbox forbids")
                ok = False
            for name in sorted(info.names - _JINJA_GLOBALS):
                if name not in templating.ALL_NAMES:
                    hint = did_you_mean(name, templating.ALL_NAMES)
                    self.err(path, f"undefined name {name!r} in template{hint}")
                    ok = False
                elif step is None and name in templating.RUNTIME_NAMES:
                    self.err(
                        path,
                        f"{name!r} is not available here: targets are set up before any step runs",
                    )
                    ok = False
                elif name in ("item", "index") and step is not None and step.for_each is None:
                    self.err(path, f"step {step.id!r} uses {name!r} but has no for_each")
                    ok = False
                elif name == "output" and step is not None and not output_ok:
                    self.err(
                        path,
                        f"step {step.id!r} uses 'output' here, but only its verify and rollback "
                        "see it (the result of the step's own action); use steps['<id>'].output "
                        "for an earlier step",
                    )
                    ok = False
            refs = info.refs
            for key in sorted(refs.get("vars", set()) - set(loaded.vars)):
                self.err(path, f"undefined variable vars.{key}{did_you_mean(key, loaded.vars)}")
                ok = False
            for key in sorted(refs.get("data", set()) - set(rb.data)):
                self.err(path, f"undefined data set data.{key}{did_you_mean(key, rb.data)}")
                ok = False
            for key in sorted(refs.get("secrets", set()) - set(rb.secrets)):
                self.err(
                    path,
                    f"secret {key!r} is not declared under secrets:{did_you_mean(key, rb.secrets)}",
                )
                ok = False
            if step is not None:
                for key in sorted(refs.get("steps", set())):
                    if key not in rb.steps_by_id:
                        self.err(
                            path, f"unknown step steps[{key!r}]{did_you_mean(key, rb.steps_by_id)}"
                        )
                        ok = False
                    elif key not in ancestors:
                        self.err(
                            path,
                            f"step {step.id!r} uses the output of {key!r} but does not "
                            f"depend on it; add {key!r} to depends_on",
                        )
                        ok = False
        return ok

    # -- policy warnings ---------------------------------------------------
    def _check_policies(
        self, rb: Runbook, loaded: LoadedRunbook, ancestors: Mapping[str, frozenset[str]]
    ) -> None:
        gates = [s for s in rb.steps if s.approval is not None]
        last_gate = gates[-1] if gates else None
        for step in rb.steps:
            if step.target is None or step.action is None or step.target not in loaded.adapters:
                continue
            spec = loaded.adapters[step.target].actions.get(step.action)
            if spec is None:
                continue
            if (
                spec.mutating
                and step.rollback is None
                and not step.irreversible
                and not spec.reversible
            ):
                self.warn(
                    self.step_path(step),
                    f"step {step.id!r} changes things ({rb.targets[step.target].adapter} "
                    f"{step.action}) but has neither rollback nor irreversible: true",
                )
            if (
                step.irreversible
                and last_gate is not None
                and step.id != last_gate.id
                and last_gate.id not in ancestors.get(step.id, frozenset())
                and not step.always
            ):
                self.warn(
                    self.step_path(step, "irreversible"),
                    f"irreversible step {step.id!r} can run before the last go/no-go gate "
                    f"{last_gate.id!r}; make it depend on the gate",
                )


def _topological(rb: Runbook) -> list[str]:
    indegree = {s.id: 0 for s in rb.steps}
    children: dict[str, list[str]] = {s.id: [] for s in rb.steps}
    for s in rb.steps:
        for d in s.depends_on:
            if d in indegree and d != s.id:
                indegree[s.id] += 1
                children[d].append(s.id)
    ready = [s.id for s in rb.steps if indegree[s.id] == 0]
    order: list[str] = []
    while ready:
        sid = ready.pop(0)
        order.append(sid)
        for c in children[sid]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    return order


def _kind(value: Any) -> str:
    """What a value is, in words an operations lead uses."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value!r})".lower()
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"text ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_EXPECTED = {
    "list_type": "a list",
    "dict_type": "a mapping",
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
}


def _merge_unions(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors with union branches folded into one error per value.

    A value that fits no branch of ``bool | str`` gets one error per branch, at
    locations tagged with the branch (``verify_tls.bool``, ``verify_tls.str``).
    When every branch failed on type, say so once (``must be true or false, or
    text``); when a branch got further (right type, wrong value), its error is
    the one that explains the problem.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in exc.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not _is_union_tag(p))
        groups.setdefault(loc, []).append({**e, "loc": loc})
    merged: list[dict[str, Any]] = []
    for loc, errs in groups.items():
        specific = [e for e in errs if e["type"] not in _EXPECTED]
        if specific or len(errs) == 1:
            merged.extend(specific or errs)
            continue
        wanted = list(dict.fromkeys(_EXPECTED[e["type"]] for e in errs))
        merged.append(
            {
                "type": "union",
                "loc": loc,
                "input": errs[0].get("input"),
                "ctx": {"expected": ", or ".join(wanted)},
                "msg": "",
            }
        )
    return merged


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _UNION_TAGS)


def _humanize(error: Mapping[str, Any]) -> str:
    """Pydantic's message for one error, in plain words where it matters."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = error.get("input")
    if kind == "union":
        return f"must be {ctx['expected']}; got {_kind(got)}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}; got {_kind(got)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}; got {got!r}"
    if kind == "greater_than":
        return f"must be more than {ctx.get('gt')}; got {got!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx.get('le')}; got {got!r}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}; got {got!r}"
    if kind == "too_short" and "min_length" in ctx:
        n = ctx["min_length"]
        return f"needs at least {n} item{'s' if n != 1 else ''}"
    if kind == "too_long" and "max_length" in ctx:
        return f"takes at most {ctx['max_length']} items"
    return str(error["msg"]).removeprefix("Value error, ")


def _hm(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M %z")


def _label(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not _is_union_tag(p)]
    return ".".join(parts) if parts else "value"


_UNION_TAGS = {"str", "list", "int", "float", "bool", "dict", "function-after", "function-before"}


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow ``loc`` through nested models, to name the keys allowed there."""
    current: Any = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            fld = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part or n == part),
                None,
            )
            if fld is None:
                return None
            current = _unwrap(fld.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    if origin in (list, dict):
        args = typing.get_args(annotation)
        return _unwrap(args[-1]) if args else None
    return annotation


def _field_names(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]
