"""A lazily loaded greedy chat responder over a local transformers model (the evaluation stages' generator).

Usage::

    respond = chat_model("data/sft/model", params.model, max_new_tokens=160, batch_size=32)
    outputs = cached_map(respond, prompts, store)   # alignpipe.utils.cache: resumable, keyed by prompt
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def chat_model(name_or_path: str | Path, model_section: Any, max_new_tokens: int, batch_size: int):
    """``prompts -> greedy outputs`` of a local transformers model, each prompt one user turn in its chat template.

    The model is loaded on the first call, so a run whose outputs are all cached never loads it.
    """
    loaded: list[Any] = []

    def respond(prompts: list[str]) -> list[str]:
        # Lazy: alignpipe.models pulls in torch + transformers, which a fully cached run never needs.
        from alignpipe.models import generate as greedy
        from alignpipe.models import load_model

        if not loaded:
            loaded.extend(load_model(str(name_or_path), model_section))
        chats = [[{"role": "user", "content": p}] for p in prompts]
        return list(greedy(loaded[0], loaded[1], chats, max_new_tokens, batch_size))

    return respond
