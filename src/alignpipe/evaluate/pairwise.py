"""Pairwise comparison of two models' responses to the same prompts, per judge dimension.

With the built-in world's judge the pointwise scores are deterministic functions of a response, so a
pairwise verdict is the comparison of the two scores (a tie when they differ by less than ``tie_margin``);
showing the pair in both orders cannot change it. LLM judges, whose verdicts depend on the position of each
response, plug in through the same counts (each pair judged twice, positions swapped; disagreeing orders
count as a tie).
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
