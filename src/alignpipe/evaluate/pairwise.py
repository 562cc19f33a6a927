"""Pairwise comparison of two models' responses to the same prompts, per judge dimension.

With the built-in world's judge the pointwise scores are deterministic functions of a response, so a
pairwise verdict is the comparison of the two scores (a tie when they differ by less than ``tie_margin``);
showing the pair in both orders cannot change it. LLM judges, whose verdicts depend on the position of each
response, plug in through the same counts (each pair judged twice, positions swapped; disagreeing orders
count as a tie): :func:`judged_pairwise` asks the roles' judge (``report.pairwise_judge: roles``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

DIMS = ("fluency", "factuality", "coherence")


def pairwise(
    rows_a: Iterable[dict[str, Any]],
    rows_b: Iterable[dict[str, Any]],
    dims: Sequence[str] = DIMS,
    tie_margin: float = 0.5,
) -> dict[str, dict[str, int]]:
    """Win / tie / loss counts of model A against model B, per dimension, over the prompts both answered.

    Args:
        rows_a: A's generation records (``id`` and ``judge`` with one score per dimension).
        rows_b: B's generation records.
        dims: judge dimensions to compare.
        tie_margin: score differences below this are ties.

    Returns:
        ``{dim: {"win": n, "tie": n, "loss": n, "n": total}}``; ``ValueError`` if no prompt is shared.
    """
    b_by_id = {r["id"]: r for r in rows_b}
    shared = [(r, b_by_id[r["id"]]) for r in rows_a if r["id"] in b_by_id]
    if not shared:
        raise ValueError("the two generation sets share no prompt id; were they evaluated on the same pool?")
    out = {}
    for dim in dims:
        counts = {"win": 0, "tie": 0, "loss": 0, "n": len(shared)}
        for a, b in shared:
            diff = float(a["judge"][dim]) - float(b["judge"][dim])
            counts["tie" if abs(diff) < tie_margin else "win" if diff > 0 else "loss"] += 1
        out[dim] = counts
    return out


def judged_pairwise(
    judge: Any,
    rows_a: Iterable[dict[str, Any]],
    rows_b: Iterable[dict[str, Any]],
    records: dict[str, dict[str, Any]] | None = None,
    tie_margin: float = 0.5,
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
    """Win / tie / loss of model A against model B asked of an LLM judge, each pair in both orders.

    Args:
        judge: the roles' judge (:class:`alignpipe.llm.roles.Judge`, any backend).
        rows_a: A's generation records (``id``, ``instruction``, ``response``).
        rows_b: B's generation records.
        records: instruction records by id (the world's, for the oracle backend; LLM backends read the prompt).
        tie_margin: passed to the oracle (world-judge score differences below it are ties).

    Returns:
        ``({dim: {"win", "tie", "loss", "n", "unparseable"}}, artifacts)``: counts over the pairs whose two outputs
        both parsed (``n``), pairs with an unparseable output counted apart; one artifact per shared prompt with
        both raw outputs (a first, then b first) and the parsed verdicts.
    """
    b_by_id = {r["id"]: r for r in rows_b}
    shared = [(r, b_by_id[r["id"]]) for r in rows_a if r["id"] in b_by_id]
    if not shared:
        raise ValueError("the two generation sets share no prompt id; were they evaluated on the same pool?")
    recs = [(records or {}).get(a["id"]) for a, _ in shared]
    results = judge.compare_swapped([a["instruction"] for a, _ in shared], [a["response"] for a, _ in shared],
                                    [b["response"] for _, b in shared], recs, tie_margin)
    parsed = [r["outcome"] for r in results if r["outcome"] is not None]
    out = {}
    for dim in DIMS:
        counts = {"win": 0, "tie": 0, "loss": 0, "n": len(parsed), "unparseable": len(results) - len(parsed)}
        for outcome in parsed:
            counts[outcome[dim]] += 1
        out[dim] = counts
    artifacts = [{"id": a["id"], **r} for (a, _), r in zip(shared, results)]
    return out, artifacts
