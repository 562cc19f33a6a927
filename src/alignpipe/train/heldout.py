"""Held-out preference pairs: did alignment learn the preferences it was trained on, on prompts it never saw?

    from alignpipe.train.heldout import split_heldout, heldout_metrics
    train_rows, held = split_heldout(rows, fraction=0.1, seed=0)     # whole prompts go to one side
    metrics = heldout_metrics(model, ref, [r["id"] for r in held], beta=0.1)

Every alignment stage trains on ``train_rows`` only (``align.heldout_fraction`` of the prompts are held out; the
same prompts for every variant and seed, whatever its pairs: a pair's side is a function of its prompt text and
``seed``, so adding pairs never moves another one). :func:`heldout_metrics` then scores the trained policy on the
held-out (chosen, rejected) pairs with DPO's implicit reward r(x, y) = β (log π(y|x) − log π_ref(y|x)), the
reference sums coming from the reflogps store (the same tokens TRL trained on, so no reference model runs):

- ``reward_accuracy``: share of pairs with r(chosen) > r(rejected) (a tie counts one half, so the policy before
  training, equal to the reference, scores exactly 0.5), with its exact one-sided binomial p-value against 0.5
  (``reward_accuracy_p``; ties, which only an untrained policy has, are left out of that test);
- ``reward_margin``: mean r(chosen) − r(rejected) (0 before training); ``loss``: mean −log σ(margin) (ln 2 before);
- ``logp_accuracy``: share of pairs where the policy itself gives the chosen response the higher log-probability
  (the ranking accuracy of Chen et al., 2024, "Preference learning algorithms do not learn preference rankings":
  DPO can raise the margin without flipping it). Its value before training is the SFT model's, from the store.

β is the variant's DPO β for every variant, BMC and ALLO included, so the numbers are one yardstick across
variants (the token-weighted losses those train are not what is scored here).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch

from alignpipe.utils.io import DataError

BEFORE = {"reward_accuracy": 0.5, "reward_margin": 0.0, "loss": math.log(2)}  # policy = reference: every margin 0


def _prompt_text(row: dict[str, Any]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in row["prompt"])


def heldout_side(row: dict[str, Any], fraction: float, seed: int) -> bool:
    """Whether ``row``'s prompt is held out: a uniform number from its text and ``seed``, below ``fraction``."""
    digest = hashlib.sha256(f"{seed}\0{_prompt_text(row)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_heldout(rows: list[dict[str, Any]], fraction: float, seed: int,
                  where: str = "preference pairs") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, held_out)``: the pairs of held-out prompts apart, order kept. ``fraction`` 0 holds out nothing.

    Raises:
        DataError: every pair fell on the held-out side (too few prompts for ``fraction``).
    """
    if fraction <= 0:
        return list(rows), []
    held = [heldout_side(r, fraction, seed) for r in rows]
    train = [r for r, h in zip(rows, held, strict=True) if not h]
    if not train:
        raise DataError(f"{where}: all {len(rows)} pairs fell among the held-out prompts (align.heldout_fraction = "
                        f"{fraction}); lower align.heldout_fraction or add pairs")
    return train, [r for r, h in zip(rows, held, strict=True) if h]


def _sequence_logps(model: Any, prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> torch.Tensor:
    """Sum of log π(response token) over each response, for a batch of (prompt, response) token lists."""
    seqs = [p + r for p, r in zip(prompts, responses, strict=True)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    resp = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        resp[i, len(p) : len(s)] = True
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.float().cpu()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logps * resp[:, 1:]).sum(dim=1)  # logits at t score token t+1


@torch.no_grad()
def policy_sums(model: Any, ref: Any, ids: list[str], batch_size: int = 8, pad_id: int = 0,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's summed log-probs of each pair's chosen and rejected response, on the store's own tokens."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for start in range(0, len(ids), batch_size):
            pairs = [ref.pair(i) for i in ids[start : start + batch_size]]
            prompts = [p["prompt_ids"] for p in pairs]
            chosen.append(_sequence_logps(model, prompts, [p["chosen_ids"] for p in pairs], pad_id))
            rejected.append(_sequence_logps(model, prompts, [p["rejected_ids"] for p in pairs], pad_id))
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def summarize(margins: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, Any]:
    """The held-out statistics of per-pair reward ``margins`` and the policy's chosen / rejected log-prob sums."""
    from scipy.stats import binomtest  # lazy: scipy's import is seconds, only needed once training is done

    n = len(margins)
    wins, ties = int((margins > 0).sum()), int((margins == 0).sum())
    decided = n - ties
    p = binomtest(wins, decided, 0.5, alternative="greater").pvalue if decided else 1.0
    return {
        "n_pairs": n,
        "reward_accuracy": round((wins + 0.5 * ties) / n, 6),
        "reward_accuracy_p": float(f"{p:.4g}"),
        "reward_margin": round(float(margins.mean()), 6),
        "loss": round(float(torch.nn.functional.softplus(-margins).mean()), 6),
        "logp_accuracy": round(float((chosen > rejected).float().mean()), 6),
    }


def heldout_metrics(model: Any, ref: Any, ids: list[str], beta: float, batch_size: int = 8,
                    pad_id: int = 0) -> dict[str, Any]:
    """``{"n_pairs", "before": {...}, "after": {...}, "learned"}`` on the held-out pairs ``ids`` (see module doc).

    ``learned``: the trained policy's held-out reward accuracy is above chance (one-sided exact binomial test,
    p < 0.05); the report flags a variant where it is not. Pairs the reflogps stage dropped (a prompt longer
    than ``max_length``) are not in ``ref`` and are skipped. With no held-out pair every value is None.
    """
    ids = [i for i in ids if i in ref.index]
    if not ids:
        return {"n_pairs": 0, "before": None, "after": None, "learned": None}
    rows = [ref.index[i] for i in ids]
    ref_c, ref_r = ref.tensors["chosen_sum"][rows].double(), ref.tensors["rejected_sum"][rows].double()
    pol_c, pol_r = policy_sums(model, ref, ids, batch_size, pad_id)
    margins = beta * ((pol_c.double() - ref_c) - (pol_r.double() - ref_r))
    before = {"n_pairs": len(ids), **BEFORE, "reward_accuracy_p": 1.0,
              "logp_accuracy": round(float((ref_c > ref_r).double().mean()), 6)}
    before["loss"] = round(before["loss"], 6)
    after = summarize(margins, pol_c.double(), pol_r.double())
    return {"n_pairs": len(ids), "before": before, "after": after, "learned": after["reward_accuracy_p"] < 0.05}
