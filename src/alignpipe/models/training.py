"""Plumbing shared by every Trainer the pipeline runs (pretraining, SFT, later DPO/reward models).

- :func:`pipeline_args`: the TrainingArguments keys the pipeline owns (paths, seed, device, reporting, checkpoint
  and logging cadence, data loading); params may not override them (``config._PIPELINE_OWNED``) because caching
  and resuming depend on them. Its keys are listed in ``config.PIPELINE_ARGS`` (a unit test checks the two agree).
- :func:`last_checkpoint`: the newest *complete* ``checkpoint-N`` in a directory, so an interrupted run resumes.
- :func:`loss_log` / :func:`loss_csv`: the (step, loss) curve from ``trainer.state.log_history``, free of
  wall-clock fields, and its ``log.csv`` text.
- :class:`LogLastStep`: log at the final step too, so the curve ends where training ended, and at every
  checkpoint, so a resumed run logs what an uninterrupted one does.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alignpipe.utils import events

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Trainer writes trainer_state.json last when saving a checkpoint (transformers 5 Trainer._save_checkpoint),
# so its presence, readable as JSON (a kill can tear it too), marks a checkpoint that was not cut short by a kill.
_COMPLETE_MARKER = "trainer_state.json"


def pipeline_args(output_dir: str | Path, seed: int) -> dict[str, Any]:
    """TrainingArguments kwargs every pipeline trainer sets: no reporting, seeded, resumable, fp32 on CPU.

    Without a GPU it runs on CPU (``use_cpu``) in fp32: TRL configs default to bf16, which is slow or unsupported
    on CPU. With a GPU, bf16/fp16 are left to the trainer section (TRL's default is bf16). ``data_seed`` equals
    ``seed`` so the data order is part of the one seed.
    """
    import torch

    on_cpu = not torch.cuda.is_available()
    precision = {"bf16": False, "fp16": False} if on_cpu else {}
    return {
        "output_dir": str(output_dir),
        "seed": seed,
        "data_seed": seed,
        "use_cpu": on_cpu,
        **precision,
        "report_to": "none",
        "save_strategy": "steps",
        # Only the newest checkpoints matter for resuming; keep two in case the newest is being rotated.
        "save_total_limit": 2,
        "logging_strategy": "steps",
        "dataloader_num_workers": 0,
        # pin_memory only helps host-to-GPU copies and warns on CPU.
        "dataloader_pin_memory": not on_cpu,
    }


def merge_args(defaults: dict[str, Any], overrides: dict[str, Any], owned: dict[str, Any]) -> dict[str, Any]:
    """defaults <- params overrides <- pipeline-owned keys (the config validator already rejects owned keys)."""
    return {**defaults, **overrides, **owned}


def last_checkpoint(output_dir: str | Path) -> str | None:
    """Return the newest complete ``checkpoint-N`` directory under ``output_dir``, or None.

    Incomplete checkpoints (no ``trainer_state.json``: the process died while saving) are deleted, so that
    Trainer's own checkpoint rotation never counts them and a resume never loads half-written weights.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in output_dir.iterdir():
        match = _CHECKPOINT.match(child.name)
        if not match or not child.is_dir():
            continue
        if _complete(child):
            found.append((int(match.group(1)), child))
        else:
            logger.warning("removing incomplete checkpoint %s (no %s)", child, _COMPLETE_MARKER)
            shutil.rmtree(child, ignore_errors=True)
    if not found:
        return None
    return str(max(found)[1])


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / _COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def loss_log(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """The training-loss curve as ``[{"step", "loss", ...}]``; keeps only deterministic numeric fields.

    ``log_history`` survives resuming (it is stored in each checkpoint), so the curve covers the whole run.
    Runtime/throughput entries are dropped: outputs must not depend on wall-clock time.
    """
    keep = ("loss", "grad_norm", "learning_rate", "mean_token_accuracy", "entropy")
    rows = []
    for entry in log_history:
        if "loss" not in entry:
            continue
        row = {"step": int(entry["step"])}
        row.update({k: float(entry[k]) for k in keep if k in entry})
        rows.append(row)
    return rows


class LogLastStep(TrainerCallback):
    """Log at the final step too, so the loss curve (and the reported final loss) reaches the end of training;
    and at every checkpoint step.

    A logged loss (and TRL's token accuracy) is the mean over the steps since the previous log, and those running
    sums are not in a checkpoint: resumed from a checkpoint between two logs, the next logged value would miss the
    steps before it and differ from an uninterrupted run's. Logging when saving closes the window there (the log
    comes first, so the checkpoint's log_history holds it), which keeps ``log.csv`` and ``metrics.json``
    byte-identical across a kill and resume.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if args.logging_strategy != "steps":
            return control
        at_save = args.save_strategy == "steps" and state.save_steps > 0 and state.global_step % state.save_steps == 0
        if state.global_step >= state.max_steps or at_save:
            control.should_log = True
        return control


def loss_csv(log: list[dict[str, float]]) -> str:
    """``step,loss`` CSV text of a :func:`loss_log` curve (the ``log.csv`` DVC plots read)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "loss"])
    for row in log:
        writer.writerow([row["step"], f"{row['loss']:.6f}"])
    return buf.getvalue()


def sort_peft_sets(model: Any) -> Any:
    """Turn the set-valued fields of a PEFT model's adapter configs (``target_modules``, ...) into sorted lists.

    PEFT keeps them as sets and writes ``list(set)`` to ``adapter_config.json``: string-hash order, which changes
    with every Python process (``PYTHONHASHSEED``), so two runs with the same params and seed wrote different
    bytes. Call before saving; the sorted lists load back as the same sets. A model without adapters is untouched.
    """
    for config in (getattr(model, "peft_config", None) or {}).values():
        for key, value in vars(config).items():
            if isinstance(value, (set, frozenset)):
                setattr(config, key, sorted(value))
    return model


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


class StepCounter(TrainerCallback):
    """The step a run started from (after a resume) and the optimizer steps it ran itself: the run record's facts."""

    def __init__(self):
        self.resumed_from_step = 0
        self.steps_run = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.resumed_from_step = int(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_run += 1


class _TrainingComplete(Exception):
    """Raised by :class:`StopIfComplete` to leave ``Trainer.train`` before its loop."""


class StopIfComplete(TrainerCallback):
    """Leave ``train`` at once when the resumed checkpoint is the final one.

    transformers 5.23 resumes mid-epoch by skipping the trained batches and then runs a step before checking
    ``should_training_stop``: resuming from the checkpoint of the last step (a rerun after a kill during the
    final save, or a budget of ``max_steps`` that ends mid-epoch) would train one step too many. Weights and
    state are already restored when ``on_train_begin`` runs, under every backend.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise _TrainingComplete


def resume_train(trainer: Any, output_dir: str | Path, what: str) -> None:
    """``trainer.train()`` from the newest complete checkpoint in ``output_dir`` (none: from scratch).

    Every training stage goes through here, so a rerun after a kill continues where it stopped and a rerun of a
    finished run trains nothing (:class:`StopIfComplete`). What this run did (the step it resumed from, the steps
    it ran) goes to the stage's run record (:mod:`alignpipe.utils.events`), never into outputs.
    """
    resume = last_checkpoint(output_dir)
    if resume:
        logger.info("resuming %s from %s", what, resume)
    counter = StepCounter()
    trainer.add_callback(counter)  # before StopIfComplete: it must see on_train_begin before that one raises
    trainer.add_callback(StopIfComplete())
    try:
        trainer.train(resume_from_checkpoint=resume)
    except _TrainingComplete:
        logger.info("%s is the final checkpoint: %s was already complete", resume, what)
    finally:
        trainer.remove_callback(counter)
    events.record("train", what=what, checkpoint_dir=str(output_dir), resumed_from=resume,
                  resumed_from_step=counter.resumed_from_step, steps_run=counter.steps_run,
                  global_step=int(trainer.state.global_step), max_steps=int(trainer.state.max_steps))
