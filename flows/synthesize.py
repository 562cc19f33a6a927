"""synthesize stage: WebR instruction data from raw web pages over the LLM roles (params `roles:`).

    python -m flows.synthesize       # what `dvc repro synthesize` runs; writes data/synthesize/

Input: the world's pages (data/world/pages.jsonl) or `synthesize.webr.input` (JSON / JSONL of {"webpage"}).
Every hf/openai call is cached in .cache/alignpipe/llm/ by request hash: a killed run resumes without
repeating a request (the counters in data/synthesize/metrics.json show it).
"""

from flows._common import load_stage_params, main, stage_flow, stage_task

from alignpipe.synth import stage as synth
from alignpipe.utils.seed import seed_everything


@stage_task
def load_inputs(params, world_dir: str):
    return synth.load(params, world_dir)


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
def post_process_and_write(params, plans, persona, reqs, resps, roles, config: dict, out_dir: str) -> dict:
    rows, meta, metrics = synth.assemble(params, plans, persona, reqs, resps, roles)
    synth.write(out_dir, rows, meta, metrics, config)
    return metrics


@stage_task
def write_disabled(params, world_dir: str, out_dir: str) -> dict:
    return synth.run(params, world_dir, out_dir)


@stage_flow("synthesize")
def synthesize_flow(params: str = "params.yaml", world_dir: str = "data/world",
                    out_dir: str = "data/synthesize") -> dict:
    """Synthesize WebR data (persona, request, response, refinement, filters, dedup)."""
    cfg = load_stage_params(params)
    seed_everything(cfg.seed)
    if not cfg.synthesize.webr.enabled:
        return write_disabled(cfg, world_dir, out_dir)
    config = synth.stage_config(cfg, world_dir)
    pages, roles = load_inputs(cfg, world_dir)
    persona = author_personas(cfg, pages, roles)
    plans = synth.plan(cfg, pages)
    reqs = write_requests(cfg, plans, persona, roles)
    resps = write_responses(cfg, plans, reqs, roles)
    return post_process_and_write(cfg, plans, persona, reqs, resps, roles, config, out_dir)


if __name__ == "__main__":
    main("synthesize", synthesize_flow)
