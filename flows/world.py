"""world stage: generate the seeded built-in world (KB, instruction pools, SFT data, corpus, web pages).

    python -m flows.world            # what `dvc repro world` runs; writes data/world/

The stage is `alignpipe.stages.world.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("world")
