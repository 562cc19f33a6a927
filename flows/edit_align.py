"""edit_align stage (LTE alignment phase): SFTTrainer on edit-following data, LoRA or full, from the SFT policy.

    python -m flows.edit_align       # what `dvc repro edit_align` runs; writes data/edit_align/

Checkpoints go to .cache/alignpipe/edit_align/<config hash>/; an interrupted run resumes there.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import edit_align as align
from alignpipe.utils.seed import seed_everything


@stage_task
def build_data(params, edits_dir: str):
    return align.build_data(params, edits_dir)


@stage_task
def train_and_save(params, data, sft_dir: str, config: dict, out_dir: str) -> dict:
    rows, stats = data
    trainer, metrics = align.fit(params, rows, sft_dir, config)
    return align.save(trainer, rows, stats, metrics, config, out_dir)


@stage_flow("edit_align")
def edit_align_flow(params: str = "params.yaml", edits_dir: str = "data/edits", sft_dir: str = "data/sft",
                    out_dir: str = "data/edit_align") -> dict:
    """Teach the SFT policy to answer from the edits given in its prompt (LTE's template)."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    config = align.stage_config(cfg, edits_dir, sft_dir)
    return train_and_save(cfg, build_data(cfg, edits_dir), sft_dir, config, out_dir)


if __name__ == "__main__":
    main("edit_align", edit_align_flow)
