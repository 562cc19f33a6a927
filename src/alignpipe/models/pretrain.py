"""Build the built-in Llama-architecture model and pretrain it on the world corpus.

Usage::

    blocks = pack_corpus(documents, tokenizer, block_size=256)
    model = build_model(ArchitectureSection(), tokenizer)
    result = pretrain(model, tokenizer, blocks, BaseSection(), seed=1234, checkpoint_dir=".cache/.../base")
    result.final_loss, result.eval_perplexity, result.log

Pretraining is plain causal language modelling with ``transformers.Trainer``: every corpus document becomes
``<|bos|> text <|eos|>``, documents are concatenated and cut into ``block_size`` blocks (GPT-2 style packing,
no padding), and 5% of the blocks, chosen by the seed, are held out for perplexity. The run checkpoints every
``save_steps`` into ``checkpoint_dir`` and resumes from the newest complete checkpoint there.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from alignpipe.config import ArchitectureSection, BaseSection
from alignpipe.models.training import LogLastStep, loss_log, merge_args, pipeline_args, resume_train
from alignpipe.utils.io import DataError

logger = logging.getLogger(__name__)

EVAL_FRACTION = 0.05

# Defaults for the built-in model (~1.5M parameters: hidden 128, 6 layers, vocab 2048); `base.trainer` in
# params overrides any of them. Measured on the default world (~470 blocks of 256 tokens): at equal tokens,
# small batches win by far (more updates): 4 epochs gave held-out perplexity 27 at batch 16, 3.9 at batch 8
# and 2.4 at batch 4, in about the same time; batch 4 x 2 epochs (~225 steps, perplexity ~6) fits the
# ~90 s budget. A tiny model tolerates (and needs, to learn in minutes) a high learning rate; warmup + cosine
# decay keep it stable.
DEFAULT_TRAINER: dict[str, Any] = {
    "num_train_epochs": 2,
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 32,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.1,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "save_steps": 100,
}


@dataclass
class PretrainResult:
    """What a pretraining run measured (everything deterministic; no wall-clock fields)."""

    steps: int
    final_loss: float
    eval_loss: float
    eval_perplexity: float
    n_train_blocks: int
    n_eval_blocks: int
    log: list[dict[str, float]] = field(default_factory=list)


def build_model(
    arch: ArchitectureSection, tokenizer: PreTrainedTokenizerBase, seed: int | None = None
) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM`` sized by ``arch``, with the tokenizer's vocab and special ids.

    Args:
        arch: architecture hyperparameters.
        tokenizer: fixes ``vocab_size`` and the bos/eos/pad ids written into the model and generation configs.
        seed: when given, the weights are initialised under this torch seed (same seed -> same weights).
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        max_position_embeddings=arch.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta},
        tie_word_embeddings=arch.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if seed is not None:
        torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    # The tokenizer should refuse inputs the position embeddings cannot cover.
    tokenizer.model_max_length = arch.max_position_embeddings
    return model


def pack_corpus(documents: Iterable[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> list[list[int]]:
    """Tokenize each non-blank document as ``bos + text + eos``, concatenate, and cut into ``block_size`` blocks.

    The tail shorter than one block is dropped (it would need padding and is < 1 block of data). Special-token
    strings inside a document (``<|user|>``, ``<|eos|>``) become those tokens, so chat-formatted dialogues in
    the corpus teach the chat format.
    """
    texts = [doc.strip("\n") for doc in documents if doc.strip()]
    if not texts:
        raise DataError("pretraining corpus is empty (no non-blank documents)")
    stream: list[int] = []
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    # Batch encoding keeps the Rust tokenizer busy; 1000 documents per call bounds memory.
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(texts[start : start + 1000], add_special_tokens=False)["input_ids"]:
            stream.append(bos)
            stream.extend(ids)
            # A chat-formatted document already ends with the eos that closes its last turn.
            if not ids or ids[-1] != eos:
                stream.append(eos)
    n_blocks = len(stream) // block_size
    if n_blocks < 2:
        raise DataError(
            f"pretraining corpus has {len(stream)} tokens, fewer than 2 blocks of block_size={block_size}; "
            "lower base.block_size or enlarge the corpus"
        )
    return [stream[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]


def split_blocks(blocks: list[list[int]], seed: int, eval_fraction: float = EVAL_FRACTION):
    """Hold out ``eval_fraction`` of the blocks (at least one), chosen by ``seed``; returns (train, eval)."""
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(blocks) * eval_fraction))
    held = set(order[:n_eval])
    train = [b for i, b in enumerate(blocks) if i not in held]
    evals = [b for i, b in enumerate(blocks) if i in held]
    return train, evals


class BlockDataset(torch.utils.data.Dataset):
    """Fixed-length token blocks as causal-LM examples (labels = inputs; the model shifts them)."""

    def __init__(self, blocks: list[list[int]]):
        self.data = torch.tensor(blocks, dtype=torch.long)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.data[i]
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


def training_arguments(section: BaseSection, seed: int, checkpoint_dir: str | Path) -> TrainingArguments:
    """TrainingArguments = :data:`DEFAULT_TRAINER` <- ``section.trainer`` <- pipeline-owned keys."""
    kwargs = merge_args(DEFAULT_TRAINER, section.trainer, pipeline_args(checkpoint_dir, seed))
    return TrainingArguments(**kwargs)


def pretrain(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    blocks: list[list[int]],
    section: BaseSection,
    seed: int,
    checkpoint_dir: str | Path,
    callbacks: list[TrainerCallback] | None = None,
) -> PretrainResult:
    """Train ``model`` in place on ``blocks``; resume from the newest complete checkpoint in ``checkpoint_dir``.

    Args:
        model: the model to train (its weights are replaced by the checkpoint's when resuming).
        tokenizer: saved with each checkpoint so a checkpoint is a loadable model directory.
        blocks: packed token blocks from :func:`pack_corpus`; 5% are held out for evaluation.
        section: ``base`` params (``trainer`` overrides TrainingArguments).
        seed: the run seed (data order, held-out split, dropout).
        checkpoint_dir: where checkpoints go; should be keyed by the config (``utils.io.work_dir``).
        callbacks: extra ``TrainerCallback``s (progress reporting, tests that simulate a crash).

    Returns:
        The loss curve, final training loss and held-out loss/perplexity.
    """
    train_blocks, eval_blocks = split_blocks(blocks, seed)
    args = training_arguments(section, seed, checkpoint_dir)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=BlockDataset(train_blocks),
        eval_dataset=BlockDataset(eval_blocks),
        processing_class=tokenizer,
        callbacks=[LogLastStep(), *(callbacks or [])],
    )
    resume_train(trainer, checkpoint_dir, "pretraining")
    eval_loss = float(trainer.evaluate()["eval_loss"])
    log = loss_log(trainer.state.log_history)
    final_loss = log[-1]["loss"] if log else float("nan")
    return PretrainResult(
        steps=int(trainer.state.global_step),
        final_loss=final_loss,
        eval_loss=eval_loss,
        # Cap the exponent so a diverged run reports a large finite number rather than inf (JSON-safe).
        eval_perplexity=math.exp(min(eval_loss, 50.0)),
        n_train_blocks=len(train_blocks),
        n_eval_blocks=len(eval_blocks),
        log=log,
    )
