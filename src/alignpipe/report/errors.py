"""Which errors does each model make, and which did alignment remove? Error rates by kind, paired against SFT.

    table, markdown = errors_table(params, "data/evaluate", {"SFT": "sft", "Full-DPO": "dpo_full"})

One row per evaluated model whose ``generations.jsonl`` carries the world judge's error flags
(:meth:`alignpipe.world.Judge.errors`): the share of responses with at least one fluency, coherence or factual
error, and the share failing a constraint (1 - per-instruction hard satisfaction), each with its bootstrap interval
from ``metrics.json``; then, against ``report.reference`` on the same prompts, the paired difference in points with
a paired bootstrap interval over prompts and an exact McNemar p, Holm-corrected over the table. The kinds are those
the papers' claims are about (Hierarchical Alignment: fluency, factual consistency, logical coherence) and those
the world's annotator puts into the SFT demonstrations (``world.demo_noise``, :mod:`alignpipe.world.noise`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from alignpipe.config import Params
from alignpipe.evaluate.paired import holm, mcnemar_exact, mde, paired_bootstrap_mean
from alignpipe.report.paired import p_text
from alignpipe.utils.io import read_json, read_jsonl
from alignpipe.utils.seed import derive_seed

KINDS = (("Fluency", "fluency"), ("Coherence", "coherence"), ("Factuality", "factuality"),
         ("Constraints", "constraints"))


def _flags(rows: list[dict]) -> dict[str, dict[str, bool]] | None:
    if not rows or not all("errors" in r and "verdicts" in r for r in rows):
        return None
    return {str(r["id"]): {**{k: bool(r["errors"][k]) for k in ("fluency", "coherence", "factuality")},
                           "constraints": not all(r["verdicts"])} for r in rows}


def errors_table(params: Params, eval_dir: str | Path, models: Mapping[str, str]) -> tuple[pd.DataFrame, str]:
    """``(table, markdown)`` over ``models`` (row label -> model name); empty when no model has error flags."""
    eval_dir, cfg, ref = Path(eval_dir), params.evaluate, params.report.reference
    flags = {}
    for label, name in models.items():
        path = eval_dir / name / "generations.jsonl"
        got = _flags(read_jsonl(path)) if path.is_file() else None
        if got is not None:
            flags[label] = (name, got)
    if not flags:
        return pd.DataFrame(), ""
    ref_label = next((lb for lb, (name, _) in flags.items() if name == ref), None)
    rows, tests = [], []
    sds: dict[str, list[float]] = {k: [] for _, k in KINDS}
    for label, (name, got) in flags.items():
        m = read_json(eval_dir / name / "metrics.json")
        row: dict[str, object] = {"Model": label, "n": len(got)}
        for col, kind in KINDS:
            row[f"{col} err. %"] = 100.0 * float(np.mean([g[kind] for g in got.values()]))
            lo, hi = m.get(f"error_{kind}_lo"), m.get(f"error_{kind}_hi")
            row[f"{col} CI"] = "–" if lo is None else f"{100 * lo:.1f}–{100 * hi:.1f}"
        if ref_label is not None and label != ref_label:
            base = flags[ref_label][1]
            ids = sorted(set(got) & set(base))
            seed = derive_seed(params.seed, "report", "errors")
            for col, kind in KINDS:
                a = np.array([got[i][kind] for i in ids])
                b = np.array([base[i][kind] for i in ids])
                d = a.astype(float) - b.astype(float)
                (lo, hi), = paired_bootstrap_mean(d, cfg.bootstrap_samples, cfg.confidence, seed)
                _, _, p = mcnemar_exact(a, b)
                row[f"Δ {col} vs {ref_label}"] = 100.0 * float(d.mean())
                row[f"Δ {col} CI"] = "–" if lo is None else f"{100 * lo:+.1f}–{100 * hi:+.1f}"
                row[f"p {col} (raw)"] = p
                tests.append((len(rows), col, p))
                if len(d) > 1:
                    sds[kind].append(float(np.std(d, ddof=1)))
        rows.append(row)
    adjusted = holm([p for *_, p in tests]) if tests else []
    for (i, col, _), p in zip(tests, adjusted):
        rows[i][f"p {col}"] = float(p)
    table = pd.DataFrame(rows).set_index("Model")
    md_rows = []
    for label, r in table.iterrows():
        cells = [str(label), str(int(r["n"]))]
        for col, _ in KINDS:
            cells.append(f"{r[f'{col} err. %']:.1f} ({r[f'{col} CI']})")
        for col, _ in KINDS:
            key = f"Δ {col} vs {ref_label}"
            if key in r and pd.notna(r.get(key)):
                cells.append(f"{r[key]:+.1f} [{r[f'Δ {col} CI']}] p {p_text(r[f'p {col}'])}")
            else:
                cells.append("ref." if label == ref_label else "–")
        md_rows.append("| " + " | ".join(cells) + " |")
    head = ["Model", "n"] + [f"{c} err. % (CI)" for c, _ in KINDS] + [f"Δ {c} vs {ref_label or ref}" for c, _ in KINDS]
    n = max(int(v) for v in table["n"])
    alpha = 1.0 - cfg.confidence
    mdes = ", ".join(f"{c.lower()} {100 * mde(float(np.median(sds[k])), n, alpha):.1f}"
                     for c, k in KINDS if sds[k])
    note = (f"Share of the {n} evaluation responses with at least one error of each kind, by the world's judge "
            "(`alignpipe.world.Judge.errors`: a fluency or coherence penalty, a wrong fact claim) and verifiers "
            f"(a failed constraint); {int(100 * cfg.confidence)}% bootstrap intervals over responses. Δ: paired "
            f"difference in points against {ref_label or ref} on the same prompts (negative = fewer errors), "
            "paired bootstrap interval over prompts, exact McNemar p, Holm-corrected over this table (raw p in "
            "the CSV). " + (f"Minimum detectable difference (80% power) from the median observed paired SD, in "
                            f"points: {mdes}; smaller changes in error rate are invisible here." if mdes else ""))
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *md_rows, "", note]) + "\n"
    return table, md
