"""Plots of the evaluate stage's metrics (matplotlib, Agg canvas, byte-stable PNGs)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignpipe.config import LEVELS


def hsr_by_level(metrics_by_row: Mapping[str, Mapping[str, Any]], path: str | Path, confidence: float = 0.95) -> None:
    """One line per model: HSR (%) at levels 1-5, with its bootstrap band where ``hsr_l<k>_lo/_hi`` exist.

    Args:
        metrics_by_row: row label -> the model's ``metrics.json`` content (order = legend order).
        path: the PNG to write.
        confidence: the bands' coverage, for the legend.
    """
    # A Figure on its own Agg canvas, not pyplot: no global backend switch, no figure left open.
    fig = Figure(figsize=(6.0, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, metrics in metrics_by_row.items():
        levels = [lv for lv in LEVELS if f"hsr_l{lv}" in metrics]
        if not levels:
            continue
        (line,) = ax.plot(levels, [100 * metrics[f"hsr_l{lv}"] for lv in levels], marker="o", label=label)
        banded = [lv for lv in levels if f"hsr_l{lv}_lo" in metrics and f"hsr_l{lv}_hi" in metrics]
        if banded:
            ax.fill_between(
                banded,
                [100 * metrics[f"hsr_l{lv}_lo"] for lv in banded],
                [100 * metrics[f"hsr_l{lv}_hi"] for lv in banded],
                color=line.get_color(),
                alpha=0.15,
                linewidth=0,
            )
    ax.set_xticks(list(LEVELS))
    ax.set_xlabel("FollowBench level (number of constraints)")
    ax.set_ylabel("HSR (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Hard satisfaction rate by level (bands: {confidence:.0%} bootstrap)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    # No Software/timestamp metadata, so the same metrics give the same bytes.
    fig.savefig(path, format="png", metadata={"Software": None})
