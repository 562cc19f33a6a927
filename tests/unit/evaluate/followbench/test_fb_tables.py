"""Table 2 layout, the per-category table and the radar plot from FollowBench metrics."""

from __future__ import annotations

import pandas as pd
import pytest

from alignpipe.evaluate.followbench.tables import category_table, radar, table2, to_markdown

METRICS = {  # the shape summarize() writes, with round numbers
    "benchmark": "followbench",
    **{f"hsr_l{lv}": v for lv, v in zip(range(1, 6), [0.9, 0.8, 0.7, 0.6, 0.5], strict=True)},
    **{f"ssr_l{lv}": v for lv, v in zip(range(1, 6), [0.95, 0.9, 0.85, 0.8, 0.75], strict=True)},
    "hsr_avg": 0.7, "ssr_avg": 0.85, "csl": 2.5, "n_groups": 4, "n_instructions": 19,
    "per_category": {
        "style": {"hsr_avg": 0.5, "ssr_avg": 0.75, "csl": 2.0, "n_groups": 2},
        "content": {"hsr_avg": 0.9, "ssr_avg": 0.95, "csl": 3.0, "n_groups": 2},
    },
    "parts": {"rule": {"hsr_l1": 1.0, "hsr_avg": 1.0, "ssr_avg": 1.0, "csl": 5.0, "n_groups": 1,
                       "n_instructions": 5}, "judge": None},
    "unparseable": {"n": 1},
}


def test_table2_all_and_parts():
    t = table2({"M": METRICS})
    assert list(t.columns[:6]) == ["HSR L1", "HSR L2", "HSR L3", "HSR L4", "HSR L5", "HSR Avg"]
    assert list(t.columns[6:]) == [*(f"SSR L{lv}" for lv in range(1, 6)), "SSR Avg", "CSL", "Groups", "Instructions",
                                   "Unparseable"]
    row = t.loc["M"]
    assert row["HSR L1"] == pytest.approx(90.0) and row["SSR Avg"] == pytest.approx(85.0) and row["CSL"] == 2.5
    assert (row["Groups"], row["Instructions"], row["Unparseable"]) == (4, 19, 1)
    rule = table2({"M": METRICS}, "rule").loc["M"]
    assert rule["HSR L1"] == 100.0 and pd.isna(rule["HSR L2"]) and rule["Unparseable"] == 0
    judge = table2({"M": METRICS}, "judge").loc["M"]
    assert pd.isna(judge["HSR Avg"]) and judge["Unparseable"] == 1
    md = to_markdown(table2({"M": METRICS}, "rule"))
    assert md.splitlines()[2].startswith("| M | 100.0 | – | – | – | – | 100.0 |")
    assert "| 5.00 | 1 | 5 | 0 |" in md
    with pytest.raises(ValueError, match="part 'both'"):
        table2({"M": METRICS}, "both")


def test_category_table_and_radar(tmp_path):
    t = category_table({"M": METRICS, "N": METRICS})
    assert list(t["Category"]) == ["content", "style", "content", "style"]  # FollowBench's category order
    assert list(t["HSR Avg"][:2]) == [90.0, 50.0] and list(t["CSL"][:2]) == [3.0, 2.0]
    radar({"M": METRICS}, tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no per-category figures"):
        radar({"M": {"per_category": {}}}, tmp_path / "x.png")
