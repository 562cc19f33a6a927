"""The report's paired columns: each row against its reference(s) on the same prompts, with a power statement.

Every evaluated model answers the same evaluation prompts, so a row is compared with its reference prompt by prompt
(:mod:`alignpipe.evaluate.paired`), from the stored ``data/evaluate/<name>/generations.jsonl``:

- ``Δ HSR Avg vs R [95% CI]`` (points) with its paired bootstrap interval (groups resampled within category, one
  draw for both models) and ``p HSR vs R``: exact McNemar on the per-instruction hard verdicts;
- ``Δ <Fluency | Factuality | Coherence> vs R (p)`` (judge scale 1-10): mean per-prompt difference, Wilcoxon
  signed-rank p (the interval is in the CSV).

Every p shown is Holm-corrected over all the tests of its table (the CSV also keeps the raw p). Under the table a
note gives n, the minimum detectable effect (MDE, 80% power, two-sided alpha = 1 - evaluate.confidence) per metric
from the observed paired SDs, the units a table would need to reach issue 15's targets (3 points of HSR Avg,
0.15 on the judge scale), and what the table can and cannot detect. A row whose generations are absent (or lack
the verdicts / judge scores) gets ``–``; the reference's own row ``ref.``.

    cmp = compare(params, "data/evaluate", {"sft": "SFT", "dpo_full": "Full-DPO"}, {"sft": "SFT"})
    table.join(cmp.frame)     # the CSV columns (numbers)
    cmp.cells, cmp.note       # the markdown cells and the lines under the table
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from alignpipe.config import Params
from alignpipe.evaluate.paired import (
    PairedDiff,
    holm,
    mde,
    mde_factor,
    paired_followbench,
    paired_judge,
    required_n,
)
from alignpipe.utils.io import read_jsonl
from alignpipe.utils.seed import derive_seed

# (column, key, display scale, decimals, unit of the interval / MDE, issue 15's MDE target on the display scale)
METRICS = (("HSR Avg", "hsr_avg", 100.0, 1, "groups", 3.0), ("Fluency", "fluency", 1.0, 2, "prompts", 0.15),
           ("Factuality", "factuality", 1.0, 2, "prompts", 0.15), ("Coherence", "coherence", 1.0, 2, "prompts", 0.15))
JUDGE = tuple(key for _, key, *_ in METRICS[1:])
POWER = 0.8
VERDICT_FIELDS = ("group_id", "category", "level", "verdicts")


@dataclass
class Comparisons:
    """A table's paired columns: ``frame`` (numbers, for the CSV), ``cells`` (markdown strings), ``note``."""

    frame: pd.DataFrame
    cells: pd.DataFrame
    note: str


def _load(eval_dir: Path, name: str) -> list[dict[str, Any]] | None:
    path = eval_dir / name / "generations.jsonl"
    return read_jsonl(path) if path.is_file() else None


def _has_verdicts(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(all(k in r for k in VERDICT_FIELDS) for r in rows)


def pair(params: Params, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, PairedDiff | None]:
    """The four paired differences a - b (None where the generations cannot give one)."""
    cfg = params.evaluate
    out: dict[str, PairedDiff | None] = dict.fromkeys((key for _, key, *_ in METRICS), None)
    shared = {str(r.get("id")) for r in a} & {str(r.get("id")) for r in b}
    if not shared:
        return out
    if _has_verdicts(a) and _has_verdicts(b):
        out["hsr_avg"] = paired_followbench(a, b, cfg.levels, cfg.bootstrap_samples, cfg.confidence,
                                            derive_seed(params.seed, "report", "paired", "hsr"))
    if all("id" in r for r in (*a, *b)):
        try:
            out.update(paired_judge(a, b, JUDGE, cfg.bootstrap_samples, cfg.confidence,
                                    derive_seed(params.seed, "report", "paired", "judge")))
        except ValueError:  # no prompt judge-scored on both sides (e.g. every judge output unparseable)
            pass
    return out


def _signed(value: float, decimals: int) -> str:
    """``+1.2`` / ``-0.5``; a value that rounds to zero without a sign."""
    text = f"{value:+.{decimals}f}"
    return text[1:] if float(text) == 0 else text


def p_text(p: float) -> str:
    """A p-value for a cell: 3 decimals, ``<0.001`` below."""
    return "–" if math.isnan(p) else "<0.001" if p < 0.0005 else f"{p:.3f}"


def _range(values: list[float], decimals: int) -> str:
    texts = sorted({f"{v:.{decimals}f}" for v in values}, key=float)
    return texts[0] if len(texts) == 1 else f"{texts[0]}–{texts[-1]}"


def compare(params: Params, eval_dir: str | Path, rows: Mapping[str, str],
            references: Mapping[str, str]) -> Comparisons:
    """Each row against each reference, paired on the prompts both answered; Holm over the whole table.

    Args:
        params: the run's params (``evaluate.levels``, ``.bootstrap_samples``, ``.confidence``; ``seed``).
        eval_dir: the evaluate stage's root; ``<eval_dir>/<name>/generations.jsonl`` per model.
        rows: model name -> row label, in table order.
        references: model name -> the label it has in this table's column headings (SFT; DPO for BMC).

    Returns:
        :class:`Comparisons` indexed by row label. Seeds: ``derive_seed(seed, "report", "paired", "hsr" | "judge")``,
        the same for every comparison (as the evaluate stage draws the same resamples for every model), so the
        numbers are identical wherever a comparison appears.
    """
    eval_dir = Path(eval_dir)
    confidence = params.evaluate.confidence
    alpha = 1.0 - confidence
    gens = {name: _load(eval_dir, name) for name in dict.fromkeys([*references, *rows])}
    results: dict[tuple[str, str], dict[str, PairedDiff | None] | None] = {}
    order = list(references)
    is_ref = {(ref, name): name == ref or (name in references and order.index(name) < order.index(ref))
              for ref in references for name in rows}  # two references are compared once, in the later one's row
    for ref in references:
        for name in rows:
            if is_ref[ref, name] or gens[name] is None or gens[ref] is None:
                results[ref, name] = None
            else:
                results[ref, name] = pair(params, gens[name], gens[ref])
    # Holm over every test of the table, in a fixed order (reference, row, metric).
    flat = [(ref, name, key) for (ref, name), res in results.items() if res for _, key, *_ in METRICS if res[key]]
    adjusted = dict(zip(flat, holm([results[ref, name][key].p for ref, name, key in flat]), strict=True))
    k = len(flat)

    frame: dict[str, dict[str, float]] = {label: {} for label in rows.values()}
    cells: dict[str, dict[str, str]] = {label: {} for label in rows.values()}
    for ref, ref_label in references.items():
        for name, label in rows.items():
            res = results[ref, name]
            for column, key, scale, decimals, _, _ in METRICS:
                d = res[key] if res else None
                base = f"Δ {column} vs {ref_label}"
                values = dict.fromkeys([base, f"{base} lo", f"{base} hi", f"p {column} vs {ref_label}",
                                        f"p {column} vs {ref_label} (Holm)", f"MDE {column} vs {ref_label}"], math.nan)
                if d is not None:
                    values.update({base: d.delta * scale, f"p {column} vs {ref_label}": d.p,
                                   f"p {column} vs {ref_label} (Holm)": adjusted[ref, name, key],
                                   f"MDE {column} vs {ref_label}": mde(d.sd * scale, d.n, alpha, POWER)})
                    if d.lo is not None:
                        values[f"{base} lo"], values[f"{base} hi"] = d.lo * scale, d.hi * scale
                frame[label].update(values)
                text = "ref." if is_ref[ref, name] else "–"
                if d is not None:
                    text = _signed(d.delta * scale, decimals)
                    if key == "hsr_avg" and d.lo is not None:
                        text += f" [{_signed(d.lo * scale, decimals)}, {_signed(d.hi * scale, decimals)}]"
                    if key != "hsr_avg":
                        text += f" ({p_text(adjusted[ref, name, key])})"
                if key == "hsr_avg":
                    cells[label][f"Δ HSR Avg vs {ref_label} [{confidence:.0%} CI]"] = text
                    cells[label][f"p HSR vs {ref_label}"] = (p_text(adjusted[ref, name, key]) if d is not None
                                                            else text)
                else:
                    cells[label][f"Δ {column} vs {ref_label} (p)"] = text
    index = pd.Index(list(rows.values()), name="Model")
    frame_df = pd.DataFrame.from_dict(frame, orient="index").reindex(index)
    cells_df = pd.DataFrame.from_dict(cells, orient="index").reindex(index)
    return Comparisons(frame_df, cells_df, _note(params, rows, references, results, gens, k))


def _note(params: Params, rows: Mapping[str, str], references: Mapping[str, str],
          results: Mapping[tuple[str, str], Mapping[str, PairedDiff | None] | None],
          gens: Mapping[str, list[dict[str, Any]] | None], k: int) -> str:
    """The lines under a table: n, how the columns were computed, the MDEs, what the table can and cannot detect."""
    cfg = params.evaluate
    alpha = 1.0 - cfg.confidence
    refs = ", ".join(references.values())
    absent = [rows.get(n, references.get(n)) for n, g in gens.items() if g is None]
    diffs = [d for res in results.values() if res for d in res.values() if d is not None]
    lines = []
    if not diffs:
        why = f" (no generations.jsonl for {', '.join(absent)})" if absent else ""
        return (f"Paired columns (vs {refs}): not available{why}; they need the stored generations of a row and its "
                "reference.\n")

    def sizes(key: str, unit: str) -> str:
        ds = [res[key] for res in results.values() if res and res[key] is not None]
        if not ds:
            return f"– {unit}"
        text = f"{_range([d.n for d in ds], 0)} {unit}"
        return text + (f" / {_range([d.n_test for d in ds], 0)} instructions" if key == "hsr_avg" else "")

    interval = (f"[lo, hi]: {cfg.confidence:.0%} paired percentile bootstrap, {cfg.bootstrap_samples} resamples "
                "with one draw for both models (HSR Avg: groups within category; judge: prompts)"
                if cfg.bootstrap_samples else "no intervals (evaluate.bootstrap_samples = 0)")
    lines.append(
        f"Paired against {refs} on the same prompts (Δ = row − reference; HSR Avg in points, judge on its 1-10 "
        f"scale): n = {sizes('hsr_avg', 'groups')} (HSR Avg), {sizes('fluency', 'prompts')} (judge). {interval}. "
        f"p: two-sided, Holm-corrected over the {k} tests of this table (raw p in the CSV); HSR Avg: exact McNemar on "
        "the per-instruction hard verdicts (the levels of a group count as independent pairs, so p may be optimistic "
        "where they correlate; the interval resamples whole groups); judge: Wilcoxon signed-rank on the per-prompt "
        "differences, zeros dropped (bounded scores with a ceiling give skewed differences with many zeros: no "
        "normality assumed). ref.: the reference itself (two references are compared once, in the later one's row); "
        "–: no paired data."
    )
    per_ref = []
    for ref, ref_label in references.items():
        parts = []
        for column, key, scale, decimals, unit, target in METRICS:
            ds = [results[ref, n][key] for n in rows if results[ref, n] and results[ref, n][key] is not None]
            ds = [d for d in ds if d.n > 1 and d.sd > 0]  # sd 0 (no difference varies) cannot size a test
            if not ds:
                parts.append(f"{column} – (no paired difference varies)")
                continue
            mdes = [mde(d.sd * scale, d.n, alpha, POWER) for d in ds]
            need = required_n(max(d.sd for d in ds) * scale, target, alpha, POWER)
            parts.append(f"{column} {_range(mdes, decimals)}{' points' if key == 'hsr_avg' else ''} "
                         f"(≤ {target:g} needs ≈ {need} {unit})")
        if parts:
            per_ref.append(f"vs {ref_label}: " + ", ".join(parts))
    holm_factor = mde_factor(alpha / max(k, 1), POWER) / mde_factor(alpha, POWER)
    mdes = "; ".join(per_ref) or "not computable (fewer than 2 paired units)"
    lines.append(
        f"MDE (minimum detectable paired difference, {POWER:.0%} power, two-sided α {alpha:.2g}; normal approximation "
        f"(z_{{1-α/2}} + z_{{{POWER:g}}})·sd_d/√n = {mde_factor(alpha, POWER):.2f}·sd_d/√n, sd_d the observed SD of "
        "each row's per-group (HSR Avg) or per-prompt (judge) differences; range over the rows, and the units the "
        f"noisiest row would need for issue 15's targets): {mdes}. At Holm's first step (α/{k}) an effect must be "
        f"{holm_factor:.2f}× the MDE."
    )
    lines.append(
        "This table can detect paired differences of about the MDE or more; it cannot detect smaller ones: a Δ whose "
        "interval covers 0 and whose size is below the MDE is inconclusive, not evidence of no effect."
        + (f" No paired data for {', '.join(absent)} (no generations.jsonl)." if absent else "")
    )
    return "\n".join(lines) + "\n"

