"""ALLO's losses against hand computations on fixed tensors (RUCAIBox/ALLO train_forgetting.py / train_improving.py).

NPO:  L = Σ -r_t log σ(-β(π_t - ref_t)) / #{r_t ≠ 0}
top-ε DPO: L = -log σ(β(Σ chosen ρ - Σ_{top-ε kept} rejected ρ)), k = int((T-1)·ε) over the padded length.
           the top-ε ranks only the nonzero ratios (the authors set zeros to -1e10 before topk).
"""

import math
from types import SimpleNamespace

import pytest
import torch

from alignpipe.methods.allo.loss import npo_token_loss, top_eps_dpo_loss, top_eps_keep


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_npo_token_loss_by_hand():
    policy = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-0.5, -1.0, 0.0]])
    weights = torch.tensor([[0.5, 1.0, 0.0], [0.2, 0.0, 0.0]])
    beta = 0.1
    # nonzero weights: (0,0) diff 0.5, (0,1) diff -1.0, (1,0) diff 0.0 -> divided by 3, not by 5 valid labels
    expected = (-0.5 * logsig(-beta * 0.5) - 1.0 * logsig(-beta * -1.0) - 0.2 * logsig(0.0)) / 3
    assert float(npo_token_loss(policy, ref, weights, beta)) == pytest.approx(expected, abs=1e-7)
    # β changes the value (no 2/β factor, as the authors' code)
    expected_b1 = (-0.5 * logsig(-0.5) - 1.0 * logsig(1.0) - 0.2 * logsig(0.0)) / 3
    assert float(npo_token_loss(policy, ref, weights, 1.0)) == pytest.approx(expected_b1, abs=1e-7)
    assert float(npo_token_loss(policy, ref, torch.zeros_like(weights))) == 0.0  # no 0/0


# One rejected row, padded length T-1 = 10, response at positions 4..9.
RESPONSE = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
RATIOS = torch.tensor([[0.0, 0.0, 0.0, 0.0, -0.5, 0.2, -1.0, 0.3, -0.1, 0.0]])


def test_top_eps_keeps_top_k_by_negative_ratio():
    keep = top_eps_keep(RATIOS, RESPONSE, eps=0.2)  # k = int(10 * 0.2) = 2: -ρ = 1.0 (pos 6), 0.5 (pos 4)
    assert keep.nonzero()[:, 1].tolist() == [4, 6]


def test_top_eps_keeps_every_position_when_few_nonzero():
    keep = top_eps_keep(RATIOS, RESPONSE, eps=0.9)  # k = 9 > 4 nonzero ratios: all 6 response positions
    assert keep.nonzero()[:, 1].tolist() == [4, 5, 6, 7, 8, 9]
    assert top_eps_keep(torch.zeros(1, 10), RESPONSE, eps=0.1).sum() == 6  # step 0 (πθ = πref): plain DPO


def test_top_eps_keeps_ties_at_threshold():
    ratios = torch.tensor([[0.0, 0.0, 0.0, 0.0, -0.5, -0.5, -1.0, 0.3, -0.1, -0.5]])
    keep = top_eps_keep(ratios, RESPONSE, eps=0.2)  # 2nd largest -ρ is 0.5, held by 3 positions: all kept
    assert keep.nonzero()[:, 1].tolist() == [4, 5, 6, 9]


# Every response position has a nonzero ratio, but only 3 of the 6 are negative.
FEW_NEGATIVE = torch.tensor([[0.0, 0.0, 0.0, 0.0, -0.5, 0.2, -1.0, 0.3, -0.1, 0.4]])


def test_top_eps_ranks_only_nonzero_ratios_when_fewer_than_k_are_negative():
    # k = int(10 * 0.4) = 4 <= 6 nonzero ratios. The authors rank the nonzero ratios only (zeros -> -1e10):
    # -ρ = 1.0 (pos 6), 0.5 (pos 4), 0.1 (pos 8), then -0.2 (pos 5, the smallest positive ratio) -> 4 kept.
    # Ranking the 4 prompt zeros too would put the 4th largest -ρ at 0 and keep only the 3 negative ones.
    keep = top_eps_keep(FEW_NEGATIVE, RESPONSE, eps=0.4)
    assert keep.nonzero()[:, 1].tolist() == [4, 5, 6, 8]
    assert int(keep.sum()) == 4


def test_top_eps_never_keeps_a_zero_ratio_in_the_top_eps_case():
    # RATIOS: 5 nonzero, k = 4; pos 9 is a response token with ρ = 0 (set to -1e10 by the authors), so the 4th
    # kept one is pos 5 (ρ = 0.2), not pos 9.
    keep = top_eps_keep(RATIOS, RESPONSE, eps=0.4)
    assert keep.nonzero()[:, 1].tolist() == [4, 5, 6, 8]


def test_top_eps_dpo_loss_by_hand_few_negative_with_padding():
    # Two pairs in a batch padded to T-1 = 10. Row 0: FEW_NEGATIVE (k = 4 of 6 nonzero, 3 negative).
    # Row 1: response at 2..5 then padding; ratios -0.3, 0.6, 0, 0.1 -> 3 nonzero < k = 4: every response
    # position is kept (its ρ = 0 token adds nothing).
    rejected_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    rejected_ratio = torch.cat([FEW_NEGATIVE, torch.tensor([[0, 0, -0.3, 0.6, 0.0, 0.1, 0, 0, 0, 0]])])
    rejected_ref = torch.full((2, 10), -2.0) * rejected_mask
    rejected_policy = rejected_ref + rejected_ratio
    chosen_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]], dtype=torch.float32)
    chosen_ref = torch.full((2, 10), -1.0) * chosen_mask
    chosen_policy = chosen_ref + torch.tensor([[0, 0, 0, 0.5, -1.0, 0.5, 0, 0, 0, 0],
                                               [0, 0, 0.2, 0.1, 0, 0, 0, 0, 0, 0]]) * chosen_mask
    loss, c, r, keep = top_eps_dpo_loss(chosen_policy, chosen_ref, chosen_mask, rejected_policy, rejected_ref,
                                        rejected_mask, eps=0.4, beta=0.1)
    assert keep.int().tolist() == [[0, 0, 0, 0, 1, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]]
    assert c.tolist() == pytest.approx([0.0, 0.3])
    # Row 0: -0.5 + 0.2 - 1.0 - 0.1 = -1.4 (ranking the zeros would give -0.5 - 1.0 - 0.1 = -1.6).
    # Row 1: -0.3 + 0.6 + 0.0 + 0.1 = 0.4.
    assert r.tolist() == pytest.approx([-1.4, 0.4])
    expected = -(logsig(0.1 * (0.0 + 1.4)) + logsig(0.1 * (0.3 - 0.4))) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-7)


def test_top_eps_dpo_loss_by_hand():
    chosen_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0, 0, 0]], dtype=torch.float32)
    chosen_policy = torch.tensor([[0, 0, 0, -1.0, -2.0, -0.5, 0, 0, 0, 0]])
    chosen_ref = torch.tensor([[0, 0, 0, -1.5, -1.0, -1.0, 0, 0, 0, 0]])
    rejected_ref = torch.tensor([[0, 0, 0, 0, -2.0, -2.0, -2.0, -2.0, -2.0, -2.0]])
    rejected_policy = rejected_ref + RATIOS
    loss, c, r, keep = top_eps_dpo_loss(chosen_policy, chosen_ref, chosen_mask, rejected_policy, rejected_ref,
                                        RESPONSE.float(), eps=0.2, beta=0.1)
    chosen_sum = 0.5 - 1.0 + 0.5  # all chosen tokens
    rejected_sum = -0.5 + -1.0  # only the two kept positions
    assert float(c) == pytest.approx(chosen_sum) and float(r) == pytest.approx(rejected_sum)
    assert float(loss) == pytest.approx(-logsig(0.1 * (chosen_sum - rejected_sum)), abs=1e-7)


class FixedPolicy:
    """Returns fixed per-token log-probs the way TRL's fused LM head does (rows: chosen then rejected)."""

    def __init__(self, logps):
        self.logps = logps

    def __call__(self, **kwargs):
        rows = kwargs["input_ids"].size(0)
        lp = self.logps[-rows:] if rows < len(self.logps) else self.logps
        return SimpleNamespace(log_probs=lp.clone())


@pytest.mark.parametrize("stage", ["forget", "learn"])
def test_allo_trainer_loss_path_equals_formula(store, sft_dir, helpers, tmp_path, stage):
    """The trainer feeds the padded per-token reference and weights to the loss at the right positions."""
    from datasets import Dataset

    from alignpipe.stages import align
    from alignpipe.methods.allo.train import AlloTrainer
    from alignpipe.train.dpo import dpo_config

    params = helpers.make_params()
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    weights = {r["id"]: torch.full((len(ref.pair(r["id"])["rejected_ids"]),), 0.5) for r in rows}
    trainer = AlloTrainer(model=model, args=dpo_config(params, None, tmp_path / "o"),
                          train_dataset=Dataset.from_list(rows), processing_class=tok, ref_logps=ref, allo_stage=stage, top_eps=0.5, token_weights=weights)
    examples = [dict(trainer.train_dataset[i]) for i in range(2)]
    batch = trainer.data_collator(examples)
    shifted = batch["completion_mask"][:, 1:].float()
    for j, ex in enumerate(examples):  # stored values sit exactly under the response positions
        pair = ref.pair(ex["id"])
        assert torch.equal(batch["ref_chosen_tok"][j][shifted[j].bool()], pair["chosen_logps"])
        assert torch.equal(batch["ref_rejected_tok"][j][shifted[2 + j].bool()], pair["rejected_logps"])
    logps = -torch.rand(shifted.shape, generator=torch.Generator().manual_seed(0)) * shifted
    trainer.model.train()
    loss = trainer._compute_loss(FixedPolicy(logps), dict(batch), return_outputs=False)
    if stage == "forget":
        w = batch["rejected_weight"] * shifted[2:]
        expected = npo_token_loss(logps[2:], batch["ref_rejected_tok"], w, 0.1)
        assert float(w.sum()) == pytest.approx(0.5 * float(shifted[2:].sum()))
    else:
        expected = top_eps_dpo_loss(logps[:2], batch["ref_chosen_tok"], shifted[:2], logps[2:],
                                    batch["ref_rejected_tok"], shifted[2:], 0.5, 0.1)[0]
    assert float(loss) == pytest.approx(float(expected), abs=1e-7)
