"""The stored reference log-probs equal a fresh computation and line up with the DPO trainer's tokenization."""

import json

import pytest
import torch

from alignpipe.train.reflogps import load_ref_logps
from alignpipe.utils.io import DataError


def test_outputs_and_metrics(store):
    _, ref_dir = store
    assert {p.name for p in ref_dir.iterdir()} == {"ref_logps.safetensors", "ref_logps_bridged.safetensors",
                                                    "config.json", "metrics.json"}
    assert load_ref_logps(ref_dir, "ref_logps_bridged.safetensors").ids == []  # no bridged column: empty store
    metrics = json.loads((ref_dir / "metrics.json").read_text())
    assert metrics["n_pairs"] == 16 and metrics["dropped"] == {}
    config = json.loads((ref_dir / "config.json").read_text())
    assert config["max_length"] == 64 and config["truncation_mode"] == "keep_start"
    assert len(config["model_sha256"]) == 64
    ref = load_ref_logps(ref_dir)
    assert ref.config == config and len(ref.ids) == 16


def test_stored_values_equal_a_fresh_forward(store, sft_dir):
    """Independent of TRL's fused head: plain logits -> log_softmax -> gather, per token and summed."""
    from transformers import AutoModelForCausalLM

    ref = load_ref_logps(store[1])
    model = AutoModelForCausalLM.from_pretrained(sft_dir / "model").eval()
    for pair_id in ref.ids:
        p = ref.pair(pair_id)
        for part in ("chosen", "rejected"):
            ids = torch.tensor([p["prompt_ids"] + p[f"{part}_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0]
            fresh = logp[-len(p[f"{part}_ids"]):]
            torch.testing.assert_close(p[f"{part}_logps"], fresh, atol=1e-5, rtol=1e-5)
            assert abs(p[f"{part}_sum"] - float(fresh.sum())) < 1e-4
            assert abs(p[f"{part}_sum"] - float(p[f"{part}_logps"].sum())) < 1e-4


def test_tokens_match_the_trainer_and_truncation(store, sft_dir, params, tmp_path):
    """The trainer's own tokenization + collator accepts the store; the attached sums are the stored ones."""
    from alignpipe.stages import align

    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                                  tmp_path / "out")
    ds = trainer.train_dataset
    assert trainer.ref_model is None  # no reference copy in memory
    for pair_id, c, r in zip(ds["id"], ds["ref_chosen_logps"], ds["ref_rejected_logps"]):
        stored = ref.pair(pair_id)
        assert (c, r) == pytest.approx((stored["chosen_sum"], stored["rejected_sum"]), abs=1e-6)
        row = next(x for x in rows if x["id"] == pair_id)
        full = tok.apply_chat_template(row["prompt"] + row["chosen"], tokenize=True, return_dict=True)["input_ids"]
        kept = stored["prompt_ids"] + stored["chosen_ids"]
        assert kept == full[: len(kept)] and len(kept) == min(len(full), 64)  # max_length=64, keep_start


def test_token_mismatch_fails_naming_the_pair(store, sft_dir, params, tmp_path):
    from alignpipe.stages import align

    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    i = ref.index["p0003"]
    ref.tensors["chosen_ids"][int(ref.tensors["chosen_offsets"][i])] += 1  # tamper with one stored token
    with pytest.raises(DataError, match=r"pair 'p0003': the chosen tokens .* differ .*rerun the reflogps stage"):
        align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                            tmp_path / "out")


def test_unknown_pair_fails(store, sft_dir, params, helpers, tmp_path):
    from alignpipe.stages import align

    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    extra = helpers.make_pairs(1, seed=3)[0] | {"id": "new-pair"}
    with pytest.raises(DataError, match=r"pair 'new-pair': not in .*ref_logps.safetensors \(rerun the reflogps"):
        align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok,
                            [*rows, {k: extra[k] for k in rows[0]}], ref, tmp_path / "out")


def test_stale_store_fails_early(store, sft_dir, helpers):
    from alignpipe.stages import align

    prefs, ref_dir = store
    with pytest.raises(DataError, match="stale reference log-probs.*max_length 64 != align.max_length 48"):
        align.prepare(helpers.make_params(max_length=48), prefs, ref_dir, sft_dir)


def test_store_has_one_metadata_key_so_bytes_do_not_vary(store):
    """safetensors keeps metadata in a hash map (key order varies by process): one key keeps the bytes stable."""
    from safetensors import safe_open

    _, reflogps_dir = store
    with safe_open(str(reflogps_dir / "ref_logps.safetensors"), framework="pt") as fh:
        assert list(fh.metadata()) == ["alignpipe"]
