"""Stage ``sft``: supervised fine-tuning of the base model on the train dialogues (TRL ``SFTTrainer``).

Run it (normally through ``python -m flows.sft`` / ``dvc repro sft``)::

    from alignpipe.config import load_params
    from alignpipe.stages import sft
    sft.run(load_params("params.yaml"), world_dir="data/world", base_dir="data/base", out_dir="data/sft")

Data: ``sft.data`` names the sources, concatenated in order (``seed``: ``data/world/sft.jsonl``, ``webr``:
``data/synthesize/sft_webr.jsonl``, ``lion``: ``data/synthesize/sft_lion.jsonl``). Training, checkpoints (an
interrupted run resumes in ``.cache/alignpipe/sft/<config hash>/``) and the output layout are
:func:`alignpipe.train.sft.fine_tune`'s.

Outputs (``data/sft/``, atomic): ``model/``, ``metrics.json``, ``log.csv`` and ``config.json``
(:func:`alignpipe.train.sft.run_config`), byte-identical across reruns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.train import sft
from alignpipe.utils.io import dumps, one_line
from alignpipe.utils.seed import seed_everything

logger = logging.getLogger(__name__)


def data_files(params: Params, world_dir: str | Path, synth_dir: str | Path) -> list[Path]:
    """The JSONL file of each ``sft.data`` source, in order."""
    sources = {"seed": Path(world_dir) / "sft.jsonl", "webr": Path(synth_dir) / "sft_webr.jsonl",
               "lion": Path(synth_dir) / "sft_lion.jsonl"}
    return [sources[name] for name in params.sft.data]


def run(
    params: Params,
    world_dir: str | Path = "data/world",
    base_dir: str | Path = "data/base",
    out_dir: str | Path = "data/sft",
    synth_dir: str | Path = "data/synthesize",
) -> dict[str, Any]:
    """Seed, fine-tune ``base_dir/model`` on the ``sft.data`` sources, write ``out_dir``; returns the metrics."""
    seed_everything(params.seed)
    files = data_files(params, world_dir, synth_dir)
    logger.info("sft stage config: %s", one_line(sft.run_config(params, [str(f) for f in files])))
    metrics = sft.fine_tune(params, files, base_dir, out_dir)
    logger.info("sft stage metrics: %s", one_line(metrics))
    return metrics
