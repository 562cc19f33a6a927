"""Parsers of role outputs. Each returns None for output it cannot read; the role counts it as unparseable.

Formats follow the authors' code where there is one: the referee's last two lines are
``Score of the Assistant 1: <score>`` / ``... 2: <score>`` (Lion's ``parse_score``), scores in [1, 10].
"""

from __future__ import annotations

import re

_NUM = r"(-?\d+(?:\.\d+)?)"


REFUSALS = ("I'm sorry", "I apologize")  # WebR's refusal filter (answers opening with an apology)


def is_refusal(output: str) -> bool:
    """A free-text output that refuses instead of answering (WebR's filter: it opens with an apology)."""
    return output.lstrip().startswith(REFUSALS)


def text(output: str) -> str | None:
    """A free-text answer: stripped; empty is unparseable."""
    out = output.strip()
    return out or None


def instruction(output: str) -> str | None:
    """A generated instruction: the text after an echoed ``#Created Instruction#:`` header, stripped."""
    out = output.split("#Created Instruction#:")[-1].strip()
    return out or None


def _score(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if 1.0 <= x <= 10.0 else None


def referee_scores(output: str) -> tuple[float, float] | None:
    """(score of assistant 1, score of assistant 2) from the last two non-empty lines."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    found = []
    for n, line in zip((1, 2), lines[-2:]):
        head, _, value = line.rpartition(":")
        if f"Assistant {n}" not in head:
            return None
        m = re.fullmatch(_NUM + r"(?:\s*/\s*10)?\.?", value.strip())
        score = _score(m.group(1)) if m else None
        if score is None:
            return None
        found.append(score)
    return found[0], found[1]


JUDGE_DIMS = ("fluency", "factuality", "coherence")


def judge_scores(output: str) -> dict[str, float] | None:
    """``{"fluency", "factuality", "coherence"}`` from ``Name: <score>`` lines (any order, any case)."""
    got: dict[str, float] = {}
    for line in output.splitlines():
        m = re.match(r"\s*\**\s*(fluency|factuality|coherence)\s*\**\s*:\s*\**\s*" + _NUM, line, re.IGNORECASE)
        if m:
            score = _score(m.group(2))
            if score is None:
                return None
            got.setdefault(m.group(1).lower(), score)
    return {d: got[d] for d in JUDGE_DIMS} if len(got) == len(JUDGE_DIMS) else None


def verdicts(output: str, n: int) -> list[bool] | None:
    """``n`` YES/NO lines (optionally numbered) in order; any other count is unparseable (n = 0 gives [])."""
    if n == 0:
        return []
    found = []
    for line in output.splitlines():
        m = re.fullmatch(r"\s*(?:\d+[.):]\s*)?\**(YES|NO)\**\.?\s*", line, re.IGNORECASE)
        if m:
            found.append(m.group(1).upper() == "YES")
    return found if len(found) == n else None


def pairwise_verdicts(output: str) -> dict[str, str] | None:
    """``{"fluency", "factuality", "coherence"}`` -> ``"A"``, ``"B"`` or ``"tie"`` from ``Name: A|B|TIE`` lines.

    The first line per dimension counts (any order, any case, optional bold / "Response " prefix); a missing
    dimension or any other value is unparseable.
    """
    got: dict[str, str] = {}
    for line in output.splitlines():
        m = re.match(r"\s*\**\s*(fluency|factuality|coherence)\s*\**\s*:\s*\**\s*(?:response\s+)?(\S+?)\**\.?\s*$",
                     line, re.IGNORECASE)
        if not m:
            continue
        value = m.group(2).upper()
        if value not in ("A", "B", "TIE"):
            return None
        got.setdefault(m.group(1).lower(), "tie" if value == "TIE" else value)
    return {d: got[d] for d in JUDGE_DIMS} if len(got) == len(JUDGE_DIMS) else None
