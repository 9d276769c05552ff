"""Targets and action calls: the adapter exists, has the action, and takes these arguments.

Arguments are checked against the adapter's own pydantic model, with static
templates rendered first; what is only known during the run is left alone.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from cutbook import registry, templating
from cutbook.adapter import url_path_fields
from cutbook.errors import RegistryError
from cutbook.model import Runbook, Step
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.pydantic_errors import (
    field_names,
    humanize,
    label,
    merge_unions,
    model_at,
)
from cutbook.validation.report import PathKey, Report
from cutbook.validation.templates import check_templates
from cutbook.validation.wording import did_you_mean, plural


def check_targets(report: Report, rb: Runbook, loaded: LoadedRunbook) -> None:
    """Load each target's adapter into ``loaded.adapters`` and check its options."""
    known = set(registry.names())
    for tname, spec in rb.targets.items():
        tpath: PathKey = ("targets", tname)
        if spec.adapter not in known:
            hint = did_you_mean(spec.adapter, known)
            report.err(
                (*tpath, "adapter"),
                f"target {tname!r} uses unknown adapter {spec.adapter!r}{hint}; "
                f"installed: {plural(known)}",
            )
            continue
        try:
            cls = registry.load(spec.adapter)
        except RegistryError as exc:
            report.err((*tpath, "adapter"), f"target {tname!r}: {exc}")
            continue
        loaded.adapters[tname] = cls
        options = spec.options
        check_templates(report, options, tpath, loaded, step=None, ancestors=frozenset())
        check_args(report, cls.Config, options, tpath, loaded, f"options of target {tname!r}")


def check_call(
    report: Report,
    step: Step,
    target: str,
    action: str | None,
    args: Mapping[str, Any],
    base: PathKey,
    loaded: LoadedRunbook,
    mine: Container[str],
    args_key: str,
    moved: Mapping[str, PathKey] | None = None,
    output_ok: bool = False,
) -> None:
    """Check one action call; ``moved`` says where arguments written outside ``with`` are.

    ``mine`` are the steps ``step`` waits for; ``output_ok`` whether the call
    may read the step's own result (verify and rollback may).
    """
    moved = moved or {}
    cls = loaded.adapters.get(target)
    if cls is None or action is None:
        return
    adapter = loaded.runbook.targets[target].adapter
    spec = cls.actions.get(action)
    if spec is None:
        hint = did_you_mean(action, cls.actions)
        report.err(
            (*base, "action"),
            f"step {step.id!r}: adapter {adapter!r} has no action {action!r}{hint}; "
            f"it has: {plural(cls.actions)}",
        )
        return
    plain = {k: v for k, v in args.items() if k not in moved}
    check_templates(report, plain, (*base, args_key), loaded, step, mine, output_ok)
    for key, where in moved.items():
        check_templates(report, args[key], where, loaded, step, mine, output_ok)
    check_args(
        report,
        spec.args,
        args,
        (*base, args_key),
        loaded,
        f"{adapter}.{action} in step {step.id!r}",
        moved,
    )


def check_args(
    report: Report,
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
    probe = _probe(args, (), loaded, dynamic, url_path_fields(model))
    try:
        model.model_validate(probe)
    except ValidationError as exc:
        for e in merge_unions(exc):
            loc = tuple(e["loc"])
            if any(loc[: len(d)] == d for d in dynamic):
                continue
            path = at(loc)
            last = loc[-1] if loc else ""
            if e["type"] == "extra_forbidden":
                fields = field_names(model_at(model, loc[:-1]))
                report.err(
                    path,
                    f"unknown argument {last!r} for {what}{did_you_mean(str(last), fields)}",
                    key=True,
                )
            elif e["type"] == "missing":
                report.err(at(loc[:-1]), f"missing argument {last!r} for {what}", key=True)
            elif not loc:  # a rule about the arguments together
                report.err(base, f"{what}: {humanize(e)}", key=True)
            else:
                report.err(path, f"argument {label(loc)} for {what}: {humanize(e)}")


def _probe(
    value: Any,
    path: PathKey,
    loaded: LoadedRunbook,
    dynamic: list[PathKey],
    url_paths: frozenset[str] = frozenset(),
) -> Any:
    """``value`` with static templates rendered as the run will render them (URL paths
    segment by segment); paths of the rest go to ``dynamic``."""
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
            if len(path) == 1 and path[0] in url_paths:
                return templating.render_string(value, loaded.static_context(), url_path=True)
            return templating.render(value, loaded.static_context())
        except templating.TemplateError:
            dynamic.append(path)
            return value
    if isinstance(value, Mapping):
        return {k: _probe(v, (*path, k), loaded, dynamic) for k, v in value.items()}
    if isinstance(value, list):
        return [_probe(v, (*path, i), loaded, dynamic) for i, v in enumerate(value)]
    return value
