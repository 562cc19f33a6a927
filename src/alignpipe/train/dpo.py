"""TRL's ``DPOTrainer``, fed the stored reference log-probs of the ``reflogps`` stage, and the pipeline's DPOConfig.

Usage::

    from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config
    from alignpipe.train.reflogps import load_ref_logps
    args = dpo_config(params, params.align.variants["global"], output_dir=ckpt_dir)
    trainer = StoredRefDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                  processing_class=tokenizer, peft_config=peft_cfg,
                                  ref_logps=load_ref_logps("data/reflogps"))
    trainer.train()

The loss is TRL's standard sigmoid DPO (``loss_type=["sigmoid"]``), per pair::

    loss = -log σ(β [(log πθ(y_w|x) - log π_ref(y_w|x)) - (log πθ(y_l|x) - log π_ref(y_l|x))])

with log π(y|x) the sum of the per-token log-probs of the response tokens kept after truncation.

The one extension point: with ``precompute_ref_log_probs=True`` TRL asks for the ``ref_chosen_logps`` /
``ref_rejected_logps`` columns before training (the :meth:`~alignpipe.train.trl_ext.HookedDPOTrainer.reference_logps`
hook of :mod:`alignpipe.train.trl_ext`, the one module that touches TRL's internals) and then reads them from each
batch. :class:`StoredRefDPOTrainer` answers from the stored values instead of running a model, after checking that
the stored tokens are exactly the ones this trainer's own tokenization and collator produce (a mismatch fails
naming the pair id). So the reference model never runs during training and is never copied in memory (TRL
leaves ``ref_model`` as None with ``precompute_ref_log_probs``; with PEFT it would otherwise disable the adapter
and run a second forward every step).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from trl import DPOConfig

from alignpipe.config import Params, VariantSection
from alignpipe.models.training import merge_args, pipeline_args
from alignpipe.train.trl_ext import HookedDPOTrainer
from alignpipe.utils.io import DataError

logger = logging.getLogger(__name__)

# Shared defaults for every align variant (``align.trainer`` and ``align.variants.<v>.trainer`` override them).
# One epoch over the training pairs for every variant (the same data and steps, so the comparison is fair).
# Measured on the default world (1,608 train pairs from the preference pool, full DPO, 2 CPU cores, ~1.8 s per
# step of 16 pairs): 101 steps take the held-out reward accuracy from 0.5 to 0.80; the earlier budget of 48 steps
# (768 pairs; then on pairs from the SFT data's own prompts) left it at 0.54, not above chance; 3 epochs reach 0.83 but degrade generation (sentence
# repetition: judged coherence -1.0). ``max_steps`` > 0 caps the steps instead.
DEFAULT_TRAINER: dict[str, Any] = {
    "max_steps": -1,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 16,
    "beta": 0.1,  # DPO paper / TRL default; the Hierarchical Alignment recipe keeps it
    "loss_type": ["sigmoid"],
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,  # a ratio of the steps when < 1
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "logging_steps": 4,
    "save_steps": 16,
    # TRL turns activation checkpointing on by default. It recomputes every layer's forward in the backward
    # and (with PEFT) makes the embeddings require grad, so the backward walks through every layer even when
    # only the top third is adapted: off, Global-Align's backward stops at its lowest adapted layer.
    "activation_checkpointing": False,
    # TRL defaults to bf16, which fails or crawls on CPU; profiles/paper.yaml turns it back on for GPUs.
    "bf16": False,
    "fp16": False,
    "precompute_ref_batch_size": 64,
}
# Learning rates: LoRA trains a low-rank delta whose B factor starts at zero, so it needs a ~10x larger step
# than full fine-tuning to move the policy comparably (paper-scale recipes: 5e-6 full / 5e-5 LoRA). The tiny
# model was pretrained at 3e-3; at these rates 20 steps already take the train reward accuracy from 0.5 to
# ~1.0 (margins 0.4-0.9) on separable synthetic pairs, without the loss collapsing to 0 within the budget.
FULL_TRAINER: dict[str, Any] = {"learning_rate": 1e-4}
LORA_TRAINER: dict[str, Any] = {"learning_rate": 1e-3}

_ALIASES = (("gradient_checkpointing", "activation_checkpointing"),
            ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"))


def _canonical(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Rename transformers' deprecated ``gradient_checkpointing*`` keys, so a params override is not silently
    shadowed by the default ``activation_checkpointing`` (transformers lets the new name win)."""
    out = dict(kwargs)
    for old, new in _ALIASES:
        if old in out:
            out[new] = out.pop(old)
    return out


def trainer_kwargs(params: Params, variant: VariantSection | None) -> dict[str, Any]:
    """The resolved DPOConfig overrides, without the pipeline-owned keys (what config.json records)."""
    lora = variant is not None and variant.peft == "lora"
    defaults = {**DEFAULT_TRAINER, **(LORA_TRAINER if lora else FULL_TRAINER)}
    bmc = {"beta": params.align.bmc.beta} if variant is not None and variant.is_bmc else {}
    overrides = {**_canonical(params.align.trainer), **bmc,
                 **(_canonical(variant.trainer) if variant is not None else {})}
    return {**defaults, **overrides}


def dpo_config(params: Params, variant: VariantSection | None, output_dir: str | Path) -> DPOConfig:
    """DPOConfig = defaults <- ``align.trainer`` <- the variant's ``trainer`` <- pipeline-owned keys.

    Pipeline-owned: paths, seeds, device, reporting, checkpoint cadence (:func:`pipeline_args`),
    ``max_length`` (from ``align.max_length``: the stored reference tokens depend on it) and
    ``precompute_ref_log_probs=True`` (the reference comes from the reflogps stage). ``bf16``/``fp16`` are
    defaults here, not owned, so a GPU profile can turn mixed precision on.
    """
    owned = {k: v for k, v in pipeline_args(output_dir, params.seed).items() if k not in ("bf16", "fp16")}
    owned.update(max_length=params.align.max_length, precompute_ref_log_probs=True)
    return DPOConfig(**merge_args(trainer_kwargs(params, variant), {}, owned))


def split_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor):
    """(prompt ids, completion ids) of one collated row: attended non-completion tokens, completion tokens."""
    attn, comp = attention_mask.bool(), completion_mask.bool()
    return input_ids[attn & ~comp].tolist(), input_ids[comp].tolist()


def completion_tokens(collator: Any, row: dict[str, Any]) -> dict[str, list[int]]:
    """The tokens TRL's collator actually feeds for one tokenized pair (after truncation).

    Returns ``{"prompt", "chosen", "rejected"}`` token id lists, read from the collated batch through its
    attention and completion masks, so they match training exactly whatever the truncation rule.
    """
    batch = collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
    prompt, chosen = split_tokens(batch["input_ids"][0], batch["attention_mask"][0], batch["completion_mask"][0])
    _, rejected = split_tokens(batch["input_ids"][1], batch["attention_mask"][1], batch["completion_mask"][1])
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _first_difference(a: list[int], b: list[int]) -> str:
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"lengths {len(a)} vs {len(b)}, first difference at token {k}"


def ld_weighted(chosen: torch.Tensor, rejected: torch.Tensor, ld_alpha: float) -> tuple[float, float]:
    """LD-DPO sums (TRL's ``ld_alpha``): tokens beyond the shorter response's length are weighted by alpha."""
    shared = min(len(chosen), len(rejected))
    c, r = (float(t[:shared].sum() + ld_alpha * t[shared:].sum()) for t in (chosen, rejected))
    return c, r


def attach_ref_logps(dataset: Any, ref: Any, collator: Any, ld_alpha: float | None = None,
                     weigh: Any = None) -> Any:
    """Add ``ref_chosen_logps``/``ref_rejected_logps`` columns to TRL's tokenized dataset from the stored values.

    Args:
        dataset: the trainer's processed dataset (``id``, ``prompt_ids``, ``chosen_ids``, ``rejected_ids``).
        ref: a :class:`alignpipe.train.reflogps.RefLogps`.
        collator: the trainer's data collator (defines truncation).
        ld_alpha: TRL's LD-DPO weight, applied to the stored per-token values; None for plain sums.
        weigh: optional ``weigh(row, stored) -> (chosen, rejected)``: a token-weighted reduction of the stored
            per-token values (BMC); ``row`` is the dataset row, ``stored`` the checked stored pair.

    Raises:
        DataError: a pair has no stored values, or its tokens differ from the stored ones (names the pair id).
    """
    if "id" not in dataset.column_names:
        raise DataError("the preference dataset needs an 'id' column to find its stored reference log-probs")
    chosen_vals, rejected_vals = [], []
    columns = ["id", "prompt_ids", "chosen_ids", "rejected_ids"]
    for row in (dataset if weigh is not None else dataset.select_columns(columns)):
        pair_id = row["id"]
        stored = ref.pair(pair_id)  # raises DataError for an unknown id
        fed = completion_tokens(collator, row)
        for part in ("prompt", "chosen", "rejected"):
            if fed[part] != stored[f"{part}_ids"]:
                raise DataError(
                    f"pair {pair_id!r}: the {part} tokens the trainer feeds differ from those stored in {ref.path} "
                    f"({_first_difference(stored[f'{part}_ids'], fed[part])}); the reference log-probs were computed "
                    "with another tokenizer, chat template or max_length/truncation: rerun the reflogps stage"
                )
        if weigh is not None:
            c, r = weigh(row, stored)
            chosen_vals.append(c)
            rejected_vals.append(r)
        elif ld_alpha is None:
            chosen_vals.append(stored["chosen_sum"])
            rejected_vals.append(stored["rejected_sum"])
        else:
            c, r = ld_weighted(stored["chosen_logps"], stored["rejected_logps"], ld_alpha)
            chosen_vals.append(c)
            rejected_vals.append(r)
    dataset = dataset.add_column("ref_chosen_logps", chosen_vals)
    return dataset.add_column("ref_rejected_logps", rejected_vals)


class StoredRefDPOTrainer(HookedDPOTrainer):
    """``DPOTrainer`` whose reference log-probs come from the reflogps stage (never from a reference model).

    Pass ``ref_logps`` (a loaded :class:`~alignpipe.train.reflogps.RefLogps`) and an ``args`` with
    ``precompute_ref_log_probs=True``; everything else is DPOTrainer's own API.
    """

    def __init__(self, *args: Any, ref_logps: Any, **kwargs: Any):
        config = kwargs.get("args")
        if config is None or not config.precompute_ref_log_probs or kwargs.get("ref_model") is not None:
            raise ValueError("StoredRefDPOTrainer needs args=DPOConfig(precompute_ref_log_probs=True), no ref_model")
        self._stored_ref = ref_logps
        super().__init__(*args, **kwargs)
        if self.ref_model is not None:  # TRL builds one only under FSDP for full fine-tuning; it is not needed
            self.ref_model = None

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """The stored reference sums of every pair, after checking its tokens against the store."""
        logger.info("attaching stored reference log-probs to the %s dataset (%d pairs)", name, len(dataset))
        return attach_ref_logps(dataset, self._stored_ref, self.data_collator, self.ld_alpha)
