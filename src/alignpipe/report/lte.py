"""The LTE table from ``data/edit_eval/metrics.json``: rows = system per editing mode and store size,
columns = edit success, portability, locality (percent) and fluency (n-gram entropy).

Rows "SFT + in-context edits" (the SFT policy with the same retrieved edits, no LTE training) and "LTE" (after
the ``edit_align`` stage), for each mode (batch, sequential) and number of stored edits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from alignpipe.utils.io import DataError

LABELS = {"icl": "SFT + in-context edits", "lte": "LTE"}
# (column, metrics key, scale, markdown decimals)
COLUMNS = (("Edit Succ.", "edit_success", 100.0, 1), ("Portability", "portability", 100.0, 1),
           ("Locality", "locality", 100.0, 1), ("Fluency", "fluency", 1.0, 2))


def lte_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (mode, edits, system) in the order of the metrics; NaN where a metric had nothing to score.

    Raises:
        DataError: the metrics lack ``results`` / ``sizes`` (not an edit_eval metrics file).
    """
    if "results" not in metrics or "sizes" not in metrics:
        raise DataError("edit_eval metrics.json has no 'results'/'sizes' (rerun the edit_eval stage)")
    records = []
    modes = next(iter(metrics["results"].values())).keys()
    for mode in modes:
        for size in metrics["sizes"]:
            for system, label in LABELS.items():
                result = metrics["results"].get(system, {}).get(mode, {}).get(str(size))
                if result is None:
                    continue
                row: dict[str, Any] = {"Mode": mode, "Edits": size, "Method": label}
                for column, key, scale, _ in COLUMNS:
                    value = result.get(key)
                    row[column] = math.nan if value is None else float(value) * scale
                row["Questions"] = result.get("n_questions")
                records.append(row)
    return pd.DataFrame.from_records(records)


def lte_markdown(table: pd.DataFrame, metrics: Mapping[str, Any]) -> str:
    """Markdown of :func:`lte_table` with its legend."""
    head = ["Mode", "Edits", "Method", *(c for c, *_ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|" + "---:|" * len(COLUMNS)]
    for _, row in table.iterrows():
        cells = [str(row["Mode"]), str(row["Edits"]), str(row["Method"])]
        cells += ["–" if math.isnan(row[c]) else f"{row[c]:.{d}f}" for c, _, _, d in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"{metrics.get('n_eval_edits', '?')} evaluation edits; top-{metrics.get('top_k', '?')} BM25 retrieval from "
        "the edit store into LTE's template; greedy answers. Edit Succ.: the answer to the edit's question contains "
        "the new object; Portability: the answer to a question that follows from the edit contains its answer; "
        "Locality: word agreement of the answer to an unrelated question with the unedited SFT policy's answer "
        "(all %, per-edit means). Fluency: n-gram entropy (EasyEdit's weights) of the edit-question answers. "
        "batch: N edits stored at once; sequential: edits stored one by one, each asked right after.",
    ]
    return "\n".join(lines) + "\n"
