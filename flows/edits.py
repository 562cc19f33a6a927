"""edits stage (LTE): counterfactual edits of the world's KB, or KnowEdit files (`edits.source: knowedit`).

    python -m flows.edits            # what `dvc repro edits` runs; writes data/edits/{train,eval}.jsonl
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import edits as edits
from alignpipe.utils.seed import seed_everything


@stage_task
def make_and_write(params, world_dir: str, out_dir: str) -> dict:
    return edits.run(params, world_dir, out_dir)


@stage_flow("edits")
def edits_flow(params: str = "params.yaml", world_dir: str = "data/world", out_dir: str = "data/edits") -> dict:
    """Make (or load) the train and eval knowledge edits and write them atomically."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    return make_and_write(cfg, world_dir, out_dir)


if __name__ == "__main__":
    main("edits", edits_flow)
