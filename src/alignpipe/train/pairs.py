"""Read and check preference pairs (``data/preferences/pairs.jsonl``, TRL's conversational preference format).

Usage::

    from alignpipe.train.pairs import read_pairs
    rows, dropped = read_pairs("data/preferences/pairs.jsonl")
    # rows: [{"id", "prompt": [...], "chosen": [...], "rejected": [...]}], dropped: {"empty_response": 2, ...}

A malformed record (missing field, wrong type, a message without role/content, a duplicate id) fails with the
file, record number and pair id: it means the preferences stage is broken. A record that is well formed but
carries no preference signal (an empty response, or chosen identical to rejected) is dropped and counted; the
counts go into the stage metrics and the log, never silently. Extra fields are ignored.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from alignpipe.utils.io import DataError, read_jsonl_numbered

logger = logging.getLogger(__name__)

FIELDS = ("id", "prompt", "chosen", "rejected")
_ROLES = ("system", "user", "assistant")


def _check_messages(path: Path, where: str, field: str, messages: list[Any], assistant_only: bool) -> None:
    if not messages:
        raise DataError(f"{path} {where}: '{field}' is an empty list of messages")
    for k, msg in enumerate(messages):
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str) and isinstance(msg.get("content"), str)):
            raise DataError(f"{path} {where}: {field}[{k}] must be an object with string 'role' and 'content'")
        if msg["role"] not in _ROLES or (assistant_only and msg["role"] != "assistant"):
            allowed = ["assistant"] if assistant_only else list(_ROLES)
            raise DataError(f"{path} {where}: {field}[{k}] has role {msg['role']!r}; allowed: {allowed}")


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"].strip() for m in messages)


def read_pairs(path: str | Path, chosen_field: str = "chosen") -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Read ``path``; return the usable pairs (only the four TRL fields) and the count of dropped ones by reason.

    ``chosen_field="bridged"`` reads BMC's pseudo-winning response (the preferences stage's ``bridged`` column,
    see :mod:`alignpipe.methods.bmc.bridging`) as the chosen one: the (pseudo-winning, rejected) pairs of DPO-BC/BMC.

    Raises:
        DataError: missing file or field, wrong types, malformed messages, duplicate ids, or no usable pair left.
    """
    path = Path(path)
    required = {"id": str, "prompt": list, "chosen": list, "rejected": list, chosen_field: list}
    records = read_jsonl_numbered(path, required=required)
    rows: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    seen: dict[str, int] = {}
    for n, rec in records:
        pair_id = rec["id"]
        where = f"line {n} (id {pair_id!r})"
        if not pair_id:
            raise DataError(f"{path} line {n}: 'id' is empty")
        if pair_id in seen:
            raise DataError(f"{path} {where}: duplicate id (first seen at line {seen[pair_id]})")
        seen[pair_id] = n
        _check_messages(path, where, "prompt", rec["prompt"], assistant_only=False)
        _check_messages(path, where, chosen_field, rec[chosen_field], assistant_only=True)
        _check_messages(path, where, "rejected", rec["rejected"], assistant_only=True)
        chosen, rejected = _text(rec[chosen_field]), _text(rec["rejected"])
        if not chosen or not rejected:
            dropped["empty_response"] += 1
        elif chosen == rejected:
            # Identical responses give a zero DPO gradient but still count in the batch mean: pure noise.
            dropped["identical"] += 1
        else:
            rows.append({**{k: rec[k] for k in FIELDS}, "chosen": rec[chosen_field]})
    if dropped:
        logger.warning("%s: dropped %d of %d pairs: %s", path, sum(dropped.values()), len(records), dict(dropped))
    if not rows:
        raise DataError(f"{path}: no usable pair among {len(records)} records (dropped: {dict(dropped)})")
    return rows, dict(sorted(dropped.items()))
