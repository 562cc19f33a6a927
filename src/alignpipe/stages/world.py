"""Stage ``world``: build the built-in world and write it to ``data/world/``.

Run it::

    python -m flows.world                                   # the Prefect flow that `dvc repro world` runs
    python -c "from alignpipe.config import load_params; from alignpipe.stages.world import run; \\
               print(run(load_params('params.yaml')))"

Outputs (written atomically): ``kb.json``, ``train.jsonl``, ``eval.jsonl``, ``prefs.jsonl`` (with
``world.preference_groups_per_category``), ``sft.jsonl``, ``corpus.txt``,
``pages.jsonl``, ``metrics.json`` and ``config.json`` (the resolved ``seed`` and ``world`` params).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.utils.io import atomic_dir, write_json
from alignpipe.utils.seed import seed_everything
from alignpipe.world.world import World, build_world

log = logging.getLogger(__name__)


def resolved_config(params: Params) -> dict[str, Any]:
    """What this stage's outputs depend on: the seed and the world section."""
    return {"seed": params.seed, "world": params.world.model_dump(mode="json")}


def build(params: Params) -> World:
    """Step 1: generate the world (seeded; no I/O)."""
    log.info("world config: %s", json.dumps(resolved_config(params), sort_keys=True))
    return build_world(params.seed, params.world)


def write(world: World, params: Params, out_dir: str | Path = "data/world") -> dict[str, Any]:
    """Step 2: write every file through an atomic directory; returns the metrics."""
    with atomic_dir(out_dir) as tmp:
        metrics = world.save(tmp)
        if not (tmp / "prefs.jsonl").exists():  # no preference pool: still written (empty), a declared output
            (tmp / "prefs.jsonl").write_text("", encoding="utf-8")
        write_json(tmp / "config.json", resolved_config(params))
    log.info("world: %d train / %d eval records, corpus %d words -> %s", len(world.train), len(world.eval),
             metrics["corpus"]["words"], out_dir)
    return metrics


def run(params: Params, out_dir: str | Path = "data/world") -> dict[str, Any]:
    """Seed, build, write; returns the metrics written to ``metrics.json``."""
    seed_everything(params.seed)
    return write(build(params), params, out_dir)
