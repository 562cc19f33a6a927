"""Pairing labelled candidates.

A candidate's score is the world's preference score (:func:`alignpipe.world.score.response_score`). Pairs follow
ALLO's data recipe: every (better, worse) combination whose score margin reaches ``min_margin``, largest margins
first, at most ``max_pairs`` per prompt; identical texts never pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One labelled response to a prompt."""

    text: str
    score: float
    source: str  # "policy" or "oracle"


@dataclass
class PairStats:
    """Why candidate combinations did not become pairs."""

    identical: int = 0
    below_margin: int = 0
    over_cap: int = 0
    no_pair: int = 0


def build_pairs(
    candidates: Sequence[Candidate], max_pairs: int, min_margin: float, stats: PairStats | None = None
) -> list[tuple[Candidate, Candidate]]:
    """(chosen, rejected) pairs for one prompt, largest margin first, at most ``max_pairs``.

    Candidates with identical text are merged first (counted in ``stats.identical``), so a pair never has
    chosen == rejected. Ties in margin keep a deterministic order: higher chosen score, then candidate order.
    """
    stats = stats if stats is not None else PairStats()
    unique: list[Candidate] = []
    seen: set[str] = set()
    for c in candidates:
        key = c.text.strip()
        if key in seen:
            stats.identical += 1
            continue
        seen.add(key)
        unique.append(c)
    combos = []
    for i, a in enumerate(unique):
        for j, b in enumerate(unique):
            if i == j or a.score <= b.score:
                continue
            if a.score - b.score < min_margin:
                stats.below_margin += 1
                continue
            combos.append((-(a.score - b.score), -a.score, i, j))
    combos.sort()
    stats.over_cap += max(0, len(combos) - max_pairs)
    if not combos:
        stats.no_pair += 1
    return [(unique[i], unique[j]) for _, _, i, j in combos[:max_pairs]]


def pair_row(record: dict[str, Any], chosen: Candidate, rejected: Candidate, index: int) -> dict[str, Any]:
    """A pair in TRL's conversational preference format, with provenance fields."""
    return {
        "id": f"{record['id']}-p{index}",
        "prompt_id": record["id"],
        "prompt": [{"role": "user", "content": record["instruction"]}],
        "chosen": [{"role": "assistant", "content": chosen.text}],
        "rejected": [{"role": "assistant", "content": rejected.text}],
        "score_chosen": chosen.score,
        "score_rejected": rejected.score,
        "margin": round(chosen.score - rejected.score, 6),
        "source_chosen": chosen.source,
        "source_rejected": rejected.source,
        "category": record["category"],
        "level": record["level"],
    }
