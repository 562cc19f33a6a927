"""synthesize stage: WebR instruction data from raw web pages, then Lion's adversarial rounds, over the LLM roles.

    python -m flows.synthesize       # what `dvc repro synthesize` runs; writes data/synthesize/

WebR input: the world's pages (data/world/pages.jsonl) or `synthesize.webr.input` (JSON / JSONL of {"webpage"}).
Lion: `synthesize.lion.rounds` rounds of imitation (teacher answers the pool, the student from data/base/model is
fine-tuned on it), discrimination (referee, both orders; hard / easy) and generation (new instructions), each
phase's artifacts in .cache/alignpipe/synthesize-lion/<hash>/round_<r>/<phase>/: a rerun after a kill
continues from the last finished phase. Every hf/openai call is cached in .cache/alignpipe/llm/ by request
hash: nothing is asked twice (.cache/alignpipe/runs/synthesize.jsonl counts requests and cache hits). Remote
(openai) calls fan out as `llm-<role>` tasks through the task runner `roles.runner` names (a thread pool, or a
Dask cluster).

The stage is `alignpipe.stages.synthesize.run`; `flows._common.main` runs it once in a Prefect flow.
"""

from flows._common import main

if __name__ == "__main__":
    main("synthesize")
