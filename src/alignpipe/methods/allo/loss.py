"""ALLO's two token-level losses (arXiv 2406.12606; RUCAIBox/ALLO ``train_forgetting.py`` / ``train_improving.py``).

All tensors are per token, shape ``[B, T-1]`` (``log_probs[t]`` scores token ``t+1`` of a padded batch of length
T), zero outside the response, as TRL's fused LM head returns them.

Forgetting (token-level NPO on the rejected response, weights r_t from the rewards stage)::

    L = Σ_{b,t} -r_t · log σ(-β (log πθ(y_t) - log πref(y_t))) / #{(b,t) : r_t ≠ 0}

Learning (DPO whose rejected sum keeps only the top-ε positions by -(log πθ - log πref))::

    ρ_t = log πθ(y_t) - log πref(y_t)          (0 outside the response: prompt and padding)
    k   = int((T-1)·ε)      # over the PADDED length, prompt included, as the authors' code
    N   = {t : ρ_t ≠ 0}     # per rejected row
    keep_t = all response positions                          if |N| < k   (step 0: plain DPO)
           = t ∈ N with -ρ_t ≥ (k-th largest -ρ over N)       otherwise (ties at the threshold all kept)
    L = -log σ(β (Σ_t ρ^chosen_t - Σ_{t kept} ρ^rejected_t))              (mean over pairs)

Only the NONZERO ratios are ranked, as in the authors' code, which sets the zero entries to -1e10 before its
``topk``: positions outside the response (prompt, padding) and a response token whose ratio is exactly 0 are
ranked below every nonzero ratio and never kept in the top-ε case. So a row with at least k nonzero ratios
keeps k of them (more on ties) even when fewer than k have a negative ratio (the rest are the smallest
positive ones). The code ranks -inf where the authors put -1e10; since the top-ε case needs k nonzero
entries, the k-th largest is always a nonzero ratio and the kept set is the same.

Differences from the reference code, on purpose: k is at least 1 (the authors' ``topk(…, 0)`` would fail on a
batch shorter than 1/ε), and the NPO denominator is clamped to 1 when every weight is 0 (the authors divide by
zero). β is a parameter (the authors hard-code 0.1, the pipeline's default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def npo_token_loss(policy: torch.Tensor, ref: torch.Tensor, weights: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Token-weighted NPO over a batch (the forgetting loss).

    Args:
        policy: log πθ of each response token, ``[B, L]`` (any value where ``weights`` is 0).
        ref: log πref of the same tokens, ``[B, L]``.
        weights: r_t, ``[B, L]``, 0 outside the response and at tokens not to forget.
        beta: NPO's β.
    """
    per_token = -weights * F.logsigmoid(-beta * (policy - ref))
    count = torch.count_nonzero(weights).clamp(min=1)
    return per_token.sum() / count


def top_eps_keep(ratios: torch.Tensor, response: torch.Tensor, eps: float) -> torch.Tensor:
    """Which rejected positions the learning loss keeps (bool ``[B, T-1]``), see the module docstring.

    Per row: every response position when fewer than k ratios are nonzero; otherwise the positions whose
    nonzero ratio is among the k most negative ones (the k-th value included, so ties are all kept).

    Args:
        ratios: ρ_t = log πθ - log πref per position, ``[B, T-1]``, 0 outside the response.
        response: the response positions (shifted completion mask), ``[B, T-1]``.
        eps: ε, the kept fraction of the padded length.
    """
    response = response.bool()
    ratios = ratios.masked_fill(~response, 0.0)
    k = min(max(int(ratios.size(1) * eps), 1), ratios.size(1))
    nonzero = ratios != 0
    score = (-ratios).masked_fill(~nonzero, float("-inf"))  # the authors: zeros -> -1e10 before topk
    kth = torch.topk(score, k, dim=1).values[:, -1:]
    keep = (score >= kth) & nonzero
    few = nonzero.sum(dim=1) < k
    return torch.where(few.unsqueeze(1), response, keep)


def top_eps_dpo_loss(chosen_policy: torch.Tensor, chosen_ref: torch.Tensor, chosen_mask: torch.Tensor,
                     rejected_policy: torch.Tensor, rejected_ref: torch.Tensor, rejected_mask: torch.Tensor,
                     eps: float, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALLO's learning loss.

    Args:
        chosen_policy, chosen_ref, chosen_mask: per-token log-probs and response mask of the chosen rows ``[B, T-1]``.
        rejected_policy, rejected_ref, rejected_mask: the same for the rejected rows.
        eps: fraction of the padded length kept on the rejected side.
        beta: DPO's β.

    Returns:
        ``(loss, chosen_logratio, rejected_logratio, keep)``: the mean loss, the per-pair sums that entered it
        (for reward metrics) and the kept rejected positions.
    """
    chosen_ratio = (chosen_policy - chosen_ref) * chosen_mask
    rejected_ratio = (rejected_policy - rejected_ref) * rejected_mask
    keep = top_eps_keep(rejected_ratio.detach(), rejected_mask, eps)
    chosen_sum = chosen_ratio.sum(dim=1)
    rejected_sum = (rejected_ratio * keep).sum(dim=1)
    loss = -F.logsigmoid(beta * (chosen_sum - rejected_sum)).mean()
    return loss, chosen_sum, rejected_sum, keep
