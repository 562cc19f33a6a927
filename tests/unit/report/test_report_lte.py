"""The report's LTE table from a fake edit_eval metrics.json: values, order, markdown, CSV, errors."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from alignpipe.config import Params, ReportSection
from alignpipe.stages import report as stage
from alignpipe.report.lte import lte_table
from alignpipe.utils.io import DataError, write_json


def _result(es, port, loc, flu):
    return {"edit_success": es, "rephrase": es, "portability": port, "locality": loc, "fluency": flu,
            "retrieval_hit": 1.0, "n_edits": 2, "n_questions": 9}


METRICS = {
    "sizes": [2, 6], "n_eval_edits": 6, "top_k": 1,
    "results": {
        "icl": {"batch": {"2": _result(0.5, None, 1.0, 2.5), "6": _result(0.25, 0.0, 0.75, 2.25)}},
        "lte": {"batch": {"2": _result(1.0, 0.5, 0.5, 3.0), "6": _result(0.8333, 0.25, 0.5, 2.75)}},
    },
}  # fmt: skip


def test_lte_table_values_and_order():
    table = lte_table(METRICS)
    assert list(table["Method"]) == ["SFT + in-context edits", "LTE"] * 2
    assert list(table["Edits"]) == [2, 2, 6, 6]
    lte6 = table.iloc[3]
    assert lte6["Edit Succ."] == pytest.approx(83.33) and lte6["Portability"] == 25.0
    assert lte6["Locality"] == 50.0 and lte6["Fluency"] == 2.75
    assert pd.isna(table.iloc[0]["Portability"])  # nothing to score -> NaN, shown as –
    with pytest.raises(DataError, match="rerun the edit_eval stage"):
        lte_table({"sizes": [2]})


def test_report_writes_lte_files(tmp_path):
    eval_dir = tmp_path / "evaluate"
    for name in ("base", "sft"):
        write_json(eval_dir / name / "metrics.json", {"hsr_avg": 0.5, "n_groups": 1, "n_instructions": 5})
    write_json(tmp_path / "edit_eval" / "metrics.json", METRICS)
    params = Params(report=ReportSection(lte=True))
    stage.run(params, eval_dir=eval_dir, out_dir=tmp_path / "report", edit_eval_dir=tmp_path / "edit_eval")
    md = (tmp_path / "report" / "lte.md").read_text()
    assert "| batch | 6 | LTE | 83.3 | 25.0 | 50.0 | 2.75 |" in md
    assert "| batch | 2 | SFT + in-context edits | 50.0 | – | 100.0 | 2.50 |" in md
    csv = pd.read_csv(io.StringIO((tmp_path / "report" / "lte.csv").read_text()))
    assert list(csv.columns) == ["Mode", "Edits", "Method", "Edit Succ.", "Portability", "Locality", "Fluency",
                                 "Questions"]
    params = Params(report=ReportSection(lte=False))
    stage.run(params, eval_dir=eval_dir, out_dir=tmp_path / "r2", edit_eval_dir=tmp_path / "missing")
    assert not (tmp_path / "r2" / "lte.md").exists()
    with pytest.raises(DataError, match="file not found"):
        stage.run(Params(report=ReportSection(lte=True)), eval_dir=eval_dir,
                  out_dir=tmp_path / "r3", edit_eval_dir=tmp_path / "missing")
