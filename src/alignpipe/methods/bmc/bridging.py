"""BMC bridging (arXiv 2506.09329): a pseudo-winning response for every preference pair.

Usage::

    from alignpipe.methods.bmc.bridging import bridge_pairs, world_editor
    editor = world_editor(kb, records)                   # or any object with .edit(prompt, losing, winning)
    pairs, stats = bridge_pairs(pairs, editor, labeler)  # each pair gains "bridged" (+ its score)

BMC makes the preference signal denser by replacing the winning response y_w with ỹ_w, the losing response y_l
*minimally edited* with y_w as the reference: the pair (ỹ_w, y_l) then differs only where y_l was wrong. Any
editor behind :class:`Editor` (``edit(prompt, losing, winning) -> str``) can do it:

- ``world`` (default): :class:`alignpipe.world.editor.WorldEditor`, the built-in oracle editor (keeps the
  losing text except where the world's verifiers and judge need the winning one's);
- ``roles`` (at paper scale): :class:`RolesEditor`, the roles interface's ``editor`` role (``roles.editor`` in
  params: the world oracle, a local ``hf`` model or an ``openai`` endpoint), batched, cached and counted like every
  role call. Its prompt is the roles' versioned ``editor_edit.v2`` template (``alignpipe/llm/prompts/``; the
  authors did not publish theirs). An output the role cannot give (``None``) leaves the winning response as the
  pseudo-winner and is counted (``editor_failed``).

Pairs keep every existing field (TRL's ``prompt``/``chosen``/``rejected`` are untouched, so reflogps and align
read them as before) and gain ``bridged`` (one assistant message, like ``chosen``) and ``score_bridged``.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Callable
from typing import Any, Protocol

from alignpipe.world.editor import WorldEditor
from alignpipe.world.kb import KB

class Editor(Protocol):
    """BMC's editor role: the losing response minimally edited toward the winning one."""

    def edit(self, prompt: str, losing: str, winning: str) -> str | None: ...


class RolesEditor:
    """An :class:`Editor` over the roles interface's ``editor`` role, batched through :meth:`edit_many`.

    Args:
        role: ``build_roles(...).editor`` (any backend).
        records: world instruction records by prompt text (only the oracle backend reads them; may be empty).
    """

    def __init__(self, role: Any, records: dict[str, dict[str, Any]] | None = None):
        self.role, self.records = role, records or {}

    def edit_many(self, prompts: list[str], losing: list[str], winning: list[str]) -> list[str | None]:
        out = self.role.edit(prompts, losing, winning, [self.records.get(p) for p in prompts])
        return [o.strip() if isinstance(o, str) and o.strip() else None for o in out]

    def edit(self, prompt: str, losing: str, winning: str) -> str | None:
        return self.edit_many([prompt], [losing], [winning])[0]


def world_editor(kb: KB, records: list[dict[str, Any]]) -> Editor:
    """The built-in oracle editor for prompts drawn from ``records``."""
    return WorldEditor(kb, records)


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


def kept_fraction(losing: str, bridged: str) -> float:
    """Share of the losing response's words that the bridged response keeps in place (difflib matching blocks)."""
    a, b = losing.split(), bridged.split()
    if not a:
        return 0.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(a)


def bridge_pairs(pairs: list[dict[str, Any]], editor: Editor,
                 score: Callable[[dict[str, Any], str], float] | None = None) -> tuple[list[dict[str, Any]], dict]:
    """Add ``bridged`` (and ``score_bridged`` when ``score`` is given) to every pair; returns (pairs, statistics).

    Args:
        pairs: preference pairs (``prompt``, ``chosen``, ``rejected`` in TRL's conversational format).
        editor: the editor role.
        score: ``score(pair, text)``, the labeler's preference score of a response to the pair's prompt.
    """
    out, kept, same_as_chosen, scores, failed = [], [], 0, [], 0
    prompts = [pair["prompt"][-1]["content"] for pair in pairs]
    losings, winnings = [_text(p["rejected"]) for p in pairs], [_text(p["chosen"]) for p in pairs]
    if hasattr(editor, "edit_many"):  # one batched call (an LLM role: batched, cached, fanned out)
        edited = editor.edit_many(prompts, losings, winnings)
    else:
        edited = [editor.edit(p, lo, w) for p, lo, w in zip(prompts, losings, winnings)]
    for pair, losing, winning, bridged in zip(pairs, losings, winnings, edited):
        if bridged is None:  # the editor gave nothing usable: the winning response stays the pseudo-winner
            failed += 1
            bridged = winning
        row = {**pair, "bridged": [{"role": "assistant", "content": bridged}]}
        if score is not None:
            row["score_bridged"] = score(pair, bridged)
            scores.append(row["score_bridged"] - pair["score_chosen"])
        out.append(row)
        kept.append(kept_fraction(losing, bridged))
        same_as_chosen += bridged.strip() == winning.strip()
    stats = {
        "n_bridged": len(out),
        "editor_failed": failed,
        "bridged_equals_chosen": round(same_as_chosen / max(len(out), 1), 6),
        "kept_losing_words_mean": round(statistics.fmean(kept), 6) if kept else None,
    }
    if scores:
        stats["score_bridged_minus_chosen_mean"] = round(statistics.fmean(scores), 6)
    return out, stats
