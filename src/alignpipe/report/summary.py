"""The run's headline numbers in one small metrics file, ``data/summary.json``, for `dvc exp show`: one column per
model and number instead of the thousands of columns of every stage's metrics.

    write_summary(params, metrics, "data/align", claims, "data/summary.json")
    make exps        # dvc exp show --drop '.*' --keep 'Experiment|Created|hsr_avg\\.|claims\\.'

One group per number, one key per model: ``hsr_avg.<model>`` (HSR Avg, %), ``fluency`` / ``factuality`` /
``coherence.<model>`` (the judge's means), ``heldout_acc.<variant>`` (held-out reward accuracy after training, align
variants); ``claims.<verdict>``: how many claims of the claims table are supported, contradicted, inconclusive or
not measured. A `--keep` regex picks the groups to compare (`make exps ARGS="--keep 'heldout_acc\\.'"` adds one).
Each number is the one in the report's tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from alignpipe.config import Params
from alignpipe.utils.io import read_json, write_json

VERDICTS = ("supported", "contradicted", "inconclusive", "not measured")


def summary(params: Params, metrics: Mapping[str, Mapping[str, Any]], align_dir: str | Path,
            claims: pd.DataFrame | None = None) -> dict[str, Any]:
    """``{"hsr_avg": {label: %}, "fluency": {...}, "factuality": {...}, "coherence": {...}, "heldout_acc":
    {label: accuracy}, "claims": {verdict: count}}`` (see the module docstring); empty groups left out."""
    out: dict[str, Any] = {k: {} for k in ("hsr_avg", "fluency", "factuality", "coherence", "heldout_acc")}
    for row, m in metrics.items():
        if "hsr_avg" in m:
            out["hsr_avg"][row] = round(100 * float(m["hsr_avg"]), 2)
        for k in ("fluency", "factuality", "coherence"):
            if k in m:
                out[k][row] = round(float(m[k]), 3)
        path = Path(align_dir) / str(m.get("_name", row)) / "metrics.json"
        if path.is_file():
            acc = ((read_json(path).get("heldout") or {}).get("after") or {}).get("reward_accuracy")
            if acc is not None:
                out["heldout_acc"][row] = round(float(acc), 4)
    out = {k: v for k, v in out.items() if v}
    if claims is not None and not claims.empty and "Verdict" in claims:
        kinds = [next((v for v in VERDICTS if str(x).startswith(v)), str(x)) for x in claims["Verdict"]]
        out["claims"] = {v.replace(" ", "_"): kinds.count(v) for v in VERDICTS}  # "inconclusive (|Δ| < MDE)"
    return out


def write_summary(params: Params, metrics: Mapping[str, Mapping[str, Any]], align_dir: str | Path,
                  claims: pd.DataFrame | None, path: str | Path) -> dict[str, Any]:
    """Write :func:`summary` to ``path`` (atomically); returns it."""
    out = summary(params, metrics, align_dir, claims)
    write_json(path, out)
    return out


__all__ = ["summary", "write_summary"]
