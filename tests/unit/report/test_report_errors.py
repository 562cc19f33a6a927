"""The report's error table: error rates by kind per model, paired against the reference."""

import json

from alignpipe.config import validate_params
from alignpipe.report.errors import errors_table


def _write(root, name, flags):
    (root / name).mkdir()
    rows = [{"id": f"q{i}", "verdicts": [not c], "errors": {"fluency": f, "coherence": False, "factuality": x}}
            for i, (f, x, c) in enumerate(flags)]
    (root / name / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / name / "metrics.json").write_text(json.dumps({"error_fluency_lo": 0.1, "error_fluency_hi": 0.9}))


def test_rates_and_paired_differences_against_the_reference(tmp_path):
    params = validate_params({"evaluate": {"bootstrap_samples": 200}})
    # SFT: fluency errors on 20 of 40, factual on 10; DPO removes 8 fluency errors, adds none, factual unchanged
    sft = [(i < 20, i % 4 == 0, i < 30) for i in range(40)]
    dpo = [(8 <= i < 20, i % 4 == 0, i < 30) for i in range(40)]
    _write(tmp_path, "sft", sft)
    _write(tmp_path, "dpo_full", dpo)
    (tmp_path / "old").mkdir()  # generations without error flags (e.g. an LLM judge): no row
    (tmp_path / "old" / "generations.jsonl").write_text(json.dumps({"id": "q0", "verdicts": [True]}) + "\n")
    table, md = errors_table(params, tmp_path, {"SFT": "sft", "Full-DPO": "dpo_full", "Old": "old"})
    assert list(table.index) == ["SFT", "Full-DPO"]
    assert table.loc["SFT", "Fluency err. %"] == 50.0 and table.loc["Full-DPO", "Fluency err. %"] == 30.0
    assert table.loc["Full-DPO", "Δ Fluency vs SFT"] == -20.0
    assert table.loc["Full-DPO", "p Fluency (raw)"] == 2 / 2**8  # 8 discordant pairs, all one way
    assert table.loc["Full-DPO", "Δ Factuality vs SFT"] == 0.0 and table.loc["Full-DPO", "p Factuality (raw)"] == 1.0
    assert table.loc["Full-DPO", "Constraints err. %"] == 75.0
    assert "| SFT | 40 | 50.0 (10.0–90.0)" in md and "ref." in md
    assert "Minimum detectable difference" in md


def test_no_flags_no_table(tmp_path):
    table, md = errors_table(validate_params({}), tmp_path, {"SFT": "sft"})
    assert table.empty and md == ""
