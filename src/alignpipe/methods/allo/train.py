"""ALLO align variants (arXiv 2406.12606): forgetting then learning, each on its own neuron mask.

Run through the align stage (``python -m flows.align --variant allo``; :func:`alignpipe.stages.align.run`
dispatches here when the variant has an ``allo:`` section). The pieces:

- :class:`AlloTrainer`: :class:`~alignpipe.train.dpo.StoredRefDPOTrainer` (TRL's DPOTrainer fed the stored
  reference) whose ``pair_loss`` is ALLO's forgetting loss (token-level NPO on the rejected rows, weighted by
  r_t) or learning loss (top-ε rejected DPO), :mod:`alignpipe.methods.allo.loss`. The per-token reference values
  and r_t travel as extra dataset columns, padded by :class:`PerTokenCollator` next to TRL's own collator.
- :class:`~alignpipe.methods.allo.masked.MaskedAdamW` passed as ``optimizers=(opt, None)``: the update touches only the
  masked neurons (forgetting mask, learning mask: two ratios from the neurons stage).
- :func:`fit`: forgetting (optional), then learning on the same weights; each stage checkpoints under its own
  directory and resumes. The reference of both stages is the SFT model (the stored reflogps), as in the authors'
  scripts, where both stages compare against the original policy's probabilities.

Variants (``align.variants.<v>.allo``): ``allo``; ablations ``allo_no_mask`` (no ratios), ``allo_no_token_weights``
(r_t = 1, ε = 1), ``allo_no_forget``; ``dpo_top10`` (no forgetting, ε = 1, 10% mask: plain DPO on the top-10%
neurons); ``global_allo`` (``block: global``: the masks intersected with the last third of the layers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from alignpipe.config import Params, VariantSection
from alignpipe.models.training import LogLastStep, count_parameters
from alignpipe.methods.allo.loss import npo_token_loss, top_eps_dpo_loss
from alignpipe.methods.hierarchical import layer_blocks, num_layers
from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config
from alignpipe.methods.allo.masked import MaskedAdamW, load_masks, mask_count, restrict_to_layers
from alignpipe.methods.allo.token_scores import load_token_scores
from alignpipe.train.loop import train
from alignpipe.utils.io import DataError, sha256_file, work_dir

logger = logging.getLogger(__name__)

TOKEN_COLUMNS = ("ref_chosen_tok", "ref_rejected_tok", "rejected_weight")


def mask_file(neurons_dir: str | Path, ratio: float) -> Path:
    """The neurons stage's mask file for ``ratio`` percent (``masks/mask_r5.safetensors``, ``masks/mask_r12.5...``)."""
    return Path(neurons_dir) / "masks" / f"mask_r{ratio:g}.safetensors"


class PerTokenCollator:
    """TRL's preference collator, plus per-token float columns padded to its shifted completion positions.

    Rows are ``[chosen..., rejected...]``; ``ref_chosen_tok`` lands on the chosen rows, ``ref_rejected_tok`` and
    ``rejected_weight`` on the rejected rows, each value at the position whose log-prob scores that token.
    """

    def __init__(self, base: Any):
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {k: [ex.pop(k) for ex in examples] for k in TOKEN_COLUMNS if k in examples[0]}
        batch = self.base(examples)
        if not extra:
            return batch
        shifted = batch["completion_mask"][:, 1:].bool()
        half = shifted.size(0) // 2
        for key, values in extra.items():
            rows = range(half) if key == "ref_chosen_tok" else range(half, 2 * half)
            out = torch.zeros(half, shifted.size(1), dtype=torch.float32)
            for j, (row, vals) in enumerate(zip(rows, values)):
                pos = shifted[row].nonzero().squeeze(1)
                if len(pos) != len(vals):
                    raise DataError(f"{key}: {len(vals)} stored values for {len(pos)} response tokens")
                out[j, pos] = torch.tensor(vals, dtype=torch.float32)
            batch[key] = out
        return batch


class AlloTrainer(StoredRefDPOTrainer):
    """StoredRefDPOTrainer with ALLO's loss for one stage (``"forget"`` or ``"learn"``).

    Args (beyond StoredRefDPOTrainer's):
        allo_stage: "forget" (NPO on rejected rows, weights r_t) or "learn" (top-ε DPO; ε = 1 is TRL's own DPO).
        top_eps: ε of the learning stage.
        token_weights: pair id -> r_t per rejected token (the rewards stage); None = weight 1 on every token.
    """

    extra_columns = TOKEN_COLUMNS  # padded by PerTokenCollator (Trainer drops columns it does not know)

    def __init__(self, *args: Any, allo_stage: str, top_eps: float = 0.1,
                 token_weights: dict[str, torch.Tensor] | None = None, **kwargs: Any):
        if allo_stage not in ("forget", "learn"):
            raise ValueError(f"allo_stage {allo_stage!r}: 'forget' or 'learn'")
        self.allo_stage, self.top_eps, self._token_weights = allo_stage, top_eps, token_weights
        super().__init__(*args, **kwargs)
        self.data_collator = PerTokenCollator(self.data_collator)

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """The stored sums (tokens checked), plus the per-token reference values and r_t as padded columns."""
        dataset = super().reference_logps(dataset, name, batch_size)  # sums + token check against the store
        cols: dict[str, list] = {k: [] for k in TOKEN_COLUMNS}
        for pair_id in dataset["id"]:
            stored = self._stored_ref.pair(pair_id)
            cols["ref_chosen_tok"].append(stored["chosen_logps"].tolist())
            cols["ref_rejected_tok"].append(stored["rejected_logps"].tolist())
            n = len(stored["rejected_ids"])
            if self._token_weights is None:
                cols["rejected_weight"].append([1.0] * n)
                continue
            weights = self._token_weights.get(pair_id)
            if weights is None or len(weights) != n:
                got = "none" if weights is None else f"{len(weights)} values"
                raise DataError(f"pair {pair_id!r}: token weights ({got}) do not match its {n} rejected training "
                                "tokens; rerun the rewards stage")
            cols["rejected_weight"].append(weights.tolist())
        for key, values in cols.items():
            dataset = dataset.add_column(key, values)
        return dataset

    def pair_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """Forgetting: token-level NPO on the rejected rows; learning: top-ε DPO (ε = 1: TRL's own loss)."""
        mode = "train" if self.model.training else "eval"
        extra = {k: inputs.pop(k) for k in TOKEN_COLUMNS if k in inputs}
        if self.allo_stage == "learn" and self.top_eps >= 1.0:
            return super().pair_loss(model, inputs, return_outputs)  # ε = 1: exactly TRL's sigmoid DPO
        half = inputs["input_ids"].size(0) // 2
        shifted = inputs["completion_mask"][:, 1:].float()
        if self.allo_stage == "forget":
            policy = self.policy_logps(model, inputs, slice(half, None))  # only the rejected rows run
            weights = extra["rejected_weight"] * shifted[half:]
            loss = npo_token_loss(policy, extra["ref_rejected_tok"], weights, beta=self.beta)
            self._metrics[mode]["npo/weighted_tokens"].append(float(torch.count_nonzero(weights)))
            self._metrics[mode]["logps/rejected"].append(float((policy.detach() * shifted[half:]).sum(1).mean()))
        else:
            policy = self.policy_logps(model, inputs)
            loss, chosen, rejected, keep = top_eps_dpo_loss(
                policy[:half], extra["ref_chosen_tok"], shifted[:half],
                policy[half:], extra["ref_rejected_tok"], shifted[half:], self.top_eps, self.beta)
            c, r = self.beta * chosen.detach(), self.beta * rejected.detach()
            m = self._metrics[mode]
            m["rewards/chosen"].append(float(c.mean()))
            m["rewards/rejected"].append(float(r.mean()))
            m["rewards/accuracies"].append(float((c > r).float().mean()))
            m["rewards/margins"].append(float((c - r).mean()))
            m["allo/kept_rejected_fraction"].append(float(keep.sum() / shifted[half:].sum().clamp(min=1)))
        return (loss, None) if return_outputs else loss


def allo_inputs(params: Params, allo: Any, neurons_dir: str | Path, rewards_dir: str | Path) -> dict[str, Any]:
    """The neurons/rewards files an ALLO variant reads, with their digests (part of its config.json)."""
    out: dict[str, Any] = {"neurons_dir": str(neurons_dir), "rewards_dir": str(rewards_dir)}
    for key in ("forget_ratio", "learn_ratio"):
        ratio = getattr(allo, key)
        if ratio is not None and (key == "learn_ratio" or allo.forget):
            path = mask_file(neurons_dir, ratio)
            out[f"{key.split('_')[0]}_mask_sha256"] = sha256_file(path) if path.is_file() else None
    if allo.forget and allo.token_weights:
        path = Path(rewards_dir) / "token_scores.safetensors"
        out["token_scores_sha256"] = sha256_file(path) if path.is_file() else None
    return out


def variant_masks(ratio: float | None, block: str, model: Any,
                  neurons_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """The masks one stage trains under: the neurons-stage file for ``ratio`` (None: all ones), limited to
    ``block``'s decoder layers when it is not "all"; None when nothing is masked at all."""
    layers = None if block == "all" else layer_blocks(num_layers(model))[block]
    if ratio is None:
        if layers is None:
            return None
        ones = {n: torch.ones_like(p, dtype=torch.float32) for n, p in model.named_parameters() if p.requires_grad}
        return restrict_to_layers(ones, layers)
    return load_masks(mask_file(neurons_dir, ratio), model, layers)


def load_token_weights(rewards_dir: str | Path) -> dict[str, torch.Tensor]:
    """pair id -> r_t per rejected training token, from ``rewards_dir/token_scores.safetensors``."""
    store = load_token_scores(rewards_dir)
    return {pair_id: store.pair(pair_id)["rejected_weight"] for pair_id in store.ids}


def _run_stage(params: Params, section: VariantSection, stage: str, model: Any, tokenizer: Any, rows: list[dict],
               ref: Any, masks: dict | None, output_dir: Path, weights: dict | None, callbacks: list | None):
    from datasets import Dataset

    allo = section.allo
    trainer_section = section if stage == "learn" else VariantSection(peft="none", trainer=allo.forget_trainer)
    args = dpo_config(params, trainer_section, output_dir)
    opt = MaskedAdamW.for_model(model, masks, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                eps=args.adam_epsilon, weight_decay=args.weight_decay)
    trainer = AlloTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          callbacks=[LogLastStep(), *(callbacks or [])], ref_logps=ref, optimizers=(opt, None),
                          allo_stage=stage, top_eps=allo.top_eps if stage == "learn" else 1.0,
                          token_weights=weights if stage == "forget" else None)
    return trainer, train(trainer)


def fit(params: Params, variant: str, section: VariantSection, prepared: tuple, config: dict[str, Any],
        callbacks: list | None = None) -> tuple[Any, dict[str, Any]]:
    """Forgetting (if on) then learning for the ALLO variant ``variant`` (its resolved ``section``, which has an
    ``allo:`` part); returns (the learning trainer, metrics)."""
    rows, dropped, ref, model, tokenizer, _ = prepared
    allo = section.allo
    inputs = config["inputs"]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    root = work_dir("align", config)
    metrics: dict[str, Any] = {"variant": variant, "peft": "none", "n_layers": num_layers(model),
                               "allo": allo.model_dump(), "dropped_pairs": dropped}
    if allo.forget:
        weights = load_token_weights(inputs["rewards_dir"]) if allo.token_weights else None
        masks = variant_masks(allo.forget_ratio, allo.block, model, inputs["neurons_dir"])
        _, forget = _run_stage(params, section, "forget", model, tokenizer, rows, ref, masks, root / "forget",
                               weights, callbacks)
        metrics["forget"] = {k: v for k, v in forget.items() if k != "log"}
        metrics["forget_mask_params"] = mask_count(masks) if masks is not None else count_parameters(model)
    masks = variant_masks(allo.learn_ratio, allo.block, model, inputs["neurons_dir"])
    trainer, learn = _run_stage(params, section, "learn", model, tokenizer, rows, ref, masks, root / "learn", None,
                                callbacks)
    metrics["learn_mask_params"] = mask_count(masks) if masks is not None else count_parameters(model)
    metrics.update(learn)
    metrics["updated_params"] = int(sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters()))
    return trainer, metrics
