"""The ``sft_mix`` stage: one SFT policy per named data mixture, for the data-source table (WebR / Lion Table 1).

    python -m flows.sft_mix --name lion      # what `dvc repro sft_mix@lion` runs; writes data/sft_mix/lion/

    from alignpipe.stages import sft_mix
    sft_mix.run(params, "lion")              # train (the sft stage's training) + relative score vs the teacher

A mixture (``sft_mix.mixtures.<name>``) lists sources concatenated in order, those of ``sft.data`` (``seed``,
``webr``, ``lion``) plus ``lion_r<r>``: the pool Lion's round r fine-tuned its student on, teacher-answered
(``data/synthesize/lion/round_<r>/imitation/train.jsonl``), so rows "+Lion (round r)" show the data of each round.
Training is :func:`alignpipe.train.sft.fine_tune` with the ``sft`` section (same trainer, same length, same base
model): the rows differ in their data only. A mixture equal to ``sft.data`` reuses ``data/sft/model`` (the sft stage's
output, checked through its ``config.json``) instead of training the same model twice.

Relative score vs the teacher (Lion's Table 1 measure, :func:`alignpipe.methods.lion.pool.score_metrics`): the policy
answers Lion's fixed eval subset (the same seeded ``synthesize.lion.eval_prompts`` world eval prompts), the
referee role scores it against the teacher answers Lion stored in round 0
(``data/synthesize/lion/round_0/baseline/teacher_eval.jsonl``) in both orders, and
100 x sum(student) / sum(teacher). Without Lion's eval data (Lion disabled, or ``eval_prompts: 0``) it is null.
FollowBench HSR/SSR/CSL and judge scores come from the evaluate stage (``evaluate@mix_<name>``).

Outputs: ``out_dir/{model/, metrics.json, config.json, log.csv, relative.jsonl}``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from alignpipe.config import ConfigError, Params, check_instance
from alignpipe.llm import FanOut, Roles, build_roles
from alignpipe.methods.lion import pool as lion
from alignpipe.methods.lion.rounds import student_answers
from alignpipe.train import sft
from alignpipe.utils import events
from alignpipe.utils.io import DataError, atomic_dir, dumps, one_line, read_json, write_jsonl
from alignpipe.utils.seed import derive_seed, seed_everything
from alignpipe.world import load_kb

log = logging.getLogger(__name__)


def source_files(sources: list[str], world_dir: str | Path = "data/world",
                 synth_dir: str | Path = "data/synthesize") -> list[Path]:
    """The JSONL file of each source, in order (see the module docstring)."""
    world_dir, synth_dir = Path(world_dir), Path(synth_dir)
    fixed = {"seed": world_dir / "sft.jsonl", "webr": synth_dir / "sft_webr.jsonl",
             "lion": synth_dir / "sft_lion.jsonl"}
    out = []
    for name in sources:
        if name in fixed:
            out.append(fixed[name])
        elif name.startswith("lion_r") and name[6:].isdigit():
            out.append(synth_dir / "lion" / f"round_{int(name[6:])}" / "imitation" / "train.jsonl")
        else:
            raise ConfigError(f"sft_mix: unknown data source '{name}' (allowed: seed, webr, lion, lion_r<r>)")
    return out


def get_mixture(params: Params, name: str) -> list[str]:
    """The sources of mixture ``name`` (``sft_mix.mixtures``); an unknown name is a ConfigError."""
    check_instance(params, "sft_mix", {"name": name})
    return params.sft_mix.mixtures[name]


def _reusable(params: Params, sources: list[str], files: list[Path], sft_dir: Path) -> bool:
    """The sft stage's output is this very model: same data sources, files and sft/model/seed settings."""
    if sources != list(params.sft.data) or not (sft_dir / "model").is_dir() or not (sft_dir / "config.json").is_file():
        return False
    used = read_json(sft_dir / "config.json")
    want = json.loads(dumps(sft.run_config(params, [str(f) for f in files])))
    return used == want


def eval_items(params: Params, world_dir: str | Path, synth_dir: str | Path) -> tuple[list[dict], dict[str, str]]:
    """Lion's fixed eval subset (as :func:`alignpipe.methods.lion.rounds.prepare` draws it) and the teacher's
    stored answers to it."""
    cfg = params.synthesize.lion
    teacher_file = Path(synth_dir) / "lion" / "round_0" / "baseline" / "teacher_eval.jsonl"
    eval_path = Path(world_dir) / "eval.jsonl"
    if not (cfg.enabled and cfg.eval_prompts and eval_path.is_file() and teacher_file.is_file()):
        return [], {}
    items = lion.subset(lion.load_world_pool(eval_path), cfg.eval_prompts, derive_seed(params.seed, "lion", "eval"))
    rows = [json.loads(x) for x in teacher_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    teacher = {r["id"]: r["answer"] for r in rows if r["answer"] is not None}
    missing = [x["id"] for x in items if x["id"] not in {r["id"] for r in rows}]
    if missing:
        raise DataError(f"{teacher_file}: no teacher answer for Lion eval prompt(s) {missing[:5]}: rerun synthesize "
                        f"(its eval subset differs from synthesize.lion.eval_prompts / seed)")
    return [x for x in items if x["id"] in teacher], teacher


def relative_score(params: Params, roles: Roles, model_dir: str | Path, items: list[dict],
                   teacher: dict[str, str]) -> tuple[list[dict], dict[str, Any]]:
    """The policy's answers scored against the teacher's by the referee: Lion's rows and score metrics."""
    if not items:
        return [], {**lion.score_metrics([]), "n": 0}
    student = student_answers(params, model_dir, items)
    rows = lion.score(roles.referee, items, [teacher[x["id"]] for x in items], student,
                      params.synthesize.lion.threshold)
    return rows, {**lion.score_metrics(rows), "n": len(items)}


def stage_config(params: Params, name: str, files: list[Path]) -> dict[str, Any]:
    """What the outputs depend on (``config.json``): the mixture, the SFT run's config, the relative-score settings."""
    return {"mixture": name, "sources": get_mixture(params, name), **sft.run_config(params, [str(f) for f in files]),
            "relative_score": {"eval_prompts": params.synthesize.lion.eval_prompts,
                               "threshold": params.synthesize.lion.threshold,
                               "referee": params.roles.referee.model_dump(mode="json")}}


def train(params: Params, name: str, world_dir: str | Path = "data/world", base_dir: str | Path = "data/base",
          synth_dir: str | Path = "data/synthesize", sft_dir: str | Path = "data/sft",
          work: str | Path = "data/sft_mix/.train") -> tuple[Path, dict[str, Any]]:
    """The mixture's SFT policy in ``work`` (trained, or copied from ``sft_dir`` when it is the same model)."""
    sources = get_mixture(params, name)
    files = source_files(sources, world_dir, synth_dir)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"sft_mix '{name}': data file(s) {missing} not found (run the synthesize stage)")
    work = Path(work)
    if work.exists():
        shutil.rmtree(work)
    counts = {src: sum(1 for line in f.read_text(encoding="utf-8").splitlines() if line.strip())
              for src, f in zip(sources, files)}
    if _reusable(params, sources, files, Path(sft_dir)):
        log.info("sft_mix '%s' = sft.data %s: reusing %s", name, sources, sft_dir)
        shutil.copytree(sft_dir, work)
        metrics = read_json(Path(sft_dir) / "metrics.json")
        return work, {**metrics, "reused": str(sft_dir), "rows_by_source": counts}
    # Seeded right before training, as the sft stage trains: the same data then gives the sft stage's very model.
    seed_everything(params.seed)
    metrics = sft.fine_tune(params, files, base_dir, work)
    return work, {**metrics, "reused": None, "rows_by_source": counts}


def run(params: Params, name: str, world_dir: str | Path = "data/world", base_dir: str | Path = "data/base",
        synth_dir: str | Path = "data/synthesize", sft_dir: str | Path = "data/sft", out_dir: str | Path | None = None,
        fan_out: FanOut | None = None) -> dict[str, Any]:
    """Train (or reuse) mixture ``name``'s policy, score it against the teacher; write ``out_dir``; return metrics.

    ``out_dir`` defaults to ``data/sft_mix/<name>``; ``fan_out``: the flow's task-runner mapper for remote role
    calls (see :func:`alignpipe.llm.build_roles`).
    """
    seed_everything(params.seed)
    sources = get_mixture(params, name)  # an unknown mixture fails before any work
    kb = Path(world_dir) / "kb.json"
    roles = build_roles(params.roles, params.seed, kb=load_kb(kb) if kb.is_file() else None, fan_out=fan_out)
    out_dir = Path(out_dir or Path("data/sft_mix") / name)
    files = source_files(sources, world_dir, synth_dir)
    config = stage_config(params, name, files)
    items, teacher = eval_items(params, world_dir, synth_dir)
    work = out_dir.parent / f".{out_dir.name}.train"
    model_dir, metrics = train(params, name, world_dir, base_dir, synth_dir, sft_dir, work)
    try:
        rows, rel = relative_score(params, roles, model_dir / "model", items, teacher)
        metrics = {**{k: v for k, v in metrics.items() if k != "log"}, "mixture": name, "sources": sources,
                   "relative": rel, "relative_score": rel["relative_score"], "roles": roles.work_metrics()["total"]}
        # requests / cache hits depend on the run's history: the run record, not metrics.json
        events.record("roles", counters=roles.metrics())
        with atomic_dir(out_dir) as tmp:
            shutil.copytree(model_dir / "model", tmp / "model")
            if (model_dir / "log.csv").is_file():
                shutil.copy2(model_dir / "log.csv", tmp / "log.csv")
            else:
                (tmp / "log.csv").write_text("step,loss\n", encoding="utf-8")
            write_jsonl(tmp / "relative.jsonl", rows)
            (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
            (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("sft_mix '%s' metrics: %s", name, one_line(metrics))
    return metrics
