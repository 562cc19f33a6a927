"""Score responses to the official FollowBench data: rules where the official code has them, the judge elsewhere.

Usage::

    rows = score(records, responses, judge=my_judge, template=load_template())
    metrics = summarize(rows, levels=[1, 2, 3, 4, 5], n_resamples=1000, confidence=0.95, seed=7)

Each scored row says how it was scored (``method``):

- ``rule``: one verdict for all L constraints (``verdicts`` = ``[v]``), so it counts 1 or 0 for HSR and SSR alike,
  as in the official tables;
- ``judge``: the judge's L per-constraint verdicts (``verdicts``), its raw outputs (``judge_raw``, one per attempt);
- ``unparseable``: the judge was asked ``1 + retries`` times and no output could be parsed: ``verdicts`` is None
  and the row is left out of HSR/SSR/CSL and counted under ``unparseable`` in the metrics;
- ``unjudged``: no judge was configured (``judge=None``): left out and counted under ``unjudged``.

Metrics (via :mod:`alignpipe.evaluate.metrics`, FollowBench's definitions): HSR/SSR per category and level, their
mean over categories per level, ``hsr_avg``/``ssr_avg`` over levels, CSL per category and overall; for all scored
rows, and for the rule-scored and the judged rows on their own (``parts``). A group with an unparseable level has
that level missing, which stops its CSL count there (the metrics module's rule for missing levels); the count of
such rows is reported beside the figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from alignpipe.evaluate.followbench.data import evolution_paths
from alignpipe.evaluate.followbench.judge import JudgeFn, build_prompt, judge_all
from alignpipe.evaluate.followbench.rules import rule_group, rule_verdict
from alignpipe.evaluate.metrics import bootstrap_ci, followbench_scores

KEEP = ("id", "group_id", "category", "source", "example_id", "level")


def score(
    records: Sequence[dict[str, Any]],
    responses: Sequence[str],
    judge: JudgeFn | None,
    template: dict[str, Any],
    rule_mode: str = "compat",
    retries: int = 1,
    all_records: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per scored record (level >= 1), in the order of ``records``.

    Args:
        records: official records (from ``load_followbench``), level-0 ones included or not.
        responses: one response per record of ``records`` (level-0 responses, if given, are ignored).
        judge: the judge backend, or None to leave the judged groups unscored (``unjudged``).
        template: the judge prompt template.
        rule_mode: ``compat`` (official verdicts) or ``fixed`` (see ``rules``).
        retries: extra judge requests for an unparseable output.
        all_records: where the evolution paths come from (default ``records``); pass the full data when
            ``records`` lacks the level-0 instructions.
    """
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    paths = evolution_paths(all_records if all_records is not None else records)
    rows: list[dict[str, Any]] = []
    to_judge: list[int] = []
    for record, response in zip(records, responses, strict=True):
        if record["level"] == 0:
            continue
        row = {**{k: record[k] for k in KEEP}, "response": response}
        group = rule_group(record)
        if group is not None:
            row.update(method="rule", rule=group, verdicts=[rule_verdict(record, response, rule_mode)])
        else:
            path = paths[record["id"]]
            if len(path) != record["level"] + 1:
                raise ValueError(f"{record['id']}: evolution path has {len(path)} instructions, not level + 1")
            row.update(method="unjudged", verdicts=None)
            to_judge.append(len(rows))
        rows.append(row)
    if judge is not None and to_judge:
        prompts = [
            build_prompt(template, rows[i]["category"], paths[rows[i]["id"]], rows[i]["response"]) for i in to_judge
        ]
        results = judge_all(judge, prompts, [rows[i]["level"] for i in to_judge], template, retries)
        for i, result in zip(to_judge, results, strict=True):
            parsed = result["verdicts"] is not None
            rows[i].update(
                method="judge" if parsed else "unparseable",
                verdicts=result["verdicts"],
                judge_raw=result["raw"],
                judge_attempts=result["attempts"],
            )
    return rows


def _r(x: float) -> float:
    return round(x, 6)


def _rounded(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (_rounded(v) if isinstance(v, dict) else _r(v) if isinstance(v, float) else v) for k, v in scores.items()
    }


def _part(rows: list[dict[str, Any]], levels: Sequence[int]) -> dict[str, Any] | None:
    return _rounded(followbench_scores(rows, levels)) if rows else None


def _counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = Counter((r["category"], r["level"]) for r in rows)
    per_category: dict[str, dict[str, int]] = {}
    for (cat, lv), n in sorted(by.items()):
        per_category.setdefault(cat, {})[f"l{lv}"] = n
    return {"n": len(rows), "per_category": per_category, "ids": [r["id"] for r in rows]}


def summarize(
    rows: list[dict[str, Any]], levels: Sequence[int], n_resamples: int, confidence: float, seed: int
) -> dict[str, Any]:
    """The ``metrics.json`` content for FollowBench on the official data.

    Flat keys as the world's evaluate stage (``hsr_l1``.., ``ssr_l1``.., ``hsr_avg``, ``ssr_avg``, ``csl``, with
    ``_lo``/``_hi`` bootstrap bounds when ``n_resamples`` > 0, ``n_groups``, ``n_instructions``, ``per_category``),
    over every row with verdicts; plus ``benchmark``, ``parts`` (``rule`` and ``judge``: the same figures on each
    part alone, None when the part is empty), ``methods`` (row counts by method), ``unparseable`` and ``unjudged``
    (count, per category and level, ids).

    Raises:
        ValueError: no row has verdicts (nothing to score).
    """
    scored = [r for r in rows if r["verdicts"] is not None]
    if not scored:
        raise ValueError("no FollowBench response could be scored (every judged output unparseable or unjudged)")
    overall = _rounded(followbench_scores(scored, levels))
    metrics: dict[str, Any] = {"benchmark": "followbench"}
    for key, (point, lo, hi) in bootstrap_ci(scored, levels, n_resamples, confidence, seed).items():
        metrics[key] = _r(point)
        if lo is not None:
            metrics[f"{key}_lo"], metrics[f"{key}_hi"] = _r(lo), _r(hi)
    metrics["n_groups"], metrics["n_instructions"] = overall["n_groups"], overall["n_instructions"]
    metrics["per_category"] = overall["per_category"]
    metrics["parts"] = {
        "rule": _part([r for r in scored if r["method"] == "rule"], levels),
        "judge": _part([r for r in scored if r["method"] == "judge"], levels),
    }
    metrics["methods"] = dict(sorted(Counter(r["method"] for r in rows).items()))
    metrics["unparseable"] = _counts([r for r in rows if r["method"] == "unparseable"])
    metrics["unjudged"] = _counts([r for r in rows if r["method"] == "unjudged"])
    return metrics
