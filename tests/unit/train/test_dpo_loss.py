"""TRL's sigmoid DPO loss, as the align trainer runs it, against a hand computation on fixed log-probs.

    loss = mean_i -log σ(β [(c_i - rc_i) - (r_i - rr_i)])

c/r: policy log-probs of the chosen/rejected response (sum over its tokens), rc/rr: stored reference sums.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from alignpipe.train.dpo import ld_weighted

# Two pairs, sequences of 5 tokens: 2 prompt tokens, then the response (chosen rows first, then rejected).
COMPLETION = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])
# Per-token policy log-probs, aligned with COMPLETION[:, 1:] (log_probs[t] scores token t+1); zero off-response,
# as TRL's fused head returns them.
LOGPS = torch.tensor([[0.0, -0.5, -1.0, -0.25], [0.0, -2.0, -0.5, 0.0],
                      [0.0, -1.5, -1.5, 0.0], [0.0, -0.1, -3.0, -0.4]])
REF_CHOSEN, REF_REJECTED = [-2.0, -2.0], [-2.5, -3.0]


def hand_loss(beta: float) -> tuple[float, list[float]]:
    chosen = [sum(row) for row in LOGPS[:2].tolist()]  # [-1.75, -2.5]
    rejected = [sum(row) for row in LOGPS[2:].tolist()]  # [-3.0, -3.5]
    margins = [beta * ((c - rc) - (r - rr)) for c, rc, r, rr in zip(chosen, REF_CHOSEN, rejected, REF_REJECTED)]
    losses = [-math.log(1 / (1 + math.exp(-m))) for m in margins]
    return sum(losses) / len(losses), margins


class FixedPolicy:
    """Stands in for the model: returns fixed per-token log-probs the way TRL's fused LM head does."""

    def __call__(self, **kwargs):
        n = LOGPS.shape
        return SimpleNamespace(log_probs=LOGPS.clone(), entropy=torch.zeros(n), mean_logits=torch.zeros(n),
                               is_top1=torch.zeros(n, dtype=torch.bool))


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_trl_loss_path_equals_hand_formula(store, sft_dir, helpers, tmp_path, beta):
    from alignpipe.stages import align

    params = helpers.make_params(trainer={"beta": beta})
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "lora_all", align.get_variant(params, "lora_all"), model, tok, rows, ref,
                                  tmp_path / "out")
    assert trainer.loss_types == ["sigmoid"] and trainer.beta == beta
    inputs = {"input_ids": torch.ones(4, 5, dtype=torch.long), "attention_mask": torch.ones(4, 5, dtype=torch.long),
              "completion_mask": COMPLETION, "ref_chosen_logps": torch.tensor(REF_CHOSEN),
              "ref_rejected_logps": torch.tensor(REF_REJECTED)}
    trainer.model.train()
    loss = trainer._compute_loss(FixedPolicy(), inputs, return_outputs=False)
    expected, margins = hand_loss(beta)
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    # The logged reward margin is β·((c - rc) - (r - rr)) averaged over pairs.
    assert trainer._metrics["train"]["rewards/margins"][-1] == pytest.approx(sum(margins) / 2, abs=1e-6)


def test_ld_weighting_of_stored_tokens():
    chosen, rejected = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-0.5, -0.5])
    assert ld_weighted(chosen, rejected, 0.5) == pytest.approx((-3.0 + 0.5 * -3.0, -1.0))
    assert ld_weighted(chosen, rejected, 1.0) == pytest.approx((-6.0, -1.0))
