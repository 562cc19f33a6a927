"""report stage: the FollowBench Table 2 layout (+ judge columns), the method tables and plots for the evaluated
models (their rows read from params.yaml: base, sft, every align variant, every sft_mix mixture).

    python -m flows.report       # what `dvc repro report` runs; writes data/report/
"""

from flows._common import main

if __name__ == "__main__":
    main("report")
