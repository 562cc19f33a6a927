"""align stage: one DPO variant (full, all-layer LoRA, or LoRA on the local / mid / global third of the layers).

    python -m flows.align --variant global     # what `dvc repro align@global` runs; writes data/align/global/

With `align.accelerate_config` set, training runs under `accelerate launch` (multi-GPU DDP / FSDP / ZeRO-3).
Checkpoints go to .cache/alignpipe/align/<config hash>/; an interrupted run resumes there.
"""

from pathlib import Path

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import align
from alignpipe.utils.seed import seed_everything


@stage_task
def prepare(params, prefs_dir: str, reflogps_dir: str, sft_dir: str, variant: str | None = None):
    return align.prepare(params, prefs_dir, reflogps_dir, sft_dir, variant)


@stage_task
def train_and_save(params, variant: str, prepared, config: dict, out_dir: str) -> dict:
    trainer, metrics = align.fit(params, variant, prepared, config)
    align.save(trainer, out_dir, metrics, config)
    return {k: v for k, v in metrics.items() if k != "log"}


@stage_task
def launch(params, variant: str, params_path: str, **dirs) -> dict:
    return align.run_or_launch(params, variant, params_path=params_path, **dirs)


@stage_flow("align")
def align_flow(
    variant: str, params: str = "params.yaml", prefs_dir: str = "data/preferences",
    reflogps_dir: str = "data/reflogps", sft_dir: str = "data/sft",
) -> dict:  # fmt: skip
    """Train one alignment variant on the preference pairs with the stored reference log-probs."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    align.get_variant(cfg, variant)  # unknown variant: fail before any work
    out_dir = str(Path("data/align") / variant)
    if cfg.align.accelerate_config:
        dirs = {"prefs_dir": prefs_dir, "reflogps_dir": reflogps_dir, "sft_dir": sft_dir, "out_dir": out_dir}
        return launch(cfg, variant, params, **dirs)
    config = align.stage_config(cfg, variant, prefs_dir, reflogps_dir, sft_dir)
    return train_and_save(cfg, variant, prepare(cfg, prefs_dir, reflogps_dir, sft_dir, variant), config, out_dir)


def _args(parser):
    parser.add_argument("--variant", required=True, help="a key of align.variants in params.yaml")


if __name__ == "__main__":
    main("align", align_flow, _args)
