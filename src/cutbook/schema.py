"""The JSON Schema editors use to check and complete runbooks as they are typed.

It is generated from the models ``cutbook validate`` uses (:mod:`cutbook.model`),
and from the argument models of every adapter the registry can load, built-in or
third-party, so completion offers what validation accepts.

How ``with:`` is completed
--------------------------
A step names a *target* (a name the runbook chooses) and an *action*; which
adapter the target uses is written elsewhere in the same file, which JSON Schema
cannot follow. So the arguments are chosen by the action's name alone: each step
(and each ``verify``, ``preflight`` and ``rollback``, which may call an action of
their own) carries ``allOf: [{if: {action: const NAME}, then: {with: ARGS}}, ...]``.
``if``/``then`` is what the YAML language server (VS Code, Neovim, Helix...) and
IntelliJ complete from once ``action:`` is typed; ``oneOf`` over every adapter's
arguments would offer every argument of every adapter everywhere.

When two adapters have an action of the same name (``get`` in http and in a
third-party adapter), ``then`` accepts the arguments of either (``anyOf``), so the
editor offers both sets and never underlines a step the validator would accept;
``cutbook validate``, which knows the target's adapter, tells them apart. An
action no installed adapter has leaves ``with:`` free-form.

Templates
---------
The validator renders static templates and leaves run-time ones (``{{ item.code }}``)
to the night, at any depth of ``with:`` and of a target's options. So wherever an
argument's own schema would refuse a string, it also accepts a template (a string
containing ``{{``, ``{%`` or ``{#``; :data:`TEMPLATE`). Unknown argument names stay
errors (``additionalProperties: false``), as they are for the validator.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from cutbook.adapter_info import Loaded, loadable
from cutbook.durations import SchemaGenerator
from cutbook.model import Runbook

SCHEMA_ID = "https://cutbook.invalid/schema/cutbook-v1.json"
TEMPLATE = "Template"
TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"\{\{|\{%|\{#",
    "description": "A Jinja2 template, rendered before the call: {{ item.code }}, "
    "{{ vars.base_url }}, {{ secrets.API_TOKEN }}",
    "examples": ["{{ item.code }}", "{{ vars.estate_url }}/vnaccs"],
}
_ANNOTATIONS = ("title", "description", "examples", "default")
_CALLERS = {
    # $def of the runbook model -> whether ``expect`` may come from a sibling key
    "Step": False,
    "VerifySpec": True,
    "PreflightSpec": True,
    "RollbackSpec": False,
}


def runbook_schema() -> dict[str, Any]:
    """The whole schema: the runbook language plus every installed adapter's arguments."""
    adapters, _ = loadable()
    return build_schema(adapters)


def build_schema(adapters: Iterable[Loaded]) -> dict[str, Any]:
    """The schema for these adapters (tests pass their own list)."""
    schema = Runbook.model_json_schema(
        by_alias=True, mode="validation", schema_generator=SchemaGenerator
    )
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs[TEMPLATE] = dict(TEMPLATE_SCHEMA)
    by_action: dict[str, list[str]] = {}
    by_adapter: dict[str, str] = {}
    owners: dict[str, list[str]] = {}
    for adapter in adapters:
        refs = _add_adapter(defs, adapter)
        by_adapter[adapter.name] = refs.pop("")
        for action, ref in sorted(refs.items()):
            by_action.setdefault(action, []).append(ref)
            owners.setdefault(action, []).append(f"{adapter.name}.{action}")
    for caller, expect_elsewhere in _CALLERS.items():
        rules = [
            _action_rule(action, refs, owners[action], defs, expect_elsewhere)
            for action, refs in sorted(by_action.items())
        ]
        if rules:
            defs[caller]["allOf"] = rules
    target_rules = [_target_rule(name, ref, defs) for name, ref in sorted(by_adapter.items())]
    if target_rules:
        defs["TargetSpec"]["allOf"] = target_rules
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cutbook runbook (apiVersion cutbook/v1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def _key(text: str) -> str:
    """A $defs key from an adapter or model name (JSON Pointer and URL safe)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _add_adapter(defs: dict[str, Any], adapter: Loaded) -> dict[str, str]:
    """Put one adapter's option and argument models into ``defs``, templates allowed.

    Returns the $ref of each action's arguments, and of the options under ``""``.
    """
    prefix = f"{_key(adapter.name)}."
    models: list[type[BaseModel]] = [adapter.cls.Config]
    models += [spec.args for spec in adapter.cls.actions.values()]
    unique = list(dict.fromkeys(models))
    refs, generated = models_json_schema(
        [(m, "validation") for m in unique],
        by_alias=True,
        ref_template="#/$defs/" + prefix + "{model}",
        schema_generator=SchemaGenerator,
    )
    for name, body in generated.get("$defs", {}).items():
        defs[prefix + name] = _templated_children(body)
    out = {"": refs[(adapter.cls.Config, "validation")]["$ref"]}
    for action, spec in adapter.cls.actions.items():
        out[action] = refs[(spec.args, "validation")]["$ref"]
    return out


def _constrains(schema: dict[str, Any]) -> bool:
    """Whether a template string could fail ``schema`` (so it must be let through)."""
    rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS and not k.startswith("x-")}
    rest.pop("cutbook", None)
    if not rest:
        return False  # any value at all
    if rest.get("type") == "string":
        return bool(set(rest) & {"pattern", "enum", "const", "maxLength", "format"})
    if set(rest) == {"anyOf"}:
        return all(_constrains(branch) for branch in rest["anyOf"])
    return True


def _or_template(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or a template in its place; annotations stay outside for hovers."""
    inner = _templated_children(schema)
    if not _constrains(inner):
        return inner
    outer = {k: inner.pop(k) for k in _ANNOTATIONS if k in inner}
    template = {"$ref": f"#/$defs/{TEMPLATE}"}
    if set(inner) == {"anyOf"}:
        return {"anyOf": [*inner["anyOf"], template], **outer}
    return {"anyOf": [inner, template], **outer}


def _templated_children(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose property values, items and map values may be templates."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _or_template(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _or_template(out[key])
    if "prefixItems" in out:
        out["prefixItems"] = [_or_template(s) for s in out["prefixItems"]]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [_templated_children(s) for s in out[key]]
    return out


def _resolve(ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = defs[ref.removeprefix("#/$defs/")]
    return found


def _example(body: dict[str, Any]) -> dict[str, Any]:
    """Arguments to offer as a snippet: each required one (or the first) with its example."""
    props: dict[str, Any] = body.get("properties", {})
    names = list(body.get("required", [])) or list(props)[:1]
    return {n: props[n]["examples"][0] for n in names if props.get(n, {}).get("examples")}


def _action_rule(
    action: str,
    refs: list[str],
    owners: list[str],
    defs: dict[str, Any],
    expect_elsewhere: bool,
) -> dict[str, Any]:
    """``if action is NAME then with is its arguments`` (either's, when names clash)."""
    branches: list[dict[str, Any]] = []
    needs_with = True
    for ref in refs:
        required = list(_resolve(ref, defs).get("required", []))
        if expect_elsewhere and "expect" in required:
            # verify.expect / preflight.expect fill it; the validator merges them.
            body = copy.deepcopy(_resolve(ref, defs))
            body["required"] = [r for r in required if r != "expect"]
            required = body["required"]
            if not required:
                del body["required"]
            key = ref.removeprefix("#/$defs/") + ".expect-elsewhere"
            defs[key] = body
            ref = f"#/$defs/{key}"
        needs_with = needs_with and bool(required)
        branches.append({"$ref": ref})
    with_: dict[str, Any] = dict(branches[0]) if len(branches) == 1 else {"anyOf": branches}
    with_["description"] = f"Arguments of {' or '.join(owners)} (cutbook adapters lists them)"
    with_["examples"] = [_example(_resolve(b["$ref"], defs)) for b in branches]
    then: dict[str, Any] = {"properties": {"with": with_}}
    if needs_with:
        then["required"] = ["with"]
    return {
        "if": {"properties": {"action": {"const": action}}, "required": ["action"]},
        "then": then,
    }


def _target_rule(adapter: str, ref: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``if adapter is NAME then the other keys are its options`` (TargetSpec allows any)."""
    options = _resolve(ref, defs)
    then = {
        "properties": {
            "adapter": {
                "const": adapter,
                "description": f"This target is driven by the {adapter} adapter",
                "examples": [adapter],
            },
            **options.get("properties", {}),
        },
        "additionalProperties": options.get("additionalProperties", True),
    }
    if options.get("required"):
        then["required"] = list(options["required"])
    return {
        "if": {"properties": {"adapter": {"const": adapter}}, "required": ["adapter"]},
        "then": then,
    }
