"""FollowBench metrics against hand-computed numbers; bootstrap and judge intervals."""

from __future__ import annotations

import random

import numpy as np
import pytest

from alignpipe.evaluate.metrics import (
    Estimate,
    bootstrap_ci,
    consecutive_levels,
    followbench_scores,
    instruction_table,
    judge_scores,
)

T, F = True, False
# 2 categories x 2 groups x 5 levels; level L has L verdicts.
VERDICTS = {
    ("content", "content-a"): [[T], [T, T], [T, T, F], [T, T, T, T], [T, T, T, T, T]],  # hard 1,1,0,1,1  CSL 2
    ("content", "content-b"): [[F], [T, F], [T, T, T], [T, F, F, F], [F, F, F, F, F]],  # hard 0,0,1,0,0  CSL 0
    ("style", "style-a"): [[T], [T, T], [T, T, T], [T, T, T, T], [T, T, T, T, T]],  # all pass       CSL 5
    ("style", "style-b"): [[T], [T, T], [F, F, F], [T, T, T, T], [T, T, T, T, F]],  # hard 1,1,0,1,0  CSL 2
}


def make_rows(verdicts=VERDICTS, with_level0=True):
    rows = []
    for (cat, gid), per_level in verdicts.items():
        if with_level0:
            rows.append({"id": f"{gid}-L0", "group_id": gid, "category": cat, "level": 0, "verdicts": []})
        for level, v in enumerate(per_level, 1):
            rows.append({"id": f"{gid}-L{level}", "group_id": gid, "category": cat, "level": level, "verdicts": v})
    return rows


def test_hsr_ssr_per_level_and_avg():
    s = followbench_scores(make_rows())
    # HSR: content .5 at every level; style 1, 1, .5, 1, .5 -> per level mean over the 2 categories.
    hsr = [0.75, 0.75, 0.5, 0.75, 0.5]
    assert [s[f"hsr_l{lv}"] for lv in range(1, 6)] == pytest.approx(hsr)
    assert s["hsr_avg"] == pytest.approx(0.65)
    # SSR: content .5, .75, 5/6, .625, .5; style 1, 1, .5, 1, .9.
    ssr = [0.75, 0.875, (5 / 6 + 0.5) / 2, 0.8125, 0.7]
    assert [s[f"ssr_l{lv}"] for lv in range(1, 6)] == pytest.approx(ssr)
    assert s["ssr_avg"] == pytest.approx(sum(ssr) / 5)
    assert s["csl"] == pytest.approx((1.0 + 3.5) / 2)
    assert s["n_groups"] == 4 and s["n_instructions"] == 20  # level 0 is not scored


def test_per_category_tables():
    pc = followbench_scores(make_rows())["per_category"]
    assert list(pc) == ["content", "style"]
    assert [pc["content"][f"hsr_l{lv}"] for lv in range(1, 6)] == pytest.approx([0.5] * 5)
    assert [pc["style"][f"ssr_l{lv}"] for lv in range(1, 6)] == pytest.approx([1, 1, 0.5, 1, 0.9])
    assert pc["content"]["csl"] == pytest.approx(1.0) and pc["style"]["csl"] == pytest.approx(3.5)
    assert pc["style"]["hsr_avg"] == pytest.approx(0.8)
    assert pc["content"]["n_groups"] == 2 and pc["content"]["n_instructions"] == 10


def test_per_level_is_mean_over_categories_present():
    rows = make_rows() + [{"group_id": "format-a", "category": "format", "level": 1, "verdicts": [F]}]
    s = followbench_scores(rows)
    assert s["hsr_l1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # format counts at level 1 only
    assert s["hsr_l2"] == pytest.approx(0.75)
    assert s["per_category"]["format"]["csl"] == 0
    assert s["csl"] == pytest.approx((1.0 + 3.5 + 0.0) / 3)


@pytest.mark.parametrize(
    "passed, expected",
    [
        ({1: F, 2: T, 3: T, 4: T, 5: T}, 0),
        ({1: T, 2: T, 3: T, 4: T, 5: T}, 5),
        ({1: T, 2: T, 3: F, 4: T, 5: T}, 2),
        ({1: T, 2: T, 4: T, 5: T}, 2),  # missing level 3: stop counting there
        ({2: T, 3: T}, 0),  # no level 1
        ({}, 0),
    ],
)
def test_consecutive_levels(passed, expected):
    assert consecutive_levels(passed) == expected


def test_csl_missing_level_in_rows():
    rows = [r for r in make_rows() if not (r["group_id"] == "style-a" and r["level"] == 3)]
    assert followbench_scores(rows)["per_category"]["style"]["csl"] == pytest.approx((2 + 2) / 2)


def test_empty_verdicts_at_scored_level_is_an_error():
    rows = make_rows()
    rows[3]["verdicts"] = []
    with pytest.raises(ValueError, match="empty verdict list"):
        followbench_scores(rows)


def test_invalid_rows():
    with pytest.raises(ValueError, match="missing field"):
        instruction_table([{"group_id": "g", "level": 1, "verdicts": [T]}])
    with pytest.raises(ValueError, match="more than once"):
        instruction_table(make_rows() + make_rows()[:2])
    with pytest.raises(ValueError, match="level 7"):
        instruction_table([{"group_id": "g", "category": "style", "level": 7, "verdicts": [T]}])
    with pytest.raises(ValueError, match="no scored instruction"):
        instruction_table([r for r in make_rows() if r["level"] == 0])


def test_levels_subset_and_row_order_do_not_matter():
    rows = make_rows()
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert followbench_scores(shuffled) == followbench_scores(rows)
    s = followbench_scores(rows, levels=[1, 2])
    assert "hsr_l3" not in s and s["hsr_avg"] == pytest.approx(0.75)
    assert s["per_category"]["style"]["csl"] == pytest.approx(2.0)  # CSL capped by the levels scored


def test_bootstrap_deterministic_and_contains_point():
    rows = make_rows()
    a = bootstrap_ci(rows, n_resamples=300, seed=7)
    b = bootstrap_ci(list(reversed(rows)), n_resamples=300, seed=np.random.default_rng(7))
    assert a == b
    point = followbench_scores(rows)
    for key in ("hsr_avg", "ssr_avg", "csl", "hsr_l1", "ssr_l5"):
        est = a[key]
        assert isinstance(est, Estimate) and est.point == pytest.approx(point[key])
        assert est.lo <= est.point <= est.hi
    assert a["hsr_avg"].lo < a["hsr_avg"].hi
    # Groups are resampled within category: content's CSL is 0 or 2 per group, style's 5 or 2 ->
    # overall CSL of any resample lies in [ (0 + 2) / 2, (2 + 5) / 2 ].
    assert 1.0 <= a["csl"].lo and a["csl"].hi <= 3.5


def test_bootstrap_seed_matters_on_a_larger_pool():
    rng = np.random.default_rng(0)
    verdicts = {
        (cat, f"{cat}-{g}"): [list(rng.random(lv) < 0.7) for lv in range(1, 6)]
        for cat in ("content", "format", "mixed")
        for g in range(12)
    }
    rows = make_rows(verdicts)
    a = bootstrap_ci(rows, n_resamples=200, seed=1)
    assert a == bootstrap_ci(rows, n_resamples=200, seed=1)
    assert a != bootstrap_ci(rows, n_resamples=200, seed=2)
    for est in a.values():
        assert est.lo <= est.point <= est.hi


def test_bootstrap_zero_resamples_and_degenerate_data():
    est = bootstrap_ci(make_rows(), n_resamples=0)
    assert est["hsr_avg"] == Estimate(pytest.approx(0.65), None, None)
    all_pass = {k: [[T] * lv for lv in range(1, 6)] for k in VERDICTS}
    est = bootstrap_ci(make_rows(all_pass), n_resamples=50, seed=0)
    assert est["csl"] == (5.0, 5.0, 5.0) and est["hsr_avg"] == (1.0, 1.0, 1.0)


def test_bootstrap_confidence_widens_interval():
    rows = make_rows()
    narrow = bootstrap_ci(rows, n_resamples=400, confidence=0.5, seed=1)["ssr_avg"]
    wide = bootstrap_ci(rows, n_resamples=400, confidence=0.99, seed=1)["ssr_avg"]
    assert wide.lo <= narrow.lo and narrow.hi <= wide.hi


def test_judge_scores():
    rows = [{"judge": {"fluency": f, "factuality": 5, "coherence": 10 - f}} for f in (2, 4, 6, 8)]
    est = judge_scores(rows, n_resamples=200, seed=3)
    assert est["fluency"].point == pytest.approx(5.0) and est["factuality"] == (5.0, 5.0, 5.0)
    assert est["fluency"].lo <= 5.0 <= est["fluency"].hi and est["coherence"].point == pytest.approx(5.0)
    assert judge_scores(rows, n_resamples=200, seed=3) == est
    flat = [{"fluency": 3, "factuality": 4, "coherence": 5}]
    assert judge_scores(flat, n_resamples=0) == {
        "fluency": (3.0, None, None),
        "factuality": (4.0, None, None),
        "coherence": (5.0, None, None),
    }
    with pytest.raises(ValueError, match="'coherence' is None"):
        judge_scores([{"judge": {"fluency": 1, "factuality": 1}}])
