"""The reward model: TRL's ``RewardTrainer`` (Bradley-Terry, -log σ(r_chosen - r_rejected)) on the preference pairs.

Usage::

    from alignpipe.methods.allo.reward_model import split_pairs, train_reward_model, pair_accuracy
    train_rows, eval_rows = split_pairs(rows, fraction=0.2, seed=1234)
    trainer, metrics = train_reward_model(params, "data/sft/model", train_rows, eval_rows, work_dir)

The backbone is the SFT policy loaded as ``AutoModelForSequenceClassification`` (``num_labels=1``: its LM head is
dropped and a fresh scalar head, seeded, reads the hidden state of the last token). The held-out pairs never
reach training; their accuracy (r_chosen > r_rejected) is the stage's headline metric.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch

from alignpipe.config import Params
from alignpipe.models import load_model
from alignpipe.models.training import LogLastStep, merge_args, pipeline_args, resume_train

logger = logging.getLogger(__name__)

# Sized like the align defaults (tiny model, 2 CPU cores); ``rewards.trainer`` overrides any of them.
DEFAULT_TRAINER: dict[str, Any] = {
    "max_steps": 48,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,
    "weight_decay": 0.0,
    "logging_steps": 4,
    "save_steps": 16,
    "activation_checkpointing": False,  # TRL's default on; the tiny model does not need it (see train.dpo)
    "bf16": False,
    "fp16": False,
}


def reward_config(params: Params, output_dir: str | Path) -> Any:
    """RewardConfig = defaults <- ``rewards.trainer`` <- pipeline-owned keys (paths, seed, device, max_length)."""
    from trl import RewardConfig

    owned = {k: v for k, v in pipeline_args(output_dir, params.seed).items() if k not in ("bf16", "fp16")}
    owned.update(max_length=params.rewards.max_length)
    return RewardConfig(**merge_args(DEFAULT_TRAINER, dict(params.rewards.trainer), owned))


def split_pairs(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split by prompt, so no prompt of the held-out pairs was seen in training (pairs share prompts)."""
    prompts = sorted({_prompt_key(r) for r in rows})
    random.Random(seed).shuffle(prompts)
    n_eval = max(1, round(len(prompts) * fraction)) if len(prompts) > 1 else 0
    held = set(prompts[:n_eval])
    return [r for r in rows if _prompt_key(r) not in held], [r for r in rows if _prompt_key(r) in held]


def _prompt_key(row: dict) -> str:
    return "\n".join(m["content"] for m in row["prompt"])


def load_reward_backbone(sft_model: str | Path, params: Params, tokenizer: Any) -> Any:
    """The SFT policy as a 1-output sequence classifier (fresh seeded head, pad token id set)."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(params.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(sft_model), num_labels=1, trust_remote_code=params.model.trust_remote_code,
        dtype=getattr(torch, params.model.dtype) if params.model.dtype != "auto" else "auto")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


@torch.no_grad()
def pair_accuracy(trainer: Any, dataset: Any) -> dict[str, float]:
    """Share of pairs with r_chosen > r_rejected, and the mean margin, over a tokenized reward dataset."""
    if dataset is None or len(dataset) == 0:
        return {"accuracy": float("nan"), "margin": float("nan"), "n": 0}
    model = trainer.model
    model.eval()
    wins, margins = 0, []
    loader = torch.utils.data.DataLoader(dataset.select_columns(["chosen_ids", "rejected_ids"]), batch_size=32,
                                         collate_fn=trainer.data_collator, shuffle=False)
    device = next(model.parameters()).device
    for batch in loader:
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        chosen, rejected = out.logits.squeeze(-1).float().cpu().chunk(2)
        wins += int((chosen > rejected).sum())
        margins += (chosen - rejected).tolist()
    return {"accuracy": wins / len(margins), "margin": sum(margins) / len(margins), "n": len(margins)}


def train_reward_model(params: Params, sft_model: str | Path, train_rows: list[dict], eval_rows: list[dict],
                       output_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Train (resuming from the newest checkpoint in ``output_dir``); returns (trainer, metrics)."""
    from datasets import Dataset
    from trl import RewardTrainer

    _, tokenizer = load_model(Path(sft_model), params.model, padding_side="right")
    model = load_reward_backbone(sft_model, params, tokenizer)
    strip = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train_rows]
    held = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in eval_rows]
    trainer = RewardTrainer(model=model, args=reward_config(params, output_dir),
                            train_dataset=Dataset.from_list(strip),
                            eval_dataset=Dataset.from_list(held) if held else None, processing_class=tokenizer,
                            callbacks=[LogLastStep()])
    resume_train(trainer, output_dir, "the reward model")
    history = [e for e in trainer.state.log_history if "loss" in e]
    held_acc = pair_accuracy(trainer, trainer.eval_dataset)
    train_acc = pair_accuracy(trainer, trainer.train_dataset)
    metrics = {
        "steps": int(trainer.state.global_step),
        "train_pairs": len(trainer.train_dataset),
        "heldout_pairs": held_acc["n"],
        "heldout_accuracy": held_acc["accuracy"],
        "heldout_margin": held_acc["margin"],
        "train_accuracy": train_acc["accuracy"],
        "initial_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "log": [{"step": int(e["step"]), "loss": float(e["loss"])} for e in history],
    }
    return trainer, metrics
