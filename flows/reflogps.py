"""reflogps stage: per-token reference log-probs of every preference pair, computed once by the SFT model.

    python -m flows.reflogps         # what `dvc repro reflogps` runs; writes data/reflogps/

Every align variant reads these instead of running (or copying) a reference model.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.train import reflogps


@stage_task
def compute(params, prefs_dir: str, sft_dir: str, out_dir: str) -> dict:
    return reflogps.run(params, prefs_dir=prefs_dir, sft_dir=sft_dir, out_dir=out_dir)


@stage_flow("reflogps")
def reflogps_flow(
    params: str = "params.yaml", prefs_dir: str = "data/preferences", sft_dir: str = "data/sft",
    out_dir: str = "data/reflogps",
) -> dict:  # fmt: skip
    """Store the reference model's per-token log-probs for the pair set."""
    return compute(load_stage_params(params), prefs_dir, sft_dir, out_dir)


if __name__ == "__main__":
    main("reflogps", reflogps_flow)
