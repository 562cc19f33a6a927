"""The ``report`` stage: FollowBench tables and plots from ``data/evaluate/<name>/metrics.json`` (and, with
``report.lte``, the LTE table from ``data/edit_eval/metrics.json``: ``lte.md``, ``lte.csv``; with
``report.data_sources``, the data-source table from ``data/evaluate/mix_<name>/`` and ``data/sft_mix/<name>/``:
``datasources.md``, ``datasources.csv``).

Run (normally ``dvc repro report``; or directly)::

    from alignpipe.config import load_params
    from alignpipe.stages.report import run
    run(load_params("params.yaml"))

Reads the metrics of the models listed in ``params.report.rows`` (name -> row label, in that order) and
writes, atomically, to ``data/report/``: ``followbench.md``, ``followbench.csv``, ``hsr_by_level.png`` and a
``README.md`` that says what produced them. Nothing is computed here beyond formatting (except, with
``report.pairwise_judge: roles``, the pairwise judge's verdicts, which need two models' outputs at once).

Every table comes from a builder registered in :mod:`alignpipe.report.builders` (FollowBench, the official
FollowBench tables and radar, Hierarchical Alignment, LTE, data sources); ``README.md`` gathers them all, each
with its models, data, judge and sample size, and lists the ones not produced (a stage off, an input absent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignpipe.config import ConfigError, Params
from alignpipe.evaluate.pairwise import pairwise
from alignpipe.report.tables import (
    allo_markdown,
    allo_table,
    followbench_table,
    hierarchical_markdown,
    hierarchical_table,
)
from alignpipe.utils.io import DataError, atomic_dir, read_json, read_jsonl

log = logging.getLogger(__name__)

FILES = ("README.md", "followbench.md", "followbench.csv", "hsr_by_level.png")


def load_metrics(eval_dir: str | Path, rows: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Read each listed model's ``metrics.json`` (and ``config.json`` where present, under key ``_config``).

    Args:
        eval_dir: the evaluate stage's root (``data/evaluate``).
        rows: model name -> row label.

    Returns:
        row label -> metrics, in the order of ``rows``.

    Raises:
        ConfigError: ``rows`` is empty.
        DataError: a listed model has no metrics; the message names every missing file.
    """
    if not rows:
        raise ConfigError("params.yaml: report.rows is empty; name at least one evaluated model")
    eval_dir = Path(eval_dir)
    missing = [eval_dir / name / "metrics.json" for name in rows if not (eval_dir / name / "metrics.json").is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing)
        raise DataError(f"report.rows lists model(s) without metrics: {listed} not found (run their evaluate stage)")
    out = {}
    for name, label in rows.items():
        metrics = read_json(eval_dir / name / "metrics.json")
        config = eval_dir / name / "config.json"
        metrics["_config"] = read_json(config) if config.is_file() else {}
        metrics["_name"] = name
        out[label] = metrics
    return out


def readme(metrics_by_row: Mapping[str, Mapping[str, Any]], params: Params) -> str:
    """Provenance of the tables: models, data, judge, sample sizes, and what the numbers are (and are not)."""
    cfg = params.evaluate
    intervals = (
        f"{cfg.confidence:.0%} percentile bootstrap intervals, {cfg.bootstrap_samples} resamples of groups within "
        "each category (judge scores: of responses)."
        if cfg.bootstrap_samples
        else "none (evaluate.bootstrap_samples = 0)."
    )
    lines = [
        "# Report: FollowBench-style evaluation in the built-in world",
        "",
        "These are measurements of the models below on the evaluation pool of alignpipe's built-in synthetic",
        "world (fictional entities, FollowBench-style constraints checked by rule-based verifiers, scored by the",
        "judge named in the table). They are **not** the numbers published in the FollowBench paper or any other",
        "paper, and are not comparable to them: the instructions, verifiers, judge and models all differ.",
        "",
        "Files: `followbench.md` / `followbench.csv` (FollowBench Table 2 layout: HSR and SSR by level 1-5 and",
        "their mean, CSL, then judge scores) and `hsr_by_level.png` (HSR by level, one line per model).",
        f"Intervals: {intervals}",
        "",
        "| Row | Evaluated model | Model weights | Data (eval pool) | Judge | Groups | Instructions |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for label, metrics in metrics_by_row.items():
        used = metrics.get("_config", {})
        pool = f"`{used['world_dir']}/eval.jsonl`" if "world_dir" in used else "unknown"
        if used.get("benchmark") == "followbench":  # see followbench_official.md
            pool = f"official FollowBench data `{used['data']['source']}`"
        if used.get("eval_sha256"):
            pool += f" (sha256 {used['eval_sha256'][:12]})"
        lines.append(
            f"| {label} | `{metrics.get('_name')}` | `{used.get('model_dir', 'unknown')}` | {pool} | "
            f"{used.get('judge', 'unknown')} | {metrics.get('n_groups', '?')} | {metrics.get('n_instructions', '?')} |"
        )
    lines += ["", f"Seed: {params.seed}. Each row's full configuration: the `config.json` beside its `metrics.json`."]
    return "\n".join(lines) + "\n"


def hierarchical(params: Params, eval_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]],
                 world_dir: str | Path = "data/world") -> tuple[Any, str, dict[str, Any]]:
    """The Hierarchical Alignment table (pairwise against ``report.reference`` from the stored generations).

    Returns ``(table, markdown, info)``; ``info``: the pairwise judge's description, the sample size, and (with
    ``report.pairwise_judge: roles``) its raw outputs per compared model under ``artifacts``.
    """
    cfg = params.report
    ref_rows = read_jsonl(Path(eval_dir) / cfg.reference / "generations.jsonl")
    labels = {name: cfg.rows[name] for name in cfg.hierarchical}
    info: dict[str, Any] = {"artifacts": {}}
    if cfg.pairwise_judge == "roles":  # each pair asked of roles.judge in both orders
        from alignpipe.evaluate.pairwise import judged_pairwise
        from alignpipe.llm import build_roles
        from alignpipe.world import load_instructions, load_kb

        world_dir = Path(world_dir)
        kb = load_kb(world_dir / "kb.json") if (world_dir / "kb.json").is_file() else None
        pool = world_dir / "eval.jsonl"
        records = {r["id"]: r for r in load_instructions(pool)} if pool.is_file() else {}
        judge = build_roles(params.roles, seed=params.seed, kb=kb).judge
        pairs = {}
        for name in cfg.hierarchical:
            if name == cfg.reference:
                pairs[labels[name]] = None
                continue
            rows = read_jsonl(Path(eval_dir) / name / "generations.jsonl")
            pairs[labels[name]], info["artifacts"][name] = judged_pairwise(judge, rows, ref_rows, records,
                                                                            cfg.tie_margin)
        section = params.roles.judge
        info["judge"] = (f"roles.judge ({section.backend}{' ' + section.model if section.model else ''}), both "
                         "orders, prompt judge_pairwise.v1; orders that disagree count as ties")
    else:
        pairs = {
            labels[name]: None
            if name == cfg.reference
            else pairwise(read_jsonl(Path(eval_dir) / name / "generations.jsonl"), ref_rows, tie_margin=cfg.tie_margin)
            for name in cfg.hierarchical
        }
        info["judge"] = f"stored pointwise scores compared (tie margin {cfg.tie_margin})"
    table = hierarchical_table({labels[n]: metrics[labels[n]] for n in cfg.hierarchical}, pairs, labels[cfg.reference])
    n_pairs = next((p["fluency"]["n"] for p in pairs.values() if p), None)
    bad = sum(p["fluency"].get("unparseable", 0) for p in pairs.values() if p)
    info["sample"] = f"{n_pairs} prompt pairs per model vs {labels[cfg.reference]}" + (
        f" ({bad} pairs with an unparseable judge output, not counted)" if bad else "")
    return table, hierarchical_markdown(table, labels[cfg.reference], n_pairs), info


def bmc(params: Params, eval_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]]) -> tuple[Any, str]:
    """The BMC table (``report.bmc``, labels from ``report.bmc_labels`` or ``report.rows``): the Hierarchical
    Alignment table's columns, W/T/L and alignment tax against ``report.reference`` (a row only when listed)."""
    cfg = params.report
    ref_label = cfg.rows[cfg.reference]
    ref_rows = read_jsonl(Path(eval_dir) / cfg.reference / "generations.jsonl")
    labels = {n: cfg.bmc_labels.get(n, cfg.rows[n]) for n in cfg.bmc}
    by_label = {labels[n]: metrics[cfg.rows[n]] for n in cfg.bmc}
    pairs: dict[str, Any] = {
        labels[n]: None if n == cfg.reference
        else pairwise(read_jsonl(Path(eval_dir) / n / "generations.jsonl"), ref_rows, tie_margin=cfg.tie_margin)
        for n in cfg.bmc
    }
    reference = labels.get(cfg.reference, ref_label)
    if cfg.reference not in cfg.bmc:  # the baseline of W/T/L and the tax, not a row of this table
        by_label = {**by_label, reference: metrics[ref_label]}
    table = hierarchical_table(by_label, pairs, reference)
    if cfg.reference not in cfg.bmc:
        table = table.drop(index=reference)
    n_pairs = next((p["fluency"]["n"] for p in pairs.values() if p), None)
    return table, hierarchical_markdown(table, reference, n_pairs)


def allo(params: Params, align_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]]) -> tuple[Any, str]:
    """The ALLO table: the evaluate metrics of ``report.allo`` plus each row's align metrics (parameter counts)."""
    labels = {name: params.report.rows[name] for name in params.report.allo}
    train = {}
    for name, label in labels.items():
        path = Path(align_dir) / name / "metrics.json"
        train[label] = read_json(path) if path.is_file() else None
    table = allo_table({label: metrics[label] for label in labels.values()}, train)
    return table, allo_markdown(table)


def run(params: Params, eval_dir: str | Path = "data/evaluate", out_dir: str | Path = "data/report",
        edit_eval_dir: str | Path = "data/edit_eval", synth_dir: str | Path = "data/synthesize",
        world_dir: str | Path = "data/world", align_dir: str | Path = "data/align",
        mix_dir: str | Path = "data/sft_mix") -> dict[str, Any]:
    """Write the report for the models in ``params.report.rows``; return the table as ``{label: {column: value}}``.

    Every table builder registered in :mod:`alignpipe.report.builders` runs in order; ``README.md`` lists them
    all (produced, or not and why) with their provenance and links to their files.
    """
    from alignpipe.report import builders  # noqa: F401  (registers the builders)
    from alignpipe.report.sections import Context, assemble, build_all

    log.info("report rows: %s", dict(params.report.rows))
    metrics = load_metrics(eval_dir, params.report.rows)
    with atomic_dir(out_dir) as tmp:
        ctx = Context(params, Path(tmp), metrics, Path(eval_dir), Path(edit_eval_dir), Path(synth_dir),
                      Path(world_dir), Path(align_dir), Path(mix_dir))
        tables = build_all(ctx)
        (tmp / "README.md").write_text(assemble(tables, readme(metrics, params)), encoding="utf-8")
    log.info("report written to %s (%d models; tables: %s)", out_dir, len(metrics),
             ", ".join(f"{t.key}={'yes' if t.produced else 'no'}" for t in tables))
    return followbench_table(metrics).to_dict(orient="index")
