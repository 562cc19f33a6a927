"""Stage ``reflogps``: per-token log-probs of every preference pair under the reference (SFT) model, computed once.

Run it (normally through ``python -m flows.reflogps`` / ``dvc repro reflogps``)::

    from alignpipe.config import load_params
    from alignpipe.stages import reflogps
    reflogps.run(load_params("params.yaml"), prefs_dir="data/preferences", sft_dir="data/sft", out_dir="data/reflogps")

Every ``align@<variant>`` reads these instead of running (or copying) a reference model; the computation and the
store format are :mod:`alignpipe.train.reflogps`'s.

Outputs (``out_dir``, atomic): ``ref_logps.safetensors`` (every pair of ``pairs.jsonl``), ``config.json`` (model
path + weights sha256, max_length, truncation, pairs sha256; also in each store's metadata) and ``metrics.json``.
``ref_logps_bridged.safetensors`` holds the same for the (bridged, rejected) pairs when the pairs carry BMC's
``bridged`` column (``metrics.json`` key ``bridged``; 0 pairs without the column).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.train.dpo import dpo_config
from alignpipe.train.pairs import read_pairs
from alignpipe.train.reflogps import BRIDGED_STORE, STORE, compute, has_bridged, weights_sha256, write_store
from alignpipe.utils.io import atomic_dir, dumps, one_line, sha256_file, work_dir
from alignpipe.utils.seed import seed_everything

logger = logging.getLogger(__name__)


def stage_config(params: Params, sft_dir: str | Path, prefs_dir: str | Path) -> dict[str, Any]:
    """What the stored values depend on (written to ``config.json`` and the safetensors metadata)."""
    model_dir = Path(sft_dir) / "model"
    args = dpo_config(params, None, "unused")
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "sft_model": str(model_dir),
        "model_sha256": weights_sha256(model_dir),
        "pairs_sha256": sha256_file(Path(prefs_dir) / "pairs.jsonl"),
        "max_length": args.max_length,
        "truncation_mode": args.truncation_mode,
        "pad_to_multiple_of": args.pad_to_multiple_of,
    }


def summarize(rows: list[dict], ids: list[str], records: list[dict], dropped: dict[str, int]) -> dict[str, Any]:
    """Metrics: pair counts (read, dropped by reason, truncated), tokens, mean reference log-probs."""
    too_long = len(rows) - len(ids)
    n_tok = {p: sum(len(r[f"{p}_ids"]) for r in records) for p in ("chosen", "rejected")}
    sums = {p: sum(r[f"{p}_sum"] for r in records) for p in ("chosen", "rejected")}
    return {
        "n_pairs": len(ids),
        "n_read": len(rows) + sum(dropped.values()),
        "dropped": {**dropped, **({"prompt_too_long": too_long} if too_long else {})},
        "n_truncated": sum(r["truncated"] for r in records),
        "chosen_tokens": n_tok["chosen"],
        "rejected_tokens": n_tok["rejected"],
        "ref_logp_per_token_chosen": round(sums["chosen"] / max(n_tok["chosen"], 1), 6),
        "ref_logp_per_token_rejected": round(sums["rejected"] / max(n_tok["rejected"], 1), 6),
        "ref_margin_mean": round((sums["chosen"] - sums["rejected"]) / len(ids), 6),
    }


def save(out_dir: str | Path, stores: dict[str, tuple[list[str], list[dict]]], config: dict, metrics: dict) -> Path:
    """Write every store (file name -> (ids, records)), ``config.json`` and ``metrics.json`` atomically."""
    with atomic_dir(out_dir) as tmp:
        for name, (ids, records) in stores.items():
            write_store(tmp / name, ids, records, config)
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
    return Path(out_dir)


def run(params: Params, prefs_dir: str | Path = "data/preferences", sft_dir: str | Path = "data/sft",
        out_dir: str | Path = "data/reflogps") -> dict[str, Any]:
    """Run the whole stage; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, sft_dir, prefs_dir)
    logger.info("reflogps stage config: %s", one_line(config))
    rows, dropped = read_pairs(Path(prefs_dir) / "pairs.jsonl")
    ids, records = compute(params, rows, sft_dir, work_dir("reflogps", config))
    metrics = summarize(rows, ids, records, dropped)
    stores = {STORE: (ids, records), BRIDGED_STORE: ([], [])}  # the bridged store is empty without bridging
    if has_bridged(prefs_dir):  # BMC: the (pseudo-winning, rejected) pairs get their own store
        b_rows, b_dropped = read_pairs(Path(prefs_dir) / "pairs.jsonl", chosen_field="bridged")
        b_ids, b_records = compute(params, b_rows, sft_dir, work_dir("reflogps", {**config, "pairs": "bridged"}))
        metrics["bridged"] = summarize(b_rows, b_ids, b_records, b_dropped)
        stores[BRIDGED_STORE] = (b_ids, b_records)
    save(out_dir, stores, config, metrics)
    logger.info("reflogps stage metrics: %s", one_line(metrics))
    return metrics
