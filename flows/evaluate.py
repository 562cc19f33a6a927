"""evaluate stage: generate over the evaluation pool, verify every constraint, judge, FollowBench metrics.

    python -m flows.evaluate --name sft --model-dir data/sft/model     # what `dvc repro evaluate@sft` runs

Runs `alignpipe.stages.evaluate.run` once. Outputs in data/evaluate/<name>/: generations.jsonl, metrics.json,
levels.csv, config.json. With `evaluate.benchmark: followbench` in params.yaml the same files come from the official
FollowBench data (rules + LLM judge; alignpipe.evaluate.followbench) instead of the world's pool.
"""

from flows._common import main


def _args(parser):
    parser.add_argument("--name", required=True, help="evaluated model's name (output dir data/evaluate/<name>)")
    parser.add_argument("--model-dir", required=True, help="HF model directory to evaluate")
    parser.add_argument("--world-dir", default="data/world", help="the world stage's outputs (eval.jsonl, kb.json)")


if __name__ == "__main__":
    main("evaluate", _args)
