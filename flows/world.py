"""world stage: generate the seeded built-in world (KB, instruction pools, SFT data, corpus, web pages).

    python -m flows.world            # what `dvc repro world` runs; writes data/world/
"""

from flows._common import main

if __name__ == "__main__":
    main("world")
