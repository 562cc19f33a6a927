"""LTE's prompt template and its alignment-phase data (YJiangcm/LTE, "Learning to Edit").

Template (the authors' wording; one fact plain, several numbered, as their inference-time prefix does)::

    Please acknowledge the updated information provided below and respond to the subsequent question.

    [Updated Information]:
    1. Velmora lies in the south.
    2. Drava flows through Kesk.

    [Question]:
    In which region does Velmora lie?

Alignment data (:func:`alignment_rows`): for every training edit, a block of facts = the edit's fact alone (50%
of the edits), plus one retrieved distractor (25%) or two (25%); distractors are the most similar other
training facts by BM25 whose subject differs (the authors: a random pick among the top-5 sentence-embedding
hits with another subject). In-scope questions (prompt, rephrase, portability) are answered with the new
fact, out-of-scope ones (locality) with the unchanged answer, both under the template; locality questions are
also asked once without any template (the authors add both forms), so the model keeps its plain behaviour.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from alignpipe.methods.lte.records import in_scope, out_of_scope
from alignpipe.methods.lte.retrieve import EditStore
from alignpipe.utils.seed import derive_seed

HEADER = "Please acknowledge the updated information provided below and respond to the subsequent question."
MIX = (0.5, 0.25, 0.25)  # share of edits with 0, 1, 2 retrieved distractors (LTE)
TOP_POOL = 5  # distractors are drawn from this many best BM25 hits (LTE: top-5 semantic-search hits)


def render(facts: Sequence[str], question: str) -> str:
    """The LTE prompt for ``question`` given the retrieved (or training) ``facts``; no facts: the bare question."""
    if not facts:
        return question
    block = facts[0] if len(facts) == 1 else "\n".join(f"{i + 1}. {f}" for i, f in enumerate(facts))
    return f"{HEADER}\n\n[Updated Information]:\n{block}\n\n[Question]:\n{question}"


def mix_counts(n: int, mix: Sequence[float] = MIX) -> list[int]:
    """How many of ``n`` edits get 0, 1, 2, ... distractors: rounded shares, the remainder to the last bucket."""
    counts = [round(n * share) for share in mix[:-1]]
    counts.append(n - sum(counts))
    if counts[-1] < 0:
        raise ValueError(f"mixture {list(mix)} does not fit {n} edits")
    return counts


def distractors(store: EditStore, edits: Sequence[dict[str, Any]], i: int, m: int, rng: random.Random) -> list[int]:
    """``m`` facts similar to edit ``i``'s, from other subjects: a seeded pick among the top BM25 hits."""
    if m == 0:
        return []
    same = {j for j, e in enumerate(edits) if e["subject"] == edits[i]["subject"] or e["fact"] == edits[i]["fact"]}
    pool = store.search(edits[i]["fact"], k=TOP_POOL, exclude=same)
    return rng.sample(pool, min(m, len(pool)))


def alignment_rows(edits: Sequence[dict[str, Any]], seed: int, mix: Sequence[float] = MIX,
                   plain_locality: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """LTE alignment-phase SFT rows (TRL conversational prompt-completion) and counts of what was built.

    Returns:
        ``(rows, stats)``; each row ``{"id", "edit_id", "scope", "n_facts", "prompt": [user], "completion":
        [assistant]}``; ``stats`` = edits per number of distractors and rows per scope.
    """
    store = EditStore([e["fact"] for e in edits])
    rng = random.Random(derive_seed(seed, "lte", "mixture"))
    order = list(range(len(edits)))
    rng.shuffle(order)
    n_distractors = [0] * len(edits)
    start = 0
    for m, count in enumerate(mix_counts(len(edits), mix)):
        for i in order[start : start + count]:
            n_distractors[i] = m
        start += count
    rows: list[dict[str, Any]] = []
    stats: dict[str, Any] = {"edits_by_distractors": {}, "rows_by_scope": {}, "short_of_distractors": 0}

    def add(edit: dict[str, Any], scope: str, facts: list[str], question: str, answer: str) -> None:
        rows.append({"id": f"{edit['id']}-{len(rows):06d}", "edit_id": edit["id"], "scope": scope,
                     "n_facts": len(facts), "prompt": [{"role": "user", "content": render(facts, question)}],
                     "completion": [{"role": "assistant", "content": answer}]})
        stats["rows_by_scope"][scope] = stats["rows_by_scope"].get(scope, 0) + 1

    for i, edit in enumerate(edits):
        picked = distractors(store, edits, i, n_distractors[i], rng)
        stats["short_of_distractors"] += n_distractors[i] - len(picked)
        facts = [edit["fact"], *(edits[j]["fact"] for j in picked)]  # the edit first, as the authors' data
        key = str(len(facts) - 1)
        stats["edits_by_distractors"][key] = stats["edits_by_distractors"].get(key, 0) + 1
        for kind, question, answers, sentence in in_scope(edit):
            add(edit, kind, facts, question, sentence or answers[0])
        for kind, question, answers, sentence in out_of_scope(edit):
            add(edit, kind, facts, question, sentence or answers[0])
            if plain_locality:
                add(edit, "locality_plain", [], question, sentence or answers[0])
    return rows, stats
