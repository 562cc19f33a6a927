"""The LTE stages end to end on a tiny world and a tiny Llama built here: edits -> edit_align -> edit_eval,
with LoRA and full fine-tuning, and the report's LTE table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe.config import ArchitectureSection, TokenizerSection, validate_params
from alignpipe.stages import edit_align as align
from alignpipe.stages import edit_eval as evaluate
from alignpipe.stages import edits as stage
from alignpipe.methods.lte.template import HEADER
from alignpipe.utils.io import DataError, read_json, read_jsonl
from alignpipe.world.kb import generate_kb


def _params(**over):
    raw = {"seed": 5, "edits": {"n_train": 8, "n_eval": 6},
           "edit_align": {"max_length": 160, "lora": {"r": 4, "lora_alpha": 8},
                          "trainer": {"max_steps": 3, "per_device_train_batch_size": 4, "logging_steps": 1,
                                      "save_steps": 2}},
           "edit_eval": {"sizes": [2, None], "max_new_tokens": 8, "batch_size": 16}}
    for key, value in over.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_params(raw)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    (out / "kb.json").write_text(json.dumps(generate_kb(5, 12).to_json()))
    return out


@pytest.fixture(scope="module")
def sft_dir(world, tmp_path_factory) -> Path:
    """A 2-layer hidden-16 Llama + BPE tokenizer over the KB's sentences, saved as the "SFT policy"."""
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer
    from alignpipe.world import load_kb

    kb = load_kb(world / "kb.json")
    lines = [kb.fact(e.id, a) for e in kb.entities for a in kb.attributes(e.id)] + [HEADER, "[Question]:"]
    tok = train_tokenizer(lines, TokenizerSection(vocab_size=300, min_frequency=1))
    arch = ArchitectureSection(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=2, max_position_embeddings=256)
    out = tmp_path_factory.mktemp("sft")
    model = build_model(arch, tok, seed=0)
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    return out


@pytest.fixture(scope="module")
def edits_dir(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edits") / "edits"
    stage.run(_params(), world, out)
    return out


def test_edits_stage_writes_world_edits(edits_dir):
    m = read_json(edits_dir / "metrics.json")
    assert m["train"]["edits"] == 8 and m["eval"]["edits"] == 6
    assert read_json(edits_dir / "config.json")["edits"]["n_eval"] == 6
    train, ev = read_jsonl(edits_dir / "train.jsonl"), read_jsonl(edits_dir / "eval.jsonl")
    assert not {(e["subject"], e["relation"]) for e in train} & {(e["subject"], e["relation"]) for e in ev}


def test_edits_stage_reads_knowedit(shared_data, tmp_path):
    files = [str(shared_data / "knowedit" / "ZsRE-test-all.json")]
    params = _params(edits={"source": "knowedit", "train_files": files,
                            "eval_files": [str(shared_data / "knowedit" / "wiki_counterfact-train_cf.json")],
                            "max_train": 20, "max_eval": 10})
    m = stage.run(params, tmp_path / "world", tmp_path / "edits")
    assert m["train"]["edits"] == 20 and m["eval"]["edits"] == 10
    assert m["eval"]["portability"]["Subject_Aliasing"] > 0


def test_edits_stage_errors(tmp_path, world):
    with pytest.raises(DataError, match="lower edits.n_train"):
        stage.run(_params(edits={"n_train": 40, "n_eval": 40}), world, tmp_path / "e")
    with pytest.raises(Exception, match="source 'knowedit' needs train_files"):
        _params(edits={"source": "knowedit"})


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_edit_align_then_edit_eval(peft, edits_dir, sft_dir, tmp_path):
    params = _params(edit_align={"peft": peft})
    m = align.run(params, edits_dir, sft_dir, tmp_path / "edit_align")
    out = tmp_path / "edit_align"
    assert m["steps"] == 3 and m["final_loss"] > 0
    assert m["mixture"]["edits_by_distractors"] == {"0": 4, "1": 2, "2": 2}
    model_files = {p.name for p in (out / "model").iterdir()}
    assert ("adapter_model.safetensors" in model_files) == (peft == "lora")
    assert ("model.safetensors" in model_files) == (peft == "none")
    rows = read_jsonl(out / "data.jsonl")
    assert {r["scope"] for r in rows} >= {"prompt", "rephrase", "locality", "locality_plain"}
    if peft == "none":
        return
    metrics = evaluate.run(params, edits_dir, sft_dir, out, tmp_path / "edit_eval")
    assert metrics["sizes"] == [2, 6]
    for system in ("icl", "lte"):
        for mode in ("batch", "sequential"):
            for size, n in (("2", 2), ("6", 6)):
                r = metrics["results"][system][mode][size]
                assert r["n_edits"] == n
                for key in ("edit_success", "locality", "fluency", "retrieval_hit"):
                    assert r[key] is not None and r[key] >= 0
    gens = read_jsonl(tmp_path / "edit_eval" / "generations.jsonl")
    assert all(g["prompt"].startswith(HEADER) and len(g["retrieved"]) == 1 for g in gens)
    # the sequential stream: the first edit is asked with a one-edit store, so it retrieves itself
    first = [g for g in gens if g["mode"] == "sequential" and g["edit"] == 0 and g["kind"] == "prompt"]
    assert first and all(g["hit"] for g in first)
    # recomputing a metric from the stored rows by hand
    sel = [g for g in gens if g["system"] == "icl" and g["mode"] == "batch" and 2 in g["sizes"]
           and g["kind"] == "prompt"]
    assert metrics["results"]["icl"]["batch"]["2"]["edit_success"] == pytest.approx(
        sum(g["score"] for g in sel) / len(sel), abs=1e-4)
    assert evaluate.run(params, edits_dir, sft_dir, out, tmp_path / "again") == metrics  # deterministic
