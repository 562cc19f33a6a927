"""edit_eval stage (LTE inference phase): BM25-retrieved edits in LTE's template, answered by the SFT policy
(in-context editing) and by the LTE model; batch and sequential editing at the `edit_eval.sizes` store sizes.

    python -m flows.edit_eval        # what `dvc repro edit_eval` runs; writes data/edit_eval/
"""

from pathlib import Path

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.stages import edit_eval as ev
from alignpipe.methods.lte.records import read_edits
from alignpipe.utils.seed import seed_everything


@stage_task
def plan(params, edits_dir: str):
    edits = read_edits(Path(edits_dir) / "eval.jsonl")
    return edits, ev.plan(edits, params.edit_eval)


@stage_task
def answer(model_dir: str, prompts: list[str], params) -> dict:
    return ev.answer(model_dir, prompts, params)


@stage_task
def score_and_write(params, edits, queries, sft_answers: dict, lte_answers: dict, config: dict, out_dir: str):
    return ev.finish(params, edits, queries, sft_answers, lte_answers, config, out_dir)


@stage_flow("edit_eval")
def edit_eval_flow(params: str = "params.yaml", edits_dir: str = "data/edits", sft_dir: str = "data/sft",
                   lte_dir: str = "data/edit_align", out_dir: str = "data/edit_eval") -> dict:
    """Evaluate in-context editing (SFT policy) and LTE on the eval edits."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    config = ev.stage_config(cfg, edits_dir, sft_dir, lte_dir)
    edits, queries = plan(cfg, edits_dir)
    prompts = [q["prompt"] for q in queries]
    sft_answers = answer(f"{sft_dir}/model", prompts + ev.locality_questions(queries), cfg)
    lte_answers = answer(f"{lte_dir}/model", prompts, cfg)
    return score_and_write(cfg, edits, queries, sft_answers, lte_answers, config, out_dir)


if __name__ == "__main__":
    main("edit_eval", edit_eval_flow)
