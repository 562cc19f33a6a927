"""Paired inference for two models evaluated on the same prompts: differences, intervals, tests, power.

Every model of the pipeline answers the SAME evaluation prompts, so a comparison of two models is a paired one:
the difference is taken unit by unit and its spread (``sd_d``, the SD of the per-unit differences) is what the
interval and the test see, which is far smaller than two independent intervals suggest when the models' outcomes
correlate. Units:

- HSR Avg: **groups** (one base instruction and its levels) for the interval and the MDE, resampled within each
  category exactly as :func:`alignpipe.evaluate.metrics.bootstrap_ci` does, the same resample for both models;
  the test is an exact **McNemar** test (:func:`mcnemar_exact`) on the per-instruction hard verdicts (all
  constraints met or not). McNemar treats the instructions as independent pairs; the five levels of one group
  may be correlated, in which case its p-value is optimistic, while the group-resampled interval is not.
- Judge scores: **prompts** (one response each) for the interval, the MDE and the test, a **Wilcoxon signed-rank**
  test (:func:`wilcoxon_signed_rank`) of the per-prompt differences. Chosen over the paired t-test because the
  judge's scores are bounded (1-10) with a ceiling (fluency near 9 for SFT), so the differences are skewed and
  many are exactly zero (same response, same score); the signed-rank test needs no normality and, like McNemar,
  drops the zero differences (Wilcoxon's original convention). It tests a shift of the differences' location,
  the reported Δ is their mean (with its bootstrap interval).

:func:`holm` corrects a family of p-values (Holm 1979, step-down). :func:`mde` is the minimum detectable effect
of a paired mean difference at a given power, by the normal approximation
``MDE = (z_{1-alpha/2} + z_{power}) * sd_d / sqrt(n)`` (2.80 * sd_d / sqrt(n) at alpha 0.05 and 80% power);
:func:`required_n` inverts it.

All functions are pure; the bootstrap draws from a ``numpy.random.Generator`` built from the given seed, so the
same inputs and seed give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats

from alignpipe.config import LEVELS
from alignpipe.evaluate.metrics import (JUDGE_KEYS, _aggregate, _blocks, _rng, check_bootstrap, instruction_table,
                                        percentile_interval)

KEYS = ["category", "group_id", "level"]


class PairedDiff(NamedTuple):
    """A paired difference A - B on the same units, with its interval, test and spread.

    ``lo``/``hi`` are None without bootstrap resamples. ``n``: the units of the interval and the MDE (groups for
    HSR, prompts for judge scores); ``sd``: the SD (ddof 1) of the per-unit differences (NaN for n < 2);
    ``test``: ``"mcnemar"`` or ``"wilcoxon"``; ``n_test``: the pairs the test saw (instructions or prompts);
    ``discordant``: McNemar's ``(b, c)`` = (A passes and B fails, A fails and B passes), else None.
    """

    delta: float
    lo: float | None
    hi: float | None
    p: float
    n: int
    sd: float
    test: str
    n_test: int
    discordant: tuple[int, int] | None = None


# ---- tests, correction, power --------------------------------------------------------------------------------------
def sign_test(diffs: Sequence[float] | np.ndarray) -> float:
    """Exact two-sided sign test: positives vs negatives under Binomial(n, 1/2), zeros dropped (1.0 if none left)."""
    d = np.asarray(diffs, dtype=float)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    return 1.0 if pos + neg == 0 else float(stats.binomtest(pos, pos + neg, 0.5).pvalue)


def mcnemar_exact(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test of paired binary outcomes: ``(b, c, p)``.

    ``b`` = pairs where A succeeds and B fails, ``c`` = the reverse; under H0 (equal success rates) each
    discordant pair goes either way with probability 1/2, so ``p`` is the two-sided binomial test of ``b`` out of
    ``b + c`` (``scipy.stats.binomtest``); 1.0 when there is no discordant pair. E.g. b=8, c=2:
    p = 2 * P(X <= 2 | 10, 1/2) = 2 * 56/1024 = 0.109375.
    """
    a, b_ = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"paired outcomes need equal shapes, got {a.shape} and {b_.shape}")
    n_b, n_c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = 1.0 if n_b + n_c == 0 else float(stats.binomtest(n_b, n_b + n_c, 0.5).pvalue)
    return n_b, n_c, p


def wilcoxon_signed_rank(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (``scipy.stats.wilcoxon``).

    Zero differences are dropped first (Wilcoxon's convention, as McNemar drops concordant pairs); differences
    are rounded to 9 decimals so that float noise neither breaks a tie nor makes a zero. scipy's ``method="auto"``
    is used: exact for up to 50 nonzero differences, the normal approximation with tie correction above. 1.0 when
    no difference is nonzero. E.g. [1, -2, 3, 4, 5]: W- = 2, p = 2 * 3/32 = 0.1875.
    """
    d = np.round(np.asarray(diffs, dtype=float), 9)
    if np.isnan(d).any():
        raise ValueError("paired differences contain NaN")
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; NaN stays NaN and is not counted).

    With the m p-values sorted ascending, ``adj_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j))``; rejecting
    ``adj <= alpha`` controls the family-wise error rate at alpha. E.g. [0.01, 0.04, 0.03] -> [0.03, 0.06, 0.06].
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def mde_factor(alpha: float = 0.05, power: float = 0.8) -> float:
    """``z_{1-alpha/2} + z_{power}``: 2.80159 at alpha 0.05, power 0.8 (the MDE in units of the standard error)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"need 0 < alpha < 1 and 0 < power < 1, got {alpha}, {power}")
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a paired mean difference (two-sided test at ``alpha``, given ``power``).

    Normal approximation: ``(z_{1-alpha/2} + z_{power}) * sd / sqrt(n)`` with ``sd`` the SD of the per-unit
    differences and ``n`` the paired units; at alpha 0.05 and power 0.8 the factor is 1.95996 + 0.84162 = 2.80159.
    NaN when ``n < 2`` or ``sd`` is NaN.
    """
    if n < 2 or sd is None or math.isnan(sd):
        return math.nan
    return mde_factor(alpha, power) * float(sd) / math.sqrt(n)


def required_n(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired units needed for :func:`mde` to reach ``effect``: ``ceil(((z_{1-a/2} + z_power) * sd / effect)^2)``
    (None when ``sd`` is NaN; at least 2)."""
    if sd is None or math.isnan(sd):
        return None
    if effect <= 0:
        raise ValueError(f"effect must be positive, got {effect}")
    return max(2, math.ceil((mde_factor(alpha, power) * float(sd) / effect) ** 2))


# ---- bootstrap -------------------------------------------------------------------------------------------------
def paired_bootstrap_mean(
    diffs: Sequence[float] | np.ndarray,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> list[tuple[float | None, float | None]]:
    """Percentile bootstrap interval of the mean of per-unit paired differences, resampling units.

    Args:
        diffs: shape (n,) or (n, k): one row per unit (prompt), one column per measure; every column is
            resampled with the same draw of units.
        n_resamples: resamples; 0 gives ``(None, None)`` per column.
        confidence: coverage of the percentile interval.
        seed: an int or a ``numpy.random.Generator``.

    Returns:
        One ``(lo, hi)`` per column. A constant difference gives a zero-width interval.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[:, None] if d.ndim == 1 else d
    if d.shape[0] == 0:
        raise ValueError("no paired unit to resample")
    check_bootstrap(n_resamples, confidence)
    if n_resamples == 0:
        return [(None, None)] * d.shape[1]
    idx = _rng(seed).integers(0, d.shape[0], size=(n_resamples, d.shape[0]))
    boot = d[idx].mean(axis=1)  # (B, k)
    return [percentile_interval(boot[:, j], confidence) for j in range(d.shape[1])]


# ---- the two paired comparisons of the report ----------------------------------------------------------------------
def paired_followbench(
    rows_a: Iterable[Mapping[str, Any]],
    rows_b: Iterable[Mapping[str, Any]],
    levels: Sequence[int] = LEVELS,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> PairedDiff:
    """HSR Avg of A minus HSR Avg of B on the instructions both have verdicts for (fractions, not percent).

    The point estimate is FollowBench's HSR Avg (:func:`alignpipe.evaluate.metrics.followbench_scores`) of each
    model on the shared (category, group, level) instructions. The interval resamples groups within each category
    (every category keeps its size) with ONE draw applied to both models. The test: :func:`mcnemar_exact` on the
    per-instruction hard verdicts. ``sd``: SD of the per-group differences of the group's mean hard verdict over
    its levels (whose mean is the HSR Avg difference when every category has the same number of groups and every
    group every level), ``n`` the number of groups.

    Raises:
        ValueError: invalid rows (see :func:`alignpipe.evaluate.metrics.instruction_table`) or no shared instruction.
    """
    check_bootstrap(n_resamples, confidence)
    # An instruction without verdicts (official FollowBench: judge output unparseable, or left unjudged) is no score;
    # it is left out as in the model's own HSR, and the pairing keeps what both models have.
    ta, tb = (instruction_table([r for r in rows if r.get("verdicts") is not None], levels)
              for rows in (rows_a, rows_b))
    merged = ta.merge(tb, on=KEYS, suffixes=("_a", "_b")).sort_values(KEYS, ignore_index=True)
    if merged.empty:
        raise ValueError("the two models share no scored instruction; were they evaluated on the same pool?")
    side = {s: merged[KEYS + [f"hard_{s}", f"soft_{s}"]].rename(columns={f"hard_{s}": "hard", f"soft_{s}": "soft"})
            for s in ("a", "b")}
    _, _, blocks_a = _blocks(side["a"])
    _, _, blocks_b = _blocks(side["b"])
    ident = [np.arange(len(csl))[None, :] for _, _, csl in blocks_a]
    delta = float(_aggregate(blocks_a, ident)["hsr_avg"][0] - _aggregate(blocks_b, ident)["hsr_avg"][0])
    lo = hi = None
    if n_resamples:
        rng = _rng(seed)
        idx = [rng.integers(0, len(csl), size=(n_resamples, len(csl))) for _, _, csl in blocks_a]
        lo, hi = percentile_interval(_aggregate(blocks_a, idx)["hsr_avg"] - _aggregate(blocks_b, idx)["hsr_avg"],
                                     confidence)
    n_b, n_c, p = mcnemar_exact(merged["hard_a"].to_numpy(), merged["hard_b"].to_numpy())
    per_group = (merged["hard_a"].astype(float) - merged["hard_b"].astype(float)).groupby(
        [merged["category"], merged["group_id"]], sort=True).mean().to_numpy()
    sd = float(np.std(per_group, ddof=1)) if per_group.size > 1 else math.nan
    return PairedDiff(delta, lo, hi, p, int(per_group.size), sd, "mcnemar", len(merged), (n_b, n_c))


def judge_pairs(rows_a: Iterable[Mapping[str, Any]], rows_b: Iterable[Mapping[str, Any]],
                keys: Sequence[str] = JUDGE_KEYS) -> tuple[list[str], np.ndarray]:
    """The prompt ids both models' judge scored (sorted) and the per-prompt differences A - B, shape (n, len(keys)).

    A prompt whose judge output is missing (None: unparseable) on either side is left out.
    """
    def scored(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        out = {}
        for row in rows:
            judged = row.get("judge")
            if judged is not None and all(_number(judged.get(k)) for k in keys):
                out[str(row["id"])] = judged
        return out

    a, b = scored(rows_a), scored(rows_b)
    ids = sorted(set(a) & set(b))
    diffs = np.array([[float(a[i][k]) - float(b[i][k]) for k in keys] for i in ids], dtype=float)
    return ids, diffs.reshape(len(ids), len(keys))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def paired_judge(
    rows_a: Iterable[Mapping[str, Any]],
    rows_b: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = JUDGE_KEYS,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> dict[str, PairedDiff]:
    """Mean judge score of A minus B per criterion, on the prompts both had scored (:func:`judge_pairs`).

    Interval: :func:`paired_bootstrap_mean` over prompts (one draw for every criterion); test:
    :func:`wilcoxon_signed_rank`; ``sd``/``n``: the per-prompt differences and their number.

    Raises:
        ValueError: no prompt scored on both sides.
    """
    ids, diffs = judge_pairs(rows_a, rows_b, keys)
    if not ids:
        raise ValueError("the two models share no judge-scored prompt; were they evaluated on the same pool?")
    intervals = paired_bootstrap_mean(diffs, n_resamples, confidence, seed)
    n = len(ids)
    out = {}
    for j, key in enumerate(keys):
        d = diffs[:, j]
        sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
        out[key] = PairedDiff(float(d.mean()), *intervals[j], wilcoxon_signed_rank(d), n, sd, "wilcoxon", n)
    return out
