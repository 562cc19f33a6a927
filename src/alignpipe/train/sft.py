"""Supervised fine-tuning with TRL's ``SFTTrainer``: the sft and sft_mix stages, Lion's students, LTE's alignment.

    from alignpipe.train import sft
    metrics = sft.fine_tune(params, ["data/world/sft.jsonl"], "data/base", "data/sft")   # train + model directory
    trainer = sft.build_trainer(params, model, tokenizer, sft.load_sft_data(files), ckpt)  # the parts, for reuse
    metrics = sft.train(trainer, ckpt)

Data: conversational prompt-completion rows ``{"id", "prompt": [messages], "completion": [assistant message]}``.
TRL tokenizes ``prompt`` with the generation prompt and ``prompt + completion`` with the chat template, and the
loss covers the completion only (prompt tokens get label -100); the completion ends with ``<|eos|>``, so the
model learns to stop. :func:`fine_tune` checkpoints to ``work_dir("sft", key)`` (key = config + data + base-model
digests), resumes from the newest complete checkpoint and writes ``out_dir/{model/, metrics.json, log.csv,
config.json}`` (:func:`alignpipe.models.save.save`), byte-identical across reruns. The sft stage
(:mod:`alignpipe.stages.sft`) chooses the data files and seeds.

Default hyperparameters (:data:`DEFAULT_SFT`, overridable by ``sft.trainer``) are sized for the default world
(1440 dialogues, ~50-token prompts, ~26-token answers) and the ~1.5M-parameter built-in model: 3 epochs at
batch 8 (540 optimizer steps), lr 2e-3 with warmup and cosine decay (tiny models need rates far above TRL's
2e-5 default, which is tuned for billion-parameter models), length-grouped batches. Measured on the default
world (2 shared cores, 1 torch thread): batch 16 / lr 1e-3 ended at completion loss 1.29 and token accuracy
0.70 and answered every prompt about the same entity; batch 8 / lr 2e-3 reached 0.60 / 0.85 and copies the
asked-about names and answer formats, in ~130 s (random batches instead of length-grouped ones: ~2x slower).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import SFTConfig, SFTTrainer

from alignpipe.config import Params
from alignpipe.models.load import load_model
from alignpipe.models.save import save
from alignpipe.models.training import LogLastStep, loss_log, merge_args, pipeline_args, resume_train
from alignpipe.utils.io import DataError, read_jsonl_numbered, sha256_file, work_dir
from alignpipe.utils.seed import derive_seed

logger = logging.getLogger(__name__)

DEFAULT_SFT: dict[str, Any] = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.0,
    "logging_steps": 10,
    "save_steps": 100,
    # Batches of similar lengths: on the default world this halves the padded tokens (and the time) of a step.
    "train_sampling_strategy": "group_by_length",
}

_REQUIRED = {"id": str, "prompt": list, "completion": list}


def _check_messages(where: str, row: dict[str, Any], field: str, roles: tuple[str, ...]) -> list[dict[str, str]]:
    messages = row[field]
    if not messages:
        raise DataError(f"{where}: field '{field}' is an empty list")
    clean = []
    for i, msg in enumerate(messages):
        if not (isinstance(msg, dict) and isinstance(msg.get("role"), str) and isinstance(msg.get("content"), str)):
            raise DataError(f"{where}: {field}[{i}] must be {{'role': str, 'content': str}}, got {msg!r}"[:300])
        if msg["role"] not in roles:
            raise DataError(f"{where}: {field}[{i}] has role '{msg['role']}', expected one of {list(roles)}")
        # Only role/content: extra keys would become sparse Arrow struct fields the chat template never reads.
        clean.append({"role": msg["role"], "content": msg["content"]})
    return clean


def load_sft_data(paths: list[str | Path]) -> Dataset:
    """Read prompt-completion JSONL files (concatenated in order) into a ``datasets.Dataset``.

    Raises:
        DataError: a file is missing/empty/malformed, a field is missing or a message is ill-formed; the
            message names the file and the line or record id.
    """
    rows = []
    for path in map(Path, paths):
        for lineno, row in read_jsonl_numbered(path, required=_REQUIRED):
            where = f"{path} line {lineno} (record '{row['id']}')"
            rows.append(
                {
                    "prompt": _check_messages(where, row, "prompt", ("system", "user", "assistant")),
                    "completion": _check_messages(where, row, "completion", ("assistant",)),
                }
            )
    return Dataset.from_list(rows)


class EpochSeededLengthSampler(LengthGroupedSampler):
    """``LengthGroupedSampler`` whose order depends only on (seed, epoch).

    transformers' own draws each epoch's permutation from the running RNG, so a run resumed in a later epoch
    sees different batches than an uninterrupted one. Trainer calls ``set_epoch`` before every epoch
    (resumed or not), and here that re-seeds the permutation, which keeps resuming exact.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(derive_seed(self.seed, "sft", "epoch", epoch))


class PipelineSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with a resumable length-grouped sampler for ``train_sampling_strategy="group_by_length"``."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or not isinstance(dataset, Dataset):
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return EpochSeededLengthSampler(batch, lengths, self.args.data_seed or self.args.seed)


def sft_config(params: Params, output_dir: str | Path, section: Any = None,
               defaults: dict[str, Any] | None = None) -> SFTConfig:
    """SFTConfig = :data:`DEFAULT_SFT` <- ``params.sft.trainer`` <- pipeline-owned keys.

    ``section`` (anything with ``max_length`` and ``trainer``, default ``params.sft``) and ``defaults`` let
    other SFT-style stages (LTE's ``edit_align``) reuse this configuration with their own params section.
    """
    section = params.sft if section is None else section
    owned = pipeline_args(output_dir, params.seed)
    owned["max_length"] = section.max_length
    if not torch.cuda.is_available():
        # TRL turns gradient checkpointing on by default; on CPU it only costs time (memory is not the limit).
        # transformers 5 names it activation_checkpointing (gradient_checkpointing is a deprecated alias).
        owned["activation_checkpointing"] = False
    return SFTConfig(**merge_args(DEFAULT_SFT if defaults is None else defaults, section.trainer, owned))


def build_trainer(
    params: Params,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    output_dir: str | Path,
    callbacks: list[TrainerCallback] | None = None,
    section: Any = None,
    defaults: dict[str, Any] | None = None,
    peft_config: Any = None,
) -> PipelineSFTTrainer:
    """An ``SFTTrainer`` with completion-only loss on ``dataset`` (tokenized here, by TRL).

    ``section``/``defaults`` as in :func:`sft_config`; ``peft_config`` (a peft ``LoraConfig``) trains adapters.
    """
    tokenizer.padding_side = "right"
    args = sft_config(params, output_dir, section, defaults)
    return PipelineSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[LogLastStep(), *(callbacks or [])],
        peft_config=peft_config,
    )


def train(trainer: PipelineSFTTrainer, output_dir: str | Path) -> dict[str, Any]:
    """Train, resuming from the newest complete checkpoint in ``output_dir``; return metrics (with ``log``)."""
    resume_train(trainer, output_dir, "SFT")
    log = loss_log(trainer.state.log_history)
    last = log[-1] if log else {}
    return {
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "n_examples": len(trainer.train_dataset),
        "final_loss": last.get("loss"),
        "mean_token_accuracy": last.get("mean_token_accuracy"),
        # Not TRL's num_tokens: that counter restarts at 0 on resume, so it would differ after an interruption.
        "log": log,
    }


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(sha256_file(path).encode())
    return h.hexdigest()[:16]


def run_config(params: Params, data_files: list[str]) -> dict[str, Any]:
    """What an SFT run on ``data_files`` depends on: the params sections it reads, resolved (``config.json``)."""
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "sft": params.sft.model_dump(),
        "trainer_resolved": {**DEFAULT_SFT, **params.sft.trainer},
        "data_files": data_files,
    }


def fine_tune(params: Params, data_files: list[Path], base_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Fine-tune ``base_dir/model`` on ``data_files`` (concatenated in order) with the ``sft`` section.

    Writes ``out_dir/{model/, metrics.json, config.json, log.csv}``, where ``config.json`` is
    :func:`run_config`; returns the metrics (without the loss log). The caller seeds (``seed_everything``) first.
    """
    config = run_config(params, [str(f) for f in data_files])
    dataset = load_sft_data(data_files)
    base_model = Path(base_dir) / "model"
    model, tokenizer = load_model(base_model, params.model, padding_side="right")
    weights = sorted(p for p in base_model.iterdir() if p.is_file())
    ckpt = work_dir("sft", {**config, "data": _digest(data_files), "base": _digest(weights)})
    trainer = build_trainer(params, model, tokenizer, dataset, ckpt)
    metrics = train(trainer, ckpt)
    save(trainer.accelerator.unwrap_model(trainer.model), tokenizer, out_dir, metrics, config)
    metrics.pop("log", None)
    return metrics
