"""Plots of the evaluate stage's metrics (matplotlib, Agg canvas, byte-stable PNGs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignpipe.config import LEVELS


MAX_LINES = 8  # lines per panel; more rows are split over more panels (the colours stay distinguishable)


def panels_of(groups: Mapping[str, list[str]], metrics_by_row: Mapping[str, Mapping[str, Any]],
              max_lines: int = MAX_LINES) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Small multiples: ``{panel title: {row label: metrics}}``, one panel per group of row labels (a table's rows),
    the labels without metrics left out, a group of more than ``max_lines`` rows split in parts, a group with no row
    that an earlier panel lacks left out, and every row that no group holds in a last panel ("Other models")."""
    panels: dict[str, dict[str, Mapping[str, Any]]] = {}
    placed: set[str] = set()
    rest = [r for r in metrics_by_row if not any(r in g for g in groups.values())]
    for title, labels in [*groups.items(), ("Other models", rest)]:
        rows = [r for r in dict.fromkeys(labels) if r in metrics_by_row]
        if set(rows) <= placed:  # nothing new (e.g. a BMC group holding only SFT): no panel
            continue
        placed |= set(rows)
        parts = [rows[i : i + max_lines] for i in range(0, len(rows), max_lines)]
        for k, part in enumerate(parts):
            name = title if len(parts) == 1 else f"{title} ({k + 1}/{len(parts)})"
            panels[name] = {r: metrics_by_row[r] for r in part}
    return panels


def hsr_by_level(panels: Mapping[str, Mapping[str, Mapping[str, Any]]], path: str | Path,
                 confidence: float = 0.95) -> None:
    """HSR (%) at levels 1-5, one panel per group of models (:func:`panels_of`), one line per model with its
    bootstrap band where ``hsr_l<k>_lo/_hi`` exist; each panel's legend sits under it, never over the lines.

    Args:
        panels: panel title -> {row label -> the model's ``metrics.json`` content} (order = legend order).
        path: the PNG to write.
        confidence: the bands' coverage, for the title.
    """
    panels = {t: rows for t, rows in panels.items() if rows} or {"": {}}
    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    legend_rows = max(-(-len(rows) // 2) for rows in panels.values())
    panel_h = 3.2 + 0.22 * legend_rows
    # A Figure on its own Agg canvas, not pyplot: no global backend switch, no figure left open.
    fig = Figure(figsize=(5.6 * ncols, panel_h * nrows + 0.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    palette = [f"C{i}" for i in range(10)]
    colour_of: dict[str, str] = {}  # a model keeps its colour in every panel where that colour is still free
    for ax, (title, rows) in zip(axes.flat, panels.items()):
        used: set[str] = set()
        for label, metrics in rows.items():
            levels = [lv for lv in LEVELS if f"hsr_l{lv}" in metrics]
            if not levels:
                continue
            colour = colour_of.get(label)
            if colour is None or colour in used:
                colour = next((c for c in palette if c not in used), palette[len(used) % len(palette)])
                colour_of.setdefault(label, colour)
            used.add(colour)
            ax.plot(levels, [100 * metrics[f"hsr_l{lv}"] for lv in levels], marker="o", color=colour, label=label)
            banded = [lv for lv in levels if f"hsr_l{lv}_lo" in metrics and f"hsr_l{lv}_hi" in metrics]
            if banded:
                ax.fill_between(banded, [100 * metrics[f"hsr_l{lv}_lo"] for lv in banded],
                                [100 * metrics[f"hsr_l{lv}_hi"] for lv in banded], color=colour, alpha=0.12,
                                linewidth=0)
        ax.set_title(title, fontsize="medium")
        ax.set_xticks(list(LEVELS))
        ax.set_xlabel("FollowBench level (number of constraints)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False)
    for ax in axes[:, 0]:
        ax.set_ylabel("HSR (%)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Hard satisfaction rate by level (bands: {confidence:.0%} bootstrap)")
    # No Software/timestamp metadata, so the same metrics give the same bytes.
    fig.savefig(path, format="png", metadata={"Software": None})
