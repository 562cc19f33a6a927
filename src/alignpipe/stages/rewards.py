"""The ``rewards`` stage: a reward model (TRL RewardTrainer) and per-token scores / ALLO token weights r_t.

Run it (normally through ``python -m flows.rewards`` / ``dvc repro rewards``)::

    from alignpipe.config import load_params
    from alignpipe.stages import rewards as stage
    stage.run(load_params("params.yaml"))
    # reads data/preferences, data/reflogps (training tokens + reference log-probs), data/sft, data/neurons/warmup

Steps: split the pairs by prompt (``rewards.eval_fraction`` held out) -> train the RM on the SFT backbone ->
score every response token two ways (:mod:`alignpipe.methods.allo.token_scores`) -> key tokens and r_t from
``rewards.weight_source`` -> write. Outputs (``data/rewards/``): ``model/`` (the RM, HF directory),
``token_scores.safetensors``, ``log.csv``, ``metrics.json`` (held-out pair accuracy, token statistics, agreement of
the RM's and the implicit DPO reward's key tokens), ``config.json``. RM checkpoints go to
``work_dir("rewards", config)``; a rerun resumes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from alignpipe.config import Params
from alignpipe.models import load_model
from alignpipe.models.training import loss_csv
from alignpipe.methods.allo.reward_model import DEFAULT_TRAINER, split_pairs, train_reward_model
from alignpipe.methods.allo.token_scores import PARTS, STORE, VALUES, key_tokens, prefix_scores, token_logps
from alignpipe.train.prepare import heldout_ids
from alignpipe.train.reflogps import load_ref_logps, weights_sha256
from alignpipe.utils.io import DataError, atomic_dir, dumps, sha256_file, work_dir
from alignpipe.utils.seed import seed_everything
from alignpipe.utils.store import save_tensors

logger = logging.getLogger(__name__)


def stage_config(params: Params, prefs_dir: str | Path, reflogps_dir: str | Path, sft_dir: str | Path,
                 neurons_dir: str | Path) -> dict[str, Any]:
    """What the outputs depend on (``config.json``; keys the checkpoint directory)."""
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "rewards": params.rewards.model_dump(),
        "heldout_fraction": params.align.heldout_fraction,
        "trainer_resolved": {**DEFAULT_TRAINER, **params.rewards.trainer},
        "inputs": {
            "sft_model": str(Path(sft_dir) / "model"),
            "pairs_sha256": sha256_file(Path(prefs_dir) / "pairs.jsonl"),
            "reflogps_sha256": sha256_file(Path(reflogps_dir) / "ref_logps.safetensors"),
            "warmup_model": str(Path(neurons_dir) / "warmup"),
            "warmup_sha256": weights_sha256(Path(neurons_dir) / "warmup"),
        },
    }


def score_tokens(params: Params, rm: Any, warm: Any, pad_id: int, ref: Any) -> dict[str, dict[str, list]]:
    """Per part, per pair: token ids and the four value sequences, on the reflogps store's training tokens."""
    out: dict[str, dict[str, list]] = {part: {k: [] for k in ("ids", *VALUES)} for part in PARTS}
    pairs = [ref.pair(pair_id) for pair_id in ref.ids]
    for part in PARTS:
        seqs = [p["prompt_ids"] + p[f"{part}_ids"] for p in pairs]
        scores = prefix_scores(rm, seqs, pad_id)
        logps = token_logps(warm, seqs, pad_id)
        for p, s, lp in zip(pairs, scores, logps):
            n_prompt, n = len(p["prompt_ids"]), len(p[f"{part}_ids"])
            if n_prompt == 0:
                raise DataError("a pair without prompt tokens cannot be scored token by token")
            delta = s[n_prompt:] - s[n_prompt - 1:-1]
            implicit = params.rewards.beta * (lp[n_prompt - 1:] - p[f"{part}_logps"])
            if len(delta) != n or len(implicit) != n:
                raise RuntimeError(f"{part}: {len(delta)} scores for {n} tokens")
            out[part]["ids"].append(torch.tensor(p[f"{part}_ids"], dtype=torch.int64))
            out[part]["rm_delta"].append(delta)
            out[part]["rm_wrong"].append(torch.sigmoid(-delta))
            out[part]["dpo_reward"].append(implicit)
            out[part]["dpo_wrong"].append(torch.sigmoid(-implicit))
    return out


def token_weights(params: Params, scored: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(key-token masks, r_t) of each rejected response from ``rewards.weight_source``."""
    source = "rm_wrong" if params.rewards.weight_source == "reward_model" else "dpo_wrong"
    keys, weights = [], []
    for wrong in scored["rejected"][source]:
        key = key_tokens(wrong, params.rewards.key_fraction)
        keys.append(key)
        weights.append(torch.where(key, wrong, torch.zeros_like(wrong)))
    return keys, weights


def summarize(params: Params, rm_metrics: dict, scored: dict, keys: list, ids: list[str]) -> dict[str, Any]:
    """Headline metrics: RM held-out accuracy, token-level statistics, agreement of the two scorers."""
    other = "dpo_wrong" if params.rewards.weight_source == "reward_model" else "rm_wrong"
    inter = union = 0
    for key, wrong in zip(keys, scored["rejected"][other]):
        alt = key_tokens(wrong, params.rewards.key_fraction)
        inter += int((key & alt).sum())
        union += int((key | alt).sum())
    chosen_sum = torch.stack([d.sum() for d in scored["chosen"]["rm_delta"]])
    rejected_sum = torch.stack([d.sum() for d in scored["rejected"]["rm_delta"]])
    n_rej = sum(len(k) for k in keys)
    mean = {f"{part}_{v}_mean": round(float(torch.cat(scored[part][v]).mean()), 6)
            for part in PARTS for v in ("rm_delta", "dpo_reward")}
    return {
        **{k: v for k, v in rm_metrics.items() if k != "log"},
        "n_pairs_scored": len(ids),
        "token_sum_accuracy": round(float((chosen_sum > rejected_sum).float().mean()), 6),
        "rejected_tokens": n_rej,
        "key_tokens": int(sum(int(k.sum()) for k in keys)),
        "key_fraction_realized": round(sum(int(k.sum()) for k in keys) / max(n_rej, 1), 6),
        "weight_source": params.rewards.weight_source,
        "key_token_jaccard_rm_vs_dpo": round(inter / union, 6) if union else 1.0,
        **mean,
    }


def save(out_dir: str | Path, trainer: Any, scored: dict, keys: list, weights: list, ids: list[str],
         config: dict, metrics: dict, log: list) -> Path:
    """Write the RM, the token store, log, metrics and config atomically."""
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        lengths = torch.tensor([0] + [len(x) for x in scored[part]["ids"]], dtype=torch.int64)
        tensors[f"{part}_offsets"] = torch.cumsum(lengths, 0)
        tensors[f"{part}_ids"] = torch.cat(scored[part]["ids"])
        for v in VALUES:
            tensors[f"{part}_{v}"] = torch.cat(scored[part][v]).to(torch.float32).contiguous()
    tensors["rejected_key"] = torch.cat(keys).to(torch.uint8)
    tensors["rejected_weight"] = torch.cat(weights).to(torch.float32).contiguous()
    staging = Path(trainer.args.output_dir) / "final-model"
    trainer.save_model(str(staging))
    (staging / "training_args.bin").unlink(missing_ok=True)
    with atomic_dir(out_dir) as tmp:
        shutil.move(str(staging), tmp / "model")
        save_tensors(tmp / STORE, tensors, {"config": config, "ids": ids})
        (tmp / "log.csv").write_text(loss_csv(log), encoding="utf-8")
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
    return Path(out_dir)


def run(params: Params, prefs_dir: str | Path = "data/preferences", reflogps_dir: str | Path = "data/reflogps",
        sft_dir: str | Path = "data/sft", neurons_dir: str | Path = "data/neurons",
        out_dir: str | Path = "data/rewards") -> dict[str, Any]:
    """Run the whole stage; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, prefs_dir, reflogps_dir, sft_dir, neurons_dir)
    logger.info("rewards stage config: %s", dumps(config).strip())
    rows, held = heldout_ids(params, prefs_dir)  # align's held-out prompts stay unseen here too
    held_set = set(held)
    rows = [r for r in rows if r["id"] not in held_set]
    train_rows, eval_rows = split_pairs(rows, params.rewards.eval_fraction, params.seed)
    trainer, rm_metrics = train_reward_model(params, Path(sft_dir) / "model", train_rows, eval_rows,
                                             work_dir("rewards", config))
    ref = load_ref_logps(reflogps_dir)
    warm, tokenizer = load_model(Path(neurons_dir) / "warmup", params.model, padding_side="right")
    rm = trainer.model.eval()
    scored = score_tokens(params, rm, warm, tokenizer.pad_token_id, ref)
    keys, weights = token_weights(params, scored)
    metrics = summarize(params, rm_metrics, scored, keys, ref.ids)
    save(out_dir, trainer, scored, keys, weights, ref.ids, config, metrics, rm_metrics["log"])
    logger.info("rewards stage metrics: %s", dumps(metrics).strip())
    return metrics
