"""Held-out preference pairs (alignpipe.train.heldout): the split by prompt, the statistics by hand, the policy's
log-probs against TRL's stored reference sums, and what the align stage writes."""

import json
import math

import pytest
import torch

from alignpipe.stages import align
from alignpipe.train.heldout import heldout_metrics, policy_sums, split_heldout, summarize
from alignpipe.utils.io import DataError


def _rows(n_prompts: int, per_prompt: int = 2) -> list[dict]:
    return [{"id": f"p{i}-{j}", "prompt": [{"role": "user", "content": f"Describe place {i}."}],
             "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}]}
            for i in range(n_prompts) for j in range(per_prompt)]


def test_split_keeps_each_prompt_on_one_side_and_is_stable():
    rows = _rows(1000)
    train, held = split_heldout(rows, 0.1, seed=3)
    assert len(train) + len(held) == len(rows) and 0.08 < len(held) / len(rows) < 0.12
    sides = {}
    for side, part in (("train", train), ("held", held)):
        for r in part:
            assert sides.setdefault(r["prompt"][0]["content"], side) == side  # both pairs of a prompt together
    more_train, more_held = split_heldout(rows + _rows(1200)[2000:], 0.1, seed=3)
    assert {r["id"] for r in held} <= {r["id"] for r in more_held}  # new pairs never move earlier ones
    assert split_heldout(rows, 0.1, seed=4)[1] != held  # the seed draws another split
    assert split_heldout(rows, 0.0, seed=3) == (rows, [])
    with pytest.raises(DataError, match=r"^preference pairs: all 2 pairs fell among the held-out prompts "
                                        r"\(align.heldout_fraction = 0.999\); lower align.heldout_fraction or add pairs$"):
        split_heldout(_rows(1), 0.999, seed=0)  # one prompt, drawn below 0.999 for this seed


def test_summary_statistics_by_hand():
    margins = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    chosen = torch.tensor([-3.0, -5.0, -2.0, -4.0], dtype=torch.float64)
    rejected = torch.tensor([-4.0, -4.0, -2.5, -4.0], dtype=torch.float64)
    got = summarize(margins, chosen, rejected)
    # 2 wins, 1 loss, 1 tie: (2 + 0.5) / 4; exact one-sided test on the 3 decided pairs: P(X >= 2 | n 3) = 4/8
    softplus = [math.log1p(math.exp(-m)) for m in (1.0, -1.0, 0.5, 0.0)]
    assert got == {"n_pairs": 4, "reward_accuracy": 0.625, "reward_accuracy_p": 0.5, "reward_margin": 0.125,
                   "loss": round(sum(softplus) / 4, 6), "logp_accuracy": 0.5}


def test_the_untrained_policy_reproduces_the_stored_reference_sums(store, sft_dir, params):
    """On the store's own tokens, the SFT model's summed log-probs equal TRL's reference sums: so every margin of
    the untrained policy is 0 and a trained one's margins measure training, not a tokenization mismatch."""
    prefs, ref_dir = store
    prep = align.prepare(params, prefs, ref_dir, sft_dir)
    ids = prep.ref.ids
    chosen, rejected = policy_sums(prep.model, prep.ref, ids, batch_size=5, pad_id=prep.tokenizer.pad_token_id)
    rows = [prep.ref.index[i] for i in ids]
    assert torch.allclose(chosen, prep.ref.tensors["chosen_sum"][rows], atol=1e-4)
    assert torch.allclose(rejected, prep.ref.tensors["rejected_sum"][rows], atol=1e-4)
    got = heldout_metrics(prep.model, prep.ref, ids, beta=0.1, pad_id=prep.tokenizer.pad_token_id)
    assert abs(got["after"]["reward_margin"]) < 1e-5 and not got["learned"]
    assert got["before"]["reward_accuracy"] == 0.5 and got["before"]["loss"] == round(math.log(2), 6)
    assert got["before"]["logp_accuracy"] == got["after"]["logp_accuracy"]
    assert heldout_metrics(prep.model, prep.ref, ["no-such-pair"], beta=0.1) == {
        "n_pairs": 0, "before": None, "after": None, "learned": None}


def test_align_trains_without_the_heldout_prompts_and_reports_them(helpers, sft_dir, tmp_path, monkeypatch):
    """48 pairs on 8 prompts with a third of the prompts held out: no held-out pair is trained on, and
    metrics.json carries the held-out numbers before and after."""
    from alignpipe.stages import reflogps

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work"))
    params = helpers.make_params(heldout_fraction=0.34, trainer={"max_steps": 6, "learning_rate": 5e-3})
    prefs = helpers.write_pairs(tmp_path / "preferences", helpers.make_pairs(48))
    reflogps.run(params, prefs, sft_dir, tmp_path / "reflogps")
    prep = align.prepare(params, prefs, tmp_path / "reflogps", sft_dir)
    assert prep.heldout and {r["id"] for r in prep.rows}.isdisjoint(prep.heldout)
    held_prompts = {json.dumps(r["prompt"]) for r in helpers.make_pairs(48) if r["id"] in set(prep.heldout)}
    assert held_prompts.isdisjoint({json.dumps(r["prompt"]) for r in prep.rows})
    metrics = align.run(params, "dpo_full", prefs, tmp_path / "reflogps", sft_dir, tmp_path / "out")
    assert metrics["n_pairs"] == len(prep.rows)
    held = json.loads((tmp_path / "out/metrics.json").read_text())["heldout"]
    assert held["n_pairs"] == len(prep.heldout)
    assert set(held["after"]) == {"n_pairs", "reward_accuracy", "reward_accuracy_p", "reward_margin", "loss",
                                  "logp_accuracy"}
    assert held["before"]["reward_margin"] == 0.0 and held["after"]["reward_margin"] != 0.0
    assert isinstance(held["learned"], bool)
