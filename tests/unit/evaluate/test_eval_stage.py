"""The evaluate stage end to end, with the world and models functions replaced by small stand-ins."""

from __future__ import annotations

import csv
import json
import sys
import types

import pytest

from alignpipe.config import EvaluateSection, Params
from alignpipe.stages import evaluate as stage
from alignpipe.utils.io import DataError, read_jsonl, write_jsonl

CATS = ("content", "style")


def _records():
    out = []
    for cat in CATS:
        for g in range(3):
            gid = f"{cat}-{g:04d}"
            for level in range(6):
                out.append(
                    {
                        "id": f"{gid}-L{level}",
                        "group_id": gid,
                        "category": cat,
                        "level": level,
                        "instruction": f"Describe thing {g}. " + " ".join(f"C{i}." for i in range(level)),
                        "constraints": [{"type": "t", "category": cat, "params": {"i": i}} for i in range(level)],
                    }
                )
    return out


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    """Stand-ins for the stage's world functions and for alignpipe.models, with the contract signatures; records
    their calls."""
    calls = {}

    def verify(record, response):
        # Constraint i holds when the response mentions it; the model below drops constraints >= 3.
        return [f"C{i}" in response for i in range(len(record["constraints"]))]

    class Judge:
        def __init__(self, kb):
            assert "kb" in kb

        def score(self, record, response):
            return {"fluency": 8, "factuality": 5 + record["level"] % 2, "coherence": 9 - record["level"] // 2}

        def errors(self, record, response):
            return {"fluency": True, "coherence": record["level"] > 1, "factuality": False}

    monkeypatch.setattr(stage, "load_instructions", lambda path: read_jsonl(path))
    monkeypatch.setattr(stage, "load_kb", lambda path: {"kb": str(path)})
    monkeypatch.setattr(stage, "verify", verify)
    monkeypatch.setattr(stage, "Judge", Judge)

    models = types.ModuleType("alignpipe.models")

    def load_model(name_or_path, model_section):
        calls["load_model"] = (name_or_path, model_section)
        return "model", "tokenizer"

    def generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        calls.setdefault("generate", []).append((prompts, max_new_tokens, batch_size))
        return [" ".join(f"C{i}" for i in range(3) if f"C{i}." in p[0]["content"]) for p in prompts]

    models.load_model, models.generate = load_model, generate
    monkeypatch.setitem(sys.modules, "alignpipe.models", models)
    world_dir = tmp_path / "world"
    write_jsonl(world_dir / "eval.jsonl", _records())
    return calls, world_dir


def test_run_writes_outputs(fakes, tmp_path):
    calls, world_dir = fakes
    params = Params(evaluate=EvaluateSection(bootstrap_samples=50, max_new_tokens=7, batch_size=4))
    out = tmp_path / "evaluate" / "sft"
    metrics = stage.run(params, "sft", "data/sft/model", world_dir=world_dir, out_dir=out)

    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generations.jsonl", "levels.csv", "metrics.json"]
    assert {(m, b) for _, m, b in calls["generate"]} == {(7, 4)}
    prompts = [p for chunk, _, _ in calls["generate"] for p in chunk]
    scored = [r["instruction"] for r in _records() if r["level"] >= 1]  # levels 1-5 only
    assert len(scored) == 30 and sorted(p[0]["content"] for p in prompts) == sorted(set(scored))  # each text once
    assert prompts[0] == [{"role": "user", "content": "Describe thing 0. C0."}]
    assert calls["load_model"][0] == "data/sft/model"

    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    for key in (
        "hsr_avg",
        "ssr_avg",
        "csl",
        "fluency",
        "factuality",
        "coherence",
        *(f"hsr_l{i}" for i in range(1, 6)),
    ):
        assert isinstance(metrics[key], float)
        assert metrics[f"{key}_lo"] <= metrics[key] <= metrics[f"{key}_hi"]
    assert all(isinstance(v, (int, float)) for k, v in metrics.items() if k != "per_category")
    # Responses satisfy constraints 0-2 only: levels 1-3 pass, 4-5 fail; CSL = 3 for every group.
    assert [metrics[f"hsr_l{i}"] for i in range(1, 6)] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert metrics["ssr_l4"] == 0.75 and metrics["ssr_l5"] == 0.6
    assert metrics["csl"] == 3.0 and metrics["fluency"] == 8.0
    assert (metrics["n_groups"], metrics["n_instructions"]) == (6, 30)
    assert set(metrics["per_category"]) == set(CATS)

    gens = read_jsonl(out / "generations.jsonl")
    assert len(gens) == 30
    assert set(gens[0]) == {"id", "group_id", "category", "level", "instruction", "response", "verdicts", "judge",
                            "errors"}
    assert gens[3]["verdicts"] == [True, True, True, False]
    # error rates by kind from the judge's flags (fluency always, coherence above level 1) and the verdicts
    assert metrics["error_fluency"] == 1.0 and metrics["error_factuality"] == 0.0
    assert metrics["error_coherence"] == 0.8 and metrics["error_fluency_lo"] == 1.0
    assert metrics["error_constraints"] == sum(not all(g["verdicts"]) for g in gens) / 30
    with open(out / "levels.csv", newline="") as fh:
        levels = list(csv.DictReader(fh))
    assert [r["level"] for r in levels] == ["1", "2", "3", "4", "5"] and float(levels[4]["ssr"]) == 0.6
    config = json.loads((out / "config.json").read_text())
    assert config["name"] == "sft" and config["evaluate"]["bootstrap_samples"] == 50 and config["eval_sha256"]

    # Same params and inputs -> byte-identical outputs.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    stage.run(params, "sft", "data/sft/model", world_dir=world_dir, out_dir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_no_bootstrap_omits_interval_keys(fakes, tmp_path):
    _, world_dir = fakes
    params = Params(evaluate=EvaluateSection(bootstrap_samples=0, levels=[1, 2]))
    metrics = stage.run(params, "base", "m", world_dir=world_dir, out_dir=tmp_path / "out")
    assert "hsr_avg" in metrics and not any(k.endswith(("_lo", "_hi")) for k in metrics)
    assert "hsr_l3" not in metrics and metrics["n_instructions"] == 12


def test_load_pool_missing_level(fakes, tmp_path):
    write_jsonl(tmp_path / "eval.jsonl", [r for r in _records() if r["level"] != 4])
    with pytest.raises(DataError, match=r"eval.jsonl: no instruction at level\(s\) \[4\]"):
        stage.load_pool(tmp_path, [1, 2, 3, 4, 5])


def test_score_checks_verdict_count(fakes, monkeypatch):
    monkeypatch.setattr(stage, "verify", lambda record, response: [True])
    records = [r for r in _records() if r["level"] == 2][:1]
    with pytest.raises(ValueError, match="1 verdicts for 2 constraints"):
        stage.score(records, ["x"], {"kb": 1})


def test_rerun_reuses_stored_responses_without_loading_the_model(fakes, tmp_path):
    calls, world_dir = fakes
    params = Params(evaluate=EvaluateSection(bootstrap_samples=50, max_new_tokens=7, batch_size=4))
    first = stage.run(params, "sft", "data/sft/model", world_dir=world_dir, out_dir=tmp_path / "a")
    calls.clear()
    again = stage.run(params, "sft", "data/sft/model", world_dir=world_dir, out_dir=tmp_path / "b")
    assert "generate" not in calls and "load_model" not in calls  # every response came from the store
    assert again == first
    assert (tmp_path / "a" / "generations.jsonl").read_bytes() == (tmp_path / "b" / "generations.jsonl").read_bytes()


def test_run_judges_through_the_judge_role(tmp_path, monkeypatch):
    """With `evaluate.judge: roles` the stage asks roles.judge (the flow once used the world's Judge while config.json
    named the role): the rows are those of `score` with the judge role, judge_raw kept, the role's counters in
    metrics; with the world's Judge no role counters."""
    from alignpipe.config import WorldSection, validate_params
    from alignpipe.world import build_world, load_kb

    world_dir = tmp_path / "world"
    build_world(5, WorldSection(n_entities=12, train_groups_per_category=1, eval_groups_per_category=1,
                                corpus_paraphrases=1)).save(world_dir)
    monkeypatch.setattr(stage, "generate_responses", lambda model_dir, records, cfg, model_section:
                        [r["instruction"] for r in records])  # each instruction answered by itself
    params = validate_params({"evaluate": {"judge": "roles", "levels": [1, 2], "bootstrap_samples": 0},
                              "roles": {"cache_dir": str(tmp_path / "llm")}})
    metrics = stage.run(params, "m", "unused", world_dir=world_dir, out_dir=tmp_path / "roles")
    generations = read_jsonl(tmp_path / "roles" / "generations.jsonl")
    assert all(isinstance(g["judge_raw"], str) and g["judge"] for g in generations)
    assert metrics["judge_unparseable"] == 0
    assert metrics["judge_calls"] == {**metrics["judge_calls"], "calls": len(generations), "unparseable": 0}
    records = stage.load_pool(world_dir, [1, 2])
    kb = load_kb(world_dir / "kb.json")
    expected = stage.score(records, [r["instruction"] for r in records], kb, stage.judge_role(params, kb))
    assert generations == json.loads(json.dumps(expected))
    world_only = validate_params({"evaluate": {"levels": [1, 2], "bootstrap_samples": 0}})
    plain = stage.run(world_only, "m", "unused", world_dir=world_dir, out_dir=tmp_path / "world-judge")
    assert "judge_calls" not in plain and "judge_unparseable" not in plain
