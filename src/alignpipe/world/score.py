"""The world's scalar preference score of a response, from its verifier verdicts and judge scores, in [0, 1]:

    score = (1 - w) * (fraction of the instruction's constraints the verifiers accept)
            + w * (mean judge score over fluency, factuality, coherence - 1) / 9

(level-0 prompts have no constraints, so their score is the judge term alone, rescaled to [0, 1]). The
preferences stage labels candidates with it; the oracle backend's referee scores answers with it.
"""

from __future__ import annotations

from collections.abc import Sequence

JUDGE_DIMS = ("fluency", "factuality", "coherence")


def response_score(verdicts: Sequence[bool], judge: dict[str, float], judge_weight: float) -> float:
    """Scalar preference score of one response (see the module docstring)."""
    judge_term = (sum(judge[d] for d in JUDGE_DIMS) / len(JUDGE_DIMS) - 1.0) / 9.0
    if not verdicts:
        return round(judge_term, 6)
    follow = sum(bool(v) for v in verdicts) / len(verdicts)
    return round((1.0 - judge_weight) * follow + judge_weight * judge_term, 6)
