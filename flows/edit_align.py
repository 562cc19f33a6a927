"""edit_align stage (LTE alignment phase): SFTTrainer on edit-following data, LoRA or full, from the SFT policy.

    python -m flows.edit_align       # what `dvc repro edit_align` runs; writes data/edit_align/

Checkpoints go to .cache/alignpipe/edit_align/<config hash>/; an interrupted run resumes there.

The stage is `alignpipe.stages.edit_align.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("edit_align")
