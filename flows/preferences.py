"""preferences stage: sample K responses per train prompt from the SFT policy, label them, build pairs.

    python -m flows.preferences      # what `dvc repro preferences` runs; writes data/preferences/

Sampling is cached per chunk in .cache/alignpipe/preferences/<config hash>/, so a killed run resumes.

The stage is `alignpipe.stages.preferences.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("preferences")
