"""neurons stage: ALLO preference neurons (warm-up DPO, |weight change| and |gradient| scores, global top-r% masks).

    python -m flows.neurons          # what `dvc repro neurons` runs; writes data/neurons/

Runs `alignpipe.stages.neurons.run` once. Warm-up checkpoints go to .cache/alignpipe/neurons/<config hash>/; an
interrupted run resumes there.
"""

from flows._common import main

if __name__ == "__main__":
    main("neurons")
