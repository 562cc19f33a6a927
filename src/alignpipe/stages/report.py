"""The ``report`` stage: FollowBench tables and plots from ``data/evaluate/<name>/metrics.json`` (and, with
``report.lte``, the LTE table from ``data/edit_eval/metrics.json``: ``lte.md``, ``lte.csv``; with
``report.data_sources``, the data-source table from ``data/evaluate/mix_<name>/`` and ``data/sft_mix/<name>/``:
``mixtures.md``, ``mixtures.csv``).

Run (normally ``dvc repro report``, i.e. ``python -m flows.report``; or directly)::

    from alignpipe.config import load_params
    from alignpipe.stages.report import run
    run(load_params("params.yaml"))

Its rows are the evaluated models, read from the params (:mod:`alignpipe.report.rows`): base, sft and every align
variant, labelled by ``report.labels``. Writes, atomically, to ``data/report/``: ``followbench.md``,
``followbench.csv``, ``hsr_by_level.png``, a ``README.md`` that says what produced them and ``index.html``, the
same report as one self-contained page (:mod:`alignpipe.report.html`); and ``data/summary.json``, the headline
numbers for `dvc exp show` (:mod:`alignpipe.report.summary`). Computed here, because
they need two models' outputs at once: the paired columns of each table (:mod:`alignpipe.report.paired`: Δ against
the reference on the same prompts, paired bootstrap interval, Holm-corrected p, MDE) from the stored
``generations.jsonl``, and, with ``report.pairwise_judge: roles``, the pairwise judge's verdicts.

Every table comes from a builder registered in :mod:`alignpipe.report.builders` (FollowBench, the official
FollowBench tables and radar, Hierarchical Alignment, BMC, ALLO, LTE, data sources); ``README.md`` gathers them
all, each with its models, data, judge and sample size, and lists the ones not produced (a stage off, an input
absent).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from alignpipe.config import Params
from alignpipe.report import builders  # noqa: F401  (registers every table builder, in README order)
from alignpipe.report.html import write_html
from alignpipe.report.summary import write_summary
from alignpipe.report.inputs import load_metrics, readme
from alignpipe.report.rows import followbench_rows
from alignpipe.report.sections import Context, assemble, build_all
from alignpipe.report.tables import followbench_table
from alignpipe.utils.io import atomic_dir
from alignpipe.utils.seed import seed_everything

log = logging.getLogger(__name__)

FILES = ("README.md", "index.html", "followbench.md", "followbench.csv", "hsr_by_level.png")


def run(params: Params, eval_dir: str | Path = "data/evaluate", out_dir: str | Path = "data/report",
        edit_eval_dir: str | Path = "data/edit_eval", synth_dir: str | Path = "data/synthesize",
        world_dir: str | Path = "data/world", align_dir: str | Path = "data/align",
        mix_dir: str | Path = "data/sft_mix", summary_path: str | Path | None = None) -> dict[str, Any]:
    """Write the report for the evaluated models; return the FollowBench table as ``{label: {column: value}}``.

    Every table builder registered in :mod:`alignpipe.report.builders` runs in order; ``README.md`` lists them
    all (produced, or not and why) with their provenance and links to their files. ``summary_path`` (default:
    ``summary.json`` beside ``out_dir``, i.e. ``data/summary.json``) gets the headline numbers.
    """
    seed_everything(params.seed)
    rows = followbench_rows(params)
    log.info("report rows: %s", rows)
    metrics = load_metrics(eval_dir, rows)
    with atomic_dir(out_dir) as tmp:
        ctx = Context(params, Path(tmp), metrics, Path(eval_dir), Path(edit_eval_dir), Path(synth_dir),
                      Path(world_dir), Path(align_dir), Path(mix_dir))
        tables = build_all(ctx)
        text = assemble(tables, readme(metrics, params))
        (tmp / "README.md").write_text(text, encoding="utf-8")
        write_html(tmp, text)  # index.html: the same report as one self-contained page
        claims = pd.read_csv(tmp / "claims.csv") if (tmp / "claims.csv").is_file() else None
    # the headline numbers for `dvc exp show` (alignpipe.report.summary), beside the report dir: data/summary.json
    write_summary(params, metrics, align_dir, claims, summary_path or Path(out_dir).parent / "summary.json")
    log.info("report written to %s (%d models; tables: %s)", out_dir, len(metrics),
             ", ".join(f"{t.key}={'yes' if t.produced else 'no'}" for t in tables))
    return followbench_table(metrics).to_dict(orient="index")
