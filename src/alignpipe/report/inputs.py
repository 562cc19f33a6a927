"""The report's inputs: the evaluated models' ``metrics.json`` (and ``config.json``), and the README's header."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.utils.io import DataError, read_json


def load_metrics(eval_dir: str | Path, rows: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Read each listed model's ``metrics.json`` (and ``config.json`` where present, under key ``_config``).

    Args:
        eval_dir: the evaluate stage's root (``data/evaluate``).
        rows: model name -> row label (:func:`alignpipe.report.rows.followbench_rows`).

    Returns:
        row label -> metrics, in the order of ``rows``.

    Raises:
        DataError: a listed model has no metrics; the message names every missing file.
    """
    eval_dir = Path(eval_dir)
    missing = [eval_dir / name / "metrics.json" for name in rows if not (eval_dir / name / "metrics.json").is_file()]
    if missing:
        listed = ", ".join(str(p) for p in missing)
        raise DataError(f"the report's rows include model(s) without metrics: {listed} not found (run their evaluate "
                        "stage)")
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
        "their mean, CSL, then judge scores) and `hsr_by_level.png` (HSR by level, one panel per table's models).",
        "`index.html` is this whole report on one page (plots inline; no network, no other file needed).",
        f"Intervals: {intervals}",
        f"Paired columns (FollowBench, Hierarchical, BMC, ALLO and data-source tables): every row against "
        f"{params.report.reference} (report.reference; BMC and ALLO also against full DPO, the first plain "
        "full-parameter variant; the data-source table against the seed-only mixture), on the same prompts: Δ HSR Avg "
        "with a paired bootstrap interval (groups resampled within category) and an exact McNemar p, Δ of each judge "
        "dimension with a Wilcoxon signed-rank p, every p Holm-corrected within its table; under each table n, the "
        "minimum detectable effect (80% power) per metric and what the table can and cannot detect. The CSVs add the "
        "intervals of the judge differences, the raw p and each row's MDE.",
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
