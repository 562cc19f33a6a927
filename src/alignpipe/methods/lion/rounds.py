"""Lion's phases in the ``synthesize`` stage: each round's imitation, discrimination and generation as artifacts.

    ctx = prepare(params, world_dir="data/world", base_dir="data/base")   # initial pool, eval subset, work dir
    baseline(ctx, roles)                                                  # round 0: the initial student's score
    pool = ctx.pool
    for r in range(1, params.synthesize.lion.rounds + 1):
        imitation(ctx, roles, r, pool)                                    # teacher answers; student fine-tuned
        discrimination(ctx, roles, r)                                     # referee, both orders; hard / easy
        pool = generation(ctx, roles, r)["pool"]                          # + new hard and rarer instructions
    final_answers(ctx, roles, pool, r)                                    # the teacher answers the last ones
    rows = final_rows(ctx, r)                                             # {prompt_id, messages}

(:func:`run_rounds` does exactly this and collects each phase's metrics; the synthesize stage calls it.)

Every phase writes one directory ``<work dir>/round_<r>/<phase>/`` atomically and returns what it holds; a
directory that already exists is read back instead of recomputed, so a killed run continues from the last
finished phase (the student's checkpoints resume too, and hf/openai role calls come from the disk cache). The
work dir is keyed by everything the phases depend on except ``rounds``: raising ``rounds`` reuses the rounds
already made. :func:`write` copies the rounds into ``data/synthesize/lion/`` and writes the final data.

Decisions (also in docs/architecture.md): Lion's Train Pool and Cache Pool start equal and both receive every
new instruction, so one cumulative pool plays both; each round fine-tunes the *initial* student on the whole
pool answered by the teacher (Lion-7B is LLaMA fine-tuned on the final 70K pool); the relative score is
measured on the world's eval pool (unseen instructions, like Lion's Vicuna set) and on the pool itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.config import Params, SFTSection
from alignpipe.llm import Roles
from alignpipe.methods import webr
from alignpipe.methods.lion import pool as lion
from alignpipe.models import generate, load_model
from alignpipe.models.save import save
from alignpipe.train import sft
from alignpipe.utils import events
from alignpipe.utils.io import atomic_dir, dumps, read_json, sha256_file, work_dir, write_jsonl
from alignpipe.utils.seed import derive_seed

log = logging.getLogger(__name__)


@dataclass
class LionContext:
    """What every phase reads: params, the initial pool, the eval subset, the student to start from, the work dir."""

    params: Params
    pool: list[dict[str, Any]]
    eval_items: list[dict[str, Any]]
    student_init: str
    root: Path
    config: dict[str, Any] = field(default_factory=dict)

    def dir(self, round_: int, phase: str) -> Path:
        return self.root / f"round_{round_}" / phase


def _digest_dir(path: Path) -> str | None:
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:16]


def prepare(params: Params, world_dir: str | Path = "data/world", base_dir: str | Path = "data/base") -> LionContext:
    """The initial pool (world train pool or ``lion.input``), the eval subset, the student init, the work dir."""
    cfg = params.synthesize.lion
    world_dir = Path(world_dir)
    pool = lion.load_instruction_file(cfg.input) if cfg.input else lion.load_world_pool(world_dir / "train.jsonl")
    pool = lion.subset(pool, cfg.max_prompts, derive_seed(params.seed, "lion", "pool"))
    eval_path = world_dir / "eval.jsonl"
    eval_items = []
    if cfg.eval_prompts and eval_path.is_file():
        eval_items = lion.subset(lion.load_world_pool(eval_path), cfg.eval_prompts,
                                 derive_seed(params.seed, "lion", "eval"))
    init = str(Path(base_dir) / "model") if cfg.student == "base" else cfg.student
    config = {
        "seed": params.seed, "torch_threads": params.torch_threads, "model": params.model.model_dump(mode="json"),
        "lion": cfg.model_dump(mode="json", exclude={"rounds", "enabled"}),
        "roles": params.roles.model_dump(mode="json", exclude={"cache_dir", "runner"}),
        "pool": hashlib.sha256(dumps(pool).encode()).hexdigest()[:16],
        "eval": hashlib.sha256(dumps(eval_items).encode()).hexdigest()[:16],
        "student_init": init, "student_init_digest": _digest_dir(Path(init)),
    }
    return LionContext(params, pool, eval_items, init, work_dir("synthesize-lion", config), config)


def _phase(path: Path, build: Callable[[Path], None], roles: Roles) -> bool:
    """Build ``path`` atomically unless a finished one is there; True when it was built now.

    The phase's role work (calls, unparseable) is stored with it in ``roles.json``, so a phase read back reports
    the same counters as when it was built and ``metrics.json`` stays equal across a kill and resume; what this run
    actually sent (requests, cache hits) goes to the run record.
    """
    before = roles.metrics()
    built = not path.is_dir()
    if built:
        with atomic_dir(path) as tmp:
            work_before = roles.work_metrics()
            build(tmp)
            (tmp / "roles.json").write_text(dumps(_roles_delta(work_before, roles.work_metrics())), encoding="utf-8")
    else:
        log.info("lion: %s already done, reusing it", path)
    events.record("lion_phase", phase=f"{path.parent.name}/{path.name}", reused=not built,
                  roles=_roles_delta(before, roles.metrics()))
    return built


def _roles_delta(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {role: {k: after[role][k] - before[role][k] for k in after[role]} for role in after}


def _phase_roles(path: Path) -> dict[str, dict[str, int]]:
    """The role work stored with a phase (a phase dir written before ``roles.json`` existed: none recorded)."""
    return read_json(path / "roles.json") if (path / "roles.json").is_file() else {}


def _teacher(roles: Roles, items: list[dict]) -> dict[str, str | None]:
    answers = roles.teacher.answer([x["instruction"] for x in items], [x["record"] for x in items])
    return {x["id"]: a for x, a in zip(items, answers)}


def student_answers(params: Params, model_dir: str | Path, items: list[dict]) -> list[str]:
    """Greedy answers of the student in ``model_dir`` to each item's instruction (``lion.max_new_tokens``)."""
    cfg = params.synthesize.lion
    model, tok = load_model(model_dir, params.model)
    prompts = [[{"role": "user", "content": x["instruction"]}] for x in items]
    return generate(model, tok, prompts, cfg.max_new_tokens, cfg.batch_size)


def _train_student(params: Params, init: str, data: Path, out: Path, ckpt: Path) -> dict[str, Any]:
    """The project's SFT (TRL SFTTrainer, completion-only loss) with ``lion.trainer`` / ``lion.max_length``."""
    cfg = params.synthesize.lion
    sub = params.model_copy(update={"sft": SFTSection(max_length=cfg.max_length, trainer=cfg.trainer)})
    model, tok = load_model(init, params.model, padding_side="right")
    trainer = sft.build_trainer(sub, model, tok, sft.load_sft_data([data]), ckpt)
    metrics = sft.train(trainer, ckpt)
    save(trainer.accelerator.unwrap_model(trainer.model), tok, out, metrics,
         {"init": init, "trainer_resolved": {**sft.DEFAULT_SFT, **cfg.trainer}, "max_length": cfg.max_length})
    return {k: metrics[k] for k in ("steps", "n_examples", "final_loss", "mean_token_accuracy")}


def _read(path: Path) -> list[dict[str, Any]]:
    """A JSONL artifact this module wrote (may be empty, unlike an input file)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _eval_rows(ctx: LionContext, roles: Roles, student_dir: str | Path, teacher: dict[str, str | None]) -> list[dict]:
    """The student's answers on the eval subset scored against the teacher's (relative score, Lion's Table 1)."""
    items = [x for x in ctx.eval_items if teacher.get(x["id"]) is not None]
    if not items:
        return []
    student = student_answers(ctx.params, student_dir, items)
    return lion.score(roles.referee, items, [teacher[x["id"]] for x in items], student,
                      ctx.params.synthesize.lion.threshold)


def baseline(ctx: LionContext, roles: Roles) -> dict[str, Any]:
    """Round 0: the teacher's answers on the eval subset and the initial student's relative score on it."""

    def build(tmp: Path) -> None:
        teacher = _teacher(roles, ctx.eval_items)
        write_jsonl(tmp / "teacher_eval.jsonl", [{"id": k, "answer": v} for k, v in teacher.items()])
        rows = _eval_rows(ctx, roles, ctx.student_init, teacher)
        write_jsonl(tmp / "eval_scores.jsonl", rows)
        (tmp / "metrics.json").write_text(dumps({"round": 0, "eval": lion.score_metrics(rows)}), encoding="utf-8")

    _phase(ctx.dir(0, "baseline"), build, roles)
    return {**read_json(ctx.dir(0, "baseline") / "metrics.json"), "phase": "baseline",
            "roles": _phase_roles(ctx.dir(0, "baseline"))}


def _answers_so_far(ctx: LionContext, round_: int) -> dict[str, str | None]:
    if round_ <= 1:
        return {}
    return {r["id"]: r["answer"] for r in _read(ctx.dir(round_ - 1, "imitation") / "teacher.jsonl")}


def imitation(ctx: LionContext, roles: Roles, round_: int, pool: list[dict[str, Any]]) -> dict[str, Any]:
    """The teacher answers the pool's new instructions; the initial student is fine-tuned on the whole pool."""

    def build(tmp: Path) -> None:
        answers = _answers_so_far(ctx, round_)
        answers.update(_teacher(roles, [x for x in pool if x["id"] not in answers]))
        write_jsonl(tmp / "pool.jsonl", pool)
        write_jsonl(tmp / "teacher.jsonl", [{"id": x["id"], "answer": answers[x["id"]]} for x in pool])
        rows = [lion.sft_row(x, answers[x["id"]]) for x in pool if answers[x["id"]] is not None]
        write_jsonl(tmp / "train.jsonl", rows)
        ckpt = ctx.root / f"round_{round_}" / "student_checkpoints"
        student = _train_student(ctx.params, ctx.student_init, tmp / "train.jsonl", tmp / "student", ckpt)
        metrics = {"round": round_, "pool": len(pool), "no_teacher_answer": len(pool) - len(rows),
                   "trained_on": len(rows), "student": student}
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")

    if _phase(ctx.dir(round_, "imitation"), build, roles):
        shutil.rmtree(ctx.root / f"round_{round_}" / "student_checkpoints", ignore_errors=True)
    return {**read_json(ctx.dir(round_, "imitation") / "metrics.json"), "phase": "imitation",
            "roles": _phase_roles(ctx.dir(round_, "imitation"))}


def discrimination(ctx: LionContext, roles: Roles, round_: int) -> dict[str, Any]:
    """Teacher vs the round's student on the pool (hard / easy) and on the eval subset (relative score)."""
    imit = ctx.dir(round_, "imitation")
    student_dir = imit / "student" / "model"

    def build(tmp: Path) -> None:
        answers = {r["id"]: r["answer"] for r in _read(imit / "teacher.jsonl")}
        items = [x for x in _read(imit / "pool.jsonl") if answers[x["id"]] is not None]
        student = student_answers(ctx.params, student_dir, items)
        rows = lion.score(roles.referee, items, [answers[x["id"]] for x in items], student,
                          ctx.params.synthesize.lion.threshold)
        hard, easy = lion.split(rows)
        write_jsonl(tmp / "scores.jsonl", rows)
        write_jsonl(tmp / "hard.jsonl", [x for x in items if x["id"] in set(hard)])
        write_jsonl(tmp / "easy.jsonl", [x for x in items if x["id"] in set(easy)])
        teacher_eval = {r["id"]: r["answer"] for r in _read(ctx.dir(0, "baseline") / "teacher_eval.jsonl")}
        eval_rows = _eval_rows(ctx, roles, student_dir, teacher_eval)
        write_jsonl(tmp / "eval_scores.jsonl", eval_rows)
        metrics = {"round": round_, **lion.score_metrics(rows), "eval": lion.score_metrics(eval_rows)}
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")

    _phase(ctx.dir(round_, "discrimination"), build, roles)
    return {**read_json(ctx.dir(round_, "discrimination") / "metrics.json"), "phase": "discrimination",
            "roles": _phase_roles(ctx.dir(round_, "discrimination"))}


def generation(ctx: LionContext, roles: Roles, round_: int) -> dict[str, Any]:
    """New instructions from the hard ones (same domain and task type) and from the easy ones (rarer)."""
    cfg = ctx.params.synthesize.lion
    disc = ctx.dir(round_, "discrimination")

    def build(tmp: Path) -> None:
        pool = _read(ctx.dir(round_, "imitation") / "pool.jsonl")
        rouge = lion.RougeFilter([x["instruction"] for x in pool])
        new, rejected, stats = [], [], {}
        for kind, n in (("hard", cfg.new_hard), ("easy", cfg.new_easy)):
            rng = random.Random(derive_seed(ctx.params.seed, "lion", "generate", round_, kind))
            got, bad, stats[kind] = lion.generate(roles.generator, _read(disc / f"{kind}.jsonl"), n, kind == "hard",
                                                  rouge, cfg, rng, round_)
            new += got
            rejected += [{**r, "kind": kind} for r in bad]
        write_jsonl(tmp / "generated.jsonl", new)
        write_jsonl(tmp / "rejected.jsonl", rejected)
        write_jsonl(tmp / "pool.jsonl", pool + new)
        metrics = {"round": round_, "generated": stats, "new": len(new), "pool_next": len(pool) + len(new)}
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")

    _phase(ctx.dir(round_, "generation"), build, roles)
    out = ctx.dir(round_, "generation")
    return {**read_json(out / "metrics.json"), "phase": "generation", "pool": _read(out / "pool.jsonl"),
            "roles": _phase_roles(ctx.dir(round_, "generation"))}


def final_answers(ctx: LionContext, roles: Roles, pool: list[dict[str, Any]], round_: int) -> dict[str, Any]:
    """The teacher answers the last round's new instructions: the final pool is Lion's training data."""

    def build(tmp: Path) -> None:
        answers = _answers_so_far(ctx, round_ + 1)
        answers.update(_teacher(roles, [x for x in pool if x["id"] not in answers]))
        write_jsonl(tmp / "pool.jsonl", pool)
        write_jsonl(tmp / "teacher.jsonl", [{"id": x["id"], "answer": answers[x["id"]]} for x in pool])
        kept = sum(answers[x["id"]] is not None for x in pool)
        (tmp / "metrics.json").write_text(dumps({"pool": len(pool), "rows": kept}), encoding="utf-8")

    _phase(ctx.dir(round_, "final"), build, roles)
    return {**read_json(ctx.dir(round_, "final") / "metrics.json"), "phase": "final",
            "roles": _phase_roles(ctx.dir(round_, "final"))}


def final_rows(ctx: LionContext, round_: int) -> list[dict[str, Any]]:
    """``{prompt_id, messages}`` rows of the final pool (instructions the teacher answered)."""
    final = ctx.dir(round_, "final")
    answers = {r["id"]: r["answer"] for r in _read(final / "teacher.jsonl")}
    return [lion.chat_row(x, answers[x["id"]]) for x in _read(final / "pool.jsonl") if answers[x["id"]] is not None]


def summary(ctx: LionContext, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round metrics and each round's role work (calls, unparseable), both as the phases' artifacts hold them.

    Read from the artifacts, so a run that read finished phases back reports what an uninterrupted one does; what
    this run sent (requests, cache hits) is in the run record (``lion_phase`` events).
    """
    rounds: dict[int, dict[str, Any]] = {}
    roles_by_round: dict[int, dict[str, Any]] = {}
    for res in results:
        res = {k: v for k, v in res.items() if k != "pool"}
        r = res.pop("round", None)
        phase, roles = res.pop("phase"), res.pop("roles")
        key = r if r is not None else max(rounds, default=0)
        rounds.setdefault(key, {"round": key})[phase] = res
        acc = roles_by_round.setdefault(key, {})
        for role, counts in roles.items():
            acc[role] = {k: acc.get(role, {}).get(k, 0) + v for k, v in counts.items()}
    table = []
    for key in sorted(rounds):
        row = rounds[key]
        disc = row.get("discrimination", {})
        row["relative_score"] = disc.get("relative_score")
        row["eval_relative_score"] = (disc or row.get("baseline", {})).get("eval", {}).get("relative_score")
        table.append(row)
    used = {k: {role: c for role, c in v.items() if c["calls"]} for k, v in sorted(roles_by_round.items())}
    return {"rounds": table, "roles_by_round": {str(k): v for k, v in used.items()}}


def write_into(tmp: Path, ctx: LionContext | None, rows: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> None:
    """Lion's outputs inside the stage's (already atomic) output directory."""
    write_jsonl(tmp / "lion.jsonl", rows)
    write_jsonl(tmp / "sft_lion.jsonl", webr.sft_rows(rows))
    out = tmp / "lion"
    out.mkdir()
    (out / "rounds.json").write_text(dumps(rounds), encoding="utf-8")
    if ctx is None:
        return
    for d in sorted(ctx.root.glob("round_*")):
        shutil.copytree(d, out / d.name, ignore=shutil.ignore_patterns("student_checkpoints", ".*"))


def run_rounds(params: Params, roles: Roles, world_dir: str | Path = "data/world",
               base_dir: str | Path = "data/base") -> tuple[LionContext, list[dict], dict[str, Any]]:
    """Every round; returns (context, final rows, metrics)."""
    ctx = prepare(params, world_dir, base_dir)
    results = [baseline(ctx, roles)]
    pool = ctx.pool
    last = params.synthesize.lion.rounds
    for r in range(1, last + 1):
        results.append(imitation(ctx, roles, r, pool))
        results.append(discrimination(ctx, roles, r))
        gen = generation(ctx, roles, r)
        pool = gen["pool"]
        results.append(gen)
    results.append({**final_answers(ctx, roles, pool, last), "round": last})
    rows = final_rows(ctx, last)
    return ctx, rows, {"rows": len(rows), **summary(ctx, results)}
