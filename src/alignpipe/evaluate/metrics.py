"""FollowBench metrics (HSR, SSR, CSL), judge means, and bootstrap intervals over groups.

Definitions follow FollowBench (Jiang et al., 2024; ``YJiangcm/FollowBench``). Input rows are per-instruction
results ``{"group_id", "category", "level", "verdicts": [bool, ...]}``; a *group* is one base instruction and
its evolutions at levels 1-5 (level 0, the original instruction, is not scored and is dropped here):

- ``HSR(l, c)`` = mean over the groups of category ``c`` of ``all(verdicts)`` at level ``l``;
- ``SSR(l, c)`` = mean over those groups of ``mean(verdicts)`` (the fraction of constraints satisfied);
- per-level ``HSR(l)`` / ``SSR(l)`` = plain mean over the categories present at level ``l``;
- ``hsr_avg`` / ``ssr_avg`` = plain mean over the levels present (FollowBench's "Avg." over L1-L5);
- ``CSL(c)`` = mean over the groups of ``c`` of the number of consecutive levels satisfied (HSR sense)
  starting at level 1; overall ``csl`` = plain mean over categories.

Conventions this module adds where the paper is silent:

- A group that lacks a level (e.g. ``levels=[1, 2, 4, 5]``) stops its CSL count there: consecutive means
  consecutive *levels*, so a missing level 3 caps that group's CSL at 2, and a group without level 1 scores 0.
- An empty verdict list is an error (:class:`ValueError` naming the row): a level-L instruction has L
  constraints, so an empty list means a broken record or verifier, and ``all([])`` would count it as a pass.
- Groups are keyed by ``(category, group_id)`` and sorted, so results do not depend on the order of the rows.

Bootstrap intervals resample GROUPS with replacement within each category (the unit FollowBench averages
over; every category keeps its size), recompute the same figures with the same code as the point estimate,
and report percentile intervals. With ``n_resamples=0`` no interval is computed and ``lo``/``hi`` are ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from alignpipe.config import CATEGORIES, LEVELS

JUDGE_KEYS = ("fluency", "factuality", "coherence")


class Estimate(NamedTuple):
    """A point estimate and its bootstrap interval (``lo``/``hi`` are None when no resamples were drawn)."""

    point: float
    lo: float | None
    hi: float | None


def consecutive_levels(passed: Mapping[int, bool]) -> int:
    """Number of consecutive levels satisfied starting at level 1 (stops at the first failed or missing level).

    >>> consecutive_levels({1: True, 2: True, 3: False, 4: True, 5: True})
    2
    """
    n = 0
    while passed.get(n + 1, False):
        n += 1
    return n


def _category_order(categories: Iterable[str]) -> list[str]:
    present = set(categories)
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def instruction_table(rows: Iterable[Mapping[str, Any]], levels: Sequence[int] = LEVELS) -> pd.DataFrame:
    """Validate per-instruction rows and return one row per scored instruction.

    Args:
        rows: dicts with ``group_id``, ``category``, ``level`` and ``verdicts`` (other keys are ignored).
        levels: the levels to keep (level 0 and any level not listed are dropped).

    Returns:
        DataFrame with columns ``category, group_id, level, hard, soft``, sorted by those keys.

    Raises:
        ValueError: a missing field, an empty verdict list, a level outside 0-5, a repeated (group, level),
            or no scored row at all.
    """
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in ("group_id", "category", "level", "verdicts") if k not in row]
        if missing:
            raise ValueError(f"row {i} ({row.get('id', '?')}): missing field(s) {missing}")
        level = row["level"]
        if level not in (0, *LEVELS):
            raise ValueError(f"row {i} ({row.get('id', row['group_id'])}): level {level!r} not in 0-5")
        if level not in levels or level == 0:
            continue
        verdicts = [bool(v) for v in row["verdicts"]]
        if not verdicts:
            raise ValueError(
                f"row {i} ({row.get('id', row['group_id'])}): empty verdict list at level {level}; "
                "a level-L instruction must have L verdicts"
            )
        out.append((str(row["category"]), str(row["group_id"]), int(level), all(verdicts), float(np.mean(verdicts))))
    if not out:
        raise ValueError(f"no scored instruction (levels {list(levels)}) among the rows")
    table = pd.DataFrame(out, columns=["category", "group_id", "level", "hard", "soft"])
    dup = table.duplicated(["category", "group_id", "level"])
    if dup.any():
        first = table[dup].iloc[0]
        raise ValueError(f"group {first.group_id} ({first.category}) has level {first.level} more than once")
    return table.sort_values(["category", "group_id", "level"], ignore_index=True)


def _blocks(table: pd.DataFrame) -> tuple[list[str], list[int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per category: hard and soft (groups x levels, NaN where a group lacks a level) and per-group CSL."""
    levels = sorted(table["level"].unique().tolist())
    categories = _category_order(table["category"].unique())
    blocks = []
    for cat in categories:
        sub = table[table["category"] == cat]
        hard = sub.pivot(index="group_id", columns="level", values="hard").reindex(columns=levels)
        soft = sub.pivot(index="group_id", columns="level", values="soft").reindex(columns=levels)
        csl = np.array(
            [consecutive_levels({lv: bool(v) for lv, v in r.items() if pd.notna(v)}) for _, r in hard.iterrows()],
            dtype=float,
        )
        blocks.append((hard.to_numpy(dtype=float), soft.to_numpy(dtype=float), csl))
    return categories, levels, blocks


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN, NaN where a slice is all NaN (no RuntimeWarning)."""
    ok = ~np.isnan(x)
    count = ok.sum(axis=axis)
    total = np.where(ok, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _aggregate(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]], idx: list[np.ndarray]) -> dict[str, Any]:
    """FollowBench figures for B samplings of groups at once (``idx[c]`` has shape (B, n_groups of c)).

    Returns arrays with a leading axis of size B: per-category ``cat_hsr``/``cat_ssr`` (B, C, L) and
    ``cat_csl`` (B, C); per-level ``hsr``/``ssr`` (B, L); and ``hsr_avg``, ``ssr_avg``, ``csl`` (B,).
    """
    cat_hsr = np.stack([_nanmean(hard[i], axis=1) for (hard, _, _), i in zip(blocks, idx, strict=True)], axis=1)
    cat_ssr = np.stack([_nanmean(soft[i], axis=1) for (_, soft, _), i in zip(blocks, idx, strict=True)], axis=1)
    cat_csl = np.stack([csl[i].mean(axis=1) for (_, _, csl), i in zip(blocks, idx, strict=True)], axis=1)
    hsr, ssr = _nanmean(cat_hsr, axis=1), _nanmean(cat_ssr, axis=1)
    return {
        "cat_hsr": cat_hsr,
        "cat_ssr": cat_ssr,
        "cat_csl": cat_csl,
        "hsr": hsr,
        "ssr": ssr,
        "hsr_avg": _nanmean(hsr, axis=1),
        "ssr_avg": _nanmean(ssr, axis=1),
        "csl": cat_csl.mean(axis=1),
    }


def _flat(agg: dict[str, Any], levels: list[int], b: int = 0) -> dict[str, float]:
    """The headline figures of sampling ``b`` as a flat dict (``hsr_l1`` ..., ``hsr_avg``, ``ssr_avg``, ``csl``)."""
    out = {f"{m}_l{lv}": float(agg[m][b, j]) for m in ("hsr", "ssr") for j, lv in enumerate(levels)}
    out.update({k: float(agg[k][b]) for k in ("hsr_avg", "ssr_avg", "csl")})
    return out


def followbench_scores(rows: Iterable[Mapping[str, Any]], levels: Sequence[int] = LEVELS) -> dict[str, Any]:
    """Point estimates of the FollowBench figures.

    Args:
        rows: per-instruction results (see the module docstring).
        levels: the levels scored; levels absent from the rows get no key.

    Returns:
        ``{"hsr_l1".., "ssr_l1".., "hsr_avg", "ssr_avg", "csl", "n_groups", "n_instructions", "per_category":
        {category: {"hsr_l1".., "ssr_l1".., "hsr_avg", "ssr_avg", "csl", "n_groups", "n_instructions"}}}``,
        rates as fractions in [0, 1], CSL in levels.
    """
    table = instruction_table(rows, levels)
    categories, lv, blocks = _blocks(table)
    agg = _aggregate(blocks, [np.arange(len(csl))[None, :] for _, _, csl in blocks])
    out: dict[str, Any] = _flat(agg, lv)
    out["n_groups"] = int(sum(len(csl) for _, _, csl in blocks))
    out["n_instructions"] = len(table)
    per_category = {}
    for c, cat in enumerate(categories):
        present = [j for j in range(len(lv)) if not np.isnan(agg["cat_hsr"][0, c, j])]
        entry = {f"{m}_l{lv[j]}": float(agg[f"cat_{m}"][0, c, j]) for m in ("hsr", "ssr") for j in present}
        entry["hsr_avg"] = float(np.mean([agg["cat_hsr"][0, c, j] for j in present]))
        entry["ssr_avg"] = float(np.mean([agg["cat_ssr"][0, c, j] for j in present]))
        entry["csl"] = float(agg["cat_csl"][0, c])
        entry["n_groups"] = len(blocks[c][2])
        entry["n_instructions"] = int((table["category"] == cat).sum())
        per_category[cat] = entry
    out["per_category"] = per_category
    return out


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap samples (NaN samples ignored; None when there is no sample)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def check_bootstrap(n_resamples: int, confidence: float) -> None:
    """Raise ValueError unless ``n_resamples >= 0`` and ``0 < confidence < 1`` (every bootstrap here takes both)."""
    if n_resamples < 0 or not 0 < confidence < 1:
        raise ValueError(f"need n_resamples >= 0 and 0 < confidence < 1, got {n_resamples}, {confidence}")


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap_ci(
    rows: Iterable[Mapping[str, Any]],
    levels: Sequence[int] = LEVELS,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> dict[str, Estimate]:
    """Bootstrap intervals of the headline FollowBench figures, resampling groups within each category.

    Args:
        rows: per-instruction results (see the module docstring).
        levels: the levels scored.
        n_resamples: bootstrap resamples; 0 gives ``Estimate(point, None, None)``.
        confidence: coverage of the percentile interval (0.95 -> 2.5th and 97.5th percentiles).
        seed: an int or a ``numpy.random.Generator`` (same seed and rows -> same intervals).

    Returns:
        ``{"hsr_l1".., "ssr_l1".., "hsr_avg", "ssr_avg", "csl": Estimate(point, lo, hi)}``.
    """
    check_bootstrap(n_resamples, confidence)
    table = instruction_table(rows, levels)
    _, lv, blocks = _blocks(table)
    point = _flat(_aggregate(blocks, [np.arange(len(csl))[None, :] for _, _, csl in blocks]), lv)
    if n_resamples == 0:
        return {k: Estimate(v, None, None) for k, v in point.items()}
    rng = _rng(seed)
    idx = [rng.integers(0, len(csl), size=(n_resamples, len(csl))) for _, _, csl in blocks]
    boot = _aggregate(blocks, idx)
    samples = {f"{m}_l{v}": boot[m][:, j] for m in ("hsr", "ssr") for j, v in enumerate(lv)}
    samples.update({k: boot[k] for k in ("hsr_avg", "ssr_avg", "csl")})
    return {k: Estimate(point[k], *percentile_interval(samples[k], confidence)) for k in point}


def judge_scores(
    rows: Iterable[Mapping[str, Any]],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    keys: Sequence[str] = JUDGE_KEYS,
) -> dict[str, Estimate]:
    """Mean judge score per criterion with a bootstrap interval over rows (responses).

    Args:
        rows: dicts holding the scores either under ``row["judge"]`` (generation records) or at top level.
        n_resamples: bootstrap resamples; 0 gives ``Estimate(mean, None, None)``.
        confidence: coverage of the percentile interval.
        seed: an int or a ``numpy.random.Generator``.
        keys: the criteria to average.

    Returns:
        ``{criterion: Estimate(mean, lo, hi)}`` on the judge's 1-10 scale.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows to average judge scores over")
    scores = np.empty((len(rows), len(keys)))
    for i, row in enumerate(rows):
        judged = row.get("judge", row)
        for j, key in enumerate(keys):
            value = judged.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or np.isnan(value):
                raise ValueError(f"row {i} ({row.get('id', '?')}): judge score '{key}' is {value!r}, not a number")
            scores[i, j] = value
    means = scores.mean(axis=0)
    if n_resamples == 0:
        return {k: Estimate(float(means[j]), None, None) for j, k in enumerate(keys)}
    idx = _rng(seed).integers(0, len(rows), size=(n_resamples, len(rows)))
    boot = scores[idx].mean(axis=1)  # (B, K)
    return {k: Estimate(float(means[j]), *percentile_interval(boot[:, j], confidence)) for j, k in enumerate(keys)}


ERROR_KEYS = ("error_fluency", "error_coherence", "error_factuality", "error_constraints")


def error_rates(
    rows: Iterable[Mapping[str, Any]],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
) -> dict[str, Estimate]:
    """Share of responses holding each kind of error, with a bootstrap interval over responses.

    Args:
        rows: generation records with ``errors`` (``{"fluency", "coherence", "factuality"}`` booleans from
            :meth:`alignpipe.world.Judge.errors`) and ``verdicts`` (a constraint error: any verdict false).

    Returns:
        ``{"error_fluency", "error_coherence", "error_factuality", "error_constraints": Estimate}`` in [0, 1].
    """
    flags = [{"error_fluency": float(r["errors"]["fluency"]), "error_coherence": float(r["errors"]["coherence"]),
              "error_factuality": float(r["errors"]["factuality"]),
              "error_constraints": float(not all(r["verdicts"]))} for r in rows]
    return judge_scores(flags, n_resamples, confidence, seed, keys=ERROR_KEYS)
