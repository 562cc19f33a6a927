"""BMC bridging (arXiv 2506.09329): a pseudo-winning response for every preference pair.

Usage::

    from alignpipe.prefs.bridging import bridge_pairs, world_editor
    editor = world_editor(kb, records)                   # or any object with .edit(prompt, losing, winning)
    pairs, stats = bridge_pairs(pairs, editor, labeler)  # each pair gains "bridged" (+ its score)

BMC makes the preference signal denser by replacing the winning response y_w with ỹ_w, the losing response y_l
*minimally edited* with y_w as the reference: the pair (ỹ_w, y_l) then differs only where y_l was wrong. Any
editor behind :class:`Editor` (``edit(prompt, losing, winning) -> str``) can do it:

- ``world`` (default): :class:`alignpipe.world.editor.WorldEditor`, the built-in oracle editor (keeps the
  losing text except where the world's verifiers and judge need the winning one's);
- an LLM (at paper scale, through the roles interface): :class:`PromptEditor` renders the project's editor
  prompt (``prompts/bmc_editor_v1.txt``, placeholders ``{instruction}``, ``{losing}``, ``{winning}``; the
  authors did not publish theirs) and returns the model's completion.

Pairs keep every existing field (TRL's ``prompt``/``chosen``/``rejected`` are untouched, so reflogps and align
read them as before) and gain ``bridged`` (one assistant message, like ``chosen``) and ``score_bridged``.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

PROMPTS = Path(__file__).parent / "prompts"
EDITOR_PROMPT_VERSION = "v1"


class Editor(Protocol):
    """BMC's editor role: the losing response minimally edited toward the winning one."""

    def edit(self, prompt: str, losing: str, winning: str) -> str: ...


def editor_template(version: str = EDITOR_PROMPT_VERSION) -> str:
    """The editor prompt template ``prompts/bmc_editor_<version>.txt``."""
    path = PROMPTS / f"bmc_editor_{version}.txt"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("bmc_editor_") for p in PROMPTS.glob("bmc_editor_*.txt"))
        raise ValueError(f"no BMC editor prompt version {version!r}; known: {known}")
    return path.read_text(encoding="utf-8")


def editor_prompt(prompt: str, losing: str, winning: str, version: str = EDITOR_PROMPT_VERSION) -> str:
    """The editor prompt filled in (``str.format`` on the template; braces in the responses are left alone)."""
    return editor_template(version).format(instruction=prompt.strip(), losing=losing.strip(), winning=winning.strip())


class PromptEditor:
    """An :class:`Editor` over any text completion function (an LLM role): prompt in, corrected response out.

    Args:
        complete: ``complete(prompt_text) -> completion`` (e.g. a chat call with one user message).
        version: editor prompt version (``prompts/bmc_editor_<version>.txt``).
    """

    def __init__(self, complete: Callable[[str], str], version: str = EDITOR_PROMPT_VERSION):
        editor_template(version)  # an unknown version fails here, before any call
        self.complete, self.version = complete, version

    def edit(self, prompt: str, losing: str, winning: str) -> str:
        return self.complete(editor_prompt(prompt, losing, winning, self.version)).strip()


def world_editor(kb: Any, records: list[dict[str, Any]]) -> Editor:
    """The built-in oracle editor for prompts drawn from ``records``."""
    from alignpipe.world.editor import WorldEditor

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
    out, kept, same_as_chosen, scores = [], [], 0, []
    for pair in pairs:
        prompt = pair["prompt"][-1]["content"]
        losing, winning = _text(pair["rejected"]), _text(pair["chosen"])
        bridged = editor.edit(prompt, losing, winning)
        row = {**pair, "bridged": [{"role": "assistant", "content": bridged}]}
        if score is not None:
            row["score_bridged"] = score(pair, bridged)
            scores.append(row["score_bridged"] - pair["score_chosen"])
        out.append(row)
        kept.append(kept_fraction(losing, bridged))
        same_as_chosen += bridged.strip() == winning.strip()
    stats = {
        "n_bridged": len(out),
        "bridged_equals_chosen": round(same_as_chosen / max(len(out), 1), 6),
        "kept_losing_words_mean": round(statistics.fmean(kept), 6) if kept else None,
    }
    if scores:
        stats["score_bridged_minus_chosen_mean"] = round(statistics.fmean(scores), 6)
    return out, stats
