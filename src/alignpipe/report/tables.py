"""FollowBench Table 2 layout from the evaluate stage's ``metrics.json`` files.

Rows are models; columns HSR L1-L5 + Avg, SSR L1-L5 + Avg (percent), CSL (levels), then the judge's
Fluency / Factuality / Coherence (1-10). Bootstrap intervals, where the metrics have them, travel as
``<column> lo`` / ``<column> hi`` columns in the CSV and as ``[lo, hi]`` after the value in the markdown.
Each markdown function takes the table's paired columns (:class:`alignpipe.report.paired.Comparisons`: Δ against
the reference with a paired interval and a Holm-corrected p) and shows them after the table's own columns, with
their note (n, MDE) under the legend; the CSV gets them as ``table.join(comparisons.frame)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from alignpipe.config import LEVELS
from alignpipe.report.paired import Comparisons

# (column, metrics.json key, scale, markdown decimals, show interval in markdown)
SPEC: list[tuple[str, str, float, int, bool]] = [
    *[(f"HSR L{lv}", f"hsr_l{lv}", 100.0, 1, False) for lv in LEVELS],
    ("HSR Avg", "hsr_avg", 100.0, 1, True),
    *[(f"SSR L{lv}", f"ssr_l{lv}", 100.0, 1, False) for lv in LEVELS],
    ("SSR Avg", "ssr_avg", 100.0, 1, True),
    ("CSL", "csl", 1.0, 2, True),
    ("Fluency", "fluency", 1.0, 2, True),
    ("Factuality", "factuality", 1.0, 2, True),
    ("Coherence", "coherence", 1.0, 2, True),
]
SIZES = [("Groups", "n_groups"), ("Instructions", "n_instructions")]


def _get(metrics: Mapping[str, Any], key: str, scale: float) -> float:
    value = metrics.get(key)
    return float(value) * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def followbench_table(metrics_by_row: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model (in the given order), numbers on display scales (HSR/SSR in percent).

    Args:
        metrics_by_row: row label -> the model's ``metrics.json`` content.

    Returns:
        DataFrame indexed by row label ("Model") with the SPEC columns, each interval column
        (``<column> lo``/``<column> hi``, NaN when absent) after its column, then Groups and Instructions.
    """
    records = []
    for label, metrics in metrics_by_row.items():
        row: dict[str, Any] = {"Model": label}
        for column, key, scale, _, ci in SPEC:
            row[column] = _get(metrics, key, scale)
            if ci:
                row[f"{column} lo"] = _get(metrics, f"{key}_lo", scale)
                row[f"{column} hi"] = _get(metrics, f"{key}_hi", scale)
        for column, key in SIZES:
            row[column] = metrics.get(key)
        records.append(row)
    table = pd.DataFrame.from_records(records).set_index("Model")
    return table.astype({column: "Int64" for column, _ in SIZES})


def _cell(value: float, decimals: int, lo: float = math.nan, hi: float = math.nan) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:.{decimals}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{decimals}f}, {hi:.{decimals}f}]"
    return text


def markdown_rows(table: pd.DataFrame, cell: Callable[[str, Any], str], first: str = "Model",
                  columns: Sequence[str] | None = None, paired: Comparisons | None = None) -> list[str]:
    """The lines of a GitHub markdown table of ``table``: a ``first`` column of the index, then ``columns`` (default
    all), right-aligned, each value written by ``cell(column, row)``; then, with ``paired``, its markdown cells."""
    columns = list(table.columns) if columns is None else list(columns)
    extra = [] if paired is None else list(paired.cells.columns)
    lines = [f"| {first} | " + " | ".join([*columns, *extra]) + " |", "|---|" + "---:|" * (len(columns) + len(extra))]
    for label, row in table.iterrows():
        values = [cell(column, row) for column in columns]
        values += [str(paired.cells.loc[label, column]) for column in extra] if paired is not None else []
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def paired_note(paired: Comparisons | None) -> list[str]:
    """The paired columns' note (n, tests, MDE) as lines to put under a table's legend (none without them)."""
    return [] if paired is None else ["", *paired.note.rstrip("\n").split("\n")]


def to_markdown(table: pd.DataFrame, confidence: float = 0.95, paired: Comparisons | None = None) -> str:
    """The table as GitHub markdown: HSR/SSR in percent (1 decimal), CSL and judge scores with 2 decimals.

    Args:
        table: from :func:`followbench_table`.
        confidence: the intervals' coverage, for the legend.
        paired: the rows against the reference (:func:`alignpipe.report.paired.compare`), shown after the columns.
    """
    spec = {column: (decimals, ci) for column, _, _, decimals, ci in SPEC}

    def cell(column: str, row: Any) -> str:
        decimals, ci = spec[column]
        lo, hi = (row[f"{column} lo"], row[f"{column} hi"]) if ci else (math.nan, math.nan)
        return _cell(row[column], decimals, lo, hi)

    lines = markdown_rows(table, cell, columns=list(spec), paired=paired)
    sizes = ", ".join(
        f"{label}: {groups} groups / {n} instructions"
        for label, groups, n in zip(table.index, table["Groups"], table["Instructions"], strict=True)
    )
    lines += [
        "",
        f"HSR / SSR: hard / soft satisfaction rate (%) by level; Avg = mean over levels. CSL: consecutive "
        f"satisfied levels (0-5). Fluency / Factuality / Coherence: judge means (1-10). [lo, hi]: "
        f"{confidence:.0%} bootstrap interval (groups resampled within category; judge: responses resampled).",
        f"Sample sizes: {sizes}.",
        *paired_note(paired),
    ]
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    """The table as CSV (all columns, intervals included; empty cells where a number is absent)."""
    return table.to_csv(float_format="%.4f", lineterminator="\n")


HIER_DIMS = (("Fluency", "fluency"), ("Factuality", "factuality"), ("Coherence", "coherence"))


def hierarchical_table(
    metrics_by_row: Mapping[str, Mapping[str, Any]],
    pairwise_by_row: Mapping[str, Mapping[str, Mapping[str, int]] | None],
    reference: str,
) -> pd.DataFrame:
    """The Hierarchical Alignment table: judge scores, win/tie/loss against ``reference``, FollowBench, tax.

    Args:
        metrics_by_row: row label -> ``metrics.json`` content (the reference row among them).
        pairwise_by_row: row label -> :func:`alignpipe.evaluate.pairwise.pairwise` result against the
            reference (None for the reference itself).
        reference: the reference row's label.

    Returns:
        One row per model. "Alignment tax" is the change in coherence against the reference for rows whose
        fluency rose (the paper's definition: fluency up, logic down), NaN otherwise.
    """
    ref = metrics_by_row[reference]
    records = []
    for label, metrics in metrics_by_row.items():
        row: dict[str, Any] = {"Model": label}
        for column, key in HIER_DIMS:
            row[column] = _get(metrics, key, 1.0)
        for column, key in HIER_DIMS:
            counts = (pairwise_by_row.get(label) or {}).get(key)
            row[f"{column} W/T/L"] = f"{counts['win']}/{counts['tie']}/{counts['loss']}" if counts else "–"
        row["HSR Avg"] = _get(metrics, "hsr_avg", 100.0)
        row["SSR Avg"] = _get(metrics, "ssr_avg", 100.0)
        row["CSL"] = _get(metrics, "csl", 1.0)
        d_flu = row["Fluency"] - _get(ref, "fluency", 1.0)
        d_coh = row["Coherence"] - _get(ref, "coherence", 1.0)
        row["Alignment tax"] = d_coh if label != reference and d_flu > 0 else math.nan
        records.append(row)
    return pd.DataFrame.from_records(records).set_index("Model")


def hierarchical_markdown(table: pd.DataFrame, reference: str, n_pairs: int | None,
                          paired: Comparisons | None = None) -> str:
    """Markdown of :func:`hierarchical_table` with its legend (and the paired columns, with their note)."""
    def cell(column: str, row: Any) -> str:
        value = row[column]
        if isinstance(value, str):
            return value
        if column == "Alignment tax":
            return "–" if math.isnan(value) else f"{value:+.2f}"
        return _cell(value, 1 if column in ("HSR Avg", "SSR Avg") else 2)

    lines = markdown_rows(table, cell, paired=paired)
    lines += [
        "",
        f"Judge scores 1-10 (means). W/T/L: prompts where the row's response scored higher / within the tie "
        f"margin / lower than {reference}'s on that dimension (n = {n_pairs} prompts). HSR/SSR Avg in %. "
        f"Alignment tax: change in coherence against {reference} for rows whose fluency rose (– otherwise).",
        *paired_note(paired),
    ]
    return "\n".join(lines) + "\n"


# (column, metrics key, display scale, decimals): FollowBench averages and judge means, as the ALLO and the
# data-source tables show them.
SCORE_COLUMNS = (("HSR Avg", "hsr_avg", 100.0, 1), ("SSR Avg", "ssr_avg", 100.0, 1), ("CSL", "csl", 1.0, 2),
                 ("Fluency", "fluency", 1.0, 2), ("Factuality", "factuality", 1.0, 2),
                 ("Coherence", "coherence", 1.0, 2))


def allo_table(metrics_by_row: Mapping[str, Mapping[str, Any]],
               train_by_row: Mapping[str, Mapping[str, Any] | None]) -> pd.DataFrame:
    """The ALLO table: FollowBench HSR/SSR Avg, CSL, judge scores, trainable and updated parameter counts.

    Args:
        metrics_by_row: row label -> the evaluate stage's ``metrics.json``.
        train_by_row: row label -> the align stage's ``metrics.json`` (None for an untrained row such as SFT).

    Returns:
        One row per model. "Updated params" is measured for ALLO-style rows (entries that differ from SFT after
        training); for the other rows it is the trainable count (every trainable weight gets a gradient).
        "Updated %" is against the model's total parameter count.
    """
    records = []
    for label, metrics in metrics_by_row.items():
        row: dict[str, Any] = {"Model": label}
        for column, key, scale, _ in SCORE_COLUMNS:
            row[column] = _get(metrics, key, scale)
        train = train_by_row.get(label) or {}
        trainable = train.get("trainable_params", 0)
        updated = train.get("updated_params", trainable)
        row["Trainable params"] = trainable
        row["Updated params"] = updated
        total = train.get("total_params")
        row["Updated %"] = 100.0 * updated / total if total else 0.0
        records.append(row)
    table = pd.DataFrame.from_records(records).set_index("Model")
    return table.astype({"Trainable params": "Int64", "Updated params": "Int64"})


def allo_markdown(table: pd.DataFrame, paired: Comparisons | None = None) -> str:
    """Markdown of :func:`allo_table` with its legend (and the paired columns, with their note)."""
    decimals = {c: d for c, _, _, d in SCORE_COLUMNS}

    def cell(column: str, row: Any) -> str:
        value = row[column]
        if column in ("Trainable params", "Updated params"):
            return f"{int(value):,}"
        if column == "Updated %":
            return f"{value:.2f}"
        return _cell(value, decimals[column])

    lines = markdown_rows(table, cell, paired=paired)
    lines += [
        "",
        "HSR/SSR Avg: FollowBench hard/soft satisfaction (%, mean over levels); CSL: consecutive satisfied levels; "
        "judge means 1-10. Trainable: parameters the optimizer holds; Updated: entries changed from the SFT model "
        "(measured for the masked rows; = trainable for plain DPO rows). ALLO masks: exact global top-r% threshold "
        "unless neurons.threshold says official (see data/neurons/metrics.json).",
        *paired_note(paired),
    ]
    return "\n".join(lines) + "\n"
