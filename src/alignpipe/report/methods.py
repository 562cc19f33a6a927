"""The method tables (Hierarchical Alignment, BMC, ALLO), their rows picked by :mod:`alignpipe.report.rows`.

Each returns the table (a DataFrame, its paired columns joined: the CSV) and its markdown;
:mod:`alignpipe.report.builders` writes them into the report with their provenance. Paired columns
(:func:`alignpipe.report.paired.compare`): every row against ``report.reference``; in the BMC and ALLO tables also
against full DPO (:func:`alignpipe.report.rows.full_dpo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alignpipe.config import Params
from alignpipe.evaluate.pairwise import judged_pairwise, pairwise
from alignpipe.llm import build_roles
from alignpipe.report.paired import compare
from alignpipe.report.rows import allo_rows, bmc_rows, full_dpo, hierarchical_rows, label
from alignpipe.report.tables import allo_markdown, allo_table, hierarchical_markdown, hierarchical_table
from alignpipe.utils.io import read_json, read_jsonl
from alignpipe.world import load_instructions, load_kb


def hierarchical(params: Params, eval_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]],
                 world_dir: str | Path = "data/world") -> tuple[Any, str, dict[str, Any]]:
    """The Hierarchical Alignment table (pairwise against ``report.reference`` from the stored generations).

    Rows: :func:`alignpipe.report.rows.hierarchical_rows`. Returns ``(table, markdown, info)``; ``info``: the
    pairwise judge's description, the sample size, and (with ``report.pairwise_judge: roles``) its raw outputs per
    compared model under ``artifacts``.
    """
    cfg = params.report
    ref_rows = read_jsonl(Path(eval_dir) / cfg.reference / "generations.jsonl")
    labels = hierarchical_rows(params)
    info: dict[str, Any] = {"artifacts": {}}
    if cfg.pairwise_judge == "roles":  # each pair asked of roles.judge in both orders
        world_dir = Path(world_dir)
        kb = load_kb(world_dir / "kb.json") if (world_dir / "kb.json").is_file() else None
        pool = world_dir / "eval.jsonl"
        records = {r["id"]: r for r in load_instructions(pool)} if pool.is_file() else {}
        judge = build_roles(params.roles, seed=params.seed, kb=kb).judge
        pairs = {}
        for name in labels:
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
            for name in labels
        }
        info["judge"] = f"stored pointwise scores compared (tie margin {cfg.tie_margin})"
    table = hierarchical_table({labels[n]: metrics[labels[n]] for n in labels}, pairs, labels[cfg.reference])
    n_pairs = next((p["fluency"]["n"] for p in pairs.values() if p), None)
    bad = sum(p["fluency"].get("unparseable", 0) for p in pairs.values() if p)
    info["sample"] = f"{n_pairs} prompt pairs per model vs {labels[cfg.reference]}" + (
        f" ({bad} pairs with an unparseable judge output, not counted)" if bad else "")
    paired = compare(params, eval_dir, labels, {cfg.reference: labels[cfg.reference]})
    md = hierarchical_markdown(table, labels[cfg.reference], n_pairs, paired)
    return table.join(paired.frame), md, info


def bmc(params: Params, eval_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]]) -> tuple[Any, str]:
    """The BMC table (rows: :func:`alignpipe.report.rows.bmc_rows`, labelled by ``report.bmc_labels`` where given):
    the Hierarchical Alignment table's columns, W/T/L and alignment tax against ``report.reference`` (a row only
    when it is one of the table's), and the paired columns against ``report.reference`` and full DPO."""
    cfg = params.report
    ref_label = label(params, cfg.reference)
    ref_rows = read_jsonl(Path(eval_dir) / cfg.reference / "generations.jsonl")
    labels = bmc_rows(params)
    by_label = {labels[n]: metrics[label(params, n)] for n in labels}
    pairs: dict[str, Any] = {
        labels[n]: None if n == cfg.reference
        else pairwise(read_jsonl(Path(eval_dir) / n / "generations.jsonl"), ref_rows, tie_margin=cfg.tie_margin)
        for n in labels
    }
    reference = labels.get(cfg.reference, ref_label)
    if cfg.reference not in labels:  # the baseline of W/T/L and the tax, not a row of this table
        by_label = {**by_label, reference: metrics[ref_label]}
    table = hierarchical_table(by_label, pairs, reference)
    if cfg.reference not in labels:
        table = table.drop(index=reference)
    n_pairs = next((p["fluency"]["n"] for p in pairs.values() if p), None)
    paired = compare(params, eval_dir, labels, _references(params, labels))
    return table.join(paired.frame), hierarchical_markdown(table, reference, n_pairs, paired)


def _references(params: Params, labels: dict[str, str]) -> dict[str, str]:
    """The BMC / ALLO tables' paired references: ``report.reference`` and full DPO, labelled as in the table."""
    names = dict.fromkeys(n for n in (params.report.reference, full_dpo(params)) if n is not None)
    return {n: labels.get(n, label(params, n)) for n in names}


def allo(params: Params, align_dir: str | Path, metrics: Mapping[str, Mapping[str, Any]],
         eval_dir: str | Path = "data/evaluate") -> tuple[Any, str]:
    """The ALLO table (rows: :func:`alignpipe.report.rows.allo_rows`): the evaluate metrics plus each row's align
    metrics (parameter counts; none for sft, which no align stage trained), and the paired columns against
    ``report.reference`` and full DPO."""
    labels = allo_rows(params)
    train = {}
    for name, row in labels.items():
        path = Path(align_dir) / name / "metrics.json"
        train[row] = read_json(path) if path.is_file() else None
    table = allo_table({row: metrics[row] for row in labels.values()}, train)
    paired = compare(params, eval_dir, labels, _references(params, labels))
    return table.join(paired.frame), allo_markdown(table, paired)
