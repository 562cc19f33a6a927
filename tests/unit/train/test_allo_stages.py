"""neurons -> rewards -> align@allo on the tiny fixtures: outputs, masks, token alignment, resume, the pipeline."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignpipe.config import ConfigError, validate_params


def _params(helpers, **variants):
    params = helpers.make_params(**({"variants": variants} if variants else {}))
    params.neurons.warmup_trainer = {"max_steps": 2, "logging_steps": 1}
    params.rewards.trainer = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1}
    params.rewards.max_length = 64
    return params


@pytest.fixture(scope="module")
def allo_dirs(store, sft_dir, helpers, tmp_path_factory):
    """Run the neurons and rewards stages once: (params, root) with root/neurons and root/rewards."""
    from alignpipe.stages import neurons as neurons
    from alignpipe.stages import rewards as rewards

    root = tmp_path_factory.mktemp("allo")
    prefs, ref_dir = store
    params = _params(helpers)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNPIPE_WORK_DIR", str(root / "_work"))
        neurons.run(params, prefs, ref_dir, sft_dir, root / "neurons")
        rewards.run(params, prefs, ref_dir, sft_dir, root / "neurons", root / "rewards")
    return params, root


def test_neurons_outputs(allo_dirs, sft_dir):
    params, root = allo_dirs
    out = root / "neurons"
    assert {p.name for p in out.iterdir()} == {"masks", "warmup", "stats.csv", "neurons_by_layer.png",
                                               "metrics.json", "config.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    sft = load_file(str(sft_dir / "model" / "model.safetensors"))
    n = sum(t.numel() for t in sft.values())
    for ratio in params.neurons.ratios:
        masks = load_file(str(out / "masks" / f"mask_r{ratio:g}.safetensors"))
        assert set(masks) == set(sft) and all(masks[k].shape == sft[k].shape for k in sft)
        selected = sum(int(m.sum()) for m in masks.values())
        k = int(n * ratio / 100)
        entry = metrics["ratios"][f"{ratio:g}"]["weight_delta"]
        assert entry["selected"] == selected and selected >= k  # ties at the threshold only add entries
        assert len(entry["by_layer_percent"]) == 6
    assert metrics["warmup"]["steps"] == 2 and 0 <= metrics["ratios"]["5"]["scorer_agreement"]["jaccard"] <= 1
    warm = load_file(str(out / "warmup" / "model.safetensors"))
    assert any(not torch.equal(warm[k], sft[k]) for k in sft)
    assert (out / "neurons_by_layer.png").read_bytes()[:4] == b"\x89PNG"


def test_token_scores_align_with_training_tokens(allo_dirs, store, sft_dir):
    """Every stored score sits on a token the align trainer feeds, in its order (reflogps = collator tokens)."""
    from datasets import Dataset

    from alignpipe.methods.allo.token_scores import load_token_scores
    from alignpipe.stages import align
    from alignpipe.train.dpo import completion_tokens

    params, root = allo_dirs
    prefs, ref_dir = store
    metrics = json.loads((root / "rewards" / "metrics.json").read_text())
    assert 0.0 <= metrics["heldout_accuracy"] <= 1.0 and metrics["heldout_pairs"] > 0
    scores = load_token_scores(root / "rewards")
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "dpo_full", align.get_variant(params, "dpo_full"), model, tok,
                                  rows, ref, root / "_t")
    assert scores.ids == ref.ids
    for row in trainer.train_dataset:
        fed = completion_tokens(trainer.data_collator, row)
        pair = scores.pair(row["id"])
        assert pair["rejected_ids"].tolist() == fed["rejected"] and pair["chosen_ids"].tolist() == fed["chosen"]
        key, w = pair["rejected_key"], pair["rejected_weight"]
        assert len(w) == len(fed["rejected"]) and torch.all(w[~key] == 0) and torch.all(w[key] > 0)
        assert torch.allclose(w[key], pair["rejected_rm_wrong"][key])
        assert torch.allclose(pair["rejected_rm_wrong"], torch.sigmoid(-pair["rejected_rm_delta"]))


def test_rm_prefix_scores_match_the_reward_models_own_output(allo_dirs, store):
    """Σ_t Δ_t = s(x, y) - s(x): the last prefix score is the RM's sequence reward of prompt + response."""
    from transformers import AutoModelForSequenceClassification

    from alignpipe.methods.allo.token_scores import load_token_scores, prefix_scores
    from alignpipe.train.reflogps import load_ref_logps

    _, root = allo_dirs
    rm = AutoModelForSequenceClassification.from_pretrained(root / "rewards" / "model").eval()
    ref = load_ref_logps(store[1])
    scores = load_token_scores(root / "rewards")
    pair_id = ref.ids[0]
    pair = ref.pair(pair_id)
    seq = pair["prompt_ids"] + pair["rejected_ids"]
    prefix = prefix_scores(rm, [seq, pair["prompt_ids"]], pad_id=0)
    with torch.no_grad():
        full = rm(input_ids=torch.tensor([seq])).logits[0, 0]
    assert float(prefix[0][-1]) == pytest.approx(float(full), abs=1e-5)
    delta_sum = float(scores.pair(pair_id)["rejected_rm_delta"].sum())
    assert delta_sum == pytest.approx(float(prefix[0][-1] - prefix[1][-1]), abs=1e-4)


def test_allo_variant_forget_then_learn_and_resume(allo_dirs, store, sft_dir, helpers, tmp_path):
    from alignpipe.stages import align

    _, root = allo_dirs
    prefs, ref_dir = store
    params = _params(helpers, allo={"peft": "none", "allo": {"forget_ratio": 5, "learn_ratio": 10,
                                                             "forget_trainer": {"max_steps": 2}}})
    kw = {"neurons_dir": root / "neurons", "rewards_dir": root / "rewards"}
    metrics = align.run(params, "allo", prefs, ref_dir, sft_dir, tmp_path / "a", **kw)
    assert metrics["forget"]["steps"] == 2 and metrics["steps"] == 4
    assert 0 < metrics["updated_params"] <= metrics["learn_mask_params"] + metrics["forget_mask_params"]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["inputs"]["forget_mask_sha256"] and config["inputs"]["token_scores_sha256"]
    again = align.run(params, "allo", prefs, ref_dir, sft_dir, tmp_path / "b", **kw)  # resumes: nothing retrained
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a) and again["updated_params"] == metrics["updated_params"]


def test_global_allo_only_touches_the_global_block(allo_dirs, store, sft_dir, helpers, tmp_path):
    from alignpipe.stages import align

    _, root = allo_dirs
    prefs, ref_dir = store
    params = _params(helpers, g={"peft": "none", "allo": {"forget": False, "learn_ratio": 10, "block": "global"}})
    align.run(params, "g", prefs, ref_dir, sft_dir, tmp_path / "g", neurons_dir=root / "neurons",
              rewards_dir=root / "rewards")
    trained = load_file(str(tmp_path / "g" / "model" / "model.safetensors"))
    sft = load_file(str(sft_dir / "model" / "model.safetensors"))
    changed = {k for k in sft if not torch.equal(trained[k], sft[k])}
    assert changed and all(".layers.4." in k or ".layers.5." in k for k in changed)


def test_allo_config_errors():
    with pytest.raises(ConfigError, match=r"allo.learn_ratio = 7.0: not among neurons.ratios"):
        validate_params({"align": {"variants": {"x": {"peft": "none", "allo": {"learn_ratio": 7}}}}})
    with pytest.raises(ConfigError, match="needs peft: none"):
        validate_params({"align": {"variants": {"x": {"peft": "lora", "allo": {}}}}})
    with pytest.raises(ConfigError, match=r"neurons.ratios = \[0, 5\]"):
        validate_params({"neurons": {"ratios": [0, 5]}})
    with pytest.raises(ConfigError, match="rewards.trainer.leraning_rate"):
        validate_params({"rewards": {"trainer": {"leraning_rate": 1e-4}}})
    with pytest.raises(ConfigError, match=r"report.labels names \[.nope.\], which are not evaluated models"):
        validate_params({"report": {"labels": {"nope": "N"}, "allo": True}})
