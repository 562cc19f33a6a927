"""sft_mix stage on a tiny world and model: per-mixture SFT with the sft stage's code, Lion's relative score vs the
teacher (equal to Lion's own when the mixture is exactly Lion's round-1 data and trainer), reuse of the sft model."""

import json
from pathlib import Path

import pytest

from alignpipe.config import ArchitectureSection, ConfigError, TokenizerSection, WorldSection, validate_params
from alignpipe.methods.lion import pool as lion
from alignpipe.stages import sft, sft_mix
from alignpipe.utils.io import sha256_file

LION = {"rounds": 1, "max_prompts": 8, "new_hard": 2, "new_easy": 2, "eval_prompts": 5, "max_new_tokens": 12,
        "max_length": 128, "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1}}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """world, base model and a synthesize run (WebR on 4 world pages, one Lion round), all oracle roles."""
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer
    from alignpipe.stages import synthesize as stage
    from alignpipe.world import build_world

    root = tmp_path_factory.mktemp("mix")
    build_world(5, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1,
                                corpus_paraphrases=1)).save(root / "world")
    tok = train_tokenizer((root / "world" / "corpus.txt").read_text().splitlines(),
                          TokenizerSection(vocab_size=400, min_frequency=1))
    arch = ArchitectureSection(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=2, max_position_embeddings=256)
    build_model(arch, tok, seed=0).save_pretrained(root / "base" / "model")
    tok.save_pretrained(root / "base" / "model")
    synth = validate_params({"seed": 5, "synthesize": {"webr": {"max_pages": 4}, "lion": LION}})
    stage.run(synth, root / "world", root / "synthesize", root / "base")
    return root


def _params(mixtures, sft_trainer=None, **extra):
    trainer = sft_trainer or {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1}
    return validate_params({"seed": 5, "synthesize": {"webr": {"max_pages": 4}, "lion": LION},
                            "sft": {"max_length": 128, "trainer": trainer}, "sft_mix": {"mixtures": mixtures},
                            **extra})


def _run(params, name, root, out):
    return sft_mix.run(params, name, root / "world", root / "base", root / "synthesize", root / "sft", out)


def test_mixture_trains_on_its_sources_and_scores_against_the_teacher(dirs, tmp_path):
    params = _params({"both": ["seed", "lion_r1", "webr"]})
    m = _run(params, "both", dirs, tmp_path / "both")
    files = sft_mix.source_files(["seed", "lion_r1", "webr"], dirs / "world", dirs / "synthesize")
    counts = [len(_read(f)) for f in files]
    assert m["rows_by_source"] == dict(zip(["seed", "lion_r1", "webr"], counts)) and all(counts)
    # TRL drops rows whose completion is truncated away entirely (max_length 128 here): at most all rows train.
    assert 0 < m["n_examples"] <= sum(counts) and m["steps"] == 2 and m["reused"] is None
    out = tmp_path / "both"
    for f in ("model/model.safetensors", "metrics.json", "config.json", "log.csv", "relative.jsonl"):
        assert (out / f).is_file(), f
    # Relative score: Lion's eval subset, the teacher answers the synthesize stage stored, the referee's scores.
    rows = _read(out / "relative.jsonl")
    teacher = {r["id"]: r["answer"] for r in _read(dirs / "synthesize/lion/round_0/baseline/teacher_eval.jsonl")}
    assert len(rows) == 5 and all(r["teacher"] == teacher[r["id"]] for r in rows)
    done = [r for r in rows if r["label"] != "unscored"]
    hand = round(100 * sum(r["student_score"] for r in done) / sum(r["teacher_score"] for r in done), 2)
    assert m["relative_score"] == hand == m["relative"]["relative_score"] and m["relative"]["scored"] == len(done)
    assert json.loads((out / "config.json").read_text())["sources"] == ["seed", "lion_r1", "webr"]


def test_lion_round_data_with_lions_trainer_reproduces_lions_own_relative_score(dirs, tmp_path):
    """[lion_r1] with Lion's trainer and length is Lion's round-1 student: the same relative score on its eval set."""
    params = _params({"r1": ["lion_r1"]}, sft_trainer=LION["trainer"])
    m = _run(params, "r1", dirs, tmp_path / "r1")
    rounds = json.loads((dirs / "synthesize" / "lion" / "rounds.json").read_text())
    assert m["relative_score"] == rounds[1]["eval_relative_score"] is not None
    lion_student = dirs / "synthesize/lion/round_1/imitation/student/model/model.safetensors"
    assert sha256_file(tmp_path / "r1" / "model" / "model.safetensors") == sha256_file(lion_student)
    assert m["relative_score"] == lion.relative_score(_read(tmp_path / "r1" / "relative.jsonl"))


def test_the_mixture_equal_to_sft_data_reuses_the_sft_model(dirs, tmp_path):
    params = _params({"seed": ["seed"], "lion": ["seed", "lion"]})
    sft.run(params, dirs / "world", dirs / "base", dirs / "sft")
    m = _run(params, "seed", dirs, tmp_path / "seed")
    assert m["reused"] == str(dirs / "sft")
    assert sha256_file(tmp_path / "seed/model/model.safetensors") == sha256_file(dirs / "sft/model/model.safetensors")
    # A different sft section: the stored model is not this one, so it is trained.
    other = _params({"seed": ["seed"]}, sft_trainer={"max_steps": 1, "per_device_train_batch_size": 4})
    assert _run(other, "seed", dirs, tmp_path / "seed2")["reused"] is None


def test_mixture_params_are_validated():
    with pytest.raises(ConfigError, match=r"sft_mix.mixtures.* unknown source\(s\) \['alpaca'\]"):
        _params({"x": ["seed", "alpaca"]})
    with pytest.raises(ConfigError, match=r"sft_mix.mixtures.late = .*\['lion_r2'\] name rounds after"):
        _params({"late": ["lion_r2"]})
    with pytest.raises(ConfigError, match=r"'webr' needs synthesize.webr.enabled"):
        validate_params({"synthesize": {"webr": {"enabled": False}}, "sft_mix": {"mixtures": {"w": ["webr"]}}})
    with pytest.raises(ConfigError, match=r"report.labels names \['mix_nope'\]"):
        validate_params({"report": {"labels": {"mix_nope": "N"}}})
    with pytest.raises(ConfigError, match=r"no mixture 'zzz'"):
        sft_mix.get_mixture(_params({}), "zzz")
