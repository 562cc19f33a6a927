"""Scoring rows (rules + judge) and the FollowBench metrics on a small fixed table computed by hand."""

from __future__ import annotations

import pytest

from alignpipe.evaluate.followbench.data import evolution_paths
from alignpipe.evaluate.followbench.judge import build_prompt, load_template
from alignpipe.evaluate.followbench.score import score, summarize


def _row(cat, gid, level, verdicts, method="judge"):
    return {"id": f"{gid}-L{level}", "group_id": gid, "category": cat, "level": level, "verdicts": verdicts,
            "method": method if verdicts is not None else "unparseable"}


T, F = True, False
TABLE = [
    _row("content", "A", 1, [T], "rule"), _row("content", "A", 2, [T], "rule"), _row("content", "A", 3, [F], "rule"),
    _row("content", "B", 1, [T]), _row("content", "B", 2, [T, F]), _row("content", "B", 3, [T, T, T]),
    _row("style", "C", 1, [F]), _row("style", "C", 2, [T, T]), _row("style", "C", 3, [T, F, T]),
    _row("style", "D", 1, [T]), _row("style", "D", 2, None), _row("style", "D", 3, [T, T, F]),
]


def test_metrics_on_a_fixed_table():
    m = summarize(TABLE, [1, 2, 3], n_resamples=0, confidence=0.95, seed=0)
    # content: L1 HSR 1 SSR 1; L2 HSR .5 SSR .75; L3 HSR .5 SSR .5.   style: L1 .5/.5; L2 1/1 (D unparseable,
    # left out); L3 HSR 0, SSR 2/3.  Per level = mean of the two categories.
    assert [m["hsr_l1"], m["hsr_l2"], m["hsr_l3"]] == [0.75, 0.75, 0.25]
    assert [m["ssr_l1"], m["ssr_l2"], m["ssr_l3"]] == [0.75, 0.875, pytest.approx(0.583333, abs=1e-6)]
    assert m["hsr_avg"] == pytest.approx(1.75 / 3, abs=1e-6)
    assert m["ssr_avg"] == pytest.approx((0.75 + 0.875 + (0.5 + 2 / 3) / 2) / 3, abs=1e-6)
    # CSL: A 2, B 1 -> content 1.5; C 0, D 1 (its missing level 2 stops the count) -> style 0.5; mean 1.0
    assert m["per_category"]["content"]["csl"] == 1.5 and m["per_category"]["style"]["csl"] == 0.5
    assert m["csl"] == 1.0
    assert (m["n_groups"], m["n_instructions"]) == (4, 11)
    assert not any(k.endswith(("_lo", "_hi")) for k in m)
    # the rule part alone (A) and the judged part alone (B, C, D)
    rule, judge = m["parts"]["rule"], m["parts"]["judge"]
    assert [rule["hsr_l1"], rule["hsr_l2"], rule["hsr_l3"], rule["csl"]] == [1.0, 1.0, 0.0, 2.0]
    assert [judge["hsr_l1"], judge["hsr_l2"], judge["hsr_l3"]] == [0.75, 0.5, 0.5]
    assert judge["csl"] == 0.75 and judge["n_groups"] == 3
    assert m["methods"] == {"judge": 8, "rule": 3, "unparseable": 1}
    assert m["unparseable"] == {"n": 1, "per_category": {"style": {"l2": 1}}, "ids": ["D-L2"]}
    assert m["unjudged"]["n"] == 0 and m["benchmark"] == "followbench"


def test_bootstrap_bounds_and_nothing_scored():
    m = summarize(TABLE, [1, 2, 3], n_resamples=30, confidence=0.9, seed=1)
    assert m["hsr_avg_lo"] <= m["hsr_avg"] <= m["hsr_avg_hi"]
    with pytest.raises(ValueError, match="no FollowBench response could be scored"):
        summarize([_row("style", "D", 2, None)], [2], 0, 0.95, 0)


def test_score_rules_and_judge(fb_records, by_id, judge_fn, lexical):
    groups = {"content-14", "style-1", "mixed-3"}
    records = [r for r in fb_records if r["group_id"] in groups]
    responses = []
    for r in records:
        if r["group_id"] == "content-14":
            responses.append(r["target"] if r["level"] != 3 else r["target"] + " ")  # L3 corrupted
        elif r["group_id"] == "mixed-3":
            responses.append(r["target"])
        else:
            responses.append({2: "GARBLE " + r["instruction"], 4: "ALWAYS-GARBLE"}.get(r["level"], r["instruction"]))
    template = load_template()
    rows = score(records, responses, judge_fn, template)
    assert len(rows) == 15 and all(r["level"] > 0 for r in rows)
    by = {r["id"]: r for r in rows}
    assert [by[f"content-14-L{lv}"]["verdicts"] for lv in range(1, 6)] == [[T], [T], [F], [T], [T]]
    assert {by[f"content-14-L{lv}"]["method"] for lv in range(1, 6)} == {"rule"}
    assert by["mixed-3-L5"]["rule"] == "text_editing" and by["mixed-3-L5"]["verdicts"] == [T]
    paths = evolution_paths(records)
    for lv in (1, 3, 5):  # answered with the instruction itself: every added constraint's words are present
        row = by[f"style-1-L{lv}"]
        prompt = build_prompt(template, "style", paths[row["id"]], row["response"])
        assert row["method"] == "judge" and row["verdicts"] == lexical(prompt) and len(row["verdicts"]) == lv
        assert row["judge_attempts"] == 1 and len(row["judge_raw"]) == 1
    assert by["style-1-L2"]["method"] == "judge" and by["style-1-L2"]["judge_attempts"] == 2
    assert by["style-1-L4"]["method"] == "unparseable" and by["style-1-L4"]["verdicts"] is None
    assert len(by["style-1-L4"]["judge_raw"]) == 2
    m = summarize(rows, [1, 2, 3, 4, 5], 0, 0.95, 0)
    assert m["unparseable"]["ids"] == ["style-1-L4"] and m["n_instructions"] == 14
    assert m["per_category"]["content"]["hsr_l3"] == 0.0 and m["per_category"]["mixed"]["hsr_avg"] == 1.0

    unjudged = score(records, responses, None, template)
    assert {r["method"] for r in unjudged if r["category"] == "style"} == {"unjudged"}
    mu = summarize(unjudged, [1, 2, 3, 4, 5], 0, 0.95, 0)
    assert mu["unjudged"]["n"] == 5 and set(mu["per_category"]) == {"content", "mixed"}
    assert mu["parts"]["judge"] is None


def test_score_checks_lengths(fb_records):
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        score(fb_records[:2], ["x"], None, load_template())
