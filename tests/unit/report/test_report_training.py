"""The report's training table: held-out preference accuracy per variant, and the flag on a variant that did
not learn."""

import json

from alignpipe.config import validate_params
from alignpipe.report.training import training_table


def _metrics(acc, p, learned, logp_before=0.55, logp_after=0.7):
    return {"steps": 48, "n_pairs": 900, "initial_loss": 0.6931, "final_loss": 0.61,
            "heldout": {"n_pairs": 100, "learned": learned,
                        "before": {"n_pairs": 100, "reward_accuracy": 0.5, "reward_accuracy_p": 1.0,
                                   "reward_margin": 0.0, "loss": 0.693147, "logp_accuracy": logp_before},
                        "after": {"n_pairs": 100, "reward_accuracy": acc, "reward_accuracy_p": p,
                                  "reward_margin": 0.21, "loss": 0.6, "logp_accuracy": logp_after}}}


def test_one_row_per_trained_variant_and_the_unlearned_one_flagged(tmp_path):
    params = validate_params({"align": {"variants": {"dpo_full": {"peft": "none"}, "mid": {"peft": "lora",
                                                     "block": "mid"}, "local": {"peft": "lora", "block": "local"}}},
                              "report": {"labels": {"dpo_full": "Full-DPO", "mid": "Mid-Align"}}})
    for name, m in (("dpo_full", _metrics(0.81, 1.2e-10, True)), ("mid", _metrics(0.53, 0.31, False, 0.55, 0.55))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    table, md = training_table(params, tmp_path)  # `local` has not run: no row
    assert list(table.index) == ["Full-DPO", "Mid-Align"]
    assert table.loc["Full-DPO", "Reward acc."] == 0.81 and table.loc["Full-DPO", "Learned"] == "yes"
    assert table.loc["Mid-Align", "Learned"] == "NO: not above chance"
    assert table.loc["Mid-Align", "Log-prob acc. (before -> after)"] == "0.550 -> 0.550"
    assert table.loc["Full-DPO", "Train loss (first -> last)"] == "0.693 -> 0.610"
    assert "**Not learned (held-out reward accuracy not above chance): Mid-Align.**" in md
    assert "0.5 + 1.24/√n" in md


def test_no_trained_variant_gives_an_empty_table(tmp_path):
    params = validate_params({"align": {"variants": {"dpo_full": {"peft": "none"}}}})
    table, md = training_table(params, tmp_path)
    assert table.empty and md == ""
