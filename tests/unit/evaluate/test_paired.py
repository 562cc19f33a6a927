"""Paired statistics against hand-computed values: McNemar, sign and signed-rank tests, Holm, MDE, paired bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignpipe.evaluate.metrics import bootstrap_ci
from alignpipe.evaluate.paired import (
    holm,
    mcnemar_exact,
    mde,
    paired_bootstrap_mean,
    paired_followbench,
    paired_judge,
    required_n,
    sign_test,
    wilcoxon_signed_rank,
)


def test_mcnemar_exact_by_hand():
    # b = 8 (A passes, B fails), c = 2 (A fails, B passes), plus concordant pairs that do not count:
    # p = 2 * P(X <= 2 | n = 10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    a = [True] * 8 + [False] * 2 + [True] * 5 + [False] * 7
    b = [False] * 8 + [True] * 2 + [True] * 5 + [False] * 7
    assert mcnemar_exact(a, b) == (8, 2, pytest.approx(0.109375, abs=1e-12))
    assert mcnemar_exact(b, a)[2] == pytest.approx(0.109375, abs=1e-12)  # symmetric
    # b = 5, c = 0: p = 2 * (1/2)^5 = 0.0625; no discordant pair: p = 1.
    assert mcnemar_exact([True] * 5, [False] * 5)[2] == pytest.approx(0.0625, abs=1e-12)
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)
    with pytest.raises(ValueError, match="equal shapes"):
        mcnemar_exact([True], [True, False])


def test_sign_test_by_hand():
    # 6 positive, 1 negative, zeros dropped: p = 2 * (1 + 7) / 128 = 0.125.
    assert sign_test([0.5, 1, 2, 3, 0, 4, 5, -1, 0]) == pytest.approx(0.125, abs=1e-12)
    assert sign_test([0, 0]) == 1.0


def test_wilcoxon_signed_rank_by_hand():
    # d = [1, -2, 3, 4, 5]: ranks 1..5, W- = 2; exact null over 2^5 sign patterns: P(W- <= 2) = 3/32
    # ({}, {1}, {2}); two-sided p = 6/32 = 0.1875.
    assert wilcoxon_signed_rank([1, -2, 3, 4, 5]) == pytest.approx(0.1875, abs=1e-12)
    # All positive: p = 2 / 32 = 0.0625; zeros are dropped first (same p).
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5]) == pytest.approx(0.0625, abs=1e-12)
    assert wilcoxon_signed_rank([0, 1, 0, 2, 3, 4, 5]) == pytest.approx(0.0625, abs=1e-12)
    # Float noise is not a difference: 0.3 - (0.1 + 0.2) rounds to 0.
    assert wilcoxon_signed_rank([0.3 - (0.1 + 0.2)] * 4) == 1.0
    assert wilcoxon_signed_rank([]) == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(1*0.04, 0.06) = 0.06; back in input order.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06], atol=1e-12)
    # capped at 1; NaN passes through and does not count in m (m = 2 here: 2*0.3 = 0.6, max(0.8, 0.6) = 0.8).
    out = holm([0.3, math.nan, 0.8])
    assert out[0] == pytest.approx(0.6) and math.isnan(out[1]) and out[2] == pytest.approx(0.8)
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    assert holm([]).size == 0
    # a single test is not adjusted
    assert holm([0.04])[0] == pytest.approx(0.04)


def test_mde_and_required_n_by_hand():
    # (z_0.975 + z_0.8) = 1.959964 + 0.841621 = 2.801585; sd 1, n 100 -> 0.2801585.
    assert mde(1.0, 100) == pytest.approx(0.2801585, abs=1e-6)
    assert mde(0.5, 25, alpha=0.05, power=0.8) == pytest.approx(2.801585 * 0.5 / 5, abs=1e-6)
    assert math.isnan(mde(1.0, 1)) and math.isnan(mde(math.nan, 10))
    # n for MDE <= 0.28 at sd 1: (2.801585 / 0.28)^2 = 100.11 -> 101; at 0.2801585 exactly: 100.
    assert required_n(1.0, 0.28) == 101
    assert required_n(1.0, 0.2801586) == 100
    assert required_n(math.nan, 1.0) is None


def test_bootstrap_of_a_constant_difference_has_zero_width():
    lo, hi = paired_bootstrap_mean([0.5] * 30, n_resamples=200, seed=1)[0]
    assert lo == hi == pytest.approx(0.5)
    assert paired_bootstrap_mean([1.0, 2.0], n_resamples=0) == [(None, None)]


def test_bootstrap_same_seed_same_interval_and_columns_share_the_draw():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(40, 2))
    d[:, 1] = d[:, 0]  # two identical columns, resampled with one draw -> identical intervals
    first = paired_bootstrap_mean(d, n_resamples=300, seed=11)
    assert first == paired_bootstrap_mean(d, n_resamples=300, seed=11)
    assert first[0] == first[1]


def test_paired_interval_narrower_than_unpaired_when_outcomes_correlate():
    rng = np.random.default_rng(0)
    a = rng.normal(5.0, 2.0, size=200)
    b = a + 0.3 + rng.normal(0.0, 0.2, size=200)  # B = A + small shift: strongly correlated outcomes
    (lo, hi), = paired_bootstrap_mean(b - a, n_resamples=2000, seed=5)
    g = np.random.default_rng(5)  # unpaired: A and B resampled independently
    ia, ib = g.integers(0, 200, size=(2000, 200)), g.integers(0, 200, size=(2000, 200))
    u_lo, u_hi = np.quantile(b[ib].mean(axis=1) - a[ia].mean(axis=1), [0.025, 0.975])
    assert hi - lo < 0.2 * (u_hi - u_lo)
    assert lo > 0 > u_lo  # the shift shows paired and hides unpaired


def _rows(hard: dict[tuple[str, int], list[bool]]) -> list[dict]:
    """Generation rows: per (category, group), one bool per level 1-5 (one constraint per instruction)."""
    return [{"id": f"{c}-{g}-{lv}", "group_id": f"g{g}", "category": c, "level": lv, "verdicts": [v]}
            for (c, g), levels in hard.items() for lv, v in enumerate(levels, start=1)]


def test_paired_followbench_by_hand():
    # Two categories, two groups each, levels 1-5; A passes 3 instructions B fails (content g0 L2, format g0 L3,
    # format g1 L1), B passes 1 that A fails (format g1 L2).
    a = {("content", 0): [True, True, False, False, False], ("content", 1): [True, False, False, False, False],
         ("format", 0): [True, True, True, False, False], ("format", 1): [True, False, False, False, False]}
    b = {("content", 0): [True, False, False, False, False], ("content", 1): [True, False, False, False, False],
         ("format", 0): [True, True, False, False, False], ("format", 1): [False, True, False, False, False]}
    d = paired_followbench(_rows(a), _rows(b), n_resamples=500, seed=2)
    # HSR Avg = mean of all 20 hard verdicts here (balanced): A 7/20, B 5/20 -> delta 2/20 = 0.1.
    assert d.delta == pytest.approx(0.1)
    assert d.discordant == (3, 1) and d.p == pytest.approx(2 * 5 / 16)  # 2 * P(X <= 1 | 4) = 0.625
    # per-group differences (mean over the 5 levels): content: 1/5, 0; format: 1/5, (1 - 1)/5 = 0 -> the SD of
    # [0.2, 0, 0.2, 0] (mean 0.1) = sqrt(4 * 0.1^2 / 3) = sqrt(0.04 / 3)
    assert d.n == 4 and d.n_test == 20 and d.sd == pytest.approx(math.sqrt(0.04 / 3))
    assert d.lo <= d.delta <= d.hi
    same = paired_followbench(_rows(a), _rows(a), n_resamples=100, seed=2)
    assert (same.delta, same.lo, same.hi, same.p, same.sd) == (0.0, 0.0, 0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="share no scored instruction"):
        paired_followbench(_rows(a), [{**r, "group_id": "x" + r["group_id"]} for r in _rows(b)], n_resamples=0)


def test_paired_followbench_leaves_out_instructions_without_verdicts():
    """Official FollowBench rows with an unparseable or unjudged judge output carry verdicts None: no score, left out
    on both sides (the McNemar counts only the instructions both models have verdicts for)."""
    a = {("content", 0): [True, True, False, False, False], ("content", 1): [True, False, False, False, False]}
    b = {("content", 0): [True, False, False, False, False], ("content", 1): [False, False, False, False, False]}
    full = paired_followbench(_rows(a), _rows(b), n_resamples=0)
    assert full.discordant == (2, 0) and full.n_test == 10
    unscored = [{**r, "verdicts": None} if (r["group_id"].endswith("1") and r["level"] == 1) else r for r in _rows(a)]
    part = paired_followbench(unscored, _rows(b), n_resamples=0)
    assert part.discordant == (1, 0) and part.n_test == 9


def test_paired_followbench_interval_tighter_than_each_models_own_interval():
    rng = np.random.default_rng(1)
    cats = ["content", "format", "example"]
    a = {(c, g): list(rng.random(5) < 0.4) for c in cats for g in range(16)}
    b = {k: [v if rng.random() < 0.95 else not v for v in levels] for k, levels in a.items()}  # B mostly agrees
    d = paired_followbench(_rows(a), _rows(b), n_resamples=1000, seed=4)
    own = bootstrap_ci(_rows(a), n_resamples=1000, seed=4)["hsr_avg"]
    assert d.hi - d.lo < 0.6 * (own.hi - own.lo)
    assert d == paired_followbench(_rows(a), _rows(b), n_resamples=1000, seed=4)  # deterministic


def test_paired_judge_by_hand():
    a = [{"id": f"q{i}", "judge": {"fluency": 8.0, "factuality": 5.0 + i, "coherence": 7.0}} for i in range(6)]
    b = [{"id": f"q{i}", "judge": {"fluency": 7.0, "factuality": 5.0, "coherence": 7.0}} for i in range(6)]
    b.append({"id": "only-b", "judge": {"fluency": 1.0, "factuality": 1.0, "coherence": 1.0}})  # unpaired: ignored
    a[0] = {"id": "q0", "judge": None}  # unparseable on one side: the pair is left out
    out = paired_judge(a, b, n_resamples=200, seed=0)
    flu, fac, coh = out["fluency"], out["factuality"], out["coherence"]
    assert flu.n == 5 and flu.delta == 1.0 and (flu.lo, flu.hi) == (1.0, 1.0) and flu.sd == 0.0
    assert flu.p == pytest.approx(2 / 32) and flu.test == "wilcoxon"  # 5 positive differences
    # factuality differences 1..5: mean 3, sd sqrt(2.5), all positive -> p = 2/32
    assert fac.delta == pytest.approx(3.0) and fac.sd == pytest.approx(math.sqrt(2.5))
    assert fac.p == pytest.approx(0.0625)
    assert coh.delta == 0.0 and coh.p == 1.0
    with pytest.raises(ValueError, match="share no judge-scored prompt"):
        paired_judge(a[:1], b, n_resamples=0)
