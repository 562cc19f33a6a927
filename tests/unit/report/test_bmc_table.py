"""The report's BMC table: rows DPO, DPO-BC, DPO-MC, DPO-BMC, Global+BMC with the hierarchical table's columns,
picked from the variants by method (the plain full-parameter baseline, then the BMC variants)."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from alignpipe.config import ConfigError, validate_params
from alignpipe.stages import report as stage
from alignpipe.utils.io import write_json, write_jsonl

NAMES = {"sft": "SFT", "dpo_full": "Full-DPO", "dpo_bc": "DPO-BC", "dpo_mc": "DPO-MC", "dpo_bmc": "DPO-BMC",
         "global_bmc": "Global+BMC", "base": "Base", "local": "Local-Align"}  # base, local: in no BMC row
VARIANTS = {"dpo_full": {"peft": "none"}, "local": {"peft": "lora", "block": "local"},
            "dpo_bc": {"peft": "none", "pairs": "bridged"}, "dpo_mc": {"peft": "none", "token_weights": "bmc"},
            "dpo_bmc": {"peft": "none", "pairs": "bridged", "token_weights": "bmc"},
            "global_bmc": {"peft": "lora", "block": "global", "pairs": "bridged", "token_weights": "bmc"}}


def _metrics(flu, coh):
    return {"fluency": flu, "factuality": 5.0, "coherence": coh, "hsr_avg": 0.4, "ssr_avg": 0.6, "csl": 1.5,
            "n_groups": 2, "n_instructions": 10}


@pytest.fixture
def eval_dir(tmp_path):
    root = tmp_path / "evaluate"
    for i, name in enumerate(NAMES):
        write_json(root / name / "metrics.json", _metrics(6.0 + 0.5 * i, 7.0 - 0.25 * i))
        # Two prompts; every model beats SFT on fluency for prompt 0 by i points and ties on prompt 1.
        write_jsonl(root / name / "generations.jsonl", [
            {"id": "q0", "judge": {"fluency": 5.0 + i, "factuality": 5.0, "coherence": 5.0}},
            {"id": "q1", "judge": {"fluency": 5.0, "factuality": 5.0, "coherence": 5.0}}])
    return root


def test_bmc_table(eval_dir, tmp_path):
    params = validate_params({"align": {"variants": VARIANTS}, "report": {
        "labels": NAMES, "bmc": True, "bmc_labels": {"dpo_full": "DPO"}, "reference": "sft"}})
    out = tmp_path / "report"
    stage.run(params, eval_dir=eval_dir, out_dir=out)
    md = (out / "bmc.md").read_text()
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:]
    assert rows == ["DPO", "DPO-BC", "DPO-MC", "DPO-BMC", "Global+BMC"]  # SFT is the baseline, not a row; no LoRA
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    h_cols = (out / "bmc.csv").read_text().splitlines()[0]
    assert h_cols.startswith("Model,Fluency,Factuality,Coherence,Fluency W/T/L,Factuality W/T/L,Coherence W/T/L,"
                             "HSR Avg,SSR Avg,CSL,Alignment tax,Δ HSR Avg vs SFT,")  # then the paired columns
    assert "Δ Coherence vs DPO (Holm)" not in h_cols and "p Coherence vs DPO (Holm)" in h_cols
    assert "Fluency W/T/L" in header and "than SFT's on that dimension" in md
    csv = pd.read_csv(io.StringIO((out / "bmc.csv").read_text()), index_col="Model")
    assert csv.loc["DPO", "Fluency"] == 6.5 and csv.loc["Global+BMC", "Fluency W/T/L"] == "1/1/0"
    assert csv.loc["DPO-BC", "Alignment tax"] == pytest.approx(-0.5)  # coherence 6.5 vs SFT's 7.0, fluency rose


def test_bmc_labels_must_name_rows():
    with pytest.raises(ConfigError, match="bmc_labels names \\['sft'\\], which are not rows of the BMC table "
                       "\\['dpo_full', 'dpo_bc'\\]"):
        validate_params({"align": {"variants": {k: VARIANTS[k] for k in ("dpo_full", "dpo_bc")}},
                         "report": {"bmc": True, "bmc_labels": {"sft": "S"}}})


def test_bmc_table_without_bmc_variants_is_not_produced(eval_dir, tmp_path):
    params = validate_params({"align": {"variants": {"dpo_full": {"peft": "none"}}}, "report": {"bmc": True}})
    stage.run(params, eval_dir=eval_dir, out_dir=tmp_path / "report")
    assert not (tmp_path / "report" / "bmc.md").exists()
    assert "Not produced: no BMC variant (pairs: bridged or token_weights: bmc) in align.variants." in (
        tmp_path / "report" / "README.md").read_text()
