"""Frozen-prefix reuse: block-restricted training runs only the layers from its lowest trained one upwards.

    prefix = FrozenPrefix.install_if_frozen(model)     # None when the model has no frozen prefix to reuse
    trainer.train()                                    # steps run layers L..N-1 on cached hidden states
    prefix.stats()                                     # {"first_trained_layer": L, "hits": ..., "misses": ...}
    prefix.remove()

In Mid- and Global-Align (LoRA on one block of the decoder) every layer below the block, and the embeddings, are
frozen and identical in policy and reference: the hidden states entering the lowest trained layer L are a
function of the tokens alone and never change during training. TRL, like LLaMA-Factory and OpenRLHF, still runs
the embeddings and all L frozen layers forward on every step (the backward already stops at L here, see
``align.StopBackwardBelowAdapters``). This module computes them once per sequence, on first use, keeps them
in memory keyed by the sequence's tokens (computed one sequence at a time, without padding, so a state is a
function of its tokens alone and a resumed run reuses exactly what an uninterrupted one would), and from then
on starts the decoder at layer L: the decoder's
``forward`` is wrapped so that it is called with ``inputs_embeds`` = the cached states and ``layers`` =
layers L..N-1 for that call. Position ids, rotary embeddings and the causal mask are made by the decoder itself
from the same sequence length and attention mask, so the result is the full forward's to float tolerance, and
so are the loss and the gradients (``tests/unit/train/test_prefix.py``). Every epoch after the first, and every
step of ``bench/dpo_step.py`` (one batch), reuses them.

What makes a prefix reusable, checked by :meth:`FrozenPrefix.install_if_frozen`: no parameter below layer L and
no embedding requires grad, no dropout in the decoder's config (a frozen layer with active dropout is not a
function of its input), and the decoder is a Hugging Face decoder with ``layers`` and ``norm`` (Llama, Qwen,
Mistral, SmolLM, ...). Calls it does not cover go through unchanged: generation (a KV cache), ``inputs_embeds``
given, and left-padded or gapped attention masks. Memory: one float tensor of tokens × hidden size per sequence
(two per pair), e.g. ~0.2 GB for the default run's 1.5k pairs of ~130 tokens at hidden 128.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def _decoder(model: Any) -> nn.Module | None:
    """The module holding ``layers`` and ``norm`` (LlamaModel inside LlamaForCausalLM, inside a PeftModel)."""
    for module in model.modules():
        if isinstance(getattr(module, "layers", None), nn.ModuleList) and hasattr(module, "norm") \
                and hasattr(module, "embed_tokens"):
            return module
    return None


def first_trained_layer(decoder: nn.Module) -> int | None:
    """Index of the lowest decoder layer with a parameter that requires grad; None when something below the
    layers (the embeddings) trains or nothing does."""
    if any(p.requires_grad for p in decoder.embed_tokens.parameters()):
        return None
    trained = [int(m.group(1)) for name, p in decoder.layers.named_parameters(prefix="layers")
               if p.requires_grad and (m := _LAYER.search(name))]
    return min(trained) if trained else None


class FrozenPrefix:
    """Cached hidden states entering layer ``first`` of ``decoder``, used in place of its frozen prefix."""

    def __init__(self, decoder: nn.Module, first: int):
        self.decoder, self.first = decoder, first
        self.cache: dict[bytes, torch.Tensor] = {}
        self.hits = self.misses = self.bypassed = 0
        self._forward = decoder.forward

    @classmethod
    def install_if_frozen(cls, model: Any) -> "FrozenPrefix | None":
        """Wrap the decoder of ``model`` when layers 0..L-1 and the embeddings are frozen for some L > 0."""
        decoder = _decoder(model)
        if decoder is None:
            return None
        config = getattr(decoder, "config", None)
        if any(float(getattr(config, key, 0.0) or 0.0) > 0 for key in _DROPOUT_KEYS):
            return None
        first = first_trained_layer(decoder)
        if not first:  # None (embeddings train / nothing trains) or 0 (the bottom layer trains): nothing to reuse
            return None
        prefix = cls(decoder, first)
        decoder.forward = prefix._wrapped  # an instance attribute: nn.Module.__call__ looks it up
        return prefix

    def remove(self) -> None:
        """Restore the decoder's own forward and drop the cache."""
        if self.decoder.__dict__.get("forward") == self._wrapped:
            del self.decoder.forward
        self.cache.clear()

    def stats(self) -> dict[str, int]:
        return {"first_trained_layer": self.first, "hits": self.hits, "misses": self.misses,
                "bypassed": self.bypassed, "cached_sequences": len(self.cache)}

    def _wrapped(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> Any:
        lengths = _right_padded_lengths(input_ids, attention_mask) if not args else None
        if lengths is None or kwargs.get("inputs_embeds") is not None or kwargs.get("past_key_values") is not None \
                or kwargs.get("use_cache"):
            self.bypassed += 1
            return self._forward(input_ids, attention_mask, *args, **kwargs)
        states = self._states(input_ids, attention_mask, lengths)
        kwargs.pop("inputs_embeds", None)
        layers = self.decoder.layers
        self.decoder.layers = nn.ModuleList(list(layers)[self.first :])
        try:
            return self._forward(None, attention_mask, inputs_embeds=states, **kwargs)
        finally:
            self.decoder.layers = layers

    def _states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """The hidden states entering layer ``first`` for every row: cached, or computed now for the missing rows."""
        keys = [input_ids[i, :n].cpu().numpy().tobytes() for i, n in enumerate(lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        unique = list({keys[i]: i for i in missing}.values())  # a sequence twice in the batch is computed once
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        for i in unique:  # one sequence at a time, unpadded: its states are a function of its tokens alone
            n = lengths[i]
            self.cache[keys[i]] = self._prefix(input_ids[i : i + 1, :n], attention_mask[i : i + 1, :n])[0].clone()
        hidden = next(iter(self.cache.values())).shape[-1]
        dtype = next(iter(self.cache.values())).dtype
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1], hidden, dtype=dtype, device=input_ids.device)
        for i, key in enumerate(keys):
            out[i, : lengths[i]] = self.cache[key].to(input_ids.device)
        return out

    @torch.no_grad()
    def _prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Layers 0..first-1 on ``input_ids`` (the decoder's own forward, its final norm left out)."""
        layers, norm = self.decoder.layers, self.decoder.norm
        self.decoder.layers = nn.ModuleList(list(layers)[: self.first])
        self.decoder.norm = nn.Identity()
        try:
            return self._forward(input_ids, attention_mask, use_cache=False).last_hidden_state
        finally:
            self.decoder.layers, self.decoder.norm = layers, norm


def _right_padded_lengths(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> list[int] | None:
    """Each row's length when every row is ones then zeros (right padding); None otherwise."""
    if input_ids is None or input_ids.dim() != 2:
        return None
    if attention_mask is None:
        return [input_ids.shape[1]] * input_ids.shape[0]
    if attention_mask.dim() != 2:
        return None
    lengths = attention_mask.sum(dim=1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions[None, :] < lengths[:, None]):
        return None
    return [int(n) for n in lengths]
