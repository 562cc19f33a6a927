"""reflogps stage: per-token reference log-probs of every preference pair, computed once by the SFT model.

    python -m flows.reflogps         # what `dvc repro reflogps` runs; writes data/reflogps/

Every align variant reads these instead of running (or copying) a reference model.

The stage is `alignpipe.stages.reflogps.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("reflogps")
