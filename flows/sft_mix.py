"""sft_mix stage: one SFT policy per data mixture (sft_mix.mixtures), for the report's data-source table.

    python -m flows.sft_mix --name lion     # what `dvc repro sft_mix@lion` runs; writes data/sft_mix/lion/

Training is the sft stage's (alignpipe.train.sft, the `sft` section; a mixture equal to sft.data reuses
data/sft/model); the policy's relative score vs Lion's teacher uses the referee role, whose remote calls fan out
through `roles.runner`.
FollowBench metrics come from `evaluate@mix_<name>`.

The stage is `alignpipe.stages.sft_mix.run`; `flows._common.main` runs it once in a Prefect flow.
"""

import argparse

from flows._common import main


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="a key of sft_mix.mixtures in params.yaml")


if __name__ == "__main__":
    main("sft_mix", _args)
