"""evaluate stage: generate over the evaluation pool, verify every constraint, judge, FollowBench metrics.

    python -m flows.evaluate --name sft --model-dir data/sft/model     # what `dvc repro evaluate@sft` runs

Outputs in data/evaluate/<name>/: generations.jsonl, metrics.json, levels.csv, config.json.
With `evaluate.benchmark: followbench` in params.yaml the same files come from the official FollowBench data
(rules + LLM judge; alignpipe.evaluate.followbench) instead of the world's pool.
"""

from pathlib import Path

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import evaluate as ev
from alignpipe.utils.seed import seed_everything


@stage_task
def load_pool(world_dir: str, levels: list[int]) -> list[dict]:
    return ev.load_pool(world_dir, levels)


@stage_task
def generate(model_dir: str, records: list[dict], params) -> list[str]:
    return ev.generate_responses(model_dir, records, params.evaluate, params.model)


@stage_task
def score(records: list[dict], responses: list[str], world_dir: str, params) -> tuple[list[dict], dict]:
    """Verify and judge each response (the judge role with `evaluate.judge: roles`); its counters for metrics."""
    from alignpipe.world import load_kb

    kb = load_kb(Path(world_dir) / "kb.json")
    judge = ev.judge_role(params, kb)
    generations = ev.score(records, responses, kb, judge)
    return generations, ev.judge_role_metrics(generations, judge)


@stage_task
def summarize_and_write(name: str, model_dir: str, world_dir: str, generations: list[dict], judged: dict,
                        params) -> dict:
    metrics = {**ev.summarize(generations, params.evaluate, params.seed), **judged}
    ev.write(Path("data/evaluate") / name, generations, metrics, ev.stage_config(params, name, model_dir, world_dir))
    return metrics


@stage_task
def followbench_load(params) -> tuple[list[dict], list[dict]]:
    from alignpipe.evaluate.followbench import bench as fb

    return fb.load(params)


@stage_task
def followbench_generate(model_dir: str, todo: list[dict], params) -> list[str]:
    from alignpipe.evaluate.followbench import bench as fb

    return fb.generate(params, model_dir, todo)


@stage_task
def followbench_score_and_write(name: str, model_dir: str, records: list[dict], todo: list[dict],
                                responses: list[str], params) -> dict:
    from alignpipe.evaluate.followbench import bench as fb

    return fb.score_and_write(params, name, model_dir, records, todo, responses, Path("data/evaluate") / name)


@stage_flow("evaluate")
def evaluate_flow(name: str, model_dir: str, params: str = "params.yaml", world_dir: str = "data/world") -> dict:
    """Evaluate one model on the world's evaluation pool (or on the official FollowBench data)."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    if cfg.evaluate.benchmark == "followbench":
        records, todo = followbench_load(cfg)
        responses = followbench_generate(model_dir, todo, cfg)
        return followbench_score_and_write(name, model_dir, records, todo, responses, cfg)
    records = load_pool(world_dir, cfg.evaluate.levels)
    responses = generate(model_dir, records, cfg)
    generations, judged = score(records, responses, world_dir, cfg)
    return summarize_and_write(name, model_dir, world_dir, generations, judged, cfg)


def _args(parser):
    parser.add_argument("--name", required=True, help="evaluated model's name (output dir data/evaluate/<name>)")
    parser.add_argument("--model-dir", required=True, help="HF model directory to evaluate")
    parser.add_argument("--world-dir", default="data/world")


if __name__ == "__main__":
    main("evaluate", evaluate_flow, _args)
