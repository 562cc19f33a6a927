"""The ``evaluate`` stage: greedy generation over the evaluation pool, verifiers, judge, FollowBench metrics.

Run one model (normally through ``python -m flows.evaluate --name sft --model-dir data/sft/model`` /
``dvc repro evaluate@sft``; or directly)::

    from alignpipe.config import load_params
    from alignpipe.stages.evaluate import run
    run(load_params("params.yaml"), name="sft", model_dir="data/sft/model")

Steps on the world's pool (``evaluate.benchmark: world``): ``load_pool`` -> ``generate_responses`` -> ``score``
(verifiers; the world's Judge, or ``roles.judge`` with ``evaluate.judge: roles``) -> ``summarize`` -> ``write``.
On the official FollowBench data (``evaluate.benchmark: followbench``) the middle steps are those of
:mod:`alignpipe.evaluate.followbench.bench` (rules + an LLM judge); the outputs are the same files.

Outputs in ``data/evaluate/<name>/`` (written atomically): ``generations.jsonl`` (one record per instruction:
id, group_id, category, level, instruction, response, verdicts, judge), ``metrics.json`` (a shallow dict of
numbers for ``dvc metrics show``, plus a nested ``per_category`` block), ``levels.csv`` (level, hsr, ssr; for
``dvc plots``) and ``config.json`` (the resolved configuration and the evaluation pool's hash).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignpipe.config import EvaluateSection, ModelSection, Params
from alignpipe.evaluate.followbench import bench as followbench
from alignpipe.evaluate.metrics import JUDGE_KEYS, bootstrap_ci, error_rates, followbench_scores, judge_scores
from alignpipe.evaluate.responder import chat_model
from alignpipe.llm import build_roles
from alignpipe.utils import events
from alignpipe.utils.cache import cached_map, model_digest
from alignpipe.utils.io import DataError, atomic_dir, sha256_file, work_dir, write_json
from alignpipe.utils.seed import derive_seed, seed_everything
from alignpipe.world import Judge, load_instructions, load_kb, verify

log = logging.getLogger(__name__)

JUDGE = "alignpipe.world.Judge (the built-in world's judge, over its knowledge base)"
VERIFIER = "alignpipe.world.verify (rule-based verifier per constraint)"


def load_pool(world_dir: str | Path, levels: Sequence[int]) -> list[dict[str, Any]]:
    """Read the evaluation pool and keep the scored levels (level 0 is never scored).

    Args:
        world_dir: the world stage's output directory (holds ``eval.jsonl``).
        levels: the levels to evaluate (``params.evaluate.levels``, a subset of 1-5).

    Raises:
        DataError: the pool has no instruction at one of the requested levels.
    """
    path = Path(world_dir) / "eval.jsonl"
    records = [r for r in load_instructions(path) if r["level"] in levels and r["level"] != 0]
    missing = sorted(set(levels) - {r["level"] for r in records})
    if missing:
        raise DataError(f"{path}: no instruction at level(s) {missing} (evaluate.levels = {list(levels)})")
    return records


def generate_responses(
    model_dir: str | Path, records: list[dict[str, Any]], cfg: EvaluateSection, model_section: ModelSection
) -> list[str]:
    """Greedy responses of the model to each record's instruction, as a single user turn.

    Args:
        model_dir: an HF model directory (or hub id) loadable by ``alignpipe.models.load_model``.
        records: instruction records (``instruction`` is the user message).
        cfg: generation budget and batch size.
        model_section: dtype / trust_remote_code / revision used to load the model.
    """
    # Stored by prompt under the work dir, keyed by the weights and decoding settings: a killed run resumes at
    # the first missing chunk, and a rerun whose model did not change loads no model at all. One chunk per
    # generation batch: a kill loses at most one batch, and a resumed run batches the rest as an uninterrupted
    # one does (batches start at the same prompts), so greedy outputs cannot differ by padding.
    key = {"evaluate": "world", "model": model_section.model_dump(), "weights": model_digest(model_dir),
           "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size}
    respond = chat_model(model_dir, model_section, cfg.max_new_tokens, cfg.batch_size)
    responses = cached_map(respond, [r["instruction"] for r in records], work_dir("evaluate", key) / "responses.jsonl",
                           chunk=cfg.batch_size)
    if len(responses) != len(records):
        raise RuntimeError(f"generate returned {len(responses)} responses for {len(records)} prompts")
    return list(responses)


def score(
    records: list[dict[str, Any]], responses: list[str], kb: Any, roles_judge: Any = None
) -> list[dict[str, Any]]:
    """Verify each response's constraints and judge it; return the generation records.

    Args:
        records: instruction records, in the order of ``responses``.
        responses: one response per record.
        kb: the world's knowledge base (``alignpipe.world.load_kb``), used by the judge.
        roles_judge: the LLM roles' judge (``evaluate.judge: roles``), or None for the world's Judge directly.
            Through it each row also keeps ``judge_raw`` (the judge's output) and ``judge`` is None where that
            output was unparseable.

    Returns:
        ``{"id", "group_id", "category", "level", "instruction", "response", "verdicts", "judge"}`` per record.
    """
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    judge = Judge(kb) if roles_judge is None else None
    judged = None if judge is not None else roles_judge.score_raw([r["instruction"] for r in records], responses,
                                                                  records)
    out = []
    for i, (record, response) in enumerate(zip(records, responses, strict=True)):
        verdicts = [bool(v) for v in verify(record, response)]
        if len(verdicts) != len(record["constraints"]):
            raise ValueError(
                f"{record['id']}: verify returned {len(verdicts)} verdicts "
                f"for {len(record['constraints'])} constraints"
            )
        scores = judge.score(record, response) if judge is not None else judged[i][0]
        row = {
            **{k: record[k] for k in ("id", "group_id", "category", "level", "instruction")},
            "response": response,
            "verdicts": verdicts,
            "judge": None if scores is None else {k: scores[k] for k in JUDGE_KEYS},
        }
        if judged is not None:
            row["judge_raw"] = judged[i][1]
        else:
            row["errors"] = judge.errors(record, response)
        out.append(row)
    return out


def _r(x: float) -> float:
    return round(x, 6)


def summarize(generations: list[dict[str, Any]], cfg: EvaluateSection, seed: int) -> dict[str, Any]:
    """The ``metrics.json`` content: FollowBench figures, judge means, their intervals, and sample sizes.

    Flat keys: ``hsr_l1..hsr_l5``, ``ssr_l1..ssr_l5``, ``hsr_avg``, ``ssr_avg``, ``csl``, ``fluency``,
    ``factuality``, ``coherence``, each with ``<key>_lo``/``<key>_hi`` (omitted when
    ``bootstrap_samples`` is 0), ``n_groups``, ``n_instructions``; plus ``per_category`` (point estimates).
    Rates are fractions in [0, 1]; CSL is in levels (0-5); judge scores on 1-10. With the world's judge also
    ``error_fluency``, ``error_coherence``, ``error_factuality`` (share of responses with at least one error of
    that kind, :meth:`alignpipe.world.Judge.errors`) and ``error_constraints`` (share failing a constraint).
    """
    scores = followbench_scores(generations, cfg.levels)
    # The resampling seed does not depend on the model name: on the same pool every model then draws the same
    # bootstrap resamples of groups, so differences between models are not blurred by different draws.
    estimates = bootstrap_ci(
        generations, cfg.levels, cfg.bootstrap_samples, cfg.confidence, derive_seed(seed, "evaluate", "bootstrap")
    )
    scored = [g for g in generations if g.get("judge") is not None]  # unparseable judge outputs: counted, not scored
    if scored:
        estimates.update(
            judge_scores(scored, cfg.bootstrap_samples, cfg.confidence, derive_seed(seed, "evaluate", "judge"))
        )
    if generations and all("errors" in g for g in generations):
        estimates.update(error_rates(generations, cfg.bootstrap_samples, cfg.confidence,
                                     derive_seed(seed, "evaluate", "errors")))
    metrics: dict[str, Any] = {}
    for key, (point, lo, hi) in estimates.items():
        metrics[key] = _r(point)
        if lo is not None:
            metrics[f"{key}_lo"], metrics[f"{key}_hi"] = _r(lo), _r(hi)
    metrics["n_groups"] = scores["n_groups"]
    metrics["n_instructions"] = scores["n_instructions"]
    if len(scored) < len(generations):
        metrics["judge_unparseable"] = len(generations) - len(scored)
    metrics["per_category"] = {
        cat: {k: (_r(v) if isinstance(v, float) else v) for k, v in entry.items()}
        for cat, entry in scores["per_category"].items()
    }
    return metrics


def write(
    out_dir: str | Path, generations: list[dict[str, Any]], metrics: dict[str, Any], config: dict[str, Any]
) -> Path:
    """Write ``generations.jsonl``, ``metrics.json``, ``levels.csv`` and ``config.json`` atomically."""
    levels = sorted(int(k.removeprefix("hsr_l")) for k in metrics if k.startswith("hsr_l") and k[5:].isdigit())
    with atomic_dir(out_dir) as tmp:
        with open(tmp / "generations.jsonl", "w", encoding="utf-8") as fh:
            for row in generations:
                fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
        write_json(tmp / "metrics.json", metrics)
        lines = ["level,hsr,ssr"] + [f"{lv},{metrics[f'hsr_l{lv}']!r},{metrics[f'ssr_l{lv}']!r}" for lv in levels]
        (tmp / "levels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_json(tmp / "config.json", config)
    return Path(out_dir)


def stage_config(params: Params, name: str, model_dir: str | Path, world_dir: str | Path) -> dict[str, Any]:
    """The resolved configuration written to ``config.json`` beside the metrics."""
    world_dir = Path(world_dir)
    return {
        "name": name,
        "model_dir": str(model_dir),
        "world_dir": str(world_dir),
        "eval_sha256": sha256_file(world_dir / "eval.jsonl") if (world_dir / "eval.jsonl").is_file() else None,
        "seed": params.seed,
        "model": params.model.model_dump(),
        "evaluate": params.evaluate.model_dump(),
        "judge": JUDGE if params.evaluate.judge == "world" else roles_judge_description(params),
        "verifier": VERIFIER,
    }


def judge_role(params: Params, kb: Any, fan_out: Callable | None = None) -> Any:
    """The LLM roles' judge when ``evaluate.judge: roles`` (fluency / factuality / coherence through its backend);
    None when the world's Judge judges directly. ``fan_out``: see :func:`alignpipe.llm.build_roles`."""
    if params.evaluate.judge != "roles":
        return None
    return build_roles(params.roles, seed=params.seed, kb=kb, fan_out=fan_out).judge


def judge_role_metrics(generations: list[dict[str, Any]], roles_judge: Any) -> dict[str, Any]:
    """What ``metrics.json`` adds when the judge role judged: unparseable outputs and the role's work counters."""
    if roles_judge is None:
        return {}
    events.record("roles", judge=roles_judge.stats.as_dict())  # requests, retries, cache hits: the run record
    return {"judge_unparseable": sum(g["judge"] is None for g in generations),
            "judge_calls": roles_judge.stats.work()}


def roles_judge_description(params: Params) -> str:
    """What judged the responses when ``evaluate.judge: roles``: the judge role's backend and prompt."""
    section = params.roles.judge
    what = section.backend + (f" {section.model}" if section.model else "")
    what += f" at {section.base_url}" if section.base_url else ""
    if section.backend == "oracle":
        what += ": the world's Judge"
    return f"roles.judge ({what}), prompt alignpipe/llm/prompts/judge_score.v1.txt"


def run(
    params: Params,
    name: str,
    model_dir: str | Path,
    world_dir: str | Path = "data/world",
    out_dir: str | Path | None = None,
    fan_out: Callable | None = None,
) -> dict[str, Any]:
    """Evaluate one model; return the metrics written to ``metrics.json``.

    With ``evaluate.benchmark: followbench`` the official FollowBench data replaces the world's pool
    (:mod:`alignpipe.evaluate.followbench.bench`; ``world_dir`` is then unused).

    Args:
        params: the validated params (uses ``seed``, ``model``, ``evaluate`` and, for an LLM judge, ``roles``).
        name: the evaluated variant (``base``, ``sft``, ...); names the output directory.
        model_dir: the model to evaluate (an HF directory).
        world_dir: the world stage's outputs (``eval.jsonl``, ``kb.json``).
        out_dir: where to write; default ``data/evaluate/<name>``.
        fan_out: the flow's task-runner mapper for remote judge calls (see :func:`alignpipe.llm.build_roles`).
    """
    seed_everything(params.seed)
    out_dir = Path(out_dir) if out_dir is not None else Path("data/evaluate") / name
    if params.evaluate.benchmark == "followbench":  # the official data instead of the world's pool
        return _run_followbench(params, name, model_dir, out_dir, fan_out)
    return _run_world(params, name, model_dir, Path(world_dir), out_dir, fan_out)


def _run_world(params: Params, name: str, model_dir: str | Path, world_dir: Path, out_dir: Path,
               fan_out: Callable | None) -> dict[str, Any]:
    """The world benchmark: the pool and the knowledge base are read (and checked) before any generation."""
    cfg = params.evaluate
    config = stage_config(params, name, model_dir, world_dir)
    log.info("evaluate %s: %s", name, json.dumps(config, sort_keys=True))

    t0 = time.perf_counter()
    records = load_pool(world_dir, cfg.levels)
    kb = load_kb(world_dir / "kb.json")
    responses = generate_responses(model_dir, records, cfg, params.model)
    log.info("generated %d responses in %.1fs", len(responses), time.perf_counter() - t0)
    roles_judge = judge_role(params, kb, fan_out)
    generations = score(records, responses, kb, roles_judge)
    metrics = {**summarize(generations, cfg, params.seed), **judge_role_metrics(generations, roles_judge)}
    write(out_dir, generations, metrics, config)
    log.info(
        "evaluate %s: HSR %.3f SSR %.3f CSL %.2f over %d groups (%.1fs)",
        name, metrics["hsr_avg"], metrics["ssr_avg"], metrics["csl"], metrics["n_groups"], time.perf_counter() - t0,
    )  # fmt: skip
    return metrics


def _run_followbench(params: Params, name: str, model_dir: str | Path, out_dir: Path,
                     fan_out: Callable | None) -> dict[str, Any]:
    """The official FollowBench data: generate for the records a judge can score, rules + judge, the same files."""
    config = followbench.stage_config(params, name, model_dir)
    log.info("evaluate %s on FollowBench: %s", name, json.dumps(config, sort_keys=True))

    t0 = time.perf_counter()
    records, todo = followbench.load(params)
    answer = followbench.to_answer(params, todo)
    by_id = dict(zip((r["id"] for r in answer), followbench.generate(params, model_dir, answer), strict=True))
    responses = [by_id.get(r["id"]) for r in todo]  # None: not answered (no judge could score it)
    log.info("generated %d responses (%d instructions) in %.1fs", len(by_id), len(todo), time.perf_counter() - t0)
    rows, metrics = followbench.score_responses(params, model_dir, records, todo, responses, fan_out)
    write(out_dir, rows, metrics, config)
    log.info(
        "evaluate %s (FollowBench): HSR %.3f SSR %.3f CSL %.2f; rows by method %s; unparseable %d (%.1fs)",
        name, metrics["hsr_avg"], metrics["ssr_avg"], metrics["csl"], metrics["methods"], metrics["unparseable"]["n"],
        time.perf_counter() - t0,
    )  # fmt: skip
    return metrics
