"""base stage: train the tokenizer and pretrain the built-in Llama, or resolve `model.name_or_path`.

    python -m flows.base             # what `dvc repro base` runs; writes data/base/{model/,metrics.json,log.csv}

Pretraining checkpoints go to .cache/alignpipe/base/<config hash>/; an interrupted run resumes there.

The stage is `alignpipe.stages.base.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("base")
