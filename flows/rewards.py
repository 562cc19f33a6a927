"""rewards stage: reward model (TRL RewardTrainer) and per-token scores / ALLO token weights r_t.

    python -m flows.rewards          # what `dvc repro rewards` runs; writes data/rewards/

Reward-model checkpoints go to .cache/alignpipe/rewards/<config hash>/; an interrupted run resumes there.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import rewards as rewards


@stage_task
def compute(params, prefs_dir: str, reflogps_dir: str, sft_dir: str, neurons_dir: str, out_dir: str) -> dict:
    return rewards.run(params, prefs_dir=prefs_dir, reflogps_dir=reflogps_dir, sft_dir=sft_dir,
                       neurons_dir=neurons_dir, out_dir=out_dir)


@stage_flow("rewards")
def rewards_flow(
    params: str = "params.yaml", prefs_dir: str = "data/preferences", reflogps_dir: str = "data/reflogps",
    sft_dir: str = "data/sft", neurons_dir: str = "data/neurons", out_dir: str = "data/rewards",
) -> dict:  # fmt: skip
    """Train the reward model and store per-token scores on the training tokens."""
    return compute(load_stage_params(params), prefs_dir, reflogps_dir, sft_dir, neurons_dir, out_dir)


if __name__ == "__main__":
    main("rewards", rewards_flow)
