"""edits stage (LTE): counterfactual edits of the world's KB, or KnowEdit files (`edits.source: knowedit`).

    python -m flows.edits            # what `dvc repro edits` runs; writes data/edits/{train,eval}.jsonl

The stage is `alignpipe.stages.edits.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("edits")
