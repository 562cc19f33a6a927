"""rewards stage: reward model (TRL RewardTrainer) and per-token scores / ALLO token weights r_t.

    python -m flows.rewards          # what `dvc repro rewards` runs; writes data/rewards/

Runs `alignpipe.stages.rewards.run` once. Reward-model checkpoints go to .cache/alignpipe/rewards/<config hash>/; an
interrupted run resumes there.
"""

from flows._common import main

if __name__ == "__main__":
    main("rewards")
