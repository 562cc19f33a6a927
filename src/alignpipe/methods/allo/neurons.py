"""ALLO neuron scores and the one global top-r% threshold over all parameters.

Usage::

    from alignpipe.methods.allo.neurons import weight_delta, global_masks
    scores = weight_delta(before, after)             # name -> |θ_warmup - θ_ref| (RUCAIBox/ALLO gen_neuron_mask.py)
    masks, thr = global_masks(scores, ratio=5.0)     # exact: exactly the top 5% of ALL entries (ties kept)

Scorers: ``weight_delta`` (the authors' code: weight change after a short full-parameter warm-up DPO) and
``grad_abs`` (Σ over warm-up steps of |∂L_DPO/∂θ|, collected by :class:`GradAbsAccumulator`; the paper's
"gradient-based" wording, cheaper: it needs no second copy of the weights and can stop after a few batches).

Threshold ``exact``: k = max(1, ⌊N·r/100⌋) over all N entries of all tensors; the threshold is the k-th largest
score, found by bisection over float32 bit patterns (non-negative floats sort like their bits) with one counting
pass per step, so no N-sized buffer is ever built (8B parameters would need 32 GB). The mask is 1 where
score ≥ threshold: exactly k entries when the k-th score is unique; ties AT the threshold are all kept (the
authors' ``>=``), so the count can exceed k only by the tied entries, never fall short.

Threshold ``official``: the authors' approximation, kept as an option: each tensor contributes its top
⌊numel·2r/100⌋ scores (cast to bf16) to a pool; the threshold is the k-th largest of the pool; mask = score ≥ it.
Rounding to bf16 and a tensor holding more than 2r% of the top entries make its count drift from r%.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback


def weight_delta(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|after - before| per tensor, float32 (names must match)."""
    if set(before) != set(after):
        raise ValueError(f"weight names differ: {sorted(set(before) ^ set(after))[:3]}")
    return {n: (after[n].float() - before[n].float()).abs() for n in before}


class GradAbsAccumulator(TrainerCallback):
    """Accumulate |gradient| of every trainable parameter before each optimizer step (after clipping)."""

    def __init__(self, model: torch.nn.Module):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        for name, p in self.params.items():
            if p.grad is not None:
                self.scores[name].add_(p.grad.detach().float().abs())


def count_at_least(scores: dict[str, torch.Tensor], value: float) -> int:
    """How many entries of all tensors are ≥ value."""
    return int(sum(int((s >= value).sum()) for s in scores.values()))


def _bits_to_float(bits: int) -> float:
    return torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()


def kth_largest(scores: dict[str, torch.Tensor], k: int) -> float:
    """The k-th largest entry over all tensors (scores must be ≥ 0 and finite), exactly, without concatenating."""
    lo, hi = 0, 0x7F800000  # bit patterns of 0.0 and +inf; count(≥ value(lo)) ≥ k always holds for lo = 0
    while hi - lo > 1:  # invariant: count(≥ f(lo)) ≥ k and count(≥ f(hi)) < k
        mid = (lo + hi) // 2
        if count_at_least(scores, _bits_to_float(mid)) >= k:
            lo = mid
        else:
            hi = mid
    return _bits_to_float(lo)


def n_entries(scores: dict[str, torch.Tensor]) -> int:
    return int(sum(s.numel() for s in scores.values()))


def top_k(n: int, ratio: float) -> int:
    """Entries the top ``ratio`` percent of ``n`` stands for: max(1, ⌊n·ratio/100⌋)."""
    return max(1, int(n * ratio / 100))


def exact_threshold(scores: dict[str, torch.Tensor], ratio: float) -> float:
    """The score of the k-th largest entry, k = max(1, ⌊N·ratio/100⌋)."""
    bad = [n for n, s in scores.items() if bool((s < 0).any()) or not bool(torch.isfinite(s).all())]
    if bad:
        raise ValueError(f"scores must be finite and non-negative: {bad[:3]}")
    return kth_largest({n: s.float() for n, s in scores.items()}, top_k(n_entries(scores), ratio))


def official_threshold(scores: dict[str, torch.Tensor], ratio: float) -> float:
    """RUCAIBox/ALLO's approximation: pool each tensor's top ⌊numel·2r/100⌋ bf16 scores, take the pool's k-th."""
    pool = []
    for s in scores.values():
        flat = s.reshape(-1).to(torch.bfloat16)
        take = int(flat.numel() * 2 * ratio / 100)
        if take:
            pool.append(torch.topk(flat, take).values)
    if not pool:
        raise ValueError(f"ratio {ratio}%: no tensor is large enough to contribute to the official pool")
    pooled = torch.cat(pool)
    k = min(top_k(n_entries(scores), ratio), pooled.numel())
    return float(torch.topk(pooled, k).values[-1])


def global_masks(scores: dict[str, torch.Tensor], ratio: float,
                 method: str = "exact") -> tuple[dict[str, torch.Tensor], float]:
    """0/1 uint8 masks (score ≥ the global threshold) and the threshold, for ``ratio`` percent.

    Args:
        scores: name -> non-negative score tensor.
        ratio: percent of all entries to select.
        method: "exact" or "official" (see the module docstring).
    """
    if method == "exact":
        threshold = exact_threshold(scores, ratio)
    elif method == "official":
        threshold = official_threshold(scores, ratio)
    else:
        raise ValueError(f"threshold method {method!r}: 'exact' or 'official'")
    return {n: (s.float() >= threshold).to(torch.uint8) for n, s in scores.items()}, threshold


def overlap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Agreement of two mask sets: |a ∩ b|, |a|, |b| and the Jaccard index."""
    inter = sum(int((a[n].bool() & b[n].bool()).sum()) for n in a)
    na, nb = (sum(int(m.sum()) for m in x.values()) for x in (a, b))
    union = na + nb - inter
    return {"intersection": inter, "a": na, "b": nb, "jaccard": round(inter / union, 6) if union else 1.0}
