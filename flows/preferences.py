"""preferences stage: sample K responses per train prompt from the SFT policy, label them, build pairs.

    python -m flows.preferences      # what `dvc repro preferences` runs; writes data/preferences/

Sampling is cached per chunk in .cache/alignpipe/preferences/<config hash>/, so a killed run resumes.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import preferences as prefs
from alignpipe.utils.io import work_dir
from alignpipe.utils.seed import seed_everything


@stage_task
def load_prompts(params, world_dir: str) -> list[dict]:
    return prefs.load_prompts(params, world_dir)


@stage_task
def sample_candidates(params, records: list[dict], sft_dir: str, config: dict) -> list[list[str]]:
    return prefs.sample_candidates(params, records, sft_dir, work_dir("preferences", prefs.sample_cache_key(config)))


@stage_task
def label(params, records: list[dict], samples: list[list[str]], world_dir: str) -> list[list[dict]]:
    return prefs.label(params, records, samples, world_dir)


@stage_task
def pair_and_write(params, records: list[dict], labelled: list[list[dict]], config: dict, out_dir: str,
                   world_dir: str) -> dict:
    pairs, metrics = prefs.make_pairs(params, records, labelled)
    if params.preferences.bridging.enabled:  # BMC: the editor's pseudo-winning response for every pair
        pairs, metrics["bridging"] = prefs.bridge(params, records, pairs, world_dir)
    prefs.write(out_dir, pairs, records, labelled, metrics, config)
    return metrics


@stage_flow("preferences")
def preferences_flow(
    params: str = "params.yaml", world_dir: str = "data/world", sft_dir: str = "data/sft",
    out_dir: str = "data/preferences",
) -> dict:  # fmt: skip
    """Build preference pairs from the SFT policy's own samples."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    config = prefs.stage_config(cfg, world_dir, sft_dir)
    records = load_prompts(cfg, world_dir)
    samples = sample_candidates(cfg, records, sft_dir, config)
    labelled = label(cfg, records, samples, world_dir)
    return pair_and_write(cfg, records, labelled, config, out_dir, world_dir)


if __name__ == "__main__":
    main("preferences", preferences_flow)
