"""The ``synthesize`` stage: WebR instruction data from raw pages and Lion's adversarial rounds, over the LLM roles.

    python -m flows.synthesize     # what `dvc repro synthesize` runs; writes data/synthesize/

:func:`run` is the stage: ``load`` -> WebR (``personas`` -> ``plan`` -> ``requests`` -> ``responses`` ->
``assemble``) -> Lion's rounds (:func:`alignpipe.methods.lion.rounds.run_rounds`) -> ``write``. Every random
choice is drawn from the seed before any call; every hf/openai call is cached on disk by request hash
(``alignpipe.llm``), so a killed run resumes with zero repeated requests.

Outputs in ``data/synthesize/``: ``webr.jsonl`` (``{prompt_id, messages}``, WebR's format), ``sft_webr.jsonl``
(the same rows as prompt-completion records for the sft stage, ``sft.data: [seed, webr]``),
``webr_meta.jsonl`` (per row: type, page id, sections kept, word, length limit, persona), Lion's
``lion.jsonl`` / ``sft_lion.jsonl`` and ``lion/`` (rounds, see :mod:`alignpipe.methods.lion.rounds`, run after
WebR), ``metrics.json`` (counts per type, refusal and dedup removals, Lion's per-round metrics, role calls and
unparseable outputs) and ``config.json``. Requests, cache hits and tokens of a run go to its run record
(:mod:`alignpipe.utils.events`): they depend on what an earlier run left in the cache, the outputs must not.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.llm import FanOut, Roles, build_roles
from alignpipe.llm.base import WORK_COUNTERS
from alignpipe.methods import webr
from alignpipe.methods.lion import rounds as lion_rounds
from alignpipe.utils import events
from alignpipe.utils.io import atomic_dir, dumps, one_line, sha256_file, write_jsonl
from alignpipe.utils.seed import derive_seed, seed_everything
from alignpipe.world import load_kb

log = logging.getLogger(__name__)
REQUEST_TEMPLATES = {t: f"webr_{t.lower()}.v1" for t in webr.TYPES}


def input_path(params: Params, world_dir: str | Path) -> Path:
    return Path(params.synthesize.webr.input or Path(world_dir) / "pages.jsonl")


def stage_config(params: Params, world_dir: str | Path) -> dict[str, Any]:
    """What the outputs depend on (roles: backends and env-var NAMES only; no key is ever in params)."""
    path = input_path(params, world_dir)
    return {"seed": params.seed, "synthesize": params.synthesize.model_dump(mode="json"),
            "roles": params.roles.model_dump(mode="json", exclude={"cache_dir", "runner"}), "input": str(path),
            "input_sha256": sha256_file(path) if path.is_file() else None}


def load(params: Params, world_dir: str | Path, fan_out: FanOut | None = None) -> tuple[list[dict[str, Any]], Roles]:
    """The pages (a seeded subset of ``max_pages``) and the roles (with the world's KB when there is one).

    ``fan_out``: see :func:`alignpipe.llm.build_roles` (the flow passes its task runner's mapper).
    """
    cfg = params.synthesize.webr
    pages = webr.load_pages(input_path(params, world_dir)) if cfg.enabled else []
    if cfg.max_pages is not None and cfg.max_pages < len(pages):
        keep = set(random.Random(derive_seed(params.seed, "webr", "subset")).sample(range(len(pages)), cfg.max_pages))
        pages = [p for i, p in enumerate(pages) if i in keep]
    kb_path = Path(world_dir) / "kb.json"
    kb = load_kb(kb_path) if kb_path.is_file() else None
    return pages, build_roles(params.roles, params.seed, kb=kb, fan_out=fan_out)


def personas(params: Params, pages: list[dict[str, Any]], roles: Roles) -> dict[str, str | None]:
    """The author persona of every page, from the whole page (before sectioning, as the authors do)."""
    cfg = params.synthesize.webr
    if not cfg.persona:  # the "without persona" ablation: no persona call, persona-free request templates
        return {p["id"]: "" for p in pages}
    out = roles.generator.chat("webr_persona.v1", [{"web": p["webpage"]} for p in pages],
                               temperature=cfg.temperature, max_tokens=cfg.persona_max_tokens)
    return {p["id"]: o for p, o in zip(pages, out)}


def plan(params: Params, pages: list[dict[str, Any]]) -> list[webr.Plan]:
    return webr.plan_pages(pages, params.synthesize.webr, params.seed)


def requests(params: Params, plans: list[webr.Plan], persona: dict[str, str | None],
             roles: Roles) -> list[str | None]:
    """One request per planned page (None where the persona or the request came back empty)."""
    cfg = params.synthesize.webr
    out: list[str | None] = [None] * len(plans)
    for kind, template in REQUEST_TEMPLATES.items():
        template = template if cfg.persona else template.replace(".v1", "_nopersona.v1")
        idx = [i for i, p in enumerate(plans) if p.type == kind and persona[p.page_id] is not None]
        fields = [{"web": plans[i].web, "word": plans[i].word, "len_limit": plans[i].len_limit,
                   **({"author": persona[plans[i].page_id]} if cfg.persona else {})} for i in idx]
        for i, text in zip(idx, roles.generator.chat(template, fields, temperature=cfg.temperature,
                                                     max_tokens=cfg.request_max_tokens)):
            out[i] = text
    return out


def responses(params: Params, plans: list[webr.Plan], reqs: list[str | None], roles: Roles) -> list[str | None]:
    """WI: the teacher answers page + request. WR: a rollout from the request alone, refined with the page."""
    cfg = params.synthesize.webr
    gen = {"temperature": cfg.temperature, "max_tokens": cfg.response_max_tokens}
    out: list[str | None] = [None] * len(plans)
    wi = [i for i, p in enumerate(plans) if p.type.startswith("WI") and reqs[i]]
    for i, text in zip(wi, roles.teacher.chat("webr_wi_response.v1",
                                              [{"web": plans[i].web, "request": reqs[i]} for i in wi], **gen)):
        out[i] = text
    wr = [i for i, p in enumerate(plans) if p.type.startswith("WR") and reqs[i]]
    rollouts = roles.teacher.chat("webr_wr_rollout.v1", [{"request": reqs[i]} for i in wr], **gen)
    if not cfg.refine:
        for i, text in zip(wr, rollouts):
            out[i] = text
        return out
    wr, rollouts = zip(*[(i, r) for i, r in zip(wr, rollouts) if r is not None]) if any(rollouts) else ((), ())
    refined = roles.teacher.chat("webr_wr_refine.v1", [{"web": plans[i].web, "request": reqs[i], "answer": r}
                                                       for i, r in zip(wr, rollouts)], **gen)
    for i, text in zip(wr, refined):
        out[i] = text
    return out


def assemble(params: Params, plans: list[webr.Plan], persona: dict[str, str | None], reqs: list[str | None],
             resps: list[str | None], roles: Roles) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Rows, their metadata and the metrics."""
    items = [{"plan": p, "persona": persona[p.page_id], "request": q, "response": r}
             for p, q, r in zip(plans, reqs, resps)]
    rows, extra = webr.build_rows(items, params.synthesize.webr, params.seed)
    stats = extra["stats"]
    words = lambda texts: round(statistics.fmean(len(t.split()) for t in texts), 2) if texts else 0.0  # noqa: E731
    metrics = {
        "pages": len(plans),
        "planned": dict(sorted(Counter(p.type for p in plans).items())),
        "sections_cut": sum(p.sections_kept < p.sections_total for p in plans),
        "no_persona": sum(persona[p.page_id] is None for p in plans),
        "no_request": sum(q is None for q in reqs),
        "refusals_removed": stats["refusals_removed"],
        "duplicates_removed": stats["duplicates_removed"],
        "same_page_removed": stats["same_page_removed"],
        "rows": len(rows),
        "rows_by_type": stats["final"],
        "request_words_mean": words([r["messages"][0]["content"] for r, m in zip(rows, extra["meta"])
                                     if m["type"].startswith("WR")]),
        "response_words_mean": words([r["messages"][1]["content"] for r in rows]),
        "roles": roles.work_metrics(),  # WebR's; write() adds Lion's
    }
    return rows, extra["meta"], metrics


def stage_roles(webr_roles: dict[str, dict[str, int]] | None, lion_metrics: dict[str, Any]) -> dict[str, Any]:
    """The stage's role work: WebR's counters plus every Lion round's (as the phase artifacts hold them)."""
    total: dict[str, dict[str, int]] = {}
    for per in [webr_roles or {}, *(lion_metrics.get("roles_by_round") or {}).values()]:
        for role, counts in per.items():
            acc = total.setdefault(role, dict.fromkeys(WORK_COUNTERS, 0))
            for k in WORK_COUNTERS:
                acc[k] += counts.get(k, 0)
    return total


def write(out_dir: str | Path, rows: list[dict], meta: list[dict], metrics: dict, config: dict,
          lion: tuple[lion_rounds.LionContext | None, list[dict], dict] | None = None,
          roles: Roles | None = None) -> dict:
    """Every output at once (WebR's and Lion's), so a killed stage never leaves a complete-looking directory.

    ``lion``: (context, final rows, Lion metrics) from :func:`alignpipe.methods.lion.rounds.run_rounds`, or None
    when Lion is off (its files are then written empty). Returns the metrics written: ``metrics`` plus Lion's under
    ``"lion"`` (``roles`` is the stage's role work, :func:`stage_roles`). ``roles``: this run's requests, cache
    hits and tokens go to the run record (they depend on the run's history, so never into ``metrics.json``).
    """
    ctx, lion_rows, lion_metrics = lion or (None, [], {"rows": 0, "rounds": [], "lion": "disabled"})
    metrics = {**metrics, "lion": lion_metrics, "roles": stage_roles(metrics.get("roles"), lion_metrics)}
    if roles is not None:
        events.record("roles", counters=roles.metrics())
    if ctx is not None:
        config = {**config, "lion_inputs": ctx.config}
    with atomic_dir(out_dir) as tmp:
        write_jsonl(tmp / "webr.jsonl", rows)
        write_jsonl(tmp / "sft_webr.jsonl", webr.sft_rows(rows))
        write_jsonl(tmp / "webr_meta.jsonl", meta)
        lion_rounds.write_into(tmp, ctx, lion_rows, lion_metrics.get("rounds", []))
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
    return metrics


def run_webr(params: Params, pages: list[dict[str, Any]], roles: Roles) -> tuple[list[dict], list[dict], dict]:
    """WebR's rows, metadata and metrics (empty when ``synthesize.webr.enabled`` is false)."""
    if not params.synthesize.webr.enabled:
        return [], [], {"pages": 0, "rows": 0, "webr": "disabled"}
    persona = personas(params, pages, roles)
    plans = plan(params, pages)
    reqs = requests(params, plans, persona, roles)
    resps = responses(params, plans, reqs, roles)
    rows, meta, metrics = assemble(params, plans, persona, reqs, resps, roles)
    log.info("synthesize: %d WebR rows %s", len(rows), metrics["rows_by_type"])
    return rows, meta, metrics


def run(params: Params, world_dir: str | Path = "data/world", out_dir: str | Path = "data/synthesize",
        base_dir: str | Path = "data/base", fan_out: FanOut | None = None) -> dict:
    """The whole stage (WebR, then Lion's rounds); returns the metrics.

    ``fan_out``: the flow's task-runner mapper for remote role calls (see :func:`alignpipe.llm.build_roles`).
    """
    seed_everything(params.seed)
    config = stage_config(params, world_dir)
    log.info("synthesize config: %s", one_line(config))
    pages, roles = load(params, world_dir, fan_out=fan_out)
    rows, meta, metrics = run_webr(params, pages, roles)
    lion = lion_rounds.run_rounds(params, roles, world_dir, base_dir) if params.synthesize.lion.enabled else None
    metrics = write(out_dir, rows, meta, metrics, config, lion, roles)
    log.info("synthesize: roles %s", roles.metrics()["total"])
    return metrics
