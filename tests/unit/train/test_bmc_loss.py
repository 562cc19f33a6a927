"""BMC's token weights and loss against hand computation, and δ = 0 against plain DPO.

    w_t = 1 + m_t · min(1/p_t, δ)        log π^w(y) = Σ_t w_t log p_t
    loss = -log σ(β [(π^w_θ(y_w) - π^w_ref(y_w)) - (π^w_θ(y_l) - π^w_ref(y_l))])
"""

import math
import random

import pytest
import torch

from alignpipe.methods.bmc.loss import bmc_dpo_loss, bmc_weights, modified_tokens, sigmoid_dpo, weighted_logps

# Two pairs, 3 response tokens each (zero-padded like TRL's per-token log-probs).
POLICY_CHOSEN = torch.tensor([[-0.5, -1.0, -0.25], [-2.0, -0.1, 0.0]])
POLICY_REJECTED = torch.tensor([[-1.5, -3.0, -0.2], [-0.4, -0.7, -2.5]])
REF_CHOSEN = torch.tensor([[-0.6, -0.9, -0.3], [-1.8, -0.2, 0.0]])
REF_REJECTED = torch.tensor([[-1.2, -2.0, -0.3], [-0.5, -0.6, -2.0]])
MASK_CHOSEN = torch.tensor([[0, 1, 1], [1, 0, 0]])
MASK_REJECTED = torch.tensor([[1, 1, 0], [0, 0, 1]])


def hand_weighted(logps: list[float], mask: list[int], delta: float) -> float:
    return sum((1 + m * min(1 / math.exp(lp), delta)) * lp for lp, m in zip(logps, mask))


def hand_loss(beta: float, delta: float) -> list[float]:
    out = []
    for i in range(2):
        w = {name: hand_weighted(t[i].tolist(), m[i].tolist(), delta)
             for name, t, m in (("pc", POLICY_CHOSEN, MASK_CHOSEN), ("pr", POLICY_REJECTED, MASK_REJECTED),
                                ("rc", REF_CHOSEN, MASK_CHOSEN), ("rr", REF_REJECTED, MASK_REJECTED))}
        z = beta * ((w["pc"] - w["rc"]) - (w["pr"] - w["rr"]))
        out.append(math.log(1 + math.exp(-z)))
    return out


def test_weights_by_hand():
    w = bmc_weights(POLICY_CHOSEN, MASK_CHOSEN, delta=2.0)
    # Row 0: unmarked -> 1; 1/e^-1 = e = 2.718 capped at 2 -> 3; 1/e^-0.25 = 1.2840 -> 2.2840.
    assert w[0].tolist() == pytest.approx([1.0, 3.0, 1 + math.exp(0.25)], abs=1e-6)
    # Row 1: 1/e^-2 = 7.39 capped -> 3; the rest unmarked.
    assert w[1].tolist() == pytest.approx([3.0, 1.0, 1.0], abs=1e-6)
    assert bmc_weights(POLICY_CHOSEN, MASK_CHOSEN, delta=1.1)[0, 2].item() == pytest.approx(2.1)


def test_weights_are_detached():
    logps = POLICY_CHOSEN.clone().requires_grad_(True)
    weighted_logps(logps, MASK_CHOSEN, 2.0).sum().backward()
    # d/dlogp of Σ w·logp with w detached is w itself.
    assert torch.allclose(logps.grad, bmc_weights(POLICY_CHOSEN, MASK_CHOSEN, 2.0))


def test_weighted_sum_by_hand():
    got = weighted_logps(POLICY_CHOSEN, MASK_CHOSEN, 2.0)
    assert got[0].item() == pytest.approx(-0.5 + 3 * -1.0 + (1 + math.exp(0.25)) * -0.25, abs=1e-6)
    assert got[1].item() == pytest.approx(3 * -2.0 - 0.1, abs=1e-6)


@pytest.mark.parametrize("beta,delta", [(0.1, 2.0), (0.5, 1.5), (0.05, 3.0)])
def test_loss_by_hand(beta, delta):
    losses, chosen_r, rejected_r = bmc_dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED,
                                                MASK_CHOSEN, MASK_REJECTED, beta=beta, delta=delta)
    assert losses.tolist() == pytest.approx(hand_loss(beta, delta), abs=1e-6)
    assert (chosen_r - rejected_r).tolist() == pytest.approx(
        [-math.log(math.exp(x) - 1) for x in hand_loss(beta, delta)], abs=1e-5)


def test_delta_zero_is_plain_dpo_bitwise():
    losses, chosen_r, rejected_r = bmc_dpo_loss(POLICY_CHOSEN, POLICY_REJECTED, REF_CHOSEN, REF_REJECTED,
                                                MASK_CHOSEN, MASK_REJECTED, beta=0.1, delta=0.0)
    plain, plain_c, plain_r = sigmoid_dpo(POLICY_CHOSEN.sum(-1), POLICY_REJECTED.sum(-1), REF_CHOSEN.sum(-1),
                                          REF_REJECTED.sum(-1), 0.1)
    assert torch.equal(losses, plain) and torch.equal(chosen_r, plain_c) and torch.equal(rejected_r, plain_r)


def test_modifications_by_hand():
    # rejected: 5 9 7 3 8      chosen: 5 4 7 3 6 2
    # opcodes: equal 5 | replace 9 -> 4 | equal 7 3 | replace 8 -> 6 2
    m_rej, m_cho = modified_tokens([5, 9, 7, 3, 8], [5, 4, 7, 3, 6, 2], prompt=[])
    assert m_rej == [0, 1, 0, 0, 1] and m_cho == [0, 1, 0, 0, 1, 1]
    # Deleted tokens mark only the rejected side, inserted ones only the chosen side; stopwords never.
    m_rej, m_cho = modified_tokens([1, 2, 3, 4], [1, 3, 4, 5, 6], stop_ids={6}, prompt=[])
    assert m_rej == [0, 1, 0, 0] and m_cho == [0, 0, 0, 1, 0]
    assert modified_tokens([1, 2, 3], [1, 2, 3], prompt=[]) == ([0, 0, 0], [0, 0, 0])
    # A prompt that only precedes both responses changes nothing here (the common prefix is one matching block).
    assert modified_tokens([5, 9, 7, 3, 8], [5, 4, 7, 3, 6, 2], prompt=[20, 21]) == (
        [0, 1, 0, 0, 1], [0, 1, 0, 0, 1, 1])


# The authors diff whole sequences (prompt + response). Prompt 11 12; one response repeats the prompt's last
# token 12 before the text both share (13 14 15):
#   whole:  [11 12 | 9 12 13 14 15]  vs  [11 12 | 13 14 15]
#     longest match 12 13 14 15 (length 4 > the prompt's 2) pairs the response's 12 with the PROMPT's 12;
#     opcodes: equal 11 | delete 12 9 (prompt 12, response 9) | equal 12 13 14 15 -> response mask 1 0 0 0 0
#   response-only:  [9 12 13 14 15]  vs  [13 14 15]  -> delete 9 12 | equal 13 14 15 -> mask 1 1 0 0 0
PROMPT, REPEATS, PLAIN = [11, 12], [9, 12, 13, 14, 15], [13, 14, 15]


def test_diff_runs_over_prompt_plus_response_as_the_authors():
    assert modified_tokens(REPEATS, PLAIN, prompt=PROMPT) == ([1, 0, 0, 0, 0], [0, 0, 0])
    assert modified_tokens(REPEATS, PLAIN, prompt=[]) == ([1, 1, 0, 0, 0], [0, 0, 0])  # what responses alone give
    # Same on the chosen side (inserted tokens).
    assert modified_tokens(PLAIN, REPEATS, prompt=PROMPT) == ([0, 0, 0], [1, 0, 0, 0, 0])
    assert modified_tokens(PLAIN, REPEATS, prompt=[]) == ([0, 0, 0], [1, 1, 0, 0, 0])


def test_masks_cover_exactly_the_response_positions():
    # The whole-sequence diff marks the prompt's 12 (deleted); that mark is dropped, the rest is the response part.
    full_rej, full_cho = modified_tokens([*PROMPT, *REPEATS], [*PROMPT, *PLAIN], prompt=[])
    assert full_rej == [0, 1, 1, 0, 0, 0, 0] and full_cho == [0, 0, 0, 0, 0]
    m_rej, m_cho = modified_tokens(REPEATS, PLAIN, prompt=PROMPT)
    assert (m_rej, m_cho) == (full_rej[len(PROMPT):], full_cho[len(PROMPT):])
    rng = random.Random(0)
    for _ in range(200):
        prompt, rej, cho = ([rng.randrange(8) for _ in range(rng.randrange(n))] for n in (6, 9, 9))
        stop = {rng.randrange(8)}
        m_rej, m_cho = modified_tokens(rej, cho, stop, prompt=prompt)
        assert len(m_rej) == len(rej) and len(m_cho) == len(cho)
        full_rej, full_cho = modified_tokens(prompt + rej, prompt + cho, stop, prompt=[])
        assert (m_rej, m_cho) == (full_rej[len(prompt):], full_cho[len(prompt):])
