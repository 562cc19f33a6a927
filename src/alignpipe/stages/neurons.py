"""The ``neurons`` stage: ALLO preference-neuron scores after a short warm-up DPO, and masks at the configured ratios.

Run it (normally through ``python -m flows.neurons`` / ``dvc repro neurons``)::

    from alignpipe.config import load_params
    from alignpipe.stages import neurons as stage
    stage.run(load_params("params.yaml"))   # data/preferences + data/reflogps + data/sft -> data/neurons

Steps (RUCAIBox/ALLO ``train_warmup.py`` + ``gen_neuron_mask.py``): a full-parameter DPO warm-up of the SFT policy
(TRL's DPOTrainer with the stored reference, ``neurons.warmup_trainer``), scored two ways: ``weight_delta``
= |θ_warmup - θ_sft| and ``grad_abs`` = Σ_steps |∂L/∂θ| of the same run; masks from ``neurons.scorer`` with ONE
global threshold over all parameters (:mod:`alignpipe.methods.allo.neurons`) for each ratio in ``neurons.ratios``.

Outputs (``data/neurons/``): ``masks/mask_r<ratio>.safetensors`` (parameter name -> uint8 0/1, one file per ratio),
``warmup/`` (the warm-up model, HF directory: the rewards stage reads its implicit per-token reward),
``stats.csv`` (selected/total per layer and module type, per mask and scorer), ``neurons_by_layer.png``,
``metrics.json`` (thresholds, counts, per-layer and per-module percentages, scorer agreement) and ``config.json``.
The warm-up checkpoints (with the accumulated gradients) go to ``work_dir("neurons", config)``; a rerun resumes.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from alignpipe.config import Params, VariantSection
from alignpipe.models.training import LogLastStep, last_checkpoint
from alignpipe.methods.allo.neurons import GradAbsAccumulator, global_masks, overlap, weight_delta
from alignpipe.methods.allo.neuron_stats import by_layer, by_module, mask_stats, plot_by_layer, stats_csv
from alignpipe.methods.allo.train import mask_file
from alignpipe.methods.hierarchical import layer_blocks, num_layers
from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config, trainer_kwargs
from alignpipe.train.loop import train
from alignpipe.train.prepare import prepare
from alignpipe.utils.io import atomic_dir, dumps, one_line, sha256_file, work_dir
from alignpipe.utils.seed import seed_everything
from alignpipe.utils.store import save_tensors

logger = logging.getLogger(__name__)

SCORERS = ("weight_delta", "grad_abs")
GRAD_FILE = "grad_abs.safetensors"


def warmup_section(params: Params) -> VariantSection:
    """The warm-up as a full-parameter variant whose trainer overrides are ``neurons.warmup_trainer``."""
    return VariantSection(peft="none", trainer=params.neurons.warmup_trainer)


def stage_config(params: Params, prefs_dir: str | Path, reflogps_dir: str | Path, sft_dir: str | Path) -> dict:
    """What the masks depend on (``config.json``; also keys the warm-up checkpoint directory)."""
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "max_length": params.align.max_length,
        "heldout_fraction": params.align.heldout_fraction,
        "warmup_trainer_resolved": trainer_kwargs(params, warmup_section(params)),
        "scorer": params.neurons.scorer,
        "threshold": params.neurons.threshold,
        "ratios": params.neurons.ratios,
        "inputs": {
            "sft_model": str(Path(sft_dir) / "model"),
            "pairs_sha256": sha256_file(Path(prefs_dir) / "pairs.jsonl"),
            "reflogps_sha256": sha256_file(Path(reflogps_dir) / "ref_logps.safetensors"),
        },
    }


class SaveGradAbs(TrainerCallback):
    """Store the accumulated |gradient| in each checkpoint, so a resumed warm-up keeps its sum."""

    def __init__(self, acc: GradAbsAccumulator):
        self.acc = acc

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if ckpt.is_dir():
            save_file({n: s.contiguous() for n, s in self.acc.scores.items()}, str(ckpt / GRAD_FILE))


def warmup(params: Params, prepared: tuple, output_dir: Path) -> tuple[Any, dict[str, torch.Tensor], dict]:
    """Train the warm-up DPO (resuming); returns (trainer, grad_abs scores, training metrics)."""
    from datasets import Dataset

    rows, _, ref, model, tokenizer, _ = prepared
    acc = GradAbsAccumulator(model)
    resume = last_checkpoint(output_dir)
    if resume and (Path(resume) / GRAD_FILE).is_file():
        for name, value in load_file(str(Path(resume) / GRAD_FILE)).items():
            acc.scores[name].copy_(value)
    trainer = StoredRefDPOTrainer(model=model, args=dpo_config(params, warmup_section(params), output_dir),
                                  train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                                  callbacks=[LogLastStep(), acc, SaveGradAbs(acc)], ref_logps=ref)
    metrics = train(trainer)
    return trainer, acc.scores, metrics


def score_and_mask(params: Params, before: dict[str, torch.Tensor], model: Any,
                   grad_scores: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Both scorers, masks at every ratio for both; returns {scorer: {ratio: (masks, threshold)}}."""
    after = {n: p.detach().cpu() for n, p in model.named_parameters()}
    scores = {"weight_delta": weight_delta(before, after), "grad_abs": {n: s.cpu() for n, s in grad_scores.items()}}
    return {s: {r: global_masks(scores[s], r, params.neurons.threshold) for r in params.neurons.ratios}
            for s in SCORERS}


def summarize(params: Params, results: dict, n_layers: int, warm: dict) -> tuple[dict, dict]:
    """(metrics, stats tables by label)."""
    tables: dict[str, list] = {}
    per_ratio = {}
    for r in params.neurons.ratios:
        entry: dict[str, Any] = {}
        for s in SCORERS:
            masks, thr = results[s][r]
            rows = mask_stats(masks)
            tables[f"{s}@{r:g}%"] = rows
            selected, total = sum(x["selected"] for x in rows), sum(x["total"] for x in rows)
            entry[s] = {"threshold": thr, "selected": selected, "total": total,
                        "percent": round(100.0 * selected / total, 6),
                        "by_layer_percent": [round(v, 4) for v in by_layer(rows, n_layers)],
                        "by_module_percent": by_module(rows)}
        entry["scorer_agreement"] = overlap(results["weight_delta"][r][0], results["grad_abs"][r][0])
        per_ratio[f"{r:g}"] = entry
    metrics = {"scorer": params.neurons.scorer, "threshold_method": params.neurons.threshold,
               "n_layers": n_layers, "blocks": layer_blocks(n_layers) if n_layers >= 3 else None,
               "warmup": {k: v for k, v in warm.items() if k != "log"}, "ratios": per_ratio}
    return metrics, tables


def save(out_dir: str | Path, trainer: Any, results: dict, params: Params, metrics: dict, tables: dict,
         config: dict) -> Path:
    """Write masks, warm-up model, stats, plot, metrics and config atomically."""
    staging = Path(trainer.args.output_dir) / "final-model"
    trainer.save_model(str(staging))
    (staging / "training_args.bin").unlink(missing_ok=True)
    n_layers = metrics["n_layers"]
    chosen = params.neurons.scorer
    with atomic_dir(out_dir) as tmp:
        shutil.move(str(staging), tmp / "warmup")
        (tmp / "masks").mkdir()
        for r in params.neurons.ratios:
            path = mask_file(tmp, r)
            save_tensors(path, {n: m.contiguous() for n, m in sorted(results[chosen][r][0].items())},
                         {"ratio": r, "scorer": chosen, "threshold": params.neurons.threshold})
        (tmp / "stats.csv").write_text(stats_csv(tables), encoding="utf-8")
        series = {f"{s} top {r:g}%": metrics["ratios"][f"{r:g}"][s]["by_layer_percent"]
                  for s in SCORERS for r in params.neurons.ratios}
        plot_by_layer(series, n_layers, tmp / "neurons_by_layer.png",
                      f"ALLO preference neurons by depth (masks use {chosen}, {params.neurons.threshold} threshold)")
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
    return Path(out_dir)


def run(params: Params, prefs_dir: str | Path = "data/preferences", reflogps_dir: str | Path = "data/reflogps",
        sft_dir: str | Path = "data/sft", out_dir: str | Path = "data/neurons") -> dict[str, Any]:
    """Run the whole stage; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, prefs_dir, reflogps_dir, sft_dir)
    logger.info("neurons stage config: %s", one_line(config))
    prepared = prepare(params, prefs_dir, reflogps_dir, sft_dir)
    model = prepared[3]
    before = {n: p.detach().cpu().clone() for n, p in model.named_parameters()}
    trainer, grads, warm = warmup(params, prepared, work_dir("neurons", config) / "warmup")
    results = score_and_mask(params, before, trainer.model, grads)
    metrics, tables = summarize(params, results, num_layers(model), warm)
    save(out_dir, trainer, results, params, metrics, tables, config)
    logger.info("neurons stage metrics: %s", one_line({k: v for k, v in metrics.items() if k != "ratios"}))
    return metrics
