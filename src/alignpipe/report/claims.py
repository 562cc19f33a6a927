"""The claims table: one row per claim of the papers, measured as a paired effect on the default run's outputs.

Each claim names two models (A and B), a metric and the direction the paper claims (A > B or A < B). The rows are
built from what each variant *does* (its settings in ``align.variants``, ``sft_mix.mixtures``), never from its name,
so a renamed or added variant lands in the right claim (:func:`claims_of`). Every effect is paired on the same units:

- FollowBench HSR Avg and the judge's fluency / factuality / coherence: the report's paired comparison
  (:func:`alignpipe.report.paired.pair`; groups / prompts, McNemar / Wilcoxon signed-rank);
- LTE edit success and locality: per evaluation edit, the mean score of its questions of that kind, LTE minus the SFT
  policy with the same retrieved edits in context (``data/edit_eval/generations.jsonl``, largest store size of each
  editing mode); Wilcoxon signed-rank over edits, interval by a paired bootstrap over edits;
- Lion's relative score: per evaluation prompt, the student's score after the last round minus before the first,
  over the teacher's mean score (``data/synthesize/lion/round_*/.../eval_scores.jsonl``), in points of relative
  score; Wilcoxon signed-rank over prompts.

The verdict (two-sided α = 1 - ``evaluate.confidence``, Holm-corrected over every measured claim of the table):
**supported** where the corrected p < α and the effect has the claimed sign; **contradicted** where the corrected
p < α and the opposite sign; **inconclusive** otherwise, saying whether |Δ| is below the minimum detectable effect
(MDE, 80% power) or above it but not significant after Holm; **not measured** where a model's outputs are absent.
The measured effects are the built-in world's (or the user's data's); the paper's figure is shown for reference only,
on the paper's own benchmark and scale, and is never compared with the measurement.

Only evaluation sampling is in the interval: one training run per model. A training seed changes a model more than
the evaluation resampling says (see docs/methods.md), so a supported claim on one seed is a measurement of that run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alignpipe.config import Params, VariantSection, is_full_dpo
from alignpipe.evaluate.paired import PairedDiff, holm, mde, paired_bootstrap_mean, wilcoxon_signed_rank
from alignpipe.report.paired import POWER, p_text, pair
from alignpipe.report.rows import is_masked_dpo, is_plain, label, seed_mixture
from alignpipe.utils.io import read_jsonl
from alignpipe.utils.seed import derive_seed

# metric key -> (display name, display scale, decimals, unit of the MDE)
METRICS: dict[str, tuple[str, float, int, str]] = {
    "hsr_avg": ("HSR Avg (points)", 100.0, 1, "groups"),
    "fluency": ("Fluency (judge 1-10)", 1.0, 2, "prompts"),
    "factuality": ("Factuality (judge 1-10)", 1.0, 2, "prompts"),
    "coherence": ("Coherence (judge 1-10)", 1.0, 2, "prompts"),
    "edit_success": ("Edit success (%)", 100.0, 1, "edits"),
    "locality": ("Locality (%)", 100.0, 1, "edits"),
    "relative_score": ("Relative score vs teacher (points)", 1.0, 1, "prompts"),
}
# Hierarchical Alignment has no official code and ../shared/REFERENCES.md records its claims, not its numbers.
NO_FIGURE = "stated in the paper (Llama-3.1-8B, Qwen1.5-7B; LLM judge); no figure recorded"
EVALUATED = ("hsr_avg", "fluency", "factuality", "coherence")


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a test: ``metric`` of ``a`` minus ``b`` has the sign of ``direction`` (+1 / -1).

    ``a``/``b``: evaluated model names (``data/evaluate/<name>``), or for LTE the systems ``lte``/``icl`` with the
    editing mode in ``detail``, for Lion the rounds ``last``/``first``. ``figure``: the paper's own number(s), for
    reference. ``detail``: what else selects the units (LTE: the editing mode).
    """

    paper: str
    claim: str
    metric: str
    a: str
    b: str
    direction: int
    figure: str = ""
    detail: str = ""


def _first(params: Params, pred: Callable[[VariantSection], bool]) -> str | None:
    return next((n for n, v in params.align.variants.items() if pred(v)), None)


def _block(name: str) -> Callable[[VariantSection], bool]:
    return lambda v: is_plain(v) and v.peft == "lora" and v.layers is None and v.block == name


def _is_allo(v: VariantSection) -> bool:
    """ALLO as the paper runs it: forgetting with token weights, masks for both stages, top-ε learning, all layers."""
    a = v.allo
    return (a is not None and a.forget and a.token_weights and a.top_eps < 1.0 and a.block == "all"
            and a.forget_ratio is not None and a.learn_ratio is not None)


def _is_allo_ablation(v: VariantSection) -> bool:
    """One ALLO component removed (no mask, no token weights, no forgetting), all layers; not plain masked DPO."""
    return v.allo is not None and v.allo.block == "all" and not _is_allo(v) and not is_masked_dpo(v)


def _mixture(params: Params, extra: str) -> str | None:
    """The mixture that is the seed data plus exactly ``extra`` (``[seed, webr]``), if any."""
    return next((n for n, src in params.sft_mix.mixtures.items() if sorted(src) == sorted(["seed", extra])), None)


def claims_of(params: Params) -> list[Claim]:
    """The claims the run's variants can test, in paper order; a claim whose variant the run lacks is left out
    (:func:`measure` marks the ones whose outputs are missing)."""
    ref = params.report.reference
    full = _first(params, is_full_dpo)
    local, mid, glob = (_first(params, _block(b)) for b in ("local", "mid", "global"))
    lora_all = _first(params, _block("all"))
    hier = "Hierarchical Alignment"
    out: list[Claim] = []
    if local:
        out.append(Claim(hier, "Local-Align improves fluency", "fluency", local, ref, +1,
                         NO_FIGURE))
    if glob:
        out.append(Claim(hier, "Global-Align improves factual consistency", "factuality", glob, ref, +1,
                         NO_FIGURE))
        for other in (full, lora_all, local, mid):
            if other:
                out.append(Claim(hier, "Global-Align is best on logical coherence", "coherence", glob, other, +1,
                                 NO_FIGURE))
    if full:
        out.append(Claim(hier, "Full DPO raises fluency (alignment tax: fluency up ...)", "fluency", full, ref, +1,
                         NO_FIGURE))
        out.append(Claim(hier, "... and lowers logical coherence (alignment tax)", "coherence", full, ref, -1,
                         NO_FIGURE))
        for block in (local, mid, glob):
            if block:
                out.append(Claim(hier, "Block-restricted DPO avoids the tax (coherence above full DPO)", "coherence",
                                 block, full, +1, NO_FIGURE))
    allo = _first(params, _is_allo)
    if allo and full:
        out.append(Claim("ALLO", "ALLO beats DPO", "hsr_avg", allo, full, +1,
                         "instruction following avg: DPO 61.05, ALLO 65.34"))
    if allo:
        for name, v in params.align.variants.items():
            if name != allo and _is_allo_ablation(v):
                out.append(Claim("ALLO", "Removing a component of ALLO hurts", "hsr_avg", name, allo, -1,
                                 "ablation rows below ALLO in the paper's tables"))
    bc = _first(params, lambda v: v.pairs == "bridged" and v.token_weights == "none" and v.peft == "none")
    mc = _first(params, lambda v: v.pairs == "original" and v.token_weights == "bmc" and v.peft == "none")
    bmc = _first(params, lambda v: v.pairs == "bridged" and v.token_weights == "bmc" and v.peft == "none")
    if bmc and bc:
        out.append(Claim("BMC", "DPO-BMC beats DPO-BC (modeling on top of bridging)", "hsr_avg", bmc, bc, +1,
                         "paper's tables: QA, math, AlpacaEval 2, Arena-Hard"))
    if mc and full:
        out.append(Claim("BMC", "DPO-MC beats DPO (token-correlation weights)", "hsr_avg", mc, full, +1,
                         "paper's tables: QA, math, AlpacaEval 2, Arena-Hard"))
    if params.report.lte:
        for mode in params.edit_eval.modes:
            out.append(Claim("LTE", "LTE beats in-context editing on edit success", "edit_success", "lte", "icl", +1,
                             "edit success above in-context editing on KnowEdit", mode))
            out.append(Claim("LTE", "LTE beats in-context editing on locality", "locality", "lte", "icl", +1,
                             "locality above in-context editing on KnowEdit", mode))
    if params.synthesize.lion.enabled and params.synthesize.lion.rounds > 0:
        out.append(Claim("Lion", "Lion's rounds raise the student's relative score", "relative_score", "last",
                         "first", +1, "Lion-7B: 93.81 relative to ChatGPT (GPT-4 judge)"))
    seed = seed_mixture(params)
    for extra, paper, figure in (("webr", "WebR", "AlpacaEval 2 (Llama3-8B): WebR-Basic 25.33, WebR-Pro 34.36"),
                                 ("lion", "Lion", "Lion-7B: 93.81 relative to ChatGPT (GPT-4 judge)")):
        mix = _mixture(params, extra)
        if mix and seed and mix != seed:
            out.append(Claim(paper, f"{paper} data raise instruction following over the seed data", "hsr_avg",
                             f"mix_{mix}", f"mix_{seed}", +1, figure))
    return out


# ---- measuring ------------------------------------------------------------------------------------------------------
def _paired_units(diffs: list[float], params: Params, *key: str) -> PairedDiff | None:
    if not diffs:
        return None
    d = np.asarray(diffs, dtype=float)
    cfg = params.evaluate
    (lo, hi), = paired_bootstrap_mean(d, cfg.bootstrap_samples, cfg.confidence, derive_seed(params.seed, *key))
    sd = float(np.std(d, ddof=1)) if d.size > 1 else math.nan
    return PairedDiff(float(d.mean()), lo, hi, wilcoxon_signed_rank(d), int(d.size), sd, "wilcoxon", int(d.size))


def lte_diff(rows: list[dict[str, Any]], metric: str, mode: str, params: Params) -> PairedDiff | None:
    """LTE minus in-context editing per evaluation edit (mean over the edit's questions of the metric's kind), at
    the largest store size of ``mode``; None when either system has no such question."""
    kind = "prompt" if metric == "edit_success" else "locality"
    picked = [r for r in rows if r.get("mode") == mode and r.get("kind") == kind]
    if not picked:
        return None
    size = max(max(r["sizes"]) for r in picked)
    per: dict[str, dict[str, list[float]]] = {"lte": {}, "icl": {}}
    for r in picked:
        if size in r["sizes"] and r.get("system") in per:
            per[r["system"]].setdefault(str(r["edit_id"]), []).append(float(r["score"]))
    shared = sorted(set(per["lte"]) & set(per["icl"]))
    diffs = [float(np.mean(per["lte"][e]) - np.mean(per["icl"][e])) for e in shared]
    return _paired_units(diffs, params, "report", "claims", "lte", metric, mode)


def _lion_rounds(lion_dir: Path) -> list[Path]:
    """The evaluation-prompt scores per round: round 0's baseline, then each round's discrimination."""
    out = []
    first = lion_dir / "round_0" / "baseline" / "eval_scores.jsonl"
    if first.is_file():
        out.append(first)
    rounds = sorted((p for p in lion_dir.glob("round_*") if p.name[6:].isdigit() and p.name != "round_0"),
                    key=lambda p: int(p.name[6:]))
    out += [p / "discrimination" / "eval_scores.jsonl" for p in rounds
            if (p / "discrimination" / "eval_scores.jsonl").is_file()]
    return out


def lion_diff(lion_dir: Path, params: Params) -> PairedDiff | None:
    """Relative-score points gained per evaluation prompt from the first to the last scored round:
    100 * (student_last - student_first) / mean teacher score of the first round. None with fewer than two rounds."""
    files = _lion_rounds(lion_dir)
    if len(files) < 2:
        return None

    def scores(path: Path) -> dict[str, tuple[float, float]]:
        return {str(r["id"]): (float(r["student_score"]), float(r["teacher_score"])) for r in read_jsonl(path)
                if r.get("student_score") is not None and r.get("teacher_score") is not None}

    first, last = scores(files[0]), scores(files[-1])
    shared = sorted(set(first) & set(last))
    teacher = float(np.mean([first[i][1] for i in shared])) if shared else 0.0
    if not shared or teacher <= 0:
        return None
    return _paired_units([100.0 * (last[i][0] - first[i][0]) / teacher for i in shared], params,
                         "report", "claims", "lion")


def _generations(eval_dir: Path, name: str) -> list[dict[str, Any]] | None:
    path = eval_dir / name / "generations.jsonl"
    return read_jsonl(path) if path.is_file() else None


def measure(params: Params, claims: list[Claim], eval_dir: str | Path, edit_eval_dir: str | Path,
            synth_dir: str | Path) -> list[tuple[Claim, PairedDiff | None, str]]:
    """Each claim's paired difference (None with the reason where its outputs are absent)."""
    eval_dir, edit_eval_dir, synth_dir = Path(eval_dir), Path(edit_eval_dir), Path(synth_dir)
    gens: dict[str, list[dict[str, Any]] | None] = {}
    pairs: dict[tuple[str, str], dict[str, PairedDiff | None]] = {}
    lte_rows = None
    out = []
    for c in claims:
        if c.metric in EVALUATED:
            for name in (c.a, c.b):
                if name not in gens:
                    gens[name] = _generations(eval_dir, name)
            missing = [n for n in (c.a, c.b) if gens[n] is None]
            if missing:
                out.append((c, None, f"no {eval_dir}/{missing[0]}/generations.jsonl"))
                continue
            if (c.a, c.b) not in pairs:
                pairs[c.a, c.b] = pair(params, gens[c.a], gens[c.b])
            d = pairs[c.a, c.b][c.metric]
            out.append((c, d, "" if d is not None else "no shared scored prompt"))
        elif c.metric in ("edit_success", "locality"):
            path = edit_eval_dir / "generations.jsonl"
            if lte_rows is None and path.is_file():
                lte_rows = read_jsonl(path)
            d = lte_diff(lte_rows, c.metric, c.detail, params) if lte_rows is not None else None
            out.append((c, d, "" if d is not None else f"no {path} with both systems ({c.detail})"))
        else:
            d = lion_diff(synth_dir / "lion", params)
            out.append((c, d, "" if d is not None else f"fewer than two scored Lion rounds under {synth_dir}/lion"))
    return out


def verdict(delta: float, p_holm: float, direction: int, mde_value: float, alpha: float) -> str:
    """supported / contradicted (Holm-corrected p < alpha, by the sign) or inconclusive, with why."""
    if p_holm < alpha and delta != 0:
        return "supported" if math.copysign(1, delta) == direction else "contradicted"
    if not math.isnan(mde_value) and abs(delta) < mde_value:
        return "inconclusive (|Δ| < MDE)"
    return "inconclusive (not significant after Holm)"


def _model(params: Params, c: Claim, name: str) -> str:
    if c.metric in ("edit_success", "locality"):
        return f"{'LTE' if name == 'lte' else 'SFT + in-context edits'} ({c.detail})"
    if c.metric == "relative_score":
        return "last round" if name == "last" else "round 0"
    return label(params, name)


def claims_table(params: Params, eval_dir: str | Path = "data/evaluate", edit_eval_dir: str | Path = "data/edit_eval",
                 synth_dir: str | Path = "data/synthesize") -> tuple[pd.DataFrame, str]:
    """The claims table (numbers, for the CSV) and its markdown with the note under it."""
    alpha = 1.0 - params.evaluate.confidence
    measured = measure(params, claims_of(params), eval_dir, edit_eval_dir, synth_dir)
    tested = [i for i, (_, d, _) in enumerate(measured) if d is not None and not math.isnan(d.p)]
    adjusted = dict(zip(tested, holm([measured[i][1].p for i in tested]), strict=True)) if tested else {}
    records, lines = [], []
    head = ["Paper", "Claim", "Metric", "A", "B", "Claimed", "Δ = A − B [95% CI]", "p (Holm)", "MDE", "n",
            "Verdict", "Paper's figure"]
    lines += ["| " + " | ".join(head) + " |", "|---|---|---|---|---|:---:|---:|---:|---:|---:|---|---|"]
    for i, (c, d, why) in enumerate(measured):
        name, scale, decimals, unit = METRICS[c.metric]
        a, b = _model(params, c, c.a), _model(params, c, c.b)
        rec: dict[str, Any] = {"Paper": c.paper, "Claim": c.claim, "Metric": name, "A": a, "B": b,
                               "Claimed": "A > B" if c.direction > 0 else "A < B", "Delta": math.nan,
                               "Delta lo": math.nan, "Delta hi": math.nan, "p": math.nan, "p (Holm)": math.nan,
                               "MDE": math.nan, "n": math.nan, "unit": unit, "Test": "", "Verdict": "not measured",
                               "Why": why, "Paper's figure": c.figure}
        cells = ["–"] * 5
        if d is not None:
            m = mde(d.sd * scale, d.n, alpha, POWER) if d.n > 1 and d.sd > 0 else math.nan
            p_h = adjusted.get(i, math.nan)
            rec.update({"Delta": d.delta * scale, "p": d.p, "p (Holm)": p_h, "MDE": m, "n": d.n, "Test": d.test,
                        "Verdict": verdict(d.delta, p_h, c.direction, m / scale if not math.isnan(m) else m, alpha)})
            if d.lo is not None:
                rec["Delta lo"], rec["Delta hi"] = d.lo * scale, d.hi * scale
            ci = f" [{d.lo * scale:+.{decimals}f}, {d.hi * scale:+.{decimals}f}]" if d.lo is not None else ""
            cells = [f"{d.delta * scale:+.{decimals}f}{ci}", p_text(p_h),
                     "–" if math.isnan(m) else f"{m:.{decimals}f}", f"{d.n} {unit}", f"**{rec['Verdict']}**"]
        else:
            cells = ["–", "–", "–", "–", f"not measured ({why})"]
        records.append(rec)
        lines.append("| " + " | ".join([c.paper, c.claim, name, a, b, rec["Claimed"], *cells, c.figure or "–"])
                     + " |")
    table = pd.DataFrame.from_records(records)
    if not records:
        return table, ""
    lines += [
        "",
        f"{len(records)} claims, {len(tested)} measured. Δ: A minus B on the same units (paired); interval: "
        f"{params.evaluate.confidence:.0%} paired percentile bootstrap ({params.evaluate.bootstrap_samples} "
        "resamples; HSR Avg: groups within category; judge: prompts; LTE: edits; Lion: prompts). p: two-sided, "
        f"Holm-corrected over the {len(tested)} measured claims (raw p in the CSV); HSR Avg: exact McNemar on the "
        "per-instruction verdicts; judge, LTE, Lion: Wilcoxon signed-rank. MDE: the smallest paired effect this "
        f"sample detects with {POWER:.0%} power at two-sided α {alpha:.2g} (2.80·sd_d/√n from the observed "
        "differences). Verdict: supported / contradicted where the corrected p < α (by the sign of Δ against the "
        "claimed direction), else inconclusive: |Δ| below the MDE (the table cannot see an effect that small) or "
        "above it but not significant after Holm.",
        "What this table can and cannot say: the measurements are this run's (the built-in world unless the params "
        "name real models and data), on one training seed per model: the interval covers evaluation sampling, not "
        "training noise, so a verdict is about these trained models. The paper's figure is its own benchmark and "
        "scale, for reference only; no number here is the paper's.",
    ]
    return table, "\n".join(lines) + "\n"
