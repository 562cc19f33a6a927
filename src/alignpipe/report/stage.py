"""The ``report`` stage: FollowBench tables and plots from ``data/evaluate/<name>/metrics.json`` (and, with
``report.lte``, the LTE table from ``data/edit_eval/metrics.json``: ``lte.md``, ``lte.csv``; with
``report.data_sources``, the data-source table from ``data/evaluate/mix_<name>/`` and ``data/sft_mix/<name>/``:
``datasources.md``, ``datasources.csv``).

Run (normally ``dvc repro report``; or directly)::

    from alignpipe.config import load_params
    from alignpipe.report.stage import run
    run(load_params("params.yaml"))

Reads the metrics of the models listed in ``params.report.rows`` (name -> row label, in that order) and
writes, atomically, to ``data/report/``: ``followbench.md``, ``followbench.csv``, ``hsr_by_level.png`` and a
``README.md`` that says what produced them. Nothing is computed here beyond formatting.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignpipe.config import ConfigError, Params
from alignpipe.report.lte import lte_markdown, lte_table
from alignpipe.report.plots import hsr_by_level
from alignpipe.evaluate.pairwise import pairwise
from alignpipe.report.tables import (
    allo_markdown,
    allo_table,
    followbench_table,
    hierarchical_markdown,
    hierarchical_table,
    to_csv,
    to_markdown,
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


def hierarchical(params: Params, eval_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]]) -> tuple[Any, str]:
    """The Hierarchical Alignment table (pairwise against ``report.reference`` from the stored generations)."""
    cfg = params.report
    ref_rows = read_jsonl(Path(eval_dir) / cfg.reference / "generations.jsonl")
    labels = {name: cfg.rows[name] for name in cfg.hierarchical}
    pairs = {
        labels[name]: None
        if name == cfg.reference
        else pairwise(read_jsonl(Path(eval_dir) / name / "generations.jsonl"), ref_rows, tie_margin=cfg.tie_margin)
        for name in cfg.hierarchical
    }
    table = hierarchical_table({labels[n]: metrics[labels[n]] for n in cfg.hierarchical}, pairs, labels[cfg.reference])
    n_pairs = next((p["fluency"]["n"] for p in pairs.values() if p), None)
    return table, hierarchical_markdown(table, labels[cfg.reference], n_pairs)


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
        edit_eval_dir: str | Path = "data/edit_eval", align_dir: str | Path = "data/align",
        mix_dir: str | Path = "data/sft_mix") -> dict[str, Any]:
    """Write the report for the models in ``params.report.rows``; return the table as ``{label: {column: value}}``."""
    log.info("report rows: %s", dict(params.report.rows))
    metrics = load_metrics(eval_dir, params.report.rows)
    table = followbench_table(metrics)
    confidence = params.evaluate.confidence
    with atomic_dir(out_dir) as tmp:
        (tmp / "followbench.md").write_text(
            "# FollowBench (built-in world)\n\n" + to_markdown(table, confidence), encoding="utf-8"
        )
        (tmp / "followbench.csv").write_text(to_csv(table), encoding="utf-8")
        hsr_by_level(metrics, tmp / "hsr_by_level.png", confidence)
        if params.report.hierarchical:
            h_table, h_md = hierarchical(params, eval_dir, metrics)
            (tmp / "hierarchical.md").write_text(
                "# Hierarchical Alignment (built-in world)\n\n" + h_md, encoding="utf-8"
            )
            (tmp / "hierarchical.csv").write_text(to_csv(h_table), encoding="utf-8")
        if params.report.lte:  # LTE (knowledge editing): data/edit_eval/metrics.json
            lte_metrics = read_json(Path(edit_eval_dir) / "metrics.json")
            l_table = lte_table(lte_metrics)
            (tmp / "lte.md").write_text("# LTE knowledge editing\n\n"
                                        + lte_markdown(l_table, lte_metrics), encoding="utf-8")
            (tmp / "lte.csv").write_text(l_table.to_csv(index=False, float_format="%.4f", lineterminator="\n"),
                                         encoding="utf-8")
        if params.report.bmc:
            b_table, b_md = bmc(params, eval_dir, metrics)
            (tmp / "bmc.md").write_text("# BMC: bridging and modeling correlations (built-in world)\n\n" + b_md,
                                        encoding="utf-8")
            (tmp / "bmc.csv").write_text(to_csv(b_table), encoding="utf-8")
        if params.report.allo:
            a_table, a_md = allo(params, align_dir, metrics)
            (tmp / "allo.md").write_text("# ALLO (built-in world)\n\n" + a_md, encoding="utf-8")
            (tmp / "allo.csv").write_text(to_csv(a_table), encoding="utf-8")
        if params.report.data_sources:  # data-source table (WebR / Lion Table 1): sft_mix@<name> + evaluate@mix_
            from alignpipe.report import datasource

            d_metrics = datasource.load(params.report.data_sources, eval_dir, mix_dir)
            d_table = datasource.datasource_table(d_metrics)
            (tmp / "datasources.md").write_text("# Data sources: seed, Lion and WebR SFT data (built-in world)\n\n"
                                                + datasource.to_markdown(d_table, d_metrics), encoding="utf-8")
            (tmp / "datasources.csv").write_text(datasource.to_csv(d_table), encoding="utf-8")
        (tmp / "README.md").write_text(readme(metrics, params), encoding="utf-8")
        official = {label: m for label, m in metrics.items() if m.get("benchmark") == "followbench"}
        if official:  # models evaluated on the official FollowBench data (evaluate.benchmark: followbench)
            from alignpipe.evaluate.followbench.tables import write_report

            write_report(tmp, official)
    log.info("report written to %s (%d models)", out_dir, len(metrics))
    return table.to_dict(orient="index")
