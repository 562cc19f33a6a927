"""The pipeline's model directory: what the base, sft and sft_mix stages and Lion's students write.

    save(model, tokenizer, "data/sft", metrics, config)   # data/sft/{model/, metrics.json, config.json, log.csv}

``model/`` is a Hugging Face directory (``save_pretrained`` of the model and the tokenizer); ``metrics.json`` holds
the metrics without their ``log``, which goes to ``log.csv`` (step, loss). Outputs hold no wall-clock values, so a
rerun writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignpipe.models.training import loss_csv
from alignpipe.utils.io import atomic_dir, dumps


def save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    metrics: dict[str, Any],
    config: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write ``out_dir/{model/, metrics.json, config.json, log.csv}`` atomically.

    transformers 5 writes weights as safetensors only (``model.safetensors``); no pickle files are produced.
    ``extra_files`` (name -> text) go into ``model/`` too. The saved tokenizer pads on the right (training default); :func:`alignpipe.models.load_model` sets left
    padding for generation.
    """
    metrics = dict(metrics)
    log = metrics.pop("log", [])
    tokenizer.padding_side = "right"
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        for name, text in (extra_files or {}).items():  # e.g. a converted model's LICENSE and SOURCE.md
            (tmp / "model" / name).write_text(text, encoding="utf-8")
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
        (tmp / "log.csv").write_text(loss_csv(log), encoding="utf-8")
    return Path(out_dir)
