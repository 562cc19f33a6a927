"""BMC's token-weighted DPO inside TRL 1.16's ``DPOTrainer``, on top of :class:`StoredRefDPOTrainer`.

Usage::

    from alignpipe.methods.bmc.trainer import BMCDPOTrainer
    trainer = BMCDPOTrainer(model=model, args=dpo_config(...), train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, ref_logps=load_ref_logps("data/reflogps"),
                            delta=2.0, autojunk=True)
    trainer.train()

The loss and the weights are :mod:`alignpipe.methods.bmc.loss`. What this module adds is the plumbing TRL needs:

- **Masks in TRL's tokenization.** After TRL has tokenized the pairs (``prompt_ids``/``chosen_ids``/
  ``rejected_ids``, the exact ids it trains on), :meth:`BMCDPOTrainer.prepare_tokenized` diffs
  ``prompt_ids + rejected_ids`` against ``prompt_ids + chosen_ids`` (the whole sequences, as the authors) and
  stores the response part of the 0/1 masks as two extra columns. TRL's ``Trainer`` drops columns that are
  not in its signature list (``remove_unused_columns``), so ``extra_columns`` keeps them (the hooks are those of
  :mod:`alignpipe.train.trl_ext`), and :class:`BMCCollator` (TRL's collator plus one output) lays them out exactly
  like ``completion_mask``: prompt zeros, the mask, the same truncation slice and right padding. So ``bmc_mask[i, t]``
  belongs to ``input_ids[i, t]``; the model's ``log_probs[:, t]`` scores token t+1, hence ``bmc_mask[:, 1:]``.
- **Reference without a reference model.** The reference weights use the reference's own probabilities; the
  reflogps stage stores every response token's reference log-prob, so the weighted reference sums are computed
  once per pair from the store (:meth:`BMCDPOTrainer.reference_logps`, as :class:`StoredRefDPOTrainer` does for
  plain sums) and travel in TRL's ``ref_chosen_logps``/``ref_rejected_logps`` columns. They equal what an online
  reference forward would give (same tokens, checked), at no cost per step.
- **The loss.** :meth:`BMCDPOTrainer.pair_loss` runs the policy forward as TRL does (fused LM head, labels = response
  tokens), weights the per-token log-probs and applies sigmoid DPO, logging TRL's reward metrics plus
  ``bmc/modified_frac`` (share of response tokens with m_t = 1) and ``bmc/weight_mean`` (mean w_t over them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.dpo_trainer import DataCollatorForPreference

from alignpipe.config import ConfigError
from alignpipe.methods.bmc.loss import bonus_logps, modified_tokens, sigmoid_dpo, stopword_ids, weighted_logps
from alignpipe.train.dpo import StoredRefDPOTrainer, attach_ref_logps

MASKS = ("chosen_bmc_mask", "rejected_bmc_mask")


@dataclass
class BMCCollator(DataCollatorForPreference):
    """TRL's preference collator plus ``bmc_mask``, aligned token for token with ``input_ids``.

    Examples without mask columns (TRL's reference-precompute path) collate exactly as TRL's own collator.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if MASKS[0] not in examples[0]:
            return out
        rows = [[0] * len(e["prompt_ids"]) + list(e[mask]) for mask in MASKS for e in examples]
        if self.max_length is not None:
            keep_start = self.truncation_mode == "keep_start"
            sl = slice(None, self.max_length) if keep_start else slice(-self.max_length, None)
            rows = [r[sl] for r in rows]
        mask = torch.zeros_like(out["completion_mask"])
        for i, r in enumerate(rows):
            mask[i, : len(r)] = torch.tensor(r, dtype=mask.dtype)
        out["bmc_mask"] = mask * out["completion_mask"]
        return out


class BMCDPOTrainer(StoredRefDPOTrainer):
    """:class:`StoredRefDPOTrainer` with BMC's token-weighted sequence log-probs (policy and reference).

    Args (besides DPOTrainer's and ``ref_logps``):
        delta: δ, the cap of the weight bonus ``min(1/π, δ)``; 0 gives plain DPO.
        autojunk: difflib's autojunk heuristic in the token diff.
        stop_ids: token ids never marked as modified (default: the tokenizer's single-token English stopwords).
    """

    extra_columns = MASKS  # the masks reach BMCCollator (Trainer drops columns it does not know)

    def __init__(self, *args: Any, delta: float, autojunk: bool = True, stop_ids: Any = None, **kwargs: Any):
        config = kwargs.get("args")
        if config is not None:
            _check_supported(config)
        if delta < 0:
            raise ConfigError(f"BMC delta = {delta}: must be >= 0")
        tokenizer = kwargs.get("processing_class")
        self.bmc_delta = float(delta)
        self.bmc_autojunk = autojunk
        self.bmc_stop_ids = frozenset(stop_ids) if stop_ids is not None else stopword_ids(tokenizer)
        if kwargs.get("data_collator") is None and config is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            kwargs["data_collator"] = BMCCollator(pad_token_id=pad, max_length=config.max_length,
                                                  truncation_mode=config.truncation_mode,
                                                  pad_to_multiple_of=config.pad_to_multiple_of)
        super().__init__(*args, **kwargs)

    # ---- data ------------------------------------------------------------------------------------------------
    def prepare_tokenized(self, dataset: Any, name: str) -> Any:
        """Add the 0/1 masks of modified tokens (``chosen_bmc_mask``/``rejected_bmc_mask``) to TRL's tokens."""
        if MASKS[0] in dataset.column_names:
            return dataset
        stop, autojunk = self.bmc_stop_ids, self.bmc_autojunk

        def add_masks(example: dict[str, Any]) -> dict[str, Any]:
            m_rejected, m_chosen = modified_tokens(example["rejected_ids"], example["chosen_ids"], stop, autojunk,
                                                   prompt=example["prompt_ids"])
            return {MASKS[0]: m_chosen, MASKS[1]: m_rejected}

        return dataset.map(add_masks, desc=f"BMC token diff of the {name} dataset")

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        """The weighted reference sums of every pair, from the stored per-token values (tokens checked)."""
        return attach_ref_logps(dataset, self._stored_ref, self.data_collator, weigh=self._weighted_reference)

    def _weighted_reference(self, row: dict[str, Any], stored: dict[str, Any]) -> tuple[float, float]:
        """Σ w_t log π_ref(y_t) of one pair's fed tokens, with w_t from the stored reference probabilities."""
        batch = self.data_collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids", *MASKS)}])
        sums = []
        for i, part in enumerate(("chosen", "rejected")):
            mask = batch["bmc_mask"][i][batch["completion_mask"][i].bool()]
            logps = stored[f"{part}_logps"]
            if mask.shape != logps.shape:
                raise RuntimeError(f"pair {row['id']!r}: BMC {part} mask and stored log-probs differ in length")
            sums.append(stored[f"{part}_sum"] + float(bonus_logps(logps, mask, self.bmc_delta)))
        return sums[0], sums[1]

    # ---- loss ------------------------------------------------------------------------------------------------
    def pair_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        """Sigmoid DPO on the token-weighted policy sums against the weighted stored reference sums."""
        mode = "train" if self.model.training else "eval"
        shift = inputs["completion_mask"][..., 1:]
        per_token_logps = self.policy_logps(model, inputs)
        mask = inputs["bmc_mask"][..., 1:] * shift
        logps = weighted_logps(per_token_logps, mask, self.bmc_delta)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # batch is [chosen, rejected]
        losses, chosen_rewards, rejected_rewards = sigmoid_dpo(
            chosen_logps, rejected_logps, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"], self.beta)
        loss = 0.0 + losses.mean() * self.loss_weights[0]  # TRL's accumulation, so δ = 0 matches it bit for bit
        self._log_bmc_metrics(mode, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, per_token_logps,
                              mask, shift)
        if return_outputs:
            with torch.no_grad():
                outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            return loss, outputs
        return loss

    def _log_bmc_metrics(self, mode, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps, per_token_logps,
                         mask, shift) -> None:
        gather = self.accelerator.gather
        metrics = self._metrics[mode]
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        metrics["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        with torch.no_grad():
            weights = 1.0 + torch.clamp(torch.exp(-per_token_logps.detach()), max=self.bmc_delta)
            n_marked = gather(mask.sum()).sum()
            n_tokens = gather(shift.sum()).sum()
            weight_sum = gather((weights * mask).sum()).sum()
        metrics["bmc/modified_frac"].append((n_marked / n_tokens.clamp(min=1)).item())
        metrics["bmc/weight_mean"].append((weight_sum / n_marked).item() if n_marked > 0 else 1.0)


def _check_supported(args: Any) -> None:
    """BMC is defined on sigmoid DPO with plain sums; refuse DPOConfig options that would change the loss."""
    problems = []
    if list(args.loss_type) != ["sigmoid"]:
        problems.append(f"loss_type {args.loss_type} (BMC needs ['sigmoid'])")
    if args.ld_alpha is not None:
        problems.append(f"ld_alpha {args.ld_alpha} (BMC sums are unnormalized)")
    if args.f_divergence_type != "reverse_kl":
        problems.append(f"f_divergence_type {args.f_divergence_type!r} (BMC needs 'reverse_kl')")
    if args.use_weighting:
        problems.append("use_weighting true (WPO weights are not part of BMC)")
    if not args.precompute_ref_log_probs:
        problems.append("precompute_ref_log_probs false (the weighted reference comes from the reflogps store)")
    if problems:
        raise ConfigError("a BMC variant's DPOConfig has unsupported settings: " + "; ".join(problems))
