"""Train a DPO-family trainer to the end of its budget, resuming, and report what it did.

Usage::

    from alignpipe.train.loop import train, log_csv
    metrics = train(trainer)                       # resumes from the newest complete checkpoint in args.output_dir
    (out / "log.csv").write_text(log_csv(metrics.pop("log")))

Shared by every DPO run of the pipeline: the ``align`` stage's variants (TRL's sigmoid DPO, BMC's token-weighted
loss), both ALLO stages (:mod:`alignpipe.methods.allo.train`) and the ``neurons`` stage's warm-up.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from alignpipe.models.training import count_parameters, resume_train

LOG_FIELDS = (("step", "step"), ("loss", "loss"), ("reward_accuracy", "rewards/accuracies"),
              ("reward_margin", "rewards/margins"))


def train(trainer: Any) -> dict[str, Any]:
    """Train, resuming from the newest complete checkpoint in ``trainer.args.output_dir``; returns metrics.

    ``initial_loss`` is the mean over the first logging window, ``final_loss`` and the reward statistics are
    those of the last one (TRL averages its metrics between logs); ``log`` holds one row per logging window.
    """
    resume_train(trainer, trainer.args.output_dir, "DPO")
    history = [e for e in trainer.state.log_history if "loss" in e]
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    last = history[-1] if history else {}
    return {
        "steps": int(trainer.state.global_step),
        "n_pairs": len(trainer.train_dataset),
        "trainable_params": trainable,
        "total_params": count_parameters(model),
        "initial_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        **{k: last.get(k) for k in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")},
        **{k: last[k] for k in ("bmc/modified_frac", "bmc/weight_mean") if k in last},
        "log": [{name: e.get(key) for name, key in LOG_FIELDS} for e in history],
    }


def log_csv(log: list[dict[str, Any]]) -> str:
    """``log.csv``: step, loss, reward accuracy and margin per logging window (6 decimals; empty when not logged)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name for name, _ in LOG_FIELDS])
    for row in log:
        writer.writerow([row["step"], *(f"{row[n]:.6f}" if row[n] is not None else "" for n, _ in LOG_FIELDS[1:])])
    return buf.getvalue()
