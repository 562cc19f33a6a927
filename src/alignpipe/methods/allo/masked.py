"""ALLO's masked AdamW: Adam moments from the full gradient, the update applied only where a neuron mask is 1.

Usage::

    from alignpipe.methods.allo.masked import MaskedAdamW, load_masks
    masks = load_masks("data/neurons/mask_learn.safetensors", model)          # name -> 0/1 tensor, shape-checked
    opt = MaskedAdamW.for_model(model, masks, lr=5e-6, weight_decay=0.0)
    trainer = DPOTrainer(model=model, args=args, ..., optimizers=(opt, None))  # any transformers/TRL Trainer

One step, per parameter p with gradient g and mask M (RUCAIBox/ALLO ``MaskAdamW_HF``, the transformers-style
AdamW it derives from)::

    m = β1·m + (1-β1)·g            v = β2·v + (1-β2)·g²          # both moments everywhere (full gradient)
    p -= lr·√(1-β2^t)/(1-β1^t) · (m ⊙ M) / (√v + ε)
    p -= lr·wd·p                                                   # weight decay NOT masked (as the authors)

So with ``weight_decay=0`` (the default here and in the authors' scripts) every entry where M = 0 stays
bit-identical: the masked numerator is exactly 0 there. A nonzero weight decay shrinks every weight, masked or
not, exactly like the reference code; ``mask_weight_decay=True`` restricts it to the mask instead (an option,
off by default). Parameters without a mask entry are updated normally; a mask of all ones is plain AdamW.

Trainer integration is through ``optimizers=(optimizer, None)``: the Trainer builds its LR scheduler on it,
saves and restores its state in checkpoints (the masks are not state: they come from the neurons stage).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from alignpipe.utils.io import DataError


class MaskedAdamW(Optimizer):
    """AdamW whose update is multiplied by a fixed 0/1 mask per parameter (moments use the full gradient).

    Args:
        params: parameters (or param groups) to optimize.
        masks: parameter -> mask tensor of the same shape (nonzero = update; kept as bool); parameters not in
            it are unmasked.
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW`` (eps is added to √v, not to the bias-corrected √v̂,
            as in transformers' AdamW and the authors' optimizer).
        mask_weight_decay: apply the decay only where the mask is 1 (default False: unmasked, as the authors).
    """

    def __init__(self, params: Iterable[Any], masks: dict[torch.Tensor, torch.Tensor] | None = None,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, mask_weight_decay: bool = False):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid MaskedAdamW settings lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.mask_weight_decay = mask_weight_decay
        self.masks: dict[torch.Tensor, torch.Tensor] = {}
        for p, m in (masks or {}).items():
            if m.shape != p.shape:
                raise DataError(f"mask of shape {tuple(m.shape)} does not fit a parameter of shape {tuple(p.shape)}")
            self.masks[p] = m.to(device=p.device, dtype=torch.bool)  # 1 byte per entry (8 GB at 8B, not 16)

    @classmethod
    def for_model(cls, model: torch.nn.Module, masks: dict[str, torch.Tensor] | None, **kwargs: Any) -> "MaskedAdamW":
        """One group of the model's trainable parameters; ``masks`` keyed by ``named_parameters`` names."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        by_param = {p: masks[n] for n, p in named if masks is not None and n in masks}
        return cls([p for _, p in named], by_param, **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            by_device: dict[Any, list[torch.Tensor]] = {}
            for p in params:  # multi-tensor (foreach) kernels need one device and dtype per call
                by_device.setdefault((p.device, p.dtype), []).append(p)
            for group_params in by_device.values():
                self._update(group, group_params)
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """One AdamW step for parameters on one device, with multi-tensor kernels (as torch's foreach AdamW)."""
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)  # m = β1 m + (1-β1) g
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denom, group["eps"])
        numer = [m * self.masks[p] if p in self.masks else m for p, m in zip(params, exp_avgs)]
        steps = [float(self.state[p]["step"]) for p in params]
        sizes = [-group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t) for t in steps]
        torch._foreach_addcdiv_(params, numer, denom, sizes)
        if group["weight_decay"] > 0.0:
            decay = [p * self.masks[p] if self.mask_weight_decay and p in self.masks else p for p in params]
            torch._foreach_add_(params, decay, alpha=-group["lr"] * group["weight_decay"])


def load_masks(path: str | Path, model: torch.nn.Module,
               block_layers: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Read a neurons-stage mask file and check it against ``model``; optionally keep only some decoder layers.

    Args:
        path: a ``mask_*.safetensors`` file (parameter name -> uint8 0/1 tensor).
        model: the model to train; every mask must name one of its parameters with the same shape, and every
            trainable parameter must have a mask (a file from another model fails here, not mid-training).
        block_layers: when given, mask entries outside these decoder layers (``model.layers.<i>.``) and outside
            the decoder (embeddings, final norm) are zeroed: the ALLO mask intersected with a layer block.

    Raises:
        DataError: missing file, a name the model does not have, a shape mismatch, a parameter without a mask, or a
            mask holding values other than 0/1 (e.g. neuron scores).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: neuron mask not found (run the neurons stage)")
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise DataError(f"{path}: not a neuron mask file (safetensors of parameter name -> 0/1 tensor): {err}; "
                        "rerun the neurons stage") from None
    params = dict(model.named_parameters())
    unknown = sorted(set(stored) - set(params))
    wrong = [f"{n}: mask {tuple(stored[n].shape)} vs model {tuple(params[n].shape)}"
             for n in sorted(stored) if n in params and stored[n].shape != params[n].shape]
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in stored)
    if unknown or wrong or missing:
        parts = []
        if wrong:
            parts.append(f"shapes differ ({'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''})")
        if unknown:
            parts.append(f"unknown parameters {unknown[:3]}{' ...' if len(unknown) > 3 else ''}")
        if missing:
            parts.append(f"no mask for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        raise DataError(f"{path}: the mask was computed for a different model shape: {', '.join(parts)}; "
                        "rerun the neurons stage for this model")
    for name in sorted(stored):  # scores (or any value but 0/1) would scale the update instead of selecting
        mask = stored[name]
        if mask.dtype == torch.bool:
            continue
        off = (mask != 0) & (mask != 1)
        if off.any():
            values = mask[off].unique()
            shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + (", ..." if len(values) > 5 else "")
            raise DataError(f"{path}: tensor '{name}' holds values other than 0/1 ({int(off.sum())} of "
                            f"{mask.numel()} entries, e.g. {shown}); a neuron mask holds only 0 and 1 (1 = train "
                            "the weight): rerun the neurons stage, or threshold the scores into a 0/1 mask")
    masks = {n: m.to(torch.float32) for n, m in stored.items()}
    return masks if block_layers is None else restrict_to_layers(masks, block_layers)


def restrict_to_layers(masks: dict[str, torch.Tensor], layers: list[int]) -> dict[str, torch.Tensor]:
    """Zero (in place) every mask outside the decoder layers ``layers`` (``...layers.<i>.``), embeddings and final
    norm included: the neurons left are those of the block."""
    keep = set(layers)
    for name, m in masks.items():
        found = re.search(r"\blayers\.(\d+)\.", name)
        if found is None or int(found.group(1)) not in keep:
            m.zero_()
    return masks


def mask_count(masks: dict[str, torch.Tensor]) -> int:
    """Entries selected (== 1) over all masks."""
    return int(sum(int(m.count_nonzero()) for m in masks.values()))
