"""What templates see, and the arguments and fan-out items rendered from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from cutbook import templating
from cutbook.adapter import Result, url_path_fields
from cutbook.engine.state import ItemState, RunState
from cutbook.errors import PermanentError
from cutbook.model import Step


class TemplateContext:
    """Templates' view of vars, data and finished steps.

    The base is rebuilt only when a step settles (:meth:`invalidate`), not for
    every item: a 1,000-item fan-out would otherwise copy it a million times.
    """

    def __init__(self, run: RunState) -> None:
        self.run = run
        self._base: dict[str, Any] | None = None

    def invalidate(self) -> None:
        self._base = None

    def of(self, item: ItemState | None = None, output: Result | None = None) -> dict[str, Any]:
        if self._base is None:
            run = self.run
            base = run.loaded.static_context(run.opts.secrets)
            base["run"] = {"id": run.opts.run_id, "dry_run": run.opts.dry_run}
            base["steps"] = {
                sid: {
                    "status": st.status,
                    "output": st.output,
                    "items": {i.key: dict(i.result.output) if i.result else {} for i in st.items},
                }
                for sid, st in run.states.items()
            }
            self._base = base
        ctx = dict(self._base)
        if item is not None:
            ctx["item"] = item.item
            ctx["index"] = item.index
        if output is not None:
            ctx["output"] = dict(output.output)
        return ctx

    def args(
        self, model: type[BaseModel], raw: Mapping[str, Any], ctx: Mapping[str, Any]
    ) -> BaseModel:
        """Render and validate; a bad argument is the runbook's fault, so never retried."""
        rendered = templating.render_args(raw, ctx, url_path_fields(model))
        try:
            return model.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PermanentError(f"argument {where}: {first['msg']}") from None

    def items(self, step: Step) -> list[ItemState]:
        """A step's items with stable keys: the keys name idempotency and journal records."""
        if step.for_each is None:
            return [ItemState(key="-", item=None, index=0)]
        values = templating.render(step.for_each, self.of())
        if not isinstance(values, list):
            raise PermanentError(f"for_each gave {type(values).__name__}, not a list")
        items = []
        seen: set[str] = set()
        for i, value in enumerate(values):
            probe = ItemState(key="", item=value, index=i)
            if step.item_key:
                key = str(templating.render(step.item_key, self.of(probe)))
            elif isinstance(value, str | int | float):
                key = str(value)
            else:
                key = f"#{i}"
            if key in seen:
                raise PermanentError(f"item key {key!r} repeats; set item_key to something unique")
            seen.add(key)
            probe.key = key
            items.append(probe)
        return items
