"""edits stage (LTE): counterfactual edits of the world's KB, or KnowEdit files (`edits.source: knowedit`).

    python -m flows.edits            # what `dvc repro edits` runs; writes data/edits/{train,eval}.jsonl
"""

from flows._common import main

if __name__ == "__main__":
    main("edits")
