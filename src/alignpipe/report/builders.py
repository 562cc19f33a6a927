"""The report's table builders (see :mod:`alignpipe.report.sections`), in README order.

Each reads the outputs of the stage that measured it, writes its markdown / CSV / PNG into ``ctx.out`` and says
what produced it; a table whose inputs are off or absent is returned as not produced, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from alignpipe.evaluate.followbench.tables import write_report
from alignpipe.report import datasource, methods
from alignpipe.report.claims import claims_table
from alignpipe.report.paired import compare
from alignpipe.report.errors import errors_table
from alignpipe.report.lte import lte_markdown, lte_table
from alignpipe.report.plots import hsr_by_level, panels_of
from alignpipe.report.rows import allo_rows, bmc_rows, hierarchical_rows, label, mixture_rows, seed_mixture
from alignpipe.report.sections import (
    Context,
    Table,
    data_of,
    judges_of,
    models_of,
    not_produced,
    produced,
    register,
    sizes_of,
)
from alignpipe.report.tables import followbench_table, to_csv, to_markdown
from alignpipe.report.training import training_table
from alignpipe.utils.io import read_json, write_jsonl


def write_table(ctx: Context, stem: str, heading: str, markdown: str, csv: str) -> list[str]:
    """Write ``<stem>.md`` (under ``# heading``) and ``<stem>.csv`` into the report dir; return their names."""
    (ctx.out / f"{stem}.md").write_text(f"# {heading}\n\n{markdown}", encoding="utf-8")
    (ctx.out / f"{stem}.csv").write_text(csv, encoding="utf-8")
    return [f"{stem}.md", f"{stem}.csv"]


@register("claims", "Claims of the papers: paired effects, intervals, Holm-corrected p, MDE and verdicts")
def claims(ctx: Context) -> Table:
    if not ctx.params.report.claims:
        return not_produced("claims", "report.claims is false")
    table, md = claims_table(ctx.params, ctx.eval_dir, ctx.edit_eval_dir, ctx.synth_dir)
    if table.empty:
        return not_produced("claims", "no claim is testable with the run's variants (align.variants, sft_mix, "
                                      "edit_eval, synthesize.lion)")
    files = write_table(ctx, "claims", "Claims of the papers, measured (paired, Holm-corrected)", md,
                        table.to_csv(index=False, float_format="%.6g", lineterminator="\n"))
    measured = int((table["Verdict"] != "not measured").sum())
    return produced("claims", md, files, "the models each claim names (A, B)",
                    "evaluation pool, edit_eval edits, Lion's evaluation prompts",
                    "as the table each claim comes from", f"{measured} of {len(table)} claims measured")


def level_panels(ctx: Context) -> dict:
    """The HSR-by-level plot's panels: the rows of the Hierarchical, BMC and ALLO tables (with SFT beside the BMC
    and ALLO rows), labelled as in the FollowBench table."""
    by_name = {m.get("_name", row): row for row, m in ctx.metrics.items()}
    sft = ["sft"] if "sft" in by_name else []
    groups = {"Base, SFT, Hierarchical Alignment": list(hierarchical_rows(ctx.params)),
              "BMC": [*sft, *bmc_rows(ctx.params)], "ALLO": list(allo_rows(ctx.params))}
    return panels_of({t: [by_name[n] for n in names if n in by_name] for t, names in groups.items()}, ctx.metrics)


@register("followbench", "FollowBench Table 2 layout (evaluated models)")
def followbench(ctx: Context) -> Table:
    table = followbench_table(ctx.metrics)
    ref = ctx.params.report.reference
    paired = compare(ctx.params, ctx.eval_dir, {m.get("_name", row): row for row, m in ctx.metrics.items()},
                     {ref: label(ctx.params, ref)})
    md = to_markdown(table, ctx.params.evaluate.confidence, paired)
    files = write_table(ctx, "followbench", "FollowBench (built-in world)", md, to_csv(table.join(paired.frame)))
    hsr_by_level(level_panels(ctx), ctx.out / "hsr_by_level.png", ctx.params.evaluate.confidence)
    return produced("followbench", md, [*files, "hsr_by_level.png"], models_of(ctx.metrics), data_of(ctx.metrics),
                    judges_of(ctx.metrics), sizes_of(ctx.metrics))


@register("followbench_official", "FollowBench on the official data (rule-scored and judged parts, radar)")
def followbench_official(ctx: Context) -> Table:
    official = {label: m for label, m in ctx.metrics.items() if m.get("benchmark") == "followbench"}
    if not official:
        return not_produced("followbench_official", "no model evaluated with evaluate.benchmark: followbench")
    files = write_report(ctx.out, official)
    md = (ctx.out / "followbench_official.md").read_text(encoding="utf-8")
    md = "\n".join(line for line in md.splitlines() if not line.startswith("# "))  # its own H1 is the section's
    return produced("followbench_official", md, list(files), models_of(official), data_of(official),
                    judges_of(official), sizes_of(official))


@register("training", "Alignment training: held-out preference accuracy before and after, per variant")
def training(ctx: Context) -> Table:
    table, md = training_table(ctx.params, ctx.align_dir)
    if table.empty:
        return not_produced("training", f"no align variant's metrics.json under {ctx.align_dir}")
    files = write_table(ctx, "training", "Alignment training: did each variant learn? (built-in world)", md,
                        to_csv(table))
    n = int(table["Held-out pairs"].max() or 0)
    return produced("training", md, files, ", ".join(table.index), "held-out preference pairs (align stage)",
                    "DPO implicit reward (stored reference)", f"{n} held-out pairs per variant")


@register("errors", "Errors by kind (fluency, coherence, factuality, constraints), paired against the reference")
def errors(ctx: Context) -> Table:
    models = {row: m.get("_name", row) for row, m in ctx.metrics.items() if m.get("benchmark") != "followbench"}
    table, md = errors_table(ctx.params, ctx.eval_dir, models)
    if table.empty:
        return not_produced("errors", "no evaluated model's generations carry the world judge's error flags "
                                      "(evaluate.judge: world on the built-in world)")
    files = write_table(ctx, "errors", "Errors by kind (built-in world)", md, to_csv(table))
    rows = {row: ctx.metrics[row] for row in table.index}
    return produced("errors", md, files, models_of(rows), data_of(rows),
                    "alignpipe.world.Judge.errors + verifiers", sizes_of(rows))


@register("hierarchical", "Hierarchical Alignment (judge dimensions, pairwise W/T/L, alignment tax)")
def hierarchical(ctx: Context) -> Table:
    cfg = ctx.params.report
    if not cfg.hierarchical:
        return not_produced("hierarchical", "report.hierarchical is false")
    h_table, h_md, pairwise_info = methods.hierarchical(ctx.params, ctx.eval_dir, ctx.metrics, ctx.world_dir)
    files = write_table(ctx, "hierarchical", "Hierarchical Alignment (built-in world)", h_md, to_csv(h_table))
    for name, artifacts in pairwise_info["artifacts"].items():  # the pairwise judge's raw outputs
        path = Path("pairwise") / f"{name}.jsonl"
        write_jsonl(ctx.out / path, artifacts)
        files.append(str(path))
    rows = {row: ctx.metrics[row] for row in hierarchical_rows(ctx.params).values()}
    return produced("hierarchical", h_md, files, models_of(rows), data_of(rows),
                    f"pointwise: {judges_of(rows)}; pairwise: {pairwise_info['judge']}",
                    f"{pairwise_info['sample']}; pointwise: {sizes_of(rows)}")


@register("bmc", "BMC: bridging and modeling correlations")
def bmc(ctx: Context) -> Table:
    cfg = ctx.params.report
    if not cfg.bmc:
        return not_produced("bmc", "report.bmc is false")
    if not any(v.is_bmc for v in ctx.params.align.variants.values()):
        return not_produced("bmc", "no BMC variant (pairs: bridged or token_weights: bmc) in align.variants")
    b_table, b_md = methods.bmc(ctx.params, ctx.eval_dir, ctx.metrics)
    files = write_table(ctx, "bmc", "BMC: bridging and modeling correlations (built-in world)", b_md, to_csv(b_table))
    names = dict.fromkeys([*bmc_rows(ctx.params), cfg.reference])
    rows = {label(ctx.params, n): ctx.metrics[label(ctx.params, n)] for n in names}
    return produced("bmc", b_md, files, models_of(rows), data_of(rows),
                    f"pointwise: {judges_of(rows)}; pairwise: stored pointwise scores compared (tie margin "
                    f"{cfg.tie_margin})", f"vs {label(ctx.params, cfg.reference)}; {sizes_of(rows)}")


@register("allo", "ALLO: preference neurons, token weights, forget then learn")
def allo(ctx: Context) -> Table:
    cfg = ctx.params.report
    if not cfg.allo:
        return not_produced("allo", "report.allo is false")
    if not any(v.allo is not None for v in ctx.params.align.variants.values()):
        return not_produced("allo", "no ALLO variant in align.allo_variants")
    a_table, a_md = methods.allo(ctx.params, ctx.align_dir, ctx.metrics, ctx.eval_dir)
    files = write_table(ctx, "allo", "ALLO (built-in world)", a_md, to_csv(a_table))
    rows = {row: ctx.metrics[row] for row in allo_rows(ctx.params).values()}
    return produced("allo", a_md, files, models_of(rows), data_of(rows), f"pointwise: {judges_of(rows)}",
                    sizes_of(rows))


@register("mixtures", "Data sources: SFT on seed, + Lion, + WebR, + both (WebR / Lion Table 1)")
def mixtures(ctx: Context) -> Table:
    cfg = ctx.params.report
    if not cfg.data_sources:
        return not_produced("mixtures", "report.data_sources is false")
    mixtures = mixture_rows(ctx.params)
    if not mixtures:
        return not_produced("mixtures", "sft_mix.mixtures is empty")
    d_metrics = datasource.load(mixtures, ctx.eval_dir, ctx.mix_dir)
    d_table = datasource.datasource_table(d_metrics)
    ref = seed_mixture(ctx.params)
    paired = compare(ctx.params, ctx.eval_dir, {f"mix_{name}": row for name, row in mixtures.items()},
                     {f"mix_{ref}": mixtures[ref]})
    md = datasource.to_markdown(d_table, d_metrics, paired)
    files = write_table(ctx, "mixtures", "Data sources: seed, Lion and WebR SFT data (built-in world)", md,
                        to_csv(d_table.join(paired.frame)))
    names = ", ".join(f"{row} (`{ctx.mix_dir}/{name}/model`)" for name, row in mixtures.items())
    return produced("mixtures", md, files, names, "built-in world evaluation pool",
                    "world judge (pointwise); relative score: roles.referee vs the stored teacher answers",
                    f"{len(mixtures)} mixtures")


@register("lte", "LTE knowledge editing")
def lte(ctx: Context) -> Table:
    if not ctx.params.report.lte:
        return not_produced("lte", "report.lte is false")
    metrics = read_json(ctx.edit_eval_dir / "metrics.json")  # asked for (report.lte): a missing file is an error
    table = lte_table(metrics)
    md = lte_markdown(table, metrics)
    files = write_table(ctx, "lte", "LTE knowledge editing", md,
                        table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    config_path = ctx.edit_eval_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    return produced("lte", md, files,
                    f"SFT policy with in-context edits; LTE policy (`{config.get('model_dir', 'data/edit_align')}`)",
                    f"`{ctx.edit_eval_dir}` edits (world KB)", "rules (answer contains the object), no LLM judge",
                    f"{metrics.get('n_eval_edits', '?')} evaluation edits, sizes {metrics.get('sizes', '?')}")


@register("data_sources", "Instruction data sources (synthesize: WebR)")
def data_sources(ctx: Context) -> Table:
    path = ctx.synth_dir / "metrics.json"
    if not path.is_file():
        return not_produced("data_sources", f"{path} not found (synthesize stage not run)")
    metrics = read_json(path)
    lion = metrics.get("lion") or {"lion": "disabled"}
    if metrics.get("webr") == "disabled" and lion.get("lion") == "disabled":
        return not_produced("data_sources", "synthesize.webr and synthesize.lion are both disabled")
    rows = []
    if metrics.get("webr") != "disabled":
        rows += [{"Source": f"WebR {kind}", "Rows": n} for kind, n in (metrics.get("rows_by_type") or {}).items()]
        rows.append({"Source": "WebR (all)", "Rows": metrics.get("rows", 0)})
    if lion.get("lion") != "disabled":
        rows.append({"Source": f"Lion ({len(lion.get('rounds') or [])} rounds)", "Rows": lion.get("rows", 0)})
    table = pd.DataFrame.from_records(rows)
    filters = ", ".join(f"{k.replace('_', ' ')}: {metrics[k]}" for k in (
        "no_persona", "no_request", "refusals_removed", "duplicates_removed", "same_page_removed") if k in metrics)
    md = "| Source | Rows |\n|---|---:|\n" + "".join(f"| {r['Source']} | {r['Rows']} |\n" for r in rows)
    md += (f"\nFrom {metrics.get('pages', '?')} web pages. Removed or missing: {filters or 'n/a'}. Mean words: "
           f"request {metrics.get('request_words_mean', '?')}, response {metrics.get('response_words_mean', '?')}.\n")
    files = write_table(ctx, "data_sources", "Instruction data sources", md,
                        table.to_csv(index=False, lineterminator="\n"))
    config_path = ctx.synth_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    roles = config.get("roles") or {}
    backends = ", ".join(f"{k}: {v.get('backend')}" for k, v in roles.items() if isinstance(v, dict)) or "see config"
    calls = (metrics.get("roles") or {}).get("total", {})
    return produced("data_sources", md, files, f"LLM roles ({backends})",
                    f"`{config.get('input', 'unknown')}`", "none (generation only)",
                    f"{metrics.get('pages', '?')} pages, {metrics.get('rows', 0)} rows; role calls "
                    f"{calls.get('calls', '?')}, unparseable {calls.get('unparseable', '?')}")
