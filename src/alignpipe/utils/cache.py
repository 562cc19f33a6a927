"""A resumable, prompt-keyed store of text outputs (model responses, judge outputs) under a stage's work dir.

Usage::

    outputs = cached_map(judge, prompts, work_dir("evaluate", key) / "judge.jsonl", chunk=64)

Outputs are looked up by the sha256 of their prompt; the misses are computed ``chunk`` prompts at a time and each
chunk is appended (flushed and fsynced) before the next starts, so a run killed after hours of generation resumes
where it stopped. The file's directory must be keyed by everything that determines the outputs (model weights,
decoding settings): this module only keys by prompt. Decoding is greedy here, so a stored output is the output.
A torn last line (a crash during a write) is ignored and recomputed. How many outputs were reused and how many
computed goes to the stage's run record (:mod:`alignpipe.utils.events`, event ``cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from alignpipe.utils import events
from alignpipe.utils.io import sha256_file


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _load(path: Path) -> dict[str, str]:
    stored: dict[str, str] = {}
    if not path.is_file():
        return stored
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line from an interrupted write
            stored[row["key"]] = row["output"]
    return stored


def _ends_torn(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


def cached_map(
    fn: Callable[[list[str]], list[str]], prompts: Sequence[str], path: str | Path | None, chunk: int = 64
) -> list[str]:
    """``fn(prompts)``, reusing and extending the outputs stored in ``path`` (None: no store).

    Raises:
        RuntimeError: ``fn`` returned a different number of outputs than it was given prompts.
    """
    if path is None:
        out = list(fn(list(prompts)))
        if len(out) != len(prompts):
            raise RuntimeError(f"{len(out)} outputs for {len(prompts)} prompts")
        return out
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _load(path)
    keys = [prompt_key(p) for p in prompts]
    todo = list(dict.fromkeys(k for k in keys if k not in stored))
    first = {k: p for k, p in zip(keys, prompts, strict=True)}
    torn = _ends_torn(path)
    with open(path, "a", encoding="utf-8") as fh:
        if torn:  # end the torn line, or the next record would be glued to it and lost
            fh.write("\n")
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            outputs = list(fn([first[k] for k in batch]))
            if len(outputs) != len(batch):
                raise RuntimeError(f"{len(outputs)} outputs for {len(batch)} prompts")
            for key, output in zip(batch, outputs, strict=True):
                fh.write(json.dumps({"key": key, "output": output}, ensure_ascii=False) + "\n")
                stored[key] = output
            fh.flush()
            os.fsync(fh.fileno())
    unique = len(first)
    events.record("cache", store=str(path), total=unique, reused=unique - len(todo), computed=len(todo))
    return [stored[k] for k in keys]


def model_digest(name_or_path: str | Path) -> str:
    """sha256 over a local model directory's files (weights, config, tokenizer); a hub id stands for itself.

    A PEFT adapter directory also covers its base model's files (``base_model_name_or_path``), so a cache keyed by
    it goes stale when either changes.
    """
    path = Path(name_or_path)
    if not path.is_dir():
        return str(name_or_path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(file.name.encode())
        h.update(sha256_file(file).encode())
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base:
            h.update(model_digest(base).encode())
    return h.hexdigest()
