"""synthesize stage: WebR instruction data from raw web pages, then Lion's adversarial rounds, over the LLM roles.

    python -m flows.synthesize       # what `dvc repro synthesize` runs; writes data/synthesize/

WebR input: the world's pages (data/world/pages.jsonl) or `synthesize.webr.input` (JSON / JSONL of {"webpage"}).
Lion: `synthesize.lion.rounds` rounds of imitation (teacher answers the pool, the student from data/base/model is
fine-tuned on it), discrimination (referee, both orders; hard / easy) and generation (new instructions), each a
task whose artifacts land in .cache/alignpipe/synthesize-lion/<hash>/round_<r>/<phase>/: a rerun after a kill
continues from the last finished phase. Every hf/openai call is cached in .cache/alignpipe/llm/ by request
hash: nothing is asked twice (.cache/alignpipe/runs/synthesize.jsonl counts requests and cache hits). Remote
(openai) calls fan out as `llm-<role>` tasks through the task runner `roles.runner` names (a thread pool, or a
Dask cluster).
"""

from flows._common import fan_out, load_stage_params, main, stage_flow, stage_task, task_runner

from alignpipe.config import load_params
from alignpipe.methods.lion import rounds as lion_stage
from alignpipe.stages import synthesize as synth
from alignpipe.utils.seed import seed_everything


@stage_task
def load_inputs(params, world_dir: str):
    return synth.load(params, world_dir, fan_out=fan_out)


@stage_task
def author_personas(params, pages, roles):
    return synth.personas(params, pages, roles)


@stage_task
def write_requests(params, plans, persona, roles):
    return synth.requests(params, plans, persona, roles)


@stage_task
def write_responses(params, plans, reqs, roles):
    return synth.responses(params, plans, reqs, roles)


@stage_task
def post_process(params, plans, persona, reqs, resps, roles):
    return synth.assemble(params, plans, persona, reqs, resps, roles)


@stage_task
def lion_prepare(params, world_dir: str, base_dir: str):
    return lion_stage.prepare(params, world_dir, base_dir)


@stage_task
def lion_baseline(ctx, roles):
    return lion_stage.baseline(ctx, roles)


@stage_task(task_run_name="lion_imitation-r{round_}")
def lion_imitation(ctx, roles, round_: int, pool):
    return lion_stage.imitation(ctx, roles, round_, pool)


@stage_task(task_run_name="lion_discrimination-r{round_}")
def lion_discrimination(ctx, roles, round_: int):
    return lion_stage.discrimination(ctx, roles, round_)


@stage_task(task_run_name="lion_generation-r{round_}")
def lion_generation(ctx, roles, round_: int):
    return lion_stage.generation(ctx, roles, round_)


@stage_task
def lion_final(ctx, roles, pool, round_: int):
    result = {**lion_stage.final_answers(ctx, roles, pool, round_), "round": round_}
    return result, lion_stage.final_rows(ctx, round_)


@stage_task
def write_outputs(params, webr_out, lion_out, roles, config: dict, out_dir: str) -> dict:
    rows, meta, metrics = webr_out
    return synth.write(out_dir, rows, meta, metrics, config, lion_out, roles)


def lion_rounds(cfg, roles, world_dir: str, base_dir: str):
    """Lion's phases as tasks, round after round; returns (context, final rows, metrics)."""
    ctx = lion_prepare(cfg, world_dir, base_dir)
    results = [lion_baseline(ctx, roles)]
    pool, last = ctx.pool, cfg.synthesize.lion.rounds
    for r in range(1, last + 1):
        results.append(lion_imitation(ctx, roles, r, pool))
        results.append(lion_discrimination(ctx, roles, r))
        results.append(lion_generation(ctx, roles, r))
        pool = results[-1]["pool"]
    final, rows = lion_final(ctx, roles, pool, last)
    return ctx, rows, {"rows": len(rows), **lion_stage.summary(ctx, [*results, final])}


@stage_flow("synthesize")
def synthesize_flow(params: str = "params.yaml", world_dir: str = "data/world", base_dir: str = "data/base",
                    out_dir: str = "data/synthesize") -> dict:
    """Synthesize WebR data (persona, request, response, refinement, filters, dedup) and Lion's rounds."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    config = synth.stage_config(cfg, world_dir)
    pages, roles = load_inputs(cfg, world_dir)
    webr_out = [], [], {"pages": 0, "rows": 0, "webr": "disabled"}
    if cfg.synthesize.webr.enabled:
        persona = author_personas(cfg, pages, roles)
        plans = synth.plan(cfg, pages)
        reqs = write_requests(cfg, plans, persona, roles)
        resps = write_responses(cfg, plans, reqs, roles)
        webr_out = post_process(cfg, plans, persona, reqs, resps, roles)
    lion_out = lion_rounds(cfg, roles, world_dir, base_dir) if cfg.synthesize.lion.enabled else None
    return write_outputs(cfg, webr_out, lion_out, roles, config, out_dir)


def synthesize(params: str = "params.yaml", **dirs: str) -> dict:
    """Synthesize WebR data and Lion's rounds; remote role calls fan out through `roles.runner`'s task runner."""
    runner = task_runner(load_params(params))
    return synthesize_flow.with_options(task_runner=runner)(params=params, **dirs)


if __name__ == "__main__":
    main("synthesize", synthesize)
