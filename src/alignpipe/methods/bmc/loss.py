"""BMC's token-correlated DPO loss (Bridging and Modeling Correlations, arXiv 2506.09329; code YJiangcm/BMC).

Usage::

    from alignpipe.methods.bmc.loss import modified_tokens, stopword_ids, bmc_weights, bmc_dpo_loss
    stop = stopword_ids(tokenizer)
    m_rejected, m_chosen = modified_tokens(rejected_ids, chosen_ids, stop, prompt=prompt_ids)  # 0/1 per response token
    losses, chosen_rewards, rejected_rewards = bmc_dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, m_chosen, m_rejected, beta=0.1, delta=2.0)

**Modeling.** ``difflib.SequenceMatcher`` aligns the token ids of the prompt followed by the rejected response
y_l with those of the prompt followed by the (pseudo-)winning response y_w; m_t = 1 on tokens of y_l in
``replace``/``delete`` opcodes and on tokens of y_w in ``replace``/``insert`` opcodes, except tokens that are
single-token English stopwords. Each response token gets the detached weight::

    w_t = 1 + m_t · min(1 / π(y_t | x, y_<t), δ)

and a response's sequence log-probability becomes the plain weighted sum (no length normalization)::

    log π^w(y | x) = Σ_t w_t · log π(y_t | x, y_<t)

computed for the policy with the policy's probabilities and for the reference with the reference's own
probabilities. The loss is sigmoid DPO on these sums::

    loss = -log σ(β [(log π^w_θ(y_w) - log π^w_ref(y_w)) - (log π^w_θ(y_l) - log π^w_ref(y_l))])

With δ = 0 every weight is exactly 1 and the loss is plain DPO. The sums are written as
``Σ log p + Σ m·min(1/p, δ)·log p`` (the same value) so that at δ = 0 the second term is exactly 0.0 and the loss
equals TRL's sigmoid DPO bit for bit.

How the diff matches the authors' code (see docs/architecture.md, "decisions"): as theirs, it runs over each
pair's whole sequences, prompt + response, so difflib can match a response token of one sequence with a prompt
token of the other (e.g. a response that repeats the end of the prompt), which a diff of the responses alone
would mark differently; marks that fall on prompt tokens are dropped, as the loss sums response tokens only.
Unlike theirs, the sequences are one pair's ``prompt_ids + rejected_ids`` / ``prompt_ids + chosen_ids`` from
TRL's tokenization, without the batch padding (which made the authors' masks depend on which pairs shared a
batch) and before truncation (the collator truncates the masks with the rows; it only matters for pairs longer
than ``max_length``). difflib's ``autojunk`` heuristic is kept on by default, as in their code
(``bmc.autojunk``). The stopword list is NLTK's English list (plus capitalized forms), as theirs; a word counts
when the tokenizer encodes it as one token either alone or after a space (byte-level BPE tokenizers write
mid-sentence words with a leading space, which the authors' ``tokenize(word)`` lookup misses).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

STOPWORDS_FILE = Path(__file__).parent / "data" / "stopwords_en.txt"


@lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """NLTK's English stopword list (179 words) plus their capitalized forms (words of 2+ letters), as BMC uses."""
    words = [w.strip() for w in STOPWORDS_FILE.read_text(encoding="utf-8").splitlines() if w.strip()]
    return frozenset(words) | {w.capitalize() for w in words if len(w) > 1}


def stopword_ids(tokenizer: Any, words: Iterable[str] | None = None) -> frozenset[int]:
    """Ids of the stopwords that the tokenizer writes as one token (alone or after a space)."""
    ids: set[int] = set()
    for word in sorted(words if words is not None else stopwords()):
        for form in (word, " " + word):
            encoded = tokenizer.encode(form, add_special_tokens=False)
            if len(encoded) == 1:
                ids.add(int(encoded[0]))
    return frozenset(ids)


def modified_tokens(rejected: Sequence[int], chosen: Sequence[int], stop_ids: Iterable[int] = (),
                    autojunk: bool = True, *, prompt: Sequence[int]) -> tuple[list[int], list[int]]:
    """The modification masks (m_l, m_w) of a rejected and a (pseudo-)winning response's token ids.

    The diff runs, as in the authors' code, over the two whole sequences ``prompt + rejected`` and
    ``prompt + chosen`` (difflib may match a response token of one with a prompt token of the other), and only
    the response part of each mask is returned.

    Args:
        rejected: token ids of the losing response y_l.
        chosen: token ids of the winning (or pseudo-winning) response y_w.
        stop_ids: token ids never marked (single-token stopwords).
        autojunk: difflib's popularity heuristic (on in difflib and in the authors' code; it only acts on
            sequences of 200+ tokens, prompt included).
        prompt: token ids of the prompt both responses follow (TRL's ``prompt_ids``); ``()`` diffs the responses
            alone.

    Returns:
        Two 0/1 lists, as long as ``rejected`` and ``chosen`` (position i belongs to ``rejected[i]`` /
        ``chosen[i]``): 1 where the token was replaced or deleted (rejected side) or replaced or inserted (chosen
        side) and is not a stopword.
    """
    stop = frozenset(stop_ids)
    n = len(prompt)
    seq_rejected, seq_chosen = [*prompt, *rejected], [*prompt, *chosen]
    m_rejected, m_chosen = [0] * len(seq_rejected), [0] * len(seq_chosen)
    matcher = difflib.SequenceMatcher(None, seq_rejected, seq_chosen, autojunk=autojunk)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            for i in range(i1, i2):
                m_rejected[i] = int(seq_rejected[i] not in stop)
        if tag in ("replace", "insert"):
            for j in range(j1, j2):
                m_chosen[j] = int(seq_chosen[j] not in stop)
    return m_rejected[n:], m_chosen[n:]


def bmc_weights(per_token_logps: torch.Tensor, mask: torch.Tensor, delta: float) -> torch.Tensor:
    """``w_t = 1 + m_t · min(1/p_t, δ)`` with p_t = exp(log p_t), detached (no gradient flows through w)."""
    return 1.0 + mask * _bonus(per_token_logps, delta)


def _bonus(per_token_logps: torch.Tensor, delta: float) -> torch.Tensor:
    # exp(-log p) = 1/p; clamping before the product keeps 0 * inf out of the result.
    return torch.clamp(torch.exp(-per_token_logps.detach()), max=delta)


def bonus_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, delta: float) -> torch.Tensor:
    """``Σ_t m_t · min(1/p_t, δ) · log p_t`` over the last dimension: what the weights add to the plain sum."""
    return (per_token_logps * mask.to(per_token_logps.dtype) * _bonus(per_token_logps, delta)).sum(dim=-1)


def weighted_logps(per_token_logps: torch.Tensor, mask: torch.Tensor, delta: float) -> torch.Tensor:
    """``Σ_t w_t · log p_t`` over the last dimension, as ``Σ log p + Σ m·min(1/p, δ)·log p``.

    ``per_token_logps`` must be zero outside the response (TRL's fused head returns them so), ``mask`` the 0/1
    modification mask aligned with it.
    """
    return per_token_logps.sum(dim=-1) + bonus_logps(per_token_logps, mask, delta)


def sigmoid_dpo(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
                ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigmoid DPO on sequence log-probs, in TRL's order of operations; returns (losses, chosen/rejected rewards)."""
    chosen_ratio = chosen_logps - ref_chosen_logps
    rejected_ratio = rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def bmc_dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
                 ref_rejected: torch.Tensor, mask_chosen: torch.Tensor, mask_rejected: torch.Tensor,
                 beta: float, delta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair BMC loss from per-token log-probs (batch x tokens, zero outside the response).

    Returns:
        ``(losses, chosen_rewards, rejected_rewards)``; rewards are β times the weighted log-ratios, detached.
    """
    return sigmoid_dpo(weighted_logps(policy_chosen, mask_chosen, delta),
                       weighted_logps(policy_rejected, mask_rejected, delta),
                       weighted_logps(ref_chosen, mask_chosen, delta),
                       weighted_logps(ref_rejected, mask_rejected, delta), beta)
