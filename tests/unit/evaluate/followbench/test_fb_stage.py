"""The evaluate stage on the official FollowBench sample (``evaluate.benchmark: followbench``), then the report.

``alignpipe.models`` is replaced by a stand-in with the contract signatures: the "policy" answers with a
deterministic function of the instruction, and the same ``generate`` serves the judge backend ('model'), where it
answers judge prompts with the lexical judge of conftest.py (a function of the prompt).
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from alignpipe.config import validate_params
from alignpipe.stages import evaluate as stage
from alignpipe.evaluate.followbench.judge import parse_output
from alignpipe.evaluate.followbench.rules import rule_verdict
from alignpipe.stages.report import run as report_run
from alignpipe.utils.io import read_jsonl


def policy(instruction: str) -> str:
    """Echo the instruction (its words satisfy the lexical judge), but garble every 7th one for the judge."""
    return ("ALWAYS-GARBLE " if len(instruction) % 7 == 0 else "") + instruction


@pytest.fixture
def fake_models(monkeypatch, judge_fn):
    calls = {"load": [], "generate": []}
    models = types.ModuleType("alignpipe.models")

    def load_model(name_or_path, model_section):
        calls["load"].append(name_or_path)
        return f"model:{name_or_path}", "tokenizer"

    def generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        texts = [p[0]["content"] for p in prompts]
        role = "judge" if all(t.startswith("Given an initial instruction") for t in texts) else "policy"
        calls["generate"].append((role, model, len(prompts), max_new_tokens, batch_size))
        return judge_fn(texts) if role == "judge" else [policy(t) for t in texts]

    models.load_model, models.generate = load_model, generate
    monkeypatch.setitem(sys.modules, "alignpipe.models", models)
    return calls


def _params(fb_dir, **followbench):
    return validate_params({
        "seed": 11,
        "evaluate": {"benchmark": "followbench", "max_new_tokens": 9, "batch_size": 5, "bootstrap_samples": 20,
                     "followbench": {"source": str(fb_dir), "max_groups_per_category": 4,
                                     "judge": {"max_new_tokens": 33, "batch_size": 3}, **followbench}},
        "report": {"labels": {"sft": "FB-model"}, "hierarchical": False, "bmc": False, "allo": False, "lte": False,
                   "data_sources": False},
        "align": {"variants": {}, "allo_variants": {}}, "sft_mix": {"mixtures": {}},
    })


def test_followbench_stage_and_report(fb_dir, fake_models, tmp_path):
    params = _params(fb_dir)
    out = tmp_path / "evaluate" / "sft"
    metrics = stage.run(params, "sft", "data/sft/model", out_dir=out)

    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generations.jsonl", "levels.csv", "metrics.json"]
    assert fake_models["load"] == ["data/sft/model", "data/sft/model"]  # policy, then the judge (itself)
    policy_calls = [c for c in fake_models["generate"] if c[0] == "policy"]
    judge_calls = [c for c in fake_models["generate"] if c[0] == "judge"]
    # 4 groups x 6 categories x levels 1-5 = 120 prompts, generated in chunks of 64 (stored between chunks)
    assert policy_calls == [("policy", "model:data/sft/model", 64, 9, 5), ("policy", "model:data/sft/model", 56, 9, 5)]
    assert all(c[1:] == ("model:data/sft/model", c[2], 33, 3) for c in judge_calls)

    rows = read_jsonl(out / "generations.jsonl")
    assert len(rows) == 120 and metrics["n_groups"] == 24
    methods = {r["method"] for r in rows}
    assert methods == {"rule", "judge", "unparseable"}
    from alignpipe.evaluate.followbench.data import load_followbench

    by_id = {r["id"]: r for r in load_followbench(fb_dir)}
    for row in rows:
        assert row["response"] == policy(by_id[row["id"]]["instruction"])
        if row["method"] == "rule":
            assert row["verdicts"] == [rule_verdict(by_id[row["id"]], row["response"])]
        elif row["method"] == "judge":
            assert row["verdicts"] == parse_output(row["judge_raw"][-1], row["level"])
        else:
            assert row["response"].startswith("ALWAYS-GARBLE") and len(row["judge_raw"]) == 2
    n_bad = sum(r["method"] == "unparseable" for r in rows)
    assert metrics["unparseable"]["n"] == n_bad > 0 and metrics["methods"]["unparseable"] == n_bad
    assert metrics["n_instructions"] == 120 - n_bad
    assert metrics["parts"]["rule"] is not None and metrics["parts"]["judge"] is not None
    assert metrics["hsr_avg_lo"] <= metrics["hsr_avg"] <= metrics["hsr_avg_hi"]
    assert set(metrics["per_category"]) == {"content", "situation", "style", "format", "example", "mixed"}
    config = json.loads((out / "config.json").read_text())
    assert config["benchmark"] == "followbench" and config["judge_prompt"]["version"] == "followbench-judge-v1"
    assert set(config["data"]["sha256"]) == set(metrics["per_category"])

    before = {p.name: p.read_bytes() for p in out.iterdir()}  # deterministic: same params, same bytes
    n_calls = len(fake_models["generate"])
    stage.run(params, "sft", "data/sft/model", out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # ... and every response and judge output came from the stored outputs: no model loaded, nothing generated
    assert len(fake_models["load"]) == 2 and len(fake_models["generate"]) == n_calls

    stage.run(params, "base", "data/sft/model", out_dir=tmp_path / "evaluate" / "base")  # base and sft: always rows
    report = tmp_path / "report"
    report_run(params, eval_dir=tmp_path / "evaluate", out_dir=report)
    names = {p.name for p in report.iterdir()}
    assert {"followbench_official.md", "followbench_official.csv", "followbench_categories.csv",
            "followbench_radar.png"} <= names
    md = (report / "followbench_official.md").read_text()
    assert "## Rule-scored part (official rules)" in md and "## LLM-judged part (parsed judge outputs only)" in md
    assert f"| FB-model | {100 * metrics['hsr_l1']:.1f} |" in md
    assert (report / "followbench_radar.png").read_bytes()[:4] == b"\x89PNG"
    assert f"official FollowBench data `{fb_dir}`" in (report / "README.md").read_text()


def test_followbench_stage_without_judge(fb_dir, fake_models, tmp_path):
    params = _params(fb_dir, judge={"backend": "none"}, categories=["content", "example"])
    metrics = stage.run(params, "fb", "m", out_dir=tmp_path / "fb")
    assert fake_models["load"] == ["m"] and len(fake_models["generate"]) == 1
    assert metrics["parts"]["judge"] is None and metrics["unjudged"]["n"] > 0
    assert metrics["methods"]["rule"] == metrics["n_instructions"]
    # no judge: only the rule-scored instructions are answered; the judged ones are kept, unanswered
    rows = read_jsonl(tmp_path / "fb" / "generations.jsonl")
    assert fake_models["generate"][0][2] == metrics["methods"]["rule"] < len(rows)
    assert all((r["response"] is None) == (r["method"] == "unjudged") for r in rows)
