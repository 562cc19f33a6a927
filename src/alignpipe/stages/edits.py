"""Stage ``edits`` (LTE): the knowledge edits the alignment and inference phases use.

Run it::

    python -m flows.edits            # what `dvc repro edits` runs; writes data/edits/
    python -c "from alignpipe.config import load_params; from alignpipe.stages.edits import run; \\
               print(run(load_params('params.yaml')))"

``edits.source: world`` (default) makes counterfactual edits of ``data/world/kb.json``
(:mod:`alignpipe.world.edits`): ``n_train`` alignment edits and ``n_eval`` evaluation edits over disjoint facts.
``edits.source: knowedit`` reads KnowEdit JSON files (``train_files`` / ``eval_files``; e.g. LTE's
``EasyEdit/data/knowedit/ZsRE/ZsRE-test-all.json``), validated record by record, with seeded subsets.

A stage of its own, not part of ``world``: edits are inputs of LTE only, so changing their number or source
reruns ``edits -> edit_align -> edit_eval`` and never the world -> base -> sft chain.

Outputs (atomic): ``train.jsonl``, ``eval.jsonl`` (normalized edit records, :mod:`alignpipe.methods.lte.records`),
``metrics.json`` (counts) and ``config.json``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.methods.lte.records import load_knowedit, normalize
from alignpipe.utils.io import DataError, atomic_dir, sha256_file, write_json, write_jsonl
from alignpipe.utils.seed import derive_seed, seed_everything
from alignpipe.world import load_kb
from alignpipe.world.edits import make_edits

log = logging.getLogger(__name__)


def stage_config(params: Params, world_dir: str | Path) -> dict[str, Any]:
    """What the outputs depend on (``config.json``): seed, the edits section and the input files' digests."""
    cfg = params.edits
    files = [Path(world_dir) / "kb.json"] if cfg.source == "world" else map(Path, cfg.train_files + cfg.eval_files)
    return {"seed": params.seed, "edits": cfg.model_dump(mode="json"),
            "inputs": {str(f): sha256_file(f) for f in files if f.is_file()}}


def _subset(rows: list[dict[str, Any]], cap: int | None, seed: int, name: str) -> list[dict[str, Any]]:
    if cap is None or cap >= len(rows):
        return rows
    keep = sorted(random.Random(derive_seed(seed, "edits", name)).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def build(params: Params, world_dir: str | Path = "data/world") -> dict[str, list[dict[str, Any]]]:
    """The ``{"train": [...], "eval": [...]}`` edits (validated, normalized records)."""
    cfg = params.edits
    if cfg.source == "world":
        kb = load_kb(Path(world_dir) / "kb.json")
        try:
            raw = make_edits(kb, params.seed, cfg.n_train, cfg.n_eval, cfg.n_locality)
        except ValueError as err:
            raise DataError(f"{Path(world_dir) / 'kb.json'}: {err} (lower edits.n_train / edits.n_eval)") from None
        return {split: [normalize(r, f"world edit {r['id']}", r["id"]) for r in rows] for split, rows in raw.items()}
    out = {}
    for split, files, cap in (("train", cfg.train_files, cfg.max_train), ("eval", cfg.eval_files, cfg.max_eval)):
        rows = [r for f in files for r in load_knowedit(f)]
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            raise DataError(f"edits.{split}_files {files}: a file is listed twice (edit ids repeat)")
        out[split] = _subset(rows, cap, params.seed, split)
    return out


def metrics(edits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Counts per split: edits, rephrases, portability and locality questions by kind."""
    out: dict[str, Any] = {}
    for split, rows in edits.items():
        m: dict[str, Any] = {"edits": len(rows), "rephrase": sum(1 for r in rows if r["rephrase_prompt"]),
                             "with_portability": sum(1 for r in rows if r["portability"])}
        for scope in ("portability", "locality"):
            kinds: dict[str, int] = {}
            for r in rows:
                for kind, qs in r[scope].items():
                    kinds[kind] = kinds.get(kind, 0) + len(qs)
            m[scope] = dict(sorted(kinds.items()))
        out[split] = m
    return out


def run(params: Params, world_dir: str | Path = "data/world", out_dir: str | Path = "data/edits") -> dict[str, Any]:
    """Seed, build, write; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    config = stage_config(params, world_dir)
    edits = build(params, world_dir)
    result = metrics(edits)
    with atomic_dir(out_dir) as tmp:
        for split, rows in edits.items():
            write_jsonl(tmp / f"{split}.jsonl", rows)
        write_json(tmp / "metrics.json", result)
        write_json(tmp / "config.json", config)
    log.info("edits: %s -> %s", result, out_dir)
    return result
