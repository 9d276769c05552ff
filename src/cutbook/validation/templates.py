"""Templates in arguments, checked without running them: names, references, the sandbox."""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

from cutbook import templating
from cutbook.model import Step
from cutbook.validation.loaded import LoadedRunbook
from cutbook.validation.report import PathKey, Report
from cutbook.validation.wording import did_you_mean, display_name, plural

# for_each over a whole data set: ``{{ data.offices }}`` or ``{{ data['offices'] }}``.
_DATA_SET = re.compile(
    r"^\s*\{\{\s*data\s*(?:\.\s*(?P<attr>\w+)|\[\s*(?P<q>['\"])(?P<key>[^'\"]+)(?P=q)\s*\])"
    r"\s*\}\}\s*$"
)
# What ``item.x`` may name on a record besides a column.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})

# Names Jinja itself defines, which a template may use without cutbook providing them.
JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop"})


def check_templates(
    report: Report,
    value: Any,
    base: PathKey,
    loaded: LoadedRunbook,
    step: Step | None,
    ancestors: Container[str],
    output_ok: bool = False,
) -> bool:
    """Check templates; ``output`` (this step's own result) only in verify and rollback.

    ``step`` is None for a target's options, which are set up before any step
    runs. ``ancestors`` are the steps ``step`` waits for: the only ones whose
    output it may read. Whether every template was fine.
    """
    ok = True
    for rel, text in templating.walk_strings(value):
        path = (*base, *rel)
        try:
            info = templating.analyze(text)
        except templating.TemplateProblem as exc:
            report.err(path, str(exc))
            ok = False
            continue
        ok &= _check_sandbox(report, path, info)
        ok &= _check_names(report, path, info, step, output_ok)
        ok &= _check_inputs(report, path, info, loaded)
        if step is not None:
            ok &= _check_item_columns(report, path, info, loaded, step)
            ok &= _check_step_outputs(report, path, info, loaded, step, ancestors)
    return ok


def check_variable_templates(report: Report, variables: dict[str, Any]) -> None:
    """Variables are data, never rendered: a template in one is either an escape attempt
    (an error now, not a surprise on the night) or a misunderstanding (a warning)."""
    for rel, text in templating.walk_strings(variables):
        path: PathKey = ("vars", *rel)
        try:
            info = templating.analyze(text)
        except templating.TemplateProblem as exc:
            report.err(path, str(exc))
            continue
        if _check_sandbox(report, path, info):
            report.warn(
                path,
                "variables are data, not templates: this value is used exactly as written, "
                "braces included; compute it in the template that uses it instead",
            )


def _check_sandbox(report: Report, path: PathKey, info: templating.TemplateInfo) -> bool:
    if info.unsafe:
        names = " and ".join(repr(a) for a in sorted(set(info.unsafe)))
        report.err(path, f"template uses {names}, which the sandbox forbids")
        return False
    return True


def _check_names(
    report: Report, path: PathKey, info: templating.TemplateInfo, step: Step | None, output_ok: bool
) -> bool:
    """Each top-level name must exist, and exist *here* (item, output and step outputs vary)."""
    ok = True
    for name in sorted(info.names - JINJA_GLOBALS):
        if name not in templating.ALL_NAMES:
            hint = did_you_mean(name, templating.ALL_NAMES)
            report.err(path, f"undefined name {name!r} in template{hint}")
            ok = False
        elif step is None and name in templating.RUNTIME_NAMES:
            report.err(
                path, f"{name!r} is not available here: targets are set up before any step runs"
            )
            ok = False
        elif name in ("item", "index") and step is not None and step.for_each is None:
            report.err(path, f"step {step.id!r} uses {name!r} but has no for_each")
            ok = False
        elif name == "output" and step is not None and not output_ok:
            report.err(
                path,
                f"step {step.id!r} uses 'output' here, but only its verify and rollback "
                "see it (the result of the step's own action); use steps['<id>'].output "
                "for an earlier step",
            )
            ok = False
    return ok


def _check_inputs(
    report: Report, path: PathKey, info: templating.TemplateInfo, loaded: LoadedRunbook
) -> bool:
    """``vars.x``, ``data.x`` and ``secrets.x`` must be declared."""
    ok = True
    rb = loaded.runbook
    refs = info.refs
    for key in sorted(refs.get("vars", set()) - set(loaded.vars)):
        report.err(path, f"undefined variable vars.{key}{did_you_mean(key, loaded.vars)}")
        ok = False
    for key in sorted(refs.get("data", set()) - set(rb.data)):
        report.err(path, f"undefined data set data.{key}{did_you_mean(key, rb.data)}")
        ok = False
    for key in sorted(refs.get("secrets", set()) - set(rb.secrets)):
        report.err(
            path, f"secret {key!r} is not declared under secrets:{did_you_mean(key, rb.secrets)}"
        )
        ok = False
    return ok


def fanned_data_set(step: Step) -> str | None:
    """The data set ``step`` fans out over as a whole, or None (a list, a filter, ...)."""
    if not isinstance(step.for_each, str):
        return None
    m = _DATA_SET.match(step.for_each)
    return (m.group("attr") or m.group("key")) if m else None


def _check_item_columns(
    report: Report,
    path: PathKey,
    info: templating.TemplateInfo,
    loaded: LoadedRunbook,
    step: Step,
) -> bool:
    """``item.x`` over a data file needs column x, or every item would fail mid-run."""
    used = info.refs.get("item", set())
    name = fanned_data_set(step)
    records = loaded.data.get(name) if name is not None else None
    if not used or name is None or not records:
        return True  # no data set, or one that failed to load (reported there)
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if isinstance(k, str) and k not in columns)
    file = display_name((loaded.path.parent / loaded.runbook.data[name]).resolve())
    ok = True
    for key in sorted(used - set(columns) - _MAPPING_METHODS):
        if key.isdigit():
            continue
        report.err(
            path,
            f"step {step.id!r} uses item.{key}, but {file} (data {name!r}) has no column "
            f"{key!r}{did_you_mean(key, columns)}; its columns: {plural(columns)}",
        )
        ok = False
    return ok


def _check_step_outputs(
    report: Report,
    path: PathKey,
    info: templating.TemplateInfo,
    loaded: LoadedRunbook,
    step: Step,
    ancestors: Container[str],
) -> bool:
    """``steps['x'].output`` needs x to finish first, so ``step`` must depend on x."""
    ok = True
    by_id = loaded.runbook.steps_by_id
    for key in sorted(info.refs.get("steps", set())):
        if key not in by_id:
            report.err(path, f"unknown step steps[{key!r}]{did_you_mean(key, by_id)}")
            ok = False
        elif key not in ancestors:
            report.err(
                path,
                f"step {step.id!r} uses the output of {key!r} but does not "
                f"depend on it; add {key!r} to depends_on",
            )
            ok = False
    return ok
