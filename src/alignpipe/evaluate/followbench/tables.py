"""FollowBench tables and the per-category radar plot from ``metrics.json`` files of the official benchmark.

- :func:`table2`: the paper's Table 2 layout, one row per model: HSR (%) L1-L5 and Avg, SSR (%) L1-L5 and Avg,
  CSL; for all scored rows, or for the rule-scored or the judged part alone (``part``);
- :func:`category_table`: per category, HSR Avg (%), SSR Avg (%) and CSL (levels) per model;
- :func:`radar`: one polygon per model over the six categories (HSR Avg by default).

Input is ``{row label: metrics}`` where metrics are :func:`alignpipe.evaluate.followbench.score.summarize` output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignpipe.config import CATEGORIES, LEVELS

PARTS = ("all", "rule", "judge")


def _figures(metrics: Mapping[str, Any], part: str) -> Mapping[str, Any] | None:
    if part not in PARTS:
        raise ValueError(f"part '{part}' not in {list(PARTS)}")
    return metrics if part == "all" else (metrics.get("parts") or {}).get(part)


def _pct(figures: Mapping[str, Any] | None, key: str) -> float:
    value = None if figures is None else figures.get(key)
    return 100.0 * value if isinstance(value, (int, float)) else math.nan


def table2(metrics_by_row: Mapping[str, Mapping[str, Any]], part: str = "all") -> pd.DataFrame:
    """Table 2 of the FollowBench paper: rows = models; HSR/SSR in percent, CSL in levels.

    Columns ``HSR L1..L5, HSR Avg, SSR L1..L5, SSR Avg, CSL, Groups, Instructions, Unparseable`` (the last is the
    count of judged instructions left out because no judge output could be parsed; 0 for the rule part).
    """
    records = []
    for label, metrics in metrics_by_row.items():
        fig = _figures(metrics, part)
        row: dict[str, Any] = {"Model": label}
        for m in ("hsr", "ssr"):
            for lv in LEVELS:
                row[f"{m.upper()} L{lv}"] = _pct(fig, f"{m}_l{lv}")
            row[f"{m.upper()} Avg"] = _pct(fig, f"{m}_avg")
        csl = None if fig is None else fig.get("csl")
        row["CSL"] = float(csl) if isinstance(csl, (int, float)) else math.nan
        row["Groups"] = None if fig is None else fig.get("n_groups")
        row["Instructions"] = None if fig is None else fig.get("n_instructions")
        row["Unparseable"] = 0 if part == "rule" else metrics.get("unparseable", {}).get("n", 0)
        records.append(row)
    table = pd.DataFrame.from_records(records).set_index("Model")
    return table.astype({"Groups": "Int64", "Instructions": "Int64", "Unparseable": "Int64"})


def category_table(metrics_by_row: Mapping[str, Mapping[str, Any]], part: str = "all") -> pd.DataFrame:
    """Rows ``(model, category)``; columns ``HSR Avg``, ``SSR Avg`` (percent), ``CSL``, ``Groups``."""
    records = []
    for label, metrics in metrics_by_row.items():
        per_category = (_figures(metrics, part) or {}).get("per_category", {})
        for cat in [c for c in CATEGORIES if c in per_category]:
            entry = per_category[cat]
            records.append(
                {
                    "Model": label,
                    "Category": cat,
                    "HSR Avg": 100.0 * entry["hsr_avg"],
                    "SSR Avg": 100.0 * entry["ssr_avg"],
                    "CSL": entry["csl"],
                    "Groups": entry["n_groups"],
                }
            )
    return pd.DataFrame.from_records(records, columns=["Model", "Category", "HSR Avg", "SSR Avg", "CSL", "Groups"])


def to_markdown(table: pd.DataFrame, index_name: str = "Model") -> str:
    """GitHub markdown: percentages with 1 decimal, CSL with 2, counts as integers, '–' for missing."""

    def cell(column: str, value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if column in ("Groups", "Instructions", "Unparseable"):
            return str(int(value))
        if isinstance(value, float):
            return f"{value:.2f}" if column == "CSL" else f"{value:.1f}"
        return str(value)

    frame = table.reset_index() if table.index.name else table
    columns = list(frame.columns)
    align = ["---" if c in (index_name, "Category") else "---:" for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(align) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def radar(
    metrics_by_row: Mapping[str, Mapping[str, Any]], path: str | Path, key: str = "hsr_avg", part: str = "all"
) -> None:
    """One closed polygon per model over the categories present (percent for rates), written as a PNG."""
    present = {c for m in metrics_by_row.values() for c in ((_figures(m, part) or {}).get("per_category") or {})}
    categories = [c for c in CATEGORIES if c in present]
    if not categories:
        raise ValueError("no per-category figures to plot")
    angles = np.linspace(0, 2 * np.pi, len(categories), endpoint=False).tolist()
    scale = 100.0 if key != "csl" else 1.0
    fig = Figure(figsize=(6.5, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="polar")
    for label, metrics in metrics_by_row.items():
        per_category = (_figures(metrics, part) or {}).get("per_category") or {}
        values = [scale * per_category[c][key] if c in per_category else np.nan for c in categories]
        ax.plot(angles + angles[:1], values + values[:1], marker="o", label=label)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels(categories)
    ax.set_ylim(0, 100 if key != "csl" else 5)
    name = {"hsr_avg": "HSR Avg (%)", "ssr_avg": "SSR Avg (%)", "csl": "CSL (levels)"}.get(key, key)
    ax.set_title(f"FollowBench by category: {name}")
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def write_report(out_dir: str | Path, metrics_by_row: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Write the official-benchmark tables and radar into ``out_dir``; return the file names written.

    Files: ``followbench_official.md`` (Table 2 for all scored instructions, then the rule-scored and the judged
    parts alone, then per category), ``followbench_official.csv`` (Table 2, all), ``followbench_categories.csv``
    and ``followbench_radar.png``.
    """
    out_dir = Path(out_dir)
    sections = ["# FollowBench on the official data", ""]
    titles = {
        "all": "All scored instructions",
        "rule": "Rule-scored part (official rules)",
        "judge": "LLM-judged part (parsed judge outputs only)",
    }
    for part in PARTS:
        sections += [f"## {titles[part]}", "", to_markdown(table2(metrics_by_row, part))]
    sections += ["## By category (all scored instructions)", "", to_markdown(category_table(metrics_by_row))]
    (out_dir / "followbench_official.md").write_text("\n".join(sections), encoding="utf-8")
    (out_dir / "followbench_official.csv").write_text(table2(metrics_by_row).to_csv(), encoding="utf-8")
    categories = category_table(metrics_by_row).to_csv(index=False)
    (out_dir / "followbench_categories.csv").write_text(categories, encoding="utf-8")
    radar(metrics_by_row, out_dir / "followbench_radar.png")
    return [
        "followbench_official.md", "followbench_official.csv", "followbench_categories.csv", "followbench_radar.png"
    ]
