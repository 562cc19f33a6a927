"""sft stage: TRL SFTTrainer on the train dialogues (completion-only loss), starting from the base model.

    python -m flows.sft              # what `dvc repro sft` runs; writes data/sft/{model/,metrics.json,log.csv}

Checkpoints go to .cache/alignpipe/sft/<config hash>/; an interrupted run resumes there.
Training data: `sft.data` names the sources, concatenated in order (seed: data/world/sft.jsonl,
webr: data/synthesize/sft_webr.jsonl, lion: data/synthesize/sft_lion.jsonl).

The stage is `alignpipe.stages.sft.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("sft")
