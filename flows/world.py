"""world stage: generate the seeded built-in world (KB, instruction pools, SFT data, corpus, web pages).

    python -m flows.world            # what `dvc repro world` runs; writes data/world/
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.utils.seed import seed_everything
from alignpipe.stages import world as world


@stage_task
def build(params):
    return world.build(params)


@stage_task
def write(built, params, out_dir: str) -> dict:
    return world.write(built, params, out_dir)


@stage_flow("world")
def world_flow(params: str = "params.yaml", out_dir: str = "data/world") -> dict:
    """Build the built-in world and write it atomically."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    return write(build(cfg), cfg, out_dir)


if __name__ == "__main__":
    main("world", world_flow)
