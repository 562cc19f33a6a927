"""A local transformers model as a backend: batched generation with the chat template and left padding.

    backend = HFBackend("path/or/org-name", ModelSection(dtype="bfloat16"), max_prompt_tokens=None)

The model loads on the first miss (:func:`alignpipe.models.load_model`: safetensors only, left padding, chat
template). Requests of a chunk that share (temperature, max_tokens) are generated together: greedy at
temperature 0, else sampled under a torch RNG seeded from the chunk's request seeds. A prompt longer than
``max_prompt_tokens`` (default: the model's context minus the generation budget) keeps its LAST tokens (the
instruction and the assistant header sit at the end of every template) and is counted as truncated.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig

from alignpipe.config import ModelSection
from alignpipe.llm.base import ChatRequest, Completion, LLMError
from alignpipe.models import load_model
from alignpipe.models.generate import encode_prompts, stop_ids

log = logging.getLogger(__name__)


class HFBackend:
    kind, remote, batched = "hf", True, True

    def __init__(self, model: str, model_section: ModelSection | None = None, max_prompt_tokens: int | None = None,
                 key: str | None = None):
        self.name = str(model)
        self.key = key  # the params key of the model (roles.<role>.model), named in load errors
        self.section = model_section or ModelSection()
        self.max_prompt_tokens = max_prompt_tokens
        self._model = self._tok = None

    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"kind": self.kind, "model": self.name, "revision": self.section.revision,
                                 "dtype": self.section.dtype, "max_prompt_tokens": self.max_prompt_tokens}
        path = Path(self.name)
        if path.is_dir():  # a retrained model at the same path must not hit the old answers
            files = sorted(p for p in path.iterdir() if p.is_file())
            ident["files"] = hashlib.sha256(
                repr([(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]).encode()).hexdigest()[:16]
        return ident

    def describe(self) -> str:
        return f"hf model {self.name}"

    def _load(self) -> None:
        if self._model is None:
            self._model, self._tok = load_model(self.name, self.section, padding_side="left", key=self.key)
            log.info("hf backend: loaded %s", self.name)

    @torch.inference_mode()
    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        self._load()
        model, tok = self._model, self._tok
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple[float, int], list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.temperature, r.max_tokens), []).append(i)
        stops = stop_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
        context = getattr(model.config, "max_position_embeddings", None)
        for (temperature, max_tokens), idx in groups.items():
            limit = self.max_prompt_tokens or ((context - max_tokens) if context else None)
            if limit is not None and limit < 1:
                raise LLMError(f"{self.describe()}: max_tokens={max_tokens} leaves no room for a prompt in the "
                               f"model's context of {context} tokens")
            ids = encode_prompts(tok, [requests[i].messages for i in idx])
            cut = [bool(limit) and len(x) > limit for x in ids]
            ids = [x[-limit:] if limit else x for x in ids]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, x in enumerate(ids):
                input_ids[row, width - len(x):] = torch.tensor(x)
                mask[row, width - len(x):] = 1
            sampled = temperature > 0
            config = GenerationConfig(max_new_tokens=max_tokens, eos_token_id=stops, pad_token_id=pad,
                                      use_cache=True, num_beams=1, do_sample=sampled,
                                      **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if sampled else {}))
            seed = int(hashlib.sha256(repr([requests[i].seed for i in idx]).encode()).hexdigest()[:8], 16)
            devices = [model.device] if model.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                gen = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                     generation_config=config)
            new = gen[:, width:].tolist()
            for row, i in enumerate(idx):
                tokens = new[row]
                finish = "length"
                for j, t in enumerate(tokens):
                    if t in stops:
                        tokens, finish = tokens[:j], "stop"
                        break
                out[i] = Completion(text=tok.decode(tokens, skip_special_tokens=True).strip(),
                                    prompt_tokens=len(ids[row]), completion_tokens=len(tokens), finish_reason=finish,
                                    truncated=cut[row])
        return out  # type: ignore[return-value]
