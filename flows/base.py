"""base stage: train the tokenizer and pretrain the built-in Llama, or resolve `model.name_or_path`.

    python -m flows.base             # what `dvc repro base` runs; writes data/base/{model/,metrics.json,log.csv}

Pretraining checkpoints go to .cache/alignpipe/base/<config hash>/; an interrupted run resumes there.
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import base as base
from alignpipe.utils.seed import seed_everything


@stage_task
def train_tokenizer(params, world_dir: str):
    return base.train_tokenizer(params, world_dir)


@stage_task
def pretrain(params, tokenizer, world_dir: str):
    return base.pretrain(params, tokenizer, world_dir)


@stage_task
def resolve(params):
    return base.resolve(params)


@stage_task
def save(model, tokenizer, metrics: dict, params, out_dir: str) -> dict:
    base.save(model, tokenizer, out_dir, metrics, base.stage_config(params))
    return {k: v for k, v in metrics.items() if k != "log"}


@stage_flow("base")
def base_flow(params: str = "params.yaml", world_dir: str = "data/world", out_dir: str = "data/base") -> dict:
    """Build (or resolve) the base model and save it as a Hugging Face directory."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    if cfg.model.name_or_path is None:
        tokenizer = train_tokenizer(cfg, world_dir)
        model, metrics = pretrain(cfg, tokenizer, world_dir)
    else:
        model, tokenizer, metrics = resolve(cfg)
    return save(model, tokenizer, metrics, cfg, out_dir)


if __name__ == "__main__":
    main("base", base_flow)
