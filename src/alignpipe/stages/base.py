"""The ``base`` stage: train tokenizer + pretrain the built-in model, or resolve ``model.name_or_path``.

Run it (normally through ``python -m flows.base`` / ``dvc repro base``)::

    from alignpipe.config import load_params
    from alignpipe.stages import base as stage
    stage.run(load_params("params.yaml"), world_dir="data/world", out_dir="data/base")

Outputs (``data/base/``): ``model/`` (HF dir: config, ``model.safetensors``, tokenizer files + chat template),
``metrics.json``, ``config.json`` and ``log.csv`` (pretraining loss curve; empty for a resolved model).
Checkpoints live in ``work_dir("base", key)`` where the key covers the config *and* the corpus digest, so a
changed world never resumes a stale run. Outputs hold no wall-clock values: reruns are byte-identical.

:func:`run` is the stage: :func:`train_tokenizer` -> :func:`pretrain`, or :func:`resolve`, then
:func:`alignpipe.models.save.save` (the model directory every training stage writes).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignpipe.config import ConfigError, Params
from alignpipe.models import gguf
from alignpipe.models import pretrain as pt
from alignpipe.models import tokenizer as tk
from alignpipe.models.load import load_model
from alignpipe.models.save import save
from alignpipe.models.training import count_parameters
from alignpipe.utils.io import DataError, dumps, one_line, read_jsonl, sha256_file, work_dir
from alignpipe.utils.seed import derive_seed, seed_everything

logger = logging.getLogger(__name__)

_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def corpus_path(world_dir: str | Path) -> Path:
    path = Path(world_dir) / "corpus.txt"
    if not path.is_file():
        raise DataError(f"{path}: pretraining corpus not found (run the world stage first)")
    return path


def stage_config(params: Params) -> dict[str, Any]:
    """The params sections this stage reads, resolved (written to ``config.json``)."""
    cfg: dict[str, Any] = {"seed": params.seed, "model": params.model.model_dump()}
    if params.model.name_or_path is None:
        cfg["base"] = params.base.model_dump()
        # Defaults merged with overrides: what the Trainer actually ran with (pipeline-owned paths excluded).
        cfg["trainer_resolved"] = {**pt.DEFAULT_TRAINER, **params.base.trainer}
    return cfg


def checkpoint_dir(params: Params, world_dir: str | Path) -> Path:
    """Checkpoint directory keyed by the stage config and the corpus content."""
    key = stage_config(params)
    if params.model.name_or_path is None:
        key["corpus_sha256"] = sha256_file(corpus_path(world_dir))
        if params.base.chat_copies or params.base.tokenizer.include_dialogues:
            key["dialogues_sha256"] = sha256_file(Path(world_dir) / "sft.jsonl")
    return work_dir("base", key)


def read_corpus(world_dir: str | Path) -> list[str]:
    """The corpus documents: ``corpus.txt`` holds documents separated by blank lines (world stage contract)."""
    path = corpus_path(world_dir)
    docs = [doc.strip("\n") for doc in _BLANK_LINE.split(path.read_text(encoding="utf-8")) if doc.strip()]
    if not docs:
        raise DataError(f"{path}: pretraining corpus is empty")
    return docs


def chat_documents(world_dir: str | Path, tokenizer: PreTrainedTokenizerBase, copies: int) -> list[str]:
    """The world's train dialogues (``sft.jsonl``) rendered with the chat template, ``copies`` times.

    Pretraining on them teaches the built-in model the chat format the later stages prompt it with (the plain
    corpus has no special tokens). Train dialogues only: the evaluation pool never reaches pretraining.
    """
    if copies == 0:
        return []
    rows = read_jsonl(Path(world_dir) / "sft.jsonl", required={"prompt": list, "completion": list})
    bos = tokenizer.bos_token or ""
    docs = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False).removeprefix(bos) for r in rows
    ]
    return docs * copies


def dialogue_texts(world_dir: str | Path) -> list[str]:
    """The plain text of the world's train dialogues (``sft.jsonl``: prompt and completion contents)."""
    rows = read_jsonl(Path(world_dir) / "sft.jsonl", required={"prompt": list, "completion": list})
    return ["\n".join(str(m.get("content", "")) for m in r["prompt"] + r["completion"]) for r in rows]


def train_tokenizer(params: Params, world_dir: str | Path = "data/world") -> PreTrainedTokenizerBase:
    """Step 1 (built-in model): byte-level BPE on ``world_dir/corpus.txt`` (deterministic).

    With ``base.tokenizer.include_dialogues`` (on in params.yaml) the train dialogues' text joins the corpus, so
    instruction words become whole tokens ("Lena": 1 token instead of 4) and dialogues are ~2x shorter: copying a
    word from the instruction is then a one-token copy. Measured on the default world (eval HSR at level 1, 48
    groups): with 40 train groups per category it did not pay (12.5% vs 22.9% at 3 SFT epochs; 27.1% vs 35.4% at
    6), but with 120 groups, 2 pretraining and 2 SFT epochs it reached 50.0% (corpus-only tokenizer, 120 groups,
    1 epoch: 27.1%).
    Train dialogues only: the evaluation pool never reaches the tokenizer.
    """
    docs = read_corpus(world_dir)
    if params.base.tokenizer.include_dialogues:
        docs = docs + dialogue_texts(world_dir)
    tokenizer = tk.train_tokenizer(docs, params.base.tokenizer)
    logger.info("tokenizer: %d tokens from %d documents", len(tokenizer), len(docs))
    return tokenizer


def pretrain(
    params: Params, tokenizer: PreTrainedTokenizerBase, world_dir: str | Path = "data/world"
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Step 2 (built-in model): build the Llama model and pretrain it; resumes from the last checkpoint.

    Returns:
        The trained model and its metrics (``log`` holds the loss curve).
    """
    arch, block_size = params.base.architecture, params.base.block_size
    if block_size > arch.max_position_embeddings:
        raise ConfigError(
            f"params.yaml: base.block_size = {block_size}: must be <= base.architecture.max_position_embeddings "
            f"({arch.max_position_embeddings})"
        )
    docs = read_corpus(world_dir) + chat_documents(world_dir, tokenizer, params.base.chat_copies)
    blocks = pt.pack_corpus(docs, tokenizer, block_size)
    model = pt.build_model(arch, tokenizer, seed=derive_seed(params.seed, "base", "init"))
    ckpt = checkpoint_dir(params, world_dir)
    logger.info("pretraining %d params on %d blocks; checkpoints in %s", count_parameters(model), len(blocks), ckpt)
    result = pt.pretrain(model, tokenizer, blocks, params.base, params.seed, ckpt)
    metrics = {
        "source": "builtin",
        "n_params": count_parameters(model),
        "vocab_size": len(tokenizer),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "eval_loss": result.eval_loss,
        "eval_perplexity": result.eval_perplexity,
        "n_train_blocks": result.n_train_blocks,
        "n_eval_blocks": result.n_eval_blocks,
        "block_size": params.base.block_size,
        "log": result.log,
    }
    return model, metrics


def resolve(params: Params) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Alternative to steps 1-2: load ``model.name_or_path`` (hub id or local dir) as the base model."""
    assert params.model.name_or_path is not None
    model, tokenizer = load_model(params.model.name_or_path, params.model, padding_side="right",
                                  key="model.name_or_path")
    source: dict[str, Any] = {}
    if gguf.is_gguf(params.model.name_or_path):  # what was converted: the file's hash and architecture
        path = gguf.locate(params.model.name_or_path)
        source = {"gguf": {"file": path.name, **gguf.check(path, params.model.sha256)}}
    metrics = {
        "source": params.model.name_or_path,
        **source,
        "n_params": count_parameters(model),
        "vocab_size": len(tokenizer),
        "steps": 0,
        "final_loss": None,
        "eval_loss": None,
        "eval_perplexity": None,
        "log": [],
    }
    return model, tokenizer, metrics


def source_notices(spec: str, info: dict[str, Any]) -> dict[str, str]:
    """Files to keep beside converted weights: the package's license text(s) and ``SOURCE.md`` (where from)."""
    files = {f"LICENSE{'' if i == 0 else f'.{i}'}": p.read_text(encoding="utf-8", errors="replace")
             for i, p in enumerate(gguf.license_files(spec))}
    lines = ["# Source of these weights", "",
             f"Converted by alignpipe's base stage from the GGUF file `{info['file']}` (`model.name_or_path: {spec}`,",
             f"sha256 `{info['sha256']}`, architecture `{info['architecture']}`), dequantized to float tensors with",
             "transformers' GGUF loader. The quantization error of the GGUF file stays in these weights.", ""]
    if files:
        lines += ["The license shipped with the package that carried the file is kept beside them (LICENSE).", ""]
    return {**files, "SOURCE.md": "\n".join(lines)}


def run(params: Params, world_dir: str | Path = "data/world", out_dir: str | Path = "data/base") -> dict[str, Any]:
    """Run the whole stage; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params)
    logger.info("base stage config: %s", one_line(config))
    if params.model.name_or_path is None:
        tokenizer = train_tokenizer(params, world_dir)
        model, metrics = pretrain(params, tokenizer, world_dir)
    else:
        model, tokenizer, metrics = resolve(params)
    notices = {}
    if params.model.name_or_path is not None and gguf.is_gguf(params.model.name_or_path):
        notices = source_notices(params.model.name_or_path, metrics["gguf"])
    save(model, tokenizer, out_dir, metrics, config, extra_files=notices)
    metrics.pop("log", None)
    logger.info("base stage metrics: %s", one_line(metrics))
    return metrics
