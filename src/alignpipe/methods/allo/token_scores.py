"""Per-token scores of the chosen and rejected responses, on exactly the tokens the align stage trains on.

Usage::

    from alignpipe.methods.allo.token_scores import load_token_scores
    store = load_token_scores("data/rewards")
    store.pair("content-0007-L3-p0")["rejected_weight"]   # ALLO's r_t, one per rejected training token

Tokens come from the reflogps store (prompt / chosen / rejected ids as TRL's DPO collator feeds them), so
position t of every score is token t of training; each response is scored two ways:

- reward model: s_t = the scalar head on the hidden state after token t (the RM's score of the prefix up to t);
  the token's reward Δ_t = s_t - s_{t-1} (s_0: the last prompt token), so Σ_t Δ_t = s(x, y) - s(x). Its
  "wrong" probability is σ(-Δ_t): the Bradley-Terry probability that the response is better without the token's
  contribution (ALLO's r_t: the probability a reward/rewriting model assigns to the token being wrong).
- implicit DPO reward of the warm-up model: β (log π_warmup(y_t) - log π_ref(y_t)), wrong probability σ(-·).

Key tokens: the top ``rewards.key_fraction`` of each rejected response by the chosen source's wrong probability
(k = ⌈fraction·n⌉, ties at the k-th all kept); r_t = that probability at key tokens, 0 elsewhere. The NPO loss
divides by the count of nonzero r_t, as the authors' code.

Store ``token_scores.safetensors``: for part in chosen/rejected ``<part>_offsets``, ``<part>_ids``,
``<part>_rm_delta``, ``<part>_rm_wrong``, ``<part>_dpo_reward``, ``<part>_dpo_wrong``; ``rejected_key`` (uint8) and
``rejected_weight``; metadata (one key ``alignpipe``): pair ids and config.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from alignpipe.utils.store import PairStore, load_tensors

STORE = "token_scores.safetensors"
PARTS = ("chosen", "rejected")
VALUES = ("rm_delta", "rm_wrong", "dpo_reward", "dpo_wrong")


@torch.no_grad()
def prefix_scores(rm: Any, sequences: list[list[int]], pad_id: int, batch_size: int = 32) -> list[torch.Tensor]:
    """The reward head at every position of each token sequence (a 1-output sequence classifier)."""
    backbone = getattr(rm, rm.base_model_prefix)
    head = rm.score if hasattr(rm, "score") else rm.classifier
    device = next(rm.parameters()).device
    out = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i:i + batch_size]
        ids, attn = _pad(chunk, pad_id)
        hidden = backbone(input_ids=ids.to(device), attention_mask=attn.to(device)).last_hidden_state
        scores = head(hidden).squeeze(-1).float().cpu()
        out += [scores[j, :len(seq)] for j, seq in enumerate(chunk)]
    return out


@torch.no_grad()
def token_logps(model: Any, sequences: list[list[int]], pad_id: int, batch_size: int = 8) -> list[torch.Tensor]:
    """log π(token t | tokens < t) for t = 1..len-1 of each sequence (one value per token after the first).

    Small batches: the full-vocabulary logits of a batch are materialized (8 x 384 x 128k floats = 1.6 GB).
    """
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i:i + batch_size]
        ids, attn = _pad(chunk, pad_id)
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1).cpu()
        out += [logp[j, :len(seq) - 1] for j, seq in enumerate(chunk)]
    return out


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), n), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, :len(s)] = torch.tensor(s)
        attn[j, :len(s)] = 1
    return ids, attn


def key_tokens(wrong: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the top ⌈fraction·n⌉ tokens by wrong probability (ties at the k-th all kept)."""
    if wrong.numel() == 0:
        return torch.zeros(0, dtype=torch.bool)
    k = min(max(1, math.ceil(fraction * wrong.numel())), wrong.numel())
    kth = torch.topk(wrong, k).values[-1]
    return wrong >= kth


class TokenScores(PairStore):
    """The stored per-token scores; :meth:`pair` returns one pair's values as tensors."""

    def pair(self, pair_id: str) -> dict[str, torch.Tensor]:
        i = self.position(pair_id, "rewards")
        out = {}
        for part in PARTS:
            off = self.tensors[f"{part}_offsets"]
            lo, hi = int(off[i]), int(off[i + 1])
            for key in ("ids", *VALUES):
                out[f"{part}_{key}"] = self.tensors[f"{part}_{key}"][lo:hi]
            if part == "rejected":
                out["rejected_key"] = self.tensors["rejected_key"][lo:hi].bool()
                out["rejected_weight"] = self.tensors["rejected_weight"][lo:hi]
        return out


def load_token_scores(directory: str | Path) -> TokenScores:
    """Load ``directory/token_scores.safetensors`` (offsets and lengths checked)."""
    path = Path(directory) / STORE
    tensors, meta = load_tensors(path, "token scores not found (run the rewards stage)")
    scores = TokenScores(path=path, ids=meta.get("ids", []), tensors=tensors, config=meta.get("config", {}))
    for part in PARTS:
        scores.check_part(part, VALUES)
    return scores
