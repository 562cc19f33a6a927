"""sft_mix stage: one SFT policy per data mixture (sft_mix.mixtures), for the report's data-source table.

    python -m flows.sft_mix --name lion     # what `dvc repro sft_mix@lion` runs; writes data/sft_mix/lion/

Training is the sft stage's own code and `sft` section (a mixture equal to sft.data reuses data/sft/model); the
policy's relative score vs Lion's teacher uses the referee role, whose remote calls fan out through `roles.runner`.
FollowBench metrics come from `evaluate@mix_<name>`.
"""

from pathlib import Path

from flows._common import fan_out, load_stage_params, main, stage_flow, stage_task, task_runner

from alignpipe.config import load_params
from alignpipe.stages import sft_mix


@stage_task
def build_roles(params, world_dir: str):
    from alignpipe.llm import build_roles as build
    from alignpipe.world import load_kb

    kb = Path(world_dir) / "kb.json"
    return build(params.roles, params.seed, kb=load_kb(kb) if kb.is_file() else None, fan_out=fan_out)


@stage_task
def train_and_score(params, name: str, roles, world_dir: str, base_dir: str, synth_dir: str, sft_dir: str) -> dict:
    return sft_mix.run(params, name, roles, world_dir, base_dir, synth_dir, sft_dir, Path("data/sft_mix") / name)


@stage_flow("sft_mix")
def sft_mix_flow(name: str, params: str = "params.yaml", world_dir: str = "data/world", base_dir: str = "data/base",
                 synth_dir: str = "data/synthesize", sft_dir: str = "data/sft") -> dict:
    """Train one data mixture's SFT policy and score it against Lion's teacher."""
    cfg = load_stage_params(params)
    sft_mix.get_mixture(cfg, name)  # unknown mixture: fail before any work
    roles = build_roles(cfg, world_dir)
    return train_and_score(cfg, name, roles, world_dir, base_dir, synth_dir, sft_dir)


def sft_mix_run(name: str, params: str = "params.yaml", **dirs: str) -> dict:
    runner = task_runner(load_params(params))
    return sft_mix_flow.with_options(task_runner=runner)(name=name, params=params, **dirs)


def _args(parser):
    parser.add_argument("--name", required=True, help="a key of sft_mix.mixtures in params.yaml")


if __name__ == "__main__":
    main("sft_mix", sft_mix_run, _args)
