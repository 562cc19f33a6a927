"""The ``preferences`` stage: sample K responses per train prompt from the SFT policy, label, pair.

    python -m flows.preferences      # what `dvc repro preferences` runs

:func:`run` is the stage: ``load_prompts`` -> ``sample_candidates`` -> ``label`` -> ``make_pairs`` ->
``write``. Sampling goes in chunks of prompts, each chunk seeded by its index and cached in
``.cache/alignpipe/preferences/<config hash>/``: a killed run resumes at the first missing chunk and the
samples do not depend on where it was killed. With ``preferences.bridging.enabled``, ``bridge`` (BMC) runs
between ``make_pairs`` and ``write``; it never changes the sample cache's key.

Outputs in ``data/preferences/``: ``pairs.jsonl`` (TRL conversational preference format + provenance; with
bridging also ``bridged``, BMC's pseudo-winning response, and ``score_bridged``),
``candidates.jsonl`` (every labelled candidate), ``metrics.json`` (pair statistics), ``config.json``.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.llm import build_roles
from alignpipe.methods.bmc.bridging import RolesEditor, bridge_pairs, world_editor
from alignpipe.models import load_model, sample
from alignpipe.prefs.pairs import Candidate, PairStats, build_pairs, pair_row
from alignpipe.utils import events
from alignpipe.utils.io import DataError, atomic_dir, atomic_file, dumps, one_line, sha256_file, work_dir, write_jsonl
from alignpipe.utils.seed import derive_seed, seed_everything
from alignpipe.world import Judge, Oracle, load_instructions, load_kb, response_score, verify

log = logging.getLogger(__name__)
CHUNK = 64  # prompts per resumable sampling chunk


def stage_config(params: Params, world_dir: str | Path, sft_dir: str | Path) -> dict[str, Any]:
    """What the outputs depend on (also keys the resumable sample cache)."""
    weights = sorted(p for p in (Path(sft_dir) / "model").glob("*.safetensors"))
    return {
        "seed": params.seed,
        "preferences": params.preferences.model_dump(mode="json"),
        "model": params.model.model_dump(mode="json"),
        "prompts_sha256": sha256_file(prompt_file(params, world_dir)),
        "policy_sha256": [sha256_file(p) for p in weights],
        "policy_dir": str(Path(sft_dir) / "model"),
    }


def sample_cache_key(config: dict[str, Any]) -> dict[str, Any]:
    """What the sampled candidates depend on: the stage config without BMC bridging (toggling it never resamples)."""
    prefs = {k: v for k, v in config["preferences"].items() if k != "bridging"}
    return {**config, "preferences": prefs}


def prompt_file(params: Params, world_dir: str | Path) -> Path:
    """The pool the prompts come from (``preferences.prompts``): ``prefs.jsonl``, prompts the SFT data never holds,
    or ``train.jsonl``, the SFT data's own prompts (whose demonstrations the policy has seen, so a pair's chosen
    oracle answer is close to memorized and the pairs measure memory more than preference)."""
    name = "prefs.jsonl" if params.preferences.prompts == "prefs" else "train.jsonl"
    path = Path(world_dir) / name
    if name == "prefs.jsonl" and (not path.is_file() or not path.stat().st_size):
        what = "holds no prompts" if path.is_file() else "not found"
        raise DataError(f"{path} {what}: preferences.prompts is 'prefs' but the world has no preference pool (set "
                        "world.preference_groups_per_category > 0, or preferences.prompts: train)")
    return path


def load_prompts(params: Params, world_dir: str | Path) -> list[dict[str, Any]]:
    """The pool's records at the configured levels; a seeded subset of ``max_prompts`` of them, in file order.

    A random subset rather than the first N: the pool is ordered by category, so a prefix would miss some.
    """
    cfg = params.preferences
    path = prompt_file(params, world_dir)
    records = [r for r in load_instructions(path) if r["level"] in cfg.levels]
    if cfg.max_prompts is not None and cfg.max_prompts < len(records):
        keep = set(random.Random(derive_seed(params.seed, "preferences", "subset")).sample(range(len(records)),
                                                                                           cfg.max_prompts))
        records = [r for i, r in enumerate(records) if i in keep]
    if not records:
        raise ValueError(f"{path} has no prompts at levels {cfg.levels}")
    return records


def sample_candidates(
    params: Params, records: list[dict[str, Any]], sft_dir: str | Path, cache: Path
) -> list[list[str]]:
    """K sampled responses per record, resuming from cached chunks."""
    cfg = params.preferences
    model = tokenizer = None
    out: list[list[str]] = []
    n_chunks = (len(records) + CHUNK - 1) // CHUNK
    reused = 0
    for c in range(n_chunks):
        path = cache / f"chunk-{c:05d}.json"
        chunk = records[c * CHUNK : (c + 1) * CHUNK]
        if path.is_file():
            cached = json.loads(path.read_text(encoding="utf-8"))
            if [r["id"] for r in chunk] == cached["ids"]:
                out.extend(cached["samples"])
                reused += len(chunk)
                continue
        if model is None:
            model, tokenizer = load_model(Path(sft_dir) / "model", params.model)
        prompts = [[{"role": "user", "content": r["instruction"]}] for r in chunk]
        samples = sample(
            model, tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size,
            num_return_sequences=cfg.num_samples, temperature=cfg.temperature, top_p=cfg.top_p,
            seed=derive_seed(params.seed, "preferences", c),
        )  # fmt: skip
        with atomic_file(path) as fh:
            fh.write(json.dumps({"ids": [r["id"] for r in chunk], "samples": samples}))
        out.extend(samples)
        log.info("sampled chunk %d/%d (%d prompts x %d)", c + 1, n_chunks, len(chunk), cfg.num_samples)
    events.record("cache", store=str(cache), total=len(records), reused=reused, computed=len(records) - reused)
    return out


def label(
    params: Params, records: list[dict[str, Any]], samples: list[list[str]], world_dir: str | Path
) -> list[list[dict[str, Any]]]:
    """Verify and judge every candidate (and the oracle's answer when ``include_oracle``)."""
    cfg = params.preferences
    kb = load_kb(Path(world_dir) / "kb.json")
    judge, oracle = Judge(kb), Oracle(kb)
    labelled = []
    for record, texts in zip(records, samples, strict=True):
        sources = [("policy", t) for t in texts]
        if cfg.include_oracle:
            sources.append(("oracle", oracle.answer(record)))
        rows = []
        for source, text in sources:
            verdicts = verify(record, text)
            scores = judge.score(record, text)
            rows.append({
                "source": source, "response": text, "verdicts": verdicts, "judge": scores,
                "score": response_score(verdicts, scores, cfg.judge_weight),
            })  # fmt: skip
        labelled.append(rows)
    return labelled


def make_pairs(
    params: Params, records: list[dict[str, Any]], labelled: list[list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs for every prompt, and the statistics written as metrics."""
    cfg = params.preferences
    stats = PairStats()
    pairs: list[dict[str, Any]] = []
    for record, rows in zip(records, labelled, strict=True):
        cands = [Candidate(r["response"], r["score"], r["source"]) for r in rows if r["response"].strip()]
        for i, (chosen, rejected) in enumerate(build_pairs(cands, cfg.pairs_per_prompt, cfg.min_margin, stats)):
            pairs.append(pair_row(record, chosen, rejected, i))
    if not pairs:
        raise ValueError(
            f"no preference pairs: every prompt's candidates were within min_margin={cfg.min_margin} of each other"
        )
    margins = sorted(p["margin"] for p in pairs)
    policy = [r["score"] for rows in labelled for r in rows if r["source"] == "policy"]

    def q(p: float) -> float:
        return round(margins[min(len(margins) - 1, int(p * len(margins)))], 6)

    metrics = {
        "n_prompts": len(records),
        "n_candidates": sum(len(rows) for rows in labelled),
        "n_pairs": len(pairs),
        "prompts_with_pairs": len({p["prompt_id"] for p in pairs}),
        "dropped_identical": stats.identical,
        "dropped_below_margin": stats.below_margin,
        "dropped_over_cap": stats.over_cap,
        "prompts_without_pair": stats.no_pair,
        "margin_mean": round(statistics.fmean(margins), 6),
        "margin_p10": q(0.1),
        "margin_p50": q(0.5),
        "margin_p90": q(0.9),
        "chosen_from_oracle": round(sum(p["source_chosen"] == "oracle" for p in pairs) / len(pairs), 6),
        "policy_score_mean": round(statistics.fmean(policy), 6) if policy else None,
    }
    return pairs, metrics


def bridge(
    params: Params, records: list[dict[str, Any]], pairs: list[dict[str, Any]], world_dir: str | Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """BMC bridging: every pair gains ``bridged`` (the editor's pseudo-winning response) and ``score_bridged``."""
    cfg = params.preferences
    kb = load_kb(Path(world_dir) / "kb.json")
    judge, by_id = Judge(kb), {r["id"]: r for r in records}
    roles = None
    if cfg.bridging.editor == "roles":  # the roles interface's editor (oracle / hf / openai), batched and cached
        roles = build_roles(params.roles, seed=params.seed, kb=kb)
        editor = RolesEditor(roles.editor, {r["instruction"]: r for r in records})
    else:
        editor = world_editor(kb, records)

    def score(pair: dict[str, Any], text: str) -> float:
        record = by_id[pair["prompt_id"]]
        return response_score(verify(record, text), judge.score(record, text), cfg.judge_weight)

    out, stats = bridge_pairs(pairs, editor, score)
    if roles is not None:
        stats["roles"] = roles.work_metrics()  # requests / cache hits depend on the cache: the run record has them
        events.record("roles", counters=roles.metrics())
    log.info("bridging (%s editor): %s", cfg.bridging.editor, json.dumps(stats))
    return out, stats


def write(
    out_dir: str | Path, pairs: list[dict], records: list[dict], labelled: list[list[dict]], metrics: dict, config: dict
) -> None:
    """Write pairs, candidates, metrics and config atomically."""
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "pairs.jsonl", pairs)
        write_jsonl(
            tmp / "candidates.jsonl",
            ({"prompt_id": r["id"], "candidates": rows} for r, rows in zip(records, labelled, strict=True)),
        )
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")


def run(
    params: Params, world_dir: str | Path = "data/world", sft_dir: str | Path = "data/sft",
    out_dir: str | Path = "data/preferences",
) -> dict[str, Any]:  # fmt: skip
    """The whole stage; returns the metrics."""
    seed_everything(params.seed)
    config = stage_config(params, world_dir, sft_dir)
    log.info("preferences config: %s", one_line(config))
    records = load_prompts(params, world_dir)
    samples = sample_candidates(params, records, sft_dir, work_dir("preferences", sample_cache_key(config)))
    labelled = label(params, records, samples, world_dir)
    pairs, metrics = make_pairs(params, records, labelled)
    if params.preferences.bridging.enabled:
        pairs, metrics["bridging"] = bridge(params, records, pairs, world_dir)
    write(out_dir, pairs, records, labelled, metrics, config)
    log.info("preferences: %s", json.dumps(metrics))
    return metrics

