"""The data-source table (WebR's Table 1 / Lion's Table 1 in spirit): one SFT policy per data mixture.

Rows are the ``sft_mix.mixtures`` entries (labels: ``report.labels.mix_<name>``, e.g. Seed only / + Lion /
+ WebR / + Lion + WebR). Columns: FollowBench HSR Avg / SSR Avg (percent) and CSL, the judge's Fluency /
Factuality / Coherence (1-10), all from ``data/evaluate/mix_<name>/metrics.json``; then the relative score vs the
teacher (Lion's measure, 100 x sum student / sum teacher referee scores on Lion's eval subset) from
``data/sft_mix/<name>/metrics.json``;
then the sample sizes: SFT rows trained on, FollowBench groups / instructions, referee-scored eval prompts.
Paired columns (:mod:`alignpipe.report.paired`): every mixture against the seed-only one, on the same prompts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from alignpipe.report.paired import Comparisons
from alignpipe.report.tables import SCORE_COLUMNS, markdown_rows, paired_note
from alignpipe.utils.io import DataError, read_json

REL = "Rel. score vs teacher (%)"
SIZES = ["SFT rows", "Groups", "Instructions", "Rel. scored"]


def _num(value: Any, scale: float = 1.0) -> float:
    return float(value) * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def load(rows: Mapping[str, str], eval_dir: str | Path = "data/evaluate",
         mix_dir: str | Path = "data/sft_mix") -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """label -> (evaluate metrics of ``mix_<name>``, sft_mix metrics of ``<name>``); a missing file is named."""
    paths = {name: (Path(eval_dir) / f"mix_{name}" / "metrics.json", Path(mix_dir) / name / "metrics.json")
             for name in rows}
    missing = [str(p) for pair in paths.values() for p in pair if not p.is_file()]
    if missing:
        raise DataError(f"sft_mix.mixtures lists mixture(s) without metrics: {', '.join(missing)} not found "
                        "(run their sft_mix@<name> and evaluate_mix@<name> stages)")
    return {label: (read_json(paths[name][0]), {**read_json(paths[name][1]), "_name": name})
            for name, label in rows.items()}


def datasource_table(metrics: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per mixture (in order), display scales (HSR/SSR percent); sizes as integer columns."""
    records = []
    for label, (ev, mix) in metrics.items():
        row: dict[str, Any] = {"Data": label}
        for column, key, scale, _ in SCORE_COLUMNS:
            row[column] = _num(ev.get(key), scale)
        row[REL] = _num(mix.get("relative_score"))
        by_source = mix.get("rows_by_source") or {}
        row["SFT rows"] = sum(by_source.values()) if by_source else None
        row["Groups"] = ev.get("n_groups")
        row["Instructions"] = ev.get("n_instructions")
        row["Rel. scored"] = (mix.get("relative") or {}).get("scored")
        records.append(row)
    table = pd.DataFrame.from_records(records).set_index("Data")
    return table.astype({c: "Int64" for c in SIZES})


def to_markdown(table: pd.DataFrame, metrics: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]],
                paired: Comparisons | None = None) -> str:
    """The table (with the paired columns against the seed-only mixture, if given), then what each row was trained
    on and how the columns were measured."""
    decimals = {c: d for c, _, _, d in SCORE_COLUMNS} | {REL: 1}

    def cell(column: str, row: Any) -> str:
        value = row[column]
        if pd.isna(value):
            return "–"
        return str(int(value)) if column in SIZES else f"{value:.{decimals[column]}f}"

    lines = markdown_rows(table, cell, first="Data", paired=paired)
    lines += ["", "Rows (sft_mix.mixtures; data in order, SFT rows per source):", ""]
    for label, (_, mix) in metrics.items():
        by = mix.get("rows_by_source") or {}
        srcs = ", ".join(f"{s} ({by.get(s, '?')})" for s in mix.get("sources", []))
        reused = f"; the sft stage's model (`{mix['reused']}`), not retrained" if mix.get("reused") else ""
        lines.append(f"- {label}: `{mix.get('_name')}` = {srcs}{reused}")
    lines += [
        "",
        "HSR/SSR Avg (percent, levels averaged), CSL and the judge scores (1-10): `evaluate@mix_<name>` on the",
        "evaluation pool (Groups / Instructions). Rel. score vs teacher: Lion's Table 1 measure, 100 x sum of the",
        "policy's referee scores / sum of the teacher's, both orders averaged, on Lion's fixed eval subset against",
        "the teacher answers stored by the synthesize stage (Rel. scored = prompts the referee scored). Every row",
        "is the same base model, `sft` trainer and seed; only the training data differ. Measurements in the",
        "built-in world, not the papers' numbers.",
        *paired_note(paired),
    ]
    return "\n".join(lines) + "\n"
