"""The JSON Schema editors use to check runbooks as they are typed."""

from __future__ import annotations

from typing import Any

from cutbook.model import Runbook

SCHEMA_ID = "https://cutbook.invalid/schema/cutbook-v1.json"


def runbook_schema() -> dict[str, Any]:
    schema = Runbook.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "cutbook runbook (apiVersion cutbook/v1)",
        **{k: v for k, v in schema.items() if k != "title"},
    }
