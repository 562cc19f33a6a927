"""The report's data-source table from fixed evaluate + sft_mix metrics: values, order, sizes, markdown, CSV,
errors."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from alignpipe.config import validate_params
from alignpipe.report import datasource
from alignpipe.stages import report as stage
from alignpipe.utils.io import DataError, write_json

MIXTURES = {"seed": ["seed"], "lion_r1": ["seed", "lion_r1"], "both": ["seed", "lion", "webr"]}
LABELS = {"seed": "Seed only", "lion_r1": "+ Lion (round 1)", "both": "+ Lion + WebR"}
EVAL = {  # evaluate@mix_<name> metrics.json (fractions; judge 1-10)
    "seed": {"hsr_avg": 0.25, "ssr_avg": 0.5, "csl": 1.2, "fluency": 6.0, "factuality": 5.5, "coherence": 6.25,
             "n_groups": 12, "n_instructions": 60},
    "lion_r1": {"hsr_avg": 0.3125, "ssr_avg": 0.5625, "csl": 1.6, "fluency": 6.5, "factuality": 5.0,
                "coherence": 7.0, "n_groups": 12, "n_instructions": 60},
    "both": {"hsr_avg": 0.4, "ssr_avg": 0.6, "csl": 2.0, "fluency": None, "factuality": None, "coherence": None,
             "n_groups": 12, "n_instructions": 60},
}
MIX = {  # sft_mix@<name> metrics.json
    "seed": {"sources": ["seed"], "rows_by_source": {"seed": 100}, "relative_score": 50.0,
             "relative": {"scored": 8, "relative_score": 50.0}, "reused": "data/sft"},
    "lion_r1": {"sources": ["seed", "lion_r1"], "rows_by_source": {"seed": 100, "lion_r1": 30},
                "relative_score": 62.5, "relative": {"scored": 8, "relative_score": 62.5}, "reused": None},
    "both": {"sources": ["seed", "lion", "webr"], "rows_by_source": {"seed": 100, "lion": 40, "webr": 20},
             "relative_score": None, "relative": {"scored": 0, "relative_score": None}, "reused": None},
}


def _write(tmp_path):
    for name in MIXTURES:
        write_json(tmp_path / "evaluate" / f"mix_{name}" / "metrics.json", EVAL[name])
        write_json(tmp_path / "sft_mix" / name / "metrics.json", MIX[name])


def test_table_values_order_and_sizes(tmp_path):
    _write(tmp_path)
    table = datasource.datasource_table(datasource.load(LABELS, tmp_path / "evaluate", tmp_path / "sft_mix"))
    assert list(table.index) == ["Seed only", "+ Lion (round 1)", "+ Lion + WebR"]
    assert list(table.columns) == ["HSR Avg", "SSR Avg", "CSL", "Fluency", "Factuality", "Coherence",
                                   datasource.REL, "SFT rows", "Groups", "Instructions", "Rel. scored"]
    r1 = table.loc["+ Lion (round 1)"]
    assert (r1["HSR Avg"], r1["SSR Avg"], r1["CSL"], r1["Coherence"]) == (31.25, 56.25, 1.6, 7.0)
    assert r1[datasource.REL] == 62.5 and r1["SFT rows"] == 130 and r1["Rel. scored"] == 8
    both = table.loc["+ Lion + WebR"]
    assert both["SFT rows"] == 160 and both["HSR Avg"] == 40.0
    assert pd.isna(both["Fluency"]) and pd.isna(both[datasource.REL])  # not measured: NaN, shown as -


def test_report_writes_markdown_and_csv(tmp_path):
    _write(tmp_path)
    for name in ("base", "sft"):
        write_json(tmp_path / "evaluate" / name / "metrics.json", {"hsr_avg": 0.25, "n_groups": 12,
                                                                   "n_instructions": 60})
    # The rows are the sft_mix.mixtures entries; their labels those of the evaluated models mix_<name>.
    params = validate_params({"report": {"data_sources": True, "labels": {f"mix_{k}": v for k, v in LABELS.items()}},
                              "synthesize": {"lion": {"rounds": 1}}, "sft_mix": {"mixtures": MIXTURES}})
    stage.run(params, eval_dir=tmp_path / "evaluate", out_dir=tmp_path / "report", mix_dir=tmp_path / "sft_mix")
    md = (tmp_path / "report" / "mixtures.md").read_text()
    assert "| Seed only | 25.0 | 50.0 | 1.20 | 6.00 | 5.50 | 6.25 | 50.0 | 100 | 12 | 60 | 8 |" in md
    assert "| + Lion + WebR | 40.0 | 60.0 | 2.00 | – | – | – | – | 160 | 12 | 60 | 0 |" in md
    assert "- Seed only: `seed` = seed (100); the sft stage's model (`data/sft`), not retrained" in md
    assert "- + Lion (round 1): `lion_r1` = seed (100), lion_r1 (30)" in md
    csv = pd.read_csv(io.StringIO((tmp_path / "report" / "mixtures.csv").read_text()))
    assert list(csv["Data"]) == list(LABELS.values()) and csv["HSR Avg"].tolist() == [25.0, 31.25, 40.0]
    # Without report.data_sources: no table; a listed mixture without metrics is named.
    params = validate_params({"report": {"data_sources": False}, "synthesize": {"lion": {"rounds": 1}},
                              "sft_mix": {"mixtures": MIXTURES}})
    stage.run(params, eval_dir=tmp_path / "evaluate", out_dir=tmp_path / "r2", mix_dir=tmp_path / "sft_mix")
    assert not (tmp_path / "r2" / "mixtures.md").exists()
    with pytest.raises(DataError, match=r"mix_nope/metrics.json.*sft_mix@<name>"):
        datasource.load({"nope": "N"}, tmp_path / "evaluate", tmp_path / "sft_mix")
