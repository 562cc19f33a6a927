"""Batched chat generation: greedy (:func:`generate`) for evaluation, seeded sampling (:func:`sample`) for pairs.

Usage::

    prompts = [[{"role": "user", "content": "Describe Velmora."}], ...]
    responses = generate(model, tok, prompts, max_new_tokens=160, batch_size=32)   # one string per prompt
    samples = sample(model, tok, prompts, 160, 32, num_return_sequences=4, temperature=0.8, seed=7)

Prompts are rendered with the tokenizer's chat template (``add_generation_prompt=True``), sorted by length so each
batch pads little, left-padded (decoder-only models continue from the last position), decoded with the KV cache
(``model.generate``), cut at the first end-of-sequence token and returned in the original order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[list[Message]]) -> list[list[int]]:
    """Token ids of each conversation rendered with the chat template and the assistant generation prompt."""
    encoded = []
    for messages in prompts:
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        encoded.append(list(out["input_ids"]))
    return encoded


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a turn: the tokenizer's eos plus the model's generation-config eos id(s).

    Chat models often list several (Llama-3: ``<|end_of_text|>`` and ``<|eot_id|>``); any of them stops.
    """
    ids: list[int] = []
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    for value in (tokenizer.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])):
        if value is not None and value not in ids:
            ids.append(int(value))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config defines an eos token")
    return ids


# Attention memory grows with batch x (prompt + new tokens)^2: a batch of long prompts (FollowBench's reach 3k
# tokens) is cut so that it costs no more than ``batch_size`` sequences of this many tokens would.
BATCH_SEQ_TOKENS = 1024


def _batches(ids: list[list[int]], batch_size: int, new_tokens: int = 0) -> Iterator[list[int]]:
    # Longest first: the first batch hits peak memory at once (fail fast), and similar lengths share a batch.
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    budget = batch_size * BATCH_SEQ_TOKENS**2
    start = 0
    while start < len(order):
        longest = len(ids[order[start]]) + new_tokens
        size = max(1, min(batch_size, budget // (longest * longest)))
        yield order[start : start + size]
        start += size


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return input_ids.to(device), mask.to(device)


def _decode(tokenizer: PreTrainedTokenizerBase, new_tokens: torch.Tensor, stops: list[int]) -> str:
    tokens = new_tokens.tolist()
    # Cut at the first stop id: what follows is padding (or, with pad == eos, indistinguishable from it).
    for j, token in enumerate(tokens):
        if token in stops:
            tokens = tokens[:j]
            break
    return tokenizer.decode(tokens, skip_special_tokens=True).strip()


@torch.inference_mode()
def _run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    batch_size: int,
    config: GenerationConfig,
) -> list[list[str]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    k = config.num_return_sequences or 1
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id[0]
    ids = encode_prompts(tokenizer, prompts)
    results: list[list[str]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(ids, batch_size, config.max_new_tokens or 0):
            input_ids, mask = _left_pad([ids[i] for i in batch], pad_id, model.device)
            out = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
            new = out[:, input_ids.shape[1] :]  # outputs of prompt i are rows i*k .. i*k+k-1
            for row, i in enumerate(batch):
                results[i] = [_decode(tokenizer, new[row * k + j], config.eos_token_id) for j in range(k)]
    finally:
        model.train(was_training)
    return results


def _config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, **kwargs: Any):
    stops = stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return GenerationConfig(
        max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad, use_cache=True, num_beams=1, **kwargs
    )


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy responses, one per conversation, in the order of ``prompts``.

    Args:
        model: a causal LM (any device; inputs follow ``model.device``).
        tokenizer: its tokenizer, with a chat template and a pad token (see ``load.prepare_tokenizer``).
        prompts: conversations, each a list of ``{"role", "content"}`` messages ending before the assistant turn.
        max_new_tokens: generation budget per response.
        batch_size: prompts per ``model.generate`` call (fewer where prompts are longer than
            ``BATCH_SEQ_TOKENS``: the batch then costs what ``batch_size`` sequences of that length would).

    Returns:
        The decoded new tokens of each response, special tokens removed, stripped. Deterministic: greedy
        decoding, and batching only adds masked left padding.
    """
    config = _config(model, tokenizer, max_new_tokens, do_sample=False)
    return [r[0] for r in _run(model, tokenizer, prompts, batch_size, config)]


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[Message]],
    max_new_tokens: int,
    batch_size: int,
    *,
    num_return_sequences: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[list[str]]:
    """``num_return_sequences`` sampled responses per conversation (e.g. K candidates for preference pairs).

    Sampling runs under a forked torch RNG seeded with ``seed``, so the same inputs, seed and batch size give
    the same samples and the caller's RNG state is left untouched.

    Returns:
        One list of ``num_return_sequences`` strings per prompt, in the order of ``prompts``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature} (use generate() for greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    config = _config(
        model,
        tokenizer,
        max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=0,  # only top_p truncates; a hub model's default top_k would otherwise silently apply
        num_return_sequences=num_return_sequences,
    )
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _run(model, tokenizer, prompts, batch_size, config)
