"""Stage ``edit_align`` (LTE's alignment phase): teach the SFT policy to apply edits given in its prompt.

Run it (normally ``python -m flows.edit_align`` / ``dvc repro edit_align``)::

    from alignpipe.config import load_params
    from alignpipe.stages import edit_align as align
    align.run(load_params("params.yaml"), edits_dir="data/edits", sft_dir="data/sft", out_dir="data/edit_align")

Data: :func:`alignpipe.methods.lte.template.alignment_rows` over ``data/edits/train.jsonl`` (LTE's template; 50% /
25% / 25% of the edits with 0 / 1 / 2 retrieved distractors; in-scope questions answered with the new fact,
locality questions with the unchanged one). Training: TRL's ``SFTTrainer`` through the project's SFT code
(:mod:`alignpipe.train.sft`: completion-only loss, resumable length-grouped sampler), on LoRA adapters
(``edit_align.peft: lora``, ``edit_align.lora``) or all weights (``peft: none``) of ``data/sft/model``.

Outputs (``data/edit_align/``, atomic): ``model/`` (LoRA: adapter + tokenizer, loaded by
``alignpipe.models.load_model`` over the SFT model; full: the whole model), ``data.jsonl`` (the alignment
rows), ``metrics.json``, ``log.csv`` and ``config.json``. Checkpoints: ``work_dir("edit_align", key)``.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

from datasets import Dataset

from alignpipe.config import Params
from alignpipe.methods.hierarchical import check_target_modules, lora_config
from alignpipe.methods.lte.records import read_edits
from alignpipe.methods.lte.template import alignment_rows
from alignpipe.models.load import load_model
from alignpipe.models.training import loss_csv, sort_peft_sets
from alignpipe.train import sft
from alignpipe.utils.cache import model_digest
from alignpipe.utils.io import atomic_dir, dumps, one_line, sha256_file, work_dir, write_json, write_jsonl
from alignpipe.utils.seed import seed_everything

logger = logging.getLogger(__name__)

# The SFT stage's defaults (the alignment set is a few hundred rows on the built-in world).
DEFAULT_EDIT_ALIGN: dict[str, Any] = dict(sft.DEFAULT_SFT)


def stage_config(params: Params, edits_dir: str | Path, sft_dir: str | Path) -> dict[str, Any]:
    """What the result depends on (``config.json``; with the SFT weights' digest it keys the checkpoints)."""
    cfg = params.edit_align
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "edit_align": cfg.model_dump(mode="json"),
        "trainer_resolved": {**DEFAULT_EDIT_ALIGN, **cfg.trainer},
        "inputs": {"sft_model": str(Path(sft_dir) / "model"),
                   "train_edits_sha256": sha256_file(Path(edits_dir) / "train.jsonl")},
    }


def build_data(params: Params, edits_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Step 1: the alignment rows and their mixture counts."""
    edits = read_edits(Path(edits_dir) / "train.jsonl")
    cfg = params.edit_align
    return alignment_rows(edits, params.seed, cfg.mix, cfg.plain_locality)


def fit(params: Params, rows: list[dict[str, Any]], sft_dir: str | Path, config: dict[str, Any]):
    """Step 2: fine-tune the SFT policy on ``rows`` (resuming from a checkpoint); returns ``(trainer, metrics)``."""
    cfg = params.edit_align
    model_dir = Path(sft_dir) / "model"
    model, tokenizer = load_model(model_dir, params.model, padding_side="right")
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    data_digest = hashlib.sha256(dumps(rows).encode()).hexdigest()[:16]
    ckpt = work_dir("edit_align", {**config, "data": data_digest, "weights": model_digest(model_dir)})
    if cfg.peft == "lora":  # peft drops an entry that matches nothing as long as another one matches
        check_target_modules(model, cfg.lora.target_modules, "edit_align.lora.target_modules")
    peft_config = lora_config(cfg.lora, None) if cfg.peft == "lora" else None
    with warnings.catch_warnings():
        # peft probes the deprecated alias `is_gradient_checkpointing` when wrapping; nothing to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        trainer = sft.build_trainer(params, model, tokenizer, dataset, ckpt, section=cfg,
                                    defaults=DEFAULT_EDIT_ALIGN, peft_config=peft_config)
    metrics = sft.train(trainer, ckpt)
    metrics["trainable_parameters"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return trainer, metrics


def save(trainer: Any, rows: list[dict[str, Any]], stats: dict[str, Any], metrics: dict[str, Any],
         config: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """Step 3: write the model (adapter or full), the data, metrics, loss log and config in one atomic directory.

    The layout of ``model/`` is the base/sft stages' (``save_pretrained`` of the model and the tokenizer, which
    pads on the right); a peft model writes its adapter only.
    """
    metrics = {**metrics, "mixture": stats}
    log = metrics.pop("log", [])
    tokenizer = trainer.processing_class
    tokenizer.padding_side = "right"
    with atomic_dir(out_dir) as tmp:
        sort_peft_sets(trainer.accelerator.unwrap_model(trainer.model)).save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_jsonl(tmp / "data.jsonl", rows)
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "config.json", config)
        (tmp / "log.csv").write_text(loss_csv(log), encoding="utf-8")
    return metrics


def run(params: Params, edits_dir: str | Path = "data/edits", sft_dir: str | Path = "data/sft",
        out_dir: str | Path = "data/edit_align") -> dict[str, Any]:
    """Seed, build the data, train, save; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, edits_dir, sft_dir)
    logger.info("edit_align config: %s", one_line(config))
    rows, stats = build_data(params, edits_dir)
    logger.info("edit_align data: %d rows, %s", len(rows), stats)
    trainer, metrics = fit(params, rows, sft_dir, config)
    metrics = save(trainer, rows, stats, metrics, config, out_dir)
    logger.info("edit_align metrics: %s", one_line(metrics))
    return metrics
