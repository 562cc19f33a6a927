"""edit_eval stage (LTE inference phase): BM25-retrieved edits in LTE's template, answered by the SFT policy
(in-context editing) and by the LTE model; batch and sequential editing at the `edit_eval.sizes` store sizes.

    python -m flows.edit_eval        # what `dvc repro edit_eval` runs; writes data/edit_eval/

The stage is `alignpipe.stages.edit_eval.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("edit_eval")
