"""BMC inside TRL's DPOTrainer: masks in TRL's own tokenization, weighted stored reference, δ = 0 == plain DPO."""

from types import SimpleNamespace

import pytest
import torch

from alignpipe.methods.bmc.loss import modified_tokens, stopword_ids

EDITS = [  # (chosen, rejected): one word changed, so the diff marks that word only (one token in the tiny BPE)
    ("Velmora has a tall tower and a market.", "Velmora has a tall mill and a market."),
    ("Orin was founded long ago by fishers.", "Orin was founded long ago by traders."),
    ("People in Lysa trade fish and salt.", "People in Lysa trade tower and salt."),
    ("Kasimir has a tall tower and an old mill.", "Kasimir has a tall tower."),
]


def edit_pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        chosen, rejected = EDITS[i % len(EDITS)]
        rows.append({"id": f"e{i:03d}", "prompt": [{"role": "user", "content": f"Describe it. ({i})"}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


@pytest.fixture(scope="module")
def bmc_store(sft_dir, helpers, tmp_path_factory):
    from alignpipe.stages import reflogps

    root = tmp_path_factory.mktemp("bmc")
    prefs = helpers.write_pairs(root / "preferences", edit_pairs(8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNPIPE_WORK_DIR", str(root / "_work"))
        reflogps.run(helpers.make_params(), prefs, sft_dir, root / "reflogps")
    return prefs, root / "reflogps"


def build(helpers, sft_dir, store, tmp_path, variant="dpo_mc", **bmc):
    from alignpipe.stages import align

    params = helpers.make_params(bmc=bmc) if bmc else helpers.make_params()
    prefs, ref_dir = store
    section = align.get_variant(params, variant)
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir,
                                             bridged=align.check_bridged(variant, section, prefs))
    return align.build_trainer(params, variant, section, model, tok, rows, ref, tmp_path / variant), tok


def test_masks_align_with_trl_tokens(helpers, sft_dir, bmc_store, tmp_path):
    trainer, tok = build(helpers, sft_dir, bmc_store, tmp_path)
    ds = trainer.train_dataset
    assert {"chosen_bmc_mask", "rejected_bmc_mask"} <= set(ds.column_names)
    stop = stopword_ids(tok)
    for row in ds:
        assert len(row["chosen_bmc_mask"]) == len(row["chosen_ids"])
        assert len(row["rejected_bmc_mask"]) == len(row["rejected_ids"])
        m_rej, m_cho = modified_tokens(row["rejected_ids"], row["chosen_ids"], stop, prompt=row["prompt_ids"])
        assert (row["rejected_bmc_mask"], row["chosen_bmc_mask"]) == (m_rej, m_cho)
    # The marked tokens of the first pair spell the edited words (and nothing else).
    first = ds[0]
    marked = lambda ids, m: tok.decode([t for t, x in zip(ids, m) if x]).strip()  # noqa: E731
    assert marked(first["chosen_ids"], first["chosen_bmc_mask"]) == "tower"
    assert marked(first["rejected_ids"], first["rejected_bmc_mask"]) == "mill"
    # The collated mask sits on the same positions as the tokens it marks, inside the completion.
    batch = trainer.data_collator([ds[i] for i in range(4)])
    assert batch["bmc_mask"].shape == batch["input_ids"].shape
    assert not (batch["bmc_mask"].bool() & ~batch["completion_mask"].bool()).any()
    row0 = batch["input_ids"][0][batch["bmc_mask"][0].bool()].tolist()
    assert tok.decode(row0).strip() == "tower"
    row_rej = batch["input_ids"][4][batch["bmc_mask"][4].bool()].tolist()
    assert tok.decode(row_rej).strip() == "mill"


def test_dataset_masks_diff_prompt_plus_response():
    """The trainer's diff gets TRL's ``prompt_ids``: a response token matched with a prompt token is not marked."""
    from datasets import Dataset

    from alignpipe.methods.bmc.trainer import BMCDPOTrainer

    # TRL's tokenization is not under test: the hook that runs after it gets already tokenized rows.
    trainer = BMCDPOTrainer.__new__(BMCDPOTrainer)
    trainer.bmc_stop_ids, trainer.bmc_autojunk = frozenset(), True
    # As test_bmc_loss: the rejected response repeats the prompt's last token 12, which the whole-sequence diff
    # matches with the chosen sequence's prompt (a diff of the responses alone would mark it: 1 1 0 0 0).
    rows = [{"prompt_ids": [11, 12], "chosen_ids": [13, 14, 15], "rejected_ids": [9, 12, 13, 14, 15]}]
    ds = trainer.prepare_tokenized(Dataset.from_list(rows), "train")
    assert ds[0]["rejected_bmc_mask"] == [1, 0, 0, 0, 0]
    assert ds[0]["chosen_bmc_mask"] == [0, 0, 0]


def test_masks_survive_truncation(helpers, sft_dir, bmc_store, tmp_path):
    from alignpipe.methods.bmc.trainer import BMCCollator

    ex = {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5, 6, 7], "rejected_ids": [4, 9],
          "chosen_bmc_mask": [0, 1, 0, 1], "rejected_bmc_mask": [0, 1]}
    out = BMCCollator(pad_token_id=0, max_length=5)([ex])
    assert out["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 4, 9]]
    assert out["bmc_mask"].tolist() == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1]]


def test_weighted_reference_from_store(helpers, sft_dir, bmc_store, tmp_path):
    from alignpipe.train.reflogps import load_ref_logps

    delta = 2.0
    trainer, _ = build(helpers, sft_dir, bmc_store, tmp_path, delta=delta)
    ref = load_ref_logps(bmc_store[1])
    for row in trainer.train_dataset:
        stored = ref.pair(row["id"])
        for part in ("chosen", "rejected"):
            lp = stored[f"{part}_logps"].tolist()
            m = row[f"{part}_bmc_mask"][: len(lp)]
            hand = stored[f"{part}_sum"] + sum(mt * min(1 / torch.tensor(x).exp().item(), delta) * x
                                               for x, mt in zip(lp, m))
            assert row[f"ref_{part}_logps"] == pytest.approx(hand, abs=1e-4)
        assert any(row["rejected_bmc_mask"]) or any(row["chosen_bmc_mask"])
    # With weights, the reference sums are lower (more negative) than the plain ones.
    plain = ref.pair(trainer.train_dataset[0]["id"])["rejected_sum"]
    assert trainer.train_dataset[0]["ref_rejected_logps"] < plain


def test_delta_zero_equals_plain_dpo_bitwise(helpers, sft_dir, bmc_store, tmp_path):
    bmc, _ = build(helpers, sft_dir, bmc_store, tmp_path, delta=0.0)
    plain, _ = build(helpers, sft_dir, bmc_store, tmp_path, variant="dpo_full")
    for t in (bmc, plain):
        t.model.train()
    rows = [bmc.train_dataset[i] for i in range(4)]
    b_in = bmc.data_collator(rows)
    p_in = plain.data_collator([{k: r[k] for k in plain.train_dataset.column_names if k in r} for r in rows])
    assert torch.equal(b_in["ref_chosen_logps"], p_in["ref_chosen_logps"])
    with torch.no_grad():
        b_loss = bmc._compute_loss(bmc.model, b_in, return_outputs=False)
        p_loss = plain._compute_loss(plain.model, p_in, return_outputs=False)
    assert torch.equal(b_loss, p_loss)
    for key in ("rewards/margins", "rewards/chosen", "logps/chosen"):
        assert bmc._metrics["train"][key][-1] == plain._metrics["train"][key][-1]


def test_loss_matches_hand_formula_on_fixed_logps(helpers, sft_dir, bmc_store, tmp_path):
    """The trainer's loss path on fixed per-token log-probs (the model replaced) against the formula by hand."""
    import math

    delta, beta = 2.0, 0.1
    trainer, _ = build(helpers, sft_dir, bmc_store, tmp_path, delta=delta, beta=beta)
    completion = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 1]])
    bmc_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    logps = torch.tensor([[-0.5, -1.0, -0.25], [-2.0, -0.1, 0.0], [-1.5, -3.0, 0.0], [-0.4, -0.7, -2.5]])

    def fixed(**kwargs):
        n = logps.shape
        return SimpleNamespace(log_probs=logps.clone(), entropy=torch.zeros(n), mean_logits=torch.zeros(n),
                               is_top1=torch.zeros(n, dtype=torch.bool))

    inputs = {"input_ids": torch.ones(4, 4, dtype=torch.long), "attention_mask": torch.ones(4, 4, dtype=torch.long),
              "completion_mask": completion, "bmc_mask": bmc_mask,
              "ref_chosen_logps": torch.tensor([-2.0, -2.0]), "ref_rejected_logps": torch.tensor([-2.5, -3.0])}
    trainer.model.train()
    loss = trainer._compute_loss(fixed, inputs, return_outputs=False)

    def weighted(row):
        return sum((1 + m * min(math.exp(-lp), delta)) * lp
                   for lp, m in zip(logps[row].tolist(), bmc_mask[row, 1:].tolist()))

    margins = [beta * ((weighted(i) - (-2.0)) - (weighted(i + 2) - rr)) for i, rr in ((0, -2.5), (1, -3.0))]
    expected = sum(math.log(1 + math.exp(-z)) for z in margins) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert trainer._metrics["train"]["rewards/margins"][-1] == pytest.approx(sum(margins) / 2, abs=1e-6)
    assert trainer._metrics["train"]["bmc/modified_frac"][-1] == pytest.approx(5 / 10)  # marked / response tokens


def test_unsupported_loss_is_refused(helpers, sft_dir, bmc_store, tmp_path):
    from alignpipe.config import ConfigError

    from alignpipe.stages import align

    params = helpers.make_params(trainer={"loss_type": ["ipo"]})
    prefs, ref_dir = bmc_store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    with pytest.raises(ConfigError, match="loss_type"):
        align.build_trainer(params, "dpo_mc", align.get_variant(params, "dpo_mc"), model, tok, rows, ref,
                            tmp_path / "x")


def test_bmc_variant_trains(helpers, sft_dir, bmc_store, tmp_path):
    from alignpipe.stages import align

    trainer, _ = build(helpers, sft_dir, bmc_store, tmp_path)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    metrics = align.train(trainer)
    assert metrics["steps"] == 2 and 0 < metrics["bmc/modified_frac"] < 1 and metrics["bmc/weight_mean"] > 1
    changed = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_bridged_pairs_get_their_own_reference_store(helpers, sft_dir, tmp_path, monkeypatch):
    """With a ``bridged`` column, reflogps stores (bridged, rejected) too, and bridging variants train on it."""
    from alignpipe.config import ConfigError
    from alignpipe.stages import reflogps
    from alignpipe.stages import align
    from alignpipe.train.reflogps import BRIDGED_STORE, load_ref_logps

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "_work"))
    rows = edit_pairs(8)
    for r in rows:  # a pseudo-winning response: the rejected one with its last word fixed
        r["bridged"] = [{"role": "assistant", "content": r["rejected"][0]["content"].replace(".", " too.")}]
    prefs = helpers.write_pairs(tmp_path / "preferences", rows)
    params = helpers.make_params()
    metrics = reflogps.run(params, prefs, sft_dir, tmp_path / "reflogps")
    assert metrics["bridged"]["n_pairs"] == 8
    plain, bridged = load_ref_logps(tmp_path / "reflogps"), load_ref_logps(tmp_path / "reflogps", BRIDGED_STORE)
    for pid in plain.ids:
        a, b = plain.pair(pid), bridged.pair(pid)
        assert a["prompt_ids"] == b["prompt_ids"] and a["rejected_ids"] == b["rejected_ids"]
        assert a["chosen_ids"] != b["chosen_ids"]
        torch.testing.assert_close(a["rejected_logps"], b["rejected_logps"])
    for variant in ("dpo_bc", "dpo_bmc"):
        section = align.get_variant(params, variant)
        rows_b, _, ref, model, tok, _ = align.prepare(params, prefs, tmp_path / "reflogps", sft_dir,
                                                   bridged=align.check_bridged(variant, section, prefs))
        assert [r["chosen"] for r in rows_b] == [r["bridged"] for r in rows] and ref.path.name == BRIDGED_STORE
        trainer = align.build_trainer(params, variant, section, model, tok, rows_b, ref, tmp_path / variant)
        assert align.train(trainer)["steps"] == 2
    # Without the column, a bridging variant fails before any work, saying what to turn on.
    helpers.write_pairs(tmp_path / "plain", edit_pairs(8))
    with pytest.raises(ConfigError, match="preferences.bridging.enabled"):
        align.run(params, "dpo_bc", tmp_path / "plain", tmp_path / "reflogps", sft_dir, tmp_path / "out")
