"""sft stage: TRL SFTTrainer on the train dialogues (completion-only loss), starting from the base model.

    python -m flows.sft              # what `dvc repro sft` runs; writes data/sft/{model/,metrics.json,log.csv}

Checkpoints go to .cache/alignpipe/sft/<config hash>/; an interrupted run resumes there.
Training data: `sft.data` names the sources, concatenated in order (seed: data/world/sft.jsonl,
webr: data/synthesize/sft_webr.jsonl, lion: data/synthesize/sft_lion.jsonl).
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.train import sft


@stage_task
def fine_tune(params, world_dir: str, base_dir: str, out_dir: str, synth_dir: str) -> dict:
    sources = {"seed": f"{world_dir}/sft.jsonl", "webr": f"{synth_dir}/sft_webr.jsonl",
               "lion": f"{synth_dir}/sft_lion.jsonl"}
    files = [sources[name] for name in params.sft.data]
    return sft.run(params, world_dir=world_dir, base_dir=base_dir, out_dir=out_dir, data_files=files)


@stage_flow("sft")
def sft_flow(
    params: str = "params.yaml", world_dir: str = "data/world", base_dir: str = "data/base", out_dir: str = "data/sft",
    synth_dir: str = "data/synthesize",
) -> dict:
    """Supervised fine-tuning of the base model."""
    return fine_tune(load_stage_params(params), world_dir, base_dir, out_dir, synth_dir)


if __name__ == "__main__":
    main("sft", sft_flow)
