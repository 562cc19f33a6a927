"""FollowBench on the official data (``evaluate.benchmark: followbench``): the evaluate stage's steps for it.

The evaluate stage (:func:`alignpipe.stages.evaluate.run`) runs them in this order::

    records, todo = load(params)                            # the official data, a seeded subset of groups
    responses = generate(params, model_dir, to_answer(params, todo))
    rows, metrics = score_responses(params, model_dir, records, todo, responses)   # rules, then the judge

``load`` reads and validates the data (``evaluate.followbench.source``: a local dir or the hub dataset) and keeps a
seeded subset of groups if asked; ``generate`` answers greedily with the model's chat template
(``evaluate.max_new_tokens``, ``evaluate.batch_size``); ``score_responses`` scores the rule groups by the official
rules and the rest with the judge (``evaluate.followbench.judge``: a local model, ``roles.judge`` or none) and
summarizes. The stage writes the same files as the world benchmark (one row per scored instruction: response,
method, verdicts, the judge's raw outputs); :func:`stage_config` is its ``config.json``. Responses and judge outputs
are stored by prompt under ``.cache/alignpipe/evaluate/<key>/`` (the key covers the model's files and the decoding
settings), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alignpipe.config import ConfigError, FollowBenchJudgeSection, ModelSection, Params
from alignpipe.evaluate.responder import chat_model
from alignpipe.utils import events
from alignpipe.utils.cache import cached_map, model_digest
from alignpipe.evaluate.followbench.data import file_name, load_followbench, select_groups
from alignpipe.evaluate.followbench.judge import DEFAULT_TEMPLATE, JudgeFn, load_template
from alignpipe.evaluate.followbench.rules import rule_group
from alignpipe.evaluate.followbench.score import score, summarize
from alignpipe.llm import build_roles
from alignpipe.llm.base import LLMError
from alignpipe.utils.io import sha256_file, work_dir
from alignpipe.utils.seed import derive_seed

CHUNK = 64  # prompts generated (or judged) between two appends to the resumable output store


def load(params: Params) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(all records of the chosen groups, the records to answer)``: every level of the kept groups (for the
    judge's evolution paths), and those at ``evaluate.levels`` (never level 0)."""
    fb = params.evaluate.followbench
    records = load_followbench(fb.source, fb.categories, fb.revision)
    rng = np.random.default_rng(derive_seed(params.seed, "evaluate", "followbench", "groups"))
    records = select_groups(records, fb.max_groups_per_category, rng)
    todo = [r for r in records if r["level"] in params.evaluate.levels]
    return records, todo


def to_answer(params: Params, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records to generate responses for: all of ``todo``, but with no judge (``judge.backend: none``) only the
    rule-scored ones: the judged groups cannot be scored, so no generation is spent on them."""
    if params.evaluate.followbench.judge.backend != "none":
        return todo
    return [r for r in todo if rule_group(r) is not None]


def generate(params: Params, model_dir: str | Path, todo: list[dict[str, Any]]) -> list[str]:
    """Greedy responses to each record's instruction (resumable: stored by prompt under the stage's work dir)."""
    cfg = params.evaluate
    key = {"followbench": "responses", "model": params.model.model_dump(), "weights": model_digest(model_dir),
           "max_new_tokens": cfg.max_new_tokens}
    respond = chat_model(model_dir, params.model, cfg.max_new_tokens, cfg.batch_size)
    return cached_map(respond, [r["instruction"] for r in todo], work_dir("evaluate", key) / "responses.jsonl", CHUNK)


def model_judge(name_or_path: str | Path, model_section: ModelSection, cfg: FollowBenchJudgeSection) -> JudgeFn:
    """A judge backed by a local transformers model, greedy (the official temperature 0), outputs stored by prompt."""
    key = {"followbench": "judge", "model": model_section.model_dump(), "weights": model_digest(name_or_path),
           "max_new_tokens": cfg.max_new_tokens}
    respond = chat_model(name_or_path, model_section, cfg.max_new_tokens, cfg.batch_size)
    store = work_dir("evaluate", key) / "judge.jsonl"
    return lambda prompts: cached_map(respond, prompts, store, CHUNK)


ROLES_TEMPLATE = "followbench_judge.v1"  # alignpipe/llm/prompts/: the official prompt as one user turn


def roles_judge(params: Params, kb: Any = None, fan_out: Callable | None = None) -> tuple[JudgeFn, Any]:
    """A judge backed by the LLM roles' ``judge`` (``roles.judge``: oracle, hf or openai), at temperature 0.

    Returns ``(judge, role)``: the judge gives each prompt's raw output text ("" for an empty or missing answer,
    which the FollowBench parser counts as unparseable); the role carries the call counters for ``metrics.json``.
    The roles' disk cache makes a rerun reuse every stored judge output. ``fan_out``: see
    :func:`alignpipe.llm.build_roles`.
    """
    role = build_roles(params.roles, seed=params.seed, kb=kb, fan_out=fan_out).judge
    cfg = params.evaluate.followbench.judge

    def judge(prompts: list[str]) -> list[str]:
        comps = role.complete(ROLES_TEMPLATE, [{"prompt": p} for p in prompts], temperature=0.0,
                              max_tokens=cfg.max_new_tokens)
        return [c.text for c in comps]

    return judge, role


def judge_description(cfg: FollowBenchJudgeSection, model_dir: str | Path, roles: Any = None) -> str:
    if cfg.backend == "none":
        return "none (judged groups left unscored)"
    if cfg.backend == "roles":
        section = roles.judge if roles is not None else None
        what = section.backend if section is not None else "?"
        if section is not None and section.model:
            what += f" {section.model}"
        if section is not None and section.base_url:
            what += f" at {section.base_url}"
        return f"roles.judge ({what}), temperature 0, max {cfg.max_new_tokens} new tokens"
    return f"local transformers model {cfg.model or model_dir} (greedy, max {cfg.max_new_tokens} new tokens)"


def stage_config(params: Params, name: str, model_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration written to ``config.json`` (with the data files' sha256 when local)."""
    fb = params.evaluate.followbench
    source = Path(fb.source)
    files = (
        {c: sha256_file(source / file_name(c)) for c in fb.categories if (source / file_name(c)).is_file()}
        if source.is_dir()
        else None
    )
    template = Path(fb.judge.prompt) if fb.judge.prompt else DEFAULT_TEMPLATE
    return {
        "name": name,
        "benchmark": "followbench",
        "model_dir": str(model_dir),
        "data": {"source": fb.source, "revision": fb.revision, "sha256": files},
        "seed": params.seed,
        "model": params.model.model_dump(),
        "evaluate": params.evaluate.model_dump(),
        "judge": judge_description(fb.judge, model_dir, params.roles),
        "judge_prompt": {
            "file": template.name,
            "version": load_template(template)["version"],
            "sha256": hashlib.sha256(template.read_bytes()).hexdigest(),
        },
        "verifier": f"alignpipe.evaluate.followbench.rules (official rules, mode {fb.rules})",
    }


def _check_scored(rows: list[dict[str, Any]], judge: FollowBenchJudgeSection, model_dir: str | Path) -> None:
    """Fail with what to change when not one row has verdicts (nothing to score)."""
    if any(r["verdicts"] is not None for r in rows):
        return
    bad = [r for r in rows if r["method"] == "unparseable"]
    if bad:
        raw = ((bad[0].get("judge_raw") or [""])[-1])[:120]
        who = "roles.judge" if judge.backend == "roles" else f"judge model {judge.model or model_dir}"
        raise LLMError(f"evaluate.followbench.judge: all {len(bad)} judged outputs of the {who} were unparseable, "
                       f"so no FollowBench response could be scored; e.g. {raw!r}")
    raise ConfigError(f"evaluate.followbench.judge.backend = {judge.backend!r}: all {len(rows)} selected rows need "
                      "the LLM judge (none is rule-scored), so nothing could be scored; choose backend model or roles")


def score_responses(
    params: Params,
    model_dir: str | Path,
    records: list[dict[str, Any]],
    todo: list[dict[str, Any]],
    responses: list[str | None],
    fan_out: Callable | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score the responses to ``todo`` (rules, then the judge) and summarize; return ``(rows, metrics)``.

    ``records`` are all levels of the kept groups (the judge's evolution paths); a response of None is a record left
    unanswered (see :func:`to_answer`). The judge role's work goes into ``metrics`` (``judge_calls``) and the run
    record. Fails when not one row could be scored.
    """
    cfg, fb = params.evaluate, params.evaluate.followbench
    role = None
    if fb.judge.backend == "roles":
        judge, role = roles_judge(params, fan_out=fan_out)
    elif fb.judge.backend == "model":
        judge = model_judge(fb.judge.model or model_dir, params.model, fb.judge)
    else:
        judge = None
    template = load_template(fb.judge.prompt or DEFAULT_TEMPLATE)
    rows = score(todo, responses, judge, template, fb.rules, fb.judge.retries, all_records=records)
    if role is not None:  # unparseable judge outputs: counted with the role; too many of them stop the stage
        judged = [r for r in rows if r["method"] in ("judge", "unparseable")]
        role.count_unusable([r["verdicts"] for r in judged], [(r["judge_raw"] or [""])[-1] for r in judged])
    _check_scored(rows, fb.judge, model_dir)
    metrics = summarize(
        rows, cfg.levels, cfg.bootstrap_samples, cfg.confidence, derive_seed(params.seed, "evaluate", "bootstrap")
    )
    if role is not None:  # the judge role's work (unparseable: counted above); requests, cache hits: the run record
        metrics["judge_calls"] = role.stats.work()
        events.record("roles", judge=role.stats.as_dict())
    return rows, metrics
