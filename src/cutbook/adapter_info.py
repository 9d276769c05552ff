"""Describe installed adapters for people (``cutbook adapters``) and for tools (JSON)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from cutbook import registry
from cutbook.errors import RegistryError


def _fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", []))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        kind = prop.get("type") or " | ".join(
            str(p.get("type", p.get("$ref", "?")).split("/")[-1]) for p in prop.get("anyOf", [])
        )
        rows.append(
            {
                "name": name,
                "type": kind or "object",
                "required": name in required,
                "description": prop.get("description", ""),
            }
        )
    return rows


def describe_all(only: str | None = None) -> list[dict[str, Any]]:
    """One entry per adapter; a broken plugin is listed with its error, not raised."""
    entries = [e for e in registry.available() if only is None or e.name == only]
    if only is not None and not entries:
        raise RegistryError(
            f"no adapter named {only!r} is installed ({', '.join(registry.names())})"
        )
    infos: list[dict[str, Any]] = []
    for entry in entries:
        info: dict[str, Any] = {"name": entry.name, "distribution": entry.distribution}
        try:
            cls = registry.load(entry.name)
        except RegistryError as exc:
            info["error"] = str(exc)
            infos.append(info)
            continue
        info["options"] = _fields(cls.Config)
        info["actions"] = [
            {
                "name": action,
                "description": spec.description,
                "mutating": spec.mutating,
                "reversible": spec.reversible,
                "args": _fields(spec.args),
            }
            for action, spec in sorted(cls.actions.items())
        ]
        infos.append(info)
    return infos


def render_text(infos: list[dict[str, Any]], console: Console) -> None:
    for info in infos:
        title = f"{info['name']}  ({info['distribution']})"
        if info.get("error"):
            console.print(f"[bold]{title}[/bold]  [red]unavailable:[/red] {info['error']}")
            continue
        table = Table(title=title, title_justify="left", show_lines=False, expand=False)
        table.add_column("action")
        table.add_column("kind")
        table.add_column("arguments (* required)")
        table.add_column("what it does")
        for action in info["actions"]:
            kind = "changes" if action["mutating"] else "reads"
            if action["mutating"]:
                kind += ", reversible" if action["reversible"] else ", no undo"
            args = ", ".join(a["name"] + ("*" if a["required"] else "") for a in action["args"])
            table.add_row(action["name"], kind, args, action["description"])
        console.print(table)
        options = ", ".join(o["name"] + ("*" if o["required"] else "") for o in info["options"])
        console.print(f"  target options: {options or 'none'}\n")
