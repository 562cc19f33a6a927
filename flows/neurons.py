"""neurons stage: ALLO preference neurons (warm-up DPO, |weight change| and |gradient| scores, global top-r% masks).

    python -m flows.neurons          # what `dvc repro neurons` runs; writes data/neurons/

Warm-up checkpoints go to .cache/alignpipe/neurons/<config hash>/; an interrupted run resumes there.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import neurons as neurons


@stage_task
def compute(params, prefs_dir: str, reflogps_dir: str, sft_dir: str, out_dir: str) -> dict:
    return neurons.run(params, prefs_dir=prefs_dir, reflogps_dir=reflogps_dir, sft_dir=sft_dir, out_dir=out_dir)


@stage_flow("neurons")
def neurons_flow(
    params: str = "params.yaml", prefs_dir: str = "data/preferences", reflogps_dir: str = "data/reflogps",
    sft_dir: str = "data/sft", out_dir: str = "data/neurons",
) -> dict:  # fmt: skip
    """Score every parameter after a short warm-up DPO and write the neuron masks at the configured ratios."""
    return compute(load_stage_params(params), prefs_dir, reflogps_dir, sft_dir, out_dir)


if __name__ == "__main__":
    main("neurons", neurons_flow)
