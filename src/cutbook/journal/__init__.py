"""The tamper-evident audit journal: one hash-chained JSON line per event.

Why a chain: an auditor must be able to tell, long after the night, that no
record was edited, deleted, inserted or reordered. Each record carries the
previous record's hash (``prev``) and its own ``hash`` = sha256 of its
canonical JSON without ``hash``, so any change breaks the chain *at that line*.

File layout (``<journal_dir>/<run_id>.jsonl``): each line is the canonical JSON
of the record without ``hash`` (keys sorted, no spaces, UTF-8) with
``,"hash":"<64 hex>"`` inserted before the closing brace. An independent check
needs nothing from cutbook::

    obj = json.loads(line); h = obj.pop("hash")
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(body.encode()).hexdigest() == h

The package, by what each part holds: :mod:`.events` (the vocabulary and
each event's fields: the contract), :mod:`.records` (a record's bytes),
:mod:`.writer` (appending), :mod:`.index` (the listing cache), :mod:`.verify`
(chain, HMACs, anchors) and :mod:`.fold` (the one reader of what records
mean). Pure Python: no Prefect here.
"""

from __future__ import annotations

from cutbook.errors import JournalContractError
from cutbook.journal.events import (
    FIELDS,
    KNOWN_EVENTS,
    RESERVED_FIELDS,
    Event,
)
from cutbook.journal.fold import (
    DEFAULT_LATE_TOLERANCE,
    Approval,
    Attempt,
    Deviation,
    ItemState,
    Outcome,
    Rollback,
    RunSummary,
    StepSummary,
    fold,
    item_key,
    parse_ts,
    summarize,
)
from cutbook.journal.index import INDEX_NAME, journal_files, read_index, resolve_run
from cutbook.journal.records import GENESIS, Record, canonical, head_hmac, jsonable, read_records
from cutbook.journal.verify import VerifyResult, format_anchor, make_anchor, parse_anchor, verify
from cutbook.journal.writer import Journal

__all__ = [
    "DEFAULT_LATE_TOLERANCE",
    "FIELDS",
    "GENESIS",
    "INDEX_NAME",
    "KNOWN_EVENTS",
    "RESERVED_FIELDS",
    "Approval",
    "Attempt",
    "Deviation",
    "Event",
    "ItemState",
    "Journal",
    "JournalContractError",
    "Outcome",
    "Record",
    "Rollback",
    "RunSummary",
    "StepSummary",
    "VerifyResult",
    "canonical",
    "fold",
    "format_anchor",
    "head_hmac",
    "item_key",
    "journal_files",
    "jsonable",
    "make_anchor",
    "parse_anchor",
    "parse_ts",
    "read_index",
    "read_records",
    "resolve_run",
    "summarize",
    "verify",
]
