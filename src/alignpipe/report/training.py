"""Did each alignment variant learn? Its held-out preference accuracy and margin before and after training.

    table, markdown = training_table(params, "data/align")

One row per variant of ``align.variants`` / ``align.allo_variants`` whose ``data/align/<variant>/metrics.json``
exists, from what the align stage measured on the held-out prompts (:mod:`alignpipe.train.heldout`): the DPO
implicit reward accuracy (0.5 before training, ties counted half) with its one-sided exact p-value against
chance, the mean reward margin, and the policy's own ranking (log-prob) accuracy before -> after. A variant whose
held-out reward accuracy is not above chance (p >= 0.05) is flagged: its rows in the other tables compare a
model that did not measurably learn the preferences, so a null there says nothing about the method.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from alignpipe.config import Params
from alignpipe.report.rows import label
from alignpipe.utils.io import read_json


def training_table(params: Params, align_dir: str | Path) -> tuple[pd.DataFrame, str]:
    """``(table, markdown)``; an empty table when no variant has written its metrics."""
    rows = []
    for name in params.align.variants:
        path = Path(align_dir) / name / "metrics.json"
        if not path.is_file():
            continue
        m = read_json(path)
        held = m.get("heldout") or {}
        before, after = held.get("before") or {}, held.get("after") or {}
        learned = held.get("learned")
        rows.append({
            "Variant": label(params, name), "Steps": m.get("steps"), "Train pairs": m.get("n_pairs"),
            "Train loss (first -> last)": _arrow(m.get("initial_loss"), m.get("final_loss"), 3),
            "Held-out pairs": held.get("n_pairs"),
            "Reward acc.": after.get("reward_accuracy"), "p (acc. > 0.5)": after.get("reward_accuracy_p"),
            "Reward margin": after.get("reward_margin"),
            "Log-prob acc. (before -> after)": _arrow(before.get("logp_accuracy"), after.get("logp_accuracy"), 3),
            "Learned": "–" if learned is None else ("yes" if learned else "NO: not above chance"),
        })
    table = pd.DataFrame(rows).set_index("Variant") if rows else pd.DataFrame()
    if table.empty:
        return table, ""
    flagged = [v for v, r in table.iterrows() if str(r["Learned"]).startswith("NO")]
    md = [table.to_markdown(floatfmt=".3f"), "",
          f"Held-out: the pairs of `align.heldout_fraction` = {params.align.heldout_fraction} of the prompts, trained "
          "on by no variant (the same pairs for all). Reward accuracy: share of held-out pairs whose DPO implicit "
          "reward β(log π − log π_ref) is higher for the chosen response (0.5 before training; ties count half); p: "
          "one-sided exact binomial test against 0.5. Reward margin: its mean difference (0 before training). "
          "Log-prob accuracy: share of pairs where the policy itself gives the chosen response the higher "
          "log-probability, before (the SFT model) -> after. A held-out set of n pairs detects an accuracy "
          "above 0.5 of about 0.5 + 1.24/√n (80% power, one-sided α 0.05: (1.645 + 0.842) · 0.5/√n)."]
    if flagged:
        md += ["", f"**Not learned (held-out reward accuracy not above chance): {', '.join(flagged)}.** Their rows "
               "in the other tables compare a policy that did not measurably learn the preferences."]
    return table, "\n".join(md) + "\n"


def _arrow(a: float | None, b: float | None, digits: int) -> str:
    if a is None and b is None:
        return "–"
    fmt = lambda v: "–" if v is None else f"{v:.{digits}f}"  # noqa: E731
    return f"{fmt(a)} -> {fmt(b)}"
