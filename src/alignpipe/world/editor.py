"""The oracle editor: BMC's bridging role, a minimal edit of a losing response toward the winning one.

Example::

    editor = WorldEditor(kb, records)                 # records: the instruction records the prompts come from
    bridged = editor.edit(record["instruction"], losing, winning)

What the edit does. Both responses are split into sentences of words, spaces and punctuation marks, and
``difflib.SequenceMatcher`` aligns the sentences; a replaced sentence similar to its counterpart is aligned again
word by word. Every difference is a *hunk* (a span of the losing response and the span of the winning response
that replaces it): a few words inside a sentence, or whole sentences. Applying every hunk gives the winning
response; applying none, the losing one. The editor starts from the winning response and reverts hunks back to the losing text, the largest
first, keeping each revert when the text still **satisfies every constraint the winning response satisfies and
scores at least as well on each judge dimension** (fluency, factuality, coherence); passes repeat until no revert
is kept. The result fixes what the losing response got wrong (violated constraints, wrong facts, broken
sentences) and keeps everything else of it, word for word: BMC's pseudo-winning response. A losing response never
meets that bar itself (its preference score is below the winner's), so at least one hunk always stays.

This is the world's stand-in for the LLM editor of the paper (which edits by prompt); both are behind the same
``edit(prompt, losing, winning) -> str`` call (:class:`alignpipe.methods.bmc.bridging.Editor`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from alignpipe.world.judge import Judge
from alignpipe.world.kb import KB
from alignpipe.world.verify import verify

_PIECES = re.compile(r"\w+|\s+|[^\w\s]")
MAX_PASSES = 4
WORD_LEVEL = 0.5  # a replaced sentence this similar to its counterpart is edited word by word


def pieces(text: str) -> list[str]:
    """Words, whitespace runs and single punctuation marks; ``"".join(pieces(t)) == t``."""
    return _PIECES.findall(text)


@dataclass(frozen=True)
class Hunk:
    """Losing-text span ``[i1, i2)`` (in pieces) replaced by the winning text ``new``."""

    i1: int
    i2: int
    new: tuple[str, ...]

    @property
    def size(self) -> int:
        return max(self.i2 - self.i1, len(self.new))


def sentences_of(text_pieces: list[str]) -> list[list[str]]:
    """Split pieces into units: sentences (ending with ``.``/``!``/``?`` before a space, or before a newline) and
    the whitespace between them, each its own unit (so a moved line break is an edit of its own)."""
    units: list[list[str]] = [[]]
    for p in text_pieces:
        prev = units[-1][-1] if units[-1] else None
        if p.isspace() and ("\n" in p or prev in (".", "!", "?")):
            units += [[p], []]
        else:
            units[-1].append(p)
    return [u for u in units if u]


def _word_ratio(a: list[str], b: list[str]) -> float:
    """difflib's similarity of two sentences over their words and marks (spaces would inflate it)."""
    words = [[p for p in x if not p.isspace()] for x in (a, b)]
    return difflib.SequenceMatcher(None, *words, autojunk=False).ratio()


def hunks(losing: list[str], winning: list[str]) -> list[Hunk]:
    """Edits that turn the losing pieces into the winning ones, sentence by sentence.

    Sentences are aligned first (difflib over whole sentences); a replaced sentence whose counterpart is similar
    (ratio of their words >= ``WORD_LEVEL``) is edited word by word, any other replaced, deleted or inserted span
    as whole sentences. Whole-sentence edits keep word-level mixing from stitching two unrelated sentences into one
    that a rule-based judge cannot read (difflib's autojunk is off: responses are short).
    """
    lose_units, win_units = sentences_of(losing), sentences_of(winning)
    lose_start = [0]
    for u in lose_units:
        lose_start.append(lose_start[-1] + len(u))
    out: list[Hunk] = []
    matcher = difflib.SequenceMatcher(None, ["".join(u) for u in lose_units], ["".join(u) for u in win_units],
                                      autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for i, j in zip(range(i1, i2), range(j1, j2)):
                a, b = lose_units[i], win_units[j]
                inner = difflib.SequenceMatcher(None, a, b, autojunk=False)
                if _word_ratio(a, b) >= WORD_LEVEL:
                    out += [Hunk(lose_start[i] + a1, lose_start[i] + a2, tuple(b[b1:b2]))
                            for t, a1, a2, b1, b2 in inner.get_opcodes() if t != "equal"]
                else:
                    out.append(Hunk(lose_start[i], lose_start[i + 1], tuple(b)))
            continue
        new = tuple(p for u in win_units[j1:j2] for p in u)
        out.append(Hunk(lose_start[i1], lose_start[i2], new))
    return out


def apply(losing: list[str], applied: list[Hunk]) -> str:
    """The losing text with the ``applied`` hunks (non-overlapping) replaced by their winning spans."""
    out: list[str] = []
    pos = 0
    for h in sorted(applied, key=lambda h: (h.i1, h.i2)):
        out.extend(losing[pos:h.i1])
        out.extend(h.new)
        pos = h.i2
    out.extend(losing[pos:])
    return "".join(out)


class WorldEditor:
    """Minimal editor over the world's verifiers and judge (see the module docstring)."""

    def __init__(self, kb: KB, records: list[dict[str, Any]]):
        self.judge = Judge(kb)
        self.records = {r["instruction"]: r for r in records}

    def record(self, prompt: str) -> dict[str, Any]:
        try:
            return self.records[prompt]
        except KeyError:
            raise KeyError(f"the world editor knows no instruction record for prompt {prompt[:80]!r}") from None

    def _quality(self, record: dict[str, Any], text: str) -> tuple[list[bool], dict[str, float]]:
        return verify(record, text), self.judge.score(record, text)

    def edit(self, prompt: str, losing: str, winning: str) -> str:
        """The pseudo-winning response: ``losing`` with only the edits toward ``winning`` that its quality needs."""
        record = self.record(prompt)
        win_ok, win_judge = self._quality(record, winning)

        def good(text: str) -> bool:
            ok, scores = self._quality(record, text)
            return all(o for o, w in zip(ok, win_ok) if w) and all(scores[d] >= win_judge[d] for d in win_judge)

        lose_pieces = pieces(losing)
        applied = hunks(lose_pieces, pieces(winning))
        for _ in range(MAX_PASSES):
            changed = False
            # Largest hunks first (reverting them keeps the most losing text), then left to right.
            for h in sorted(applied, key=lambda h: (-h.size, h.i1)):
                trial = [x for x in applied if x is not h]
                if trial and good(apply(lose_pieces, trial)):
                    applied = trial
                    changed = True
            if not changed:
                break
        return apply(lose_pieces, applied)
