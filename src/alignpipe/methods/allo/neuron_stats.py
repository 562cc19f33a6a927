"""Where the selected neurons sit: counts per decoder layer and module type, and the by-depth plot.

Usage::

    from alignpipe.methods.allo.neuron_stats import mask_stats, stats_csv, plot_by_layer
    rows = mask_stats(masks)                       # [{"layer": 0, "module": "self_attn.q_proj", "selected", "total"}]
    plot_by_layer({"5%": rows5, "10%": rows10}, n_layers=6, path="neurons_by_layer.png")
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignpipe.methods.hierarchical import layer_blocks

_LAYER = re.compile(r"\blayers\.(\d+)\.(.+)\.(weight|bias)$")


def locate(name: str) -> tuple[int | None, str]:
    """(decoder layer or None, module type) of a parameter name: ``model.layers.3.mlp.up_proj.weight`` ->
    ``(3, "mlp.up_proj")``; outside the decoder the module is the name without the model prefix and suffix."""
    found = _LAYER.search(name)
    if found:
        return int(found.group(1)), found.group(2)
    module = re.sub(r"\.(weight|bias)$", "", name)
    return None, module.removeprefix("model.")


def mask_stats(masks: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per (layer, module type): selected and total entries, sorted by layer (non-decoder rows last)."""
    acc: dict[tuple[int | None, str], list[int]] = defaultdict(lambda: [0, 0])
    for name, m in masks.items():
        key = locate(name)
        acc[key][0] += int(m.sum())
        acc[key][1] += m.numel()
    order = sorted(acc, key=lambda k: (k[0] is None, -1 if k[0] is None else k[0], k[1]))
    return [{"layer": k[0], "module": k[1], "selected": acc[k][0], "total": acc[k][1]} for k in order]


def by_layer(rows: list[dict[str, Any]], n_layers: int) -> list[float]:
    """Selected fraction (%) of each decoder layer's parameters."""
    sel, tot = [0] * n_layers, [0] * n_layers
    for r in rows:
        if r["layer"] is not None:
            sel[r["layer"]] += r["selected"]
            tot[r["layer"]] += r["total"]
    return [100.0 * s / t if t else 0.0 for s, t in zip(sel, tot)]


def by_module(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Selected fraction (%) per module type, over all layers."""
    sel: dict[str, int] = defaultdict(int)
    tot: dict[str, int] = defaultdict(int)
    for r in rows:
        sel[r["module"]] += r["selected"]
        tot[r["module"]] += r["total"]
    return {m: round(100.0 * sel[m] / tot[m], 4) for m in sorted(tot)}


def stats_csv(tables: Mapping[str, list[dict[str, Any]]]) -> str:
    """``mask,layer,module,selected,total,percent`` for every mask (label -> mask_stats rows)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["mask", "layer", "module", "selected", "total", "percent"])
    for label, rows in tables.items():
        for r in rows:
            layer = "" if r["layer"] is None else r["layer"]
            percent = f"{100.0 * r['selected'] / r['total']:.4f}"
            w.writerow([label, layer, r["module"], r["selected"], r["total"], percent])
    return buf.getvalue()


def plot_by_layer(series: Mapping[str, list[float]], n_layers: int, path: str | Path, title: str) -> None:
    """Selected fraction per decoder layer, one line per mask, the local/mid/global thirds shaded."""
    fig = Figure(figsize=(6.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if n_layers >= 3:
        for (name, layers), shade in zip(layer_blocks(n_layers).items(), ("#e8f0fe", "#fef7e0", "#e6f4ea")):
            ax.axvspan(layers[0] - 0.5, layers[-1] + 0.5, color=shade, zorder=0)
            ax.text((layers[0] + layers[-1]) / 2, 1.01, f"{name} block", transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)
    for label, values in series.items():
        ax.plot(range(n_layers), values, marker="o", label=label, zorder=2)
    ax.set_xlabel("decoder layer (0 = closest to the embeddings)")
    ax.set_ylabel("selected parameters (% of the layer)")
    ax.set_title(title, fontsize=9, pad=16)
    ax.set_xticks(range(n_layers))
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    fig.savefig(str(path), format="png", metadata={"Software": None})
