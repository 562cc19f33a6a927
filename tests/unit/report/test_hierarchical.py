"""Hierarchical Alignment table: W/T/L cells and the alignment-tax rule, on fixed numbers."""

import math

from alignpipe.report.tables import hierarchical_markdown, hierarchical_table


def _m(flu, fac, coh, hsr=0.5):
    return {"fluency": flu, "factuality": fac, "coherence": coh, "hsr_avg": hsr, "ssr_avg": hsr, "csl": 1.0}


def test_alignment_tax_only_when_fluency_rose():
    metrics = {"SFT": _m(7.0, 6.0, 8.0), "Full-DPO": _m(7.5, 6.0, 7.2), "Global-Align": _m(6.9, 6.5, 8.4)}
    wtl = {"win": 3, "tie": 5, "loss": 2, "n": 10}
    pairs = {"SFT": None, "Full-DPO": {d: wtl for d in ("fluency", "factuality", "coherence")},
             "Global-Align": {d: wtl for d in ("fluency", "factuality", "coherence")}}
    table = hierarchical_table(metrics, pairs, "SFT")

    assert abs(table.loc["Full-DPO", "Alignment tax"] + 0.8) < 1e-9
    assert math.isnan(table.loc["Global-Align", "Alignment tax"])  # fluency fell: no tax defined
    assert math.isnan(table.loc["SFT", "Alignment tax"])
    assert table.loc["Full-DPO", "Coherence W/T/L"] == "3/5/2" and table.loc["SFT", "Fluency W/T/L"] == "–"
    md = hierarchical_markdown(table, "SFT", 10)
    assert "| Full-DPO |" in md and "-0.80" in md and "n = 10 prompts" in md


def test_allo_table_counts_and_scores():
    from alignpipe.report.tables import allo_markdown, allo_table

    metrics = {"SFT": _m(7.0, 6.0, 8.0, hsr=0.4), "DPO": _m(7.5, 6.0, 7.2, hsr=0.5), "ALLO": _m(7.2, 6.5, 8.1, hsr=0.6)}
    train = {"SFT": None, "DPO": {"trainable_params": 1000, "total_params": 1000},
             "ALLO": {"trainable_params": 1000, "updated_params": 100, "total_params": 1000}}
    table = allo_table(metrics, train)
    assert table.loc["ALLO", "HSR Avg"] == 60.0 and table.loc["SFT", "Updated params"] == 0
    assert table.loc["DPO", "Updated params"] == 1000 and table.loc["ALLO", "Updated %"] == 10.0
    md = allo_markdown(table)
    assert "| ALLO | 60.0 | 60.0 | 1.00 | 7.20 | 6.50 | 8.10 | 1,000 | 100 | 10.00 |" in md
