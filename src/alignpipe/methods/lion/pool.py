"""Lion (adversarial distillation, YJiangcm/Lion): the method's pieces, free of I/O and of model training.

    pool = initial_pool(load_world_pool("data/world/train.jsonl"), max_prompts=64, seed=1234)
    scored = score(roles.referee, items, teacher_answers, student_answers, threshold=1.0)   # discrimination
    hard, easy = split(scored)
    new, stats = generate(roles.generator, hard, n=64, hard=True, pool_texts=..., cfg=lion, rng=rng, round_=1)

A pool item is ``{"id", "instruction", "record", "origin", "parent", "round"}``: ``record`` is the world's
instruction record (the oracle roles need it; None for external pools and for instructions an LLM generator
wrote), ``origin`` is ``seed`` / ``hard`` / ``easy``, ``parent`` the id of the instruction it was generated from.

Discrimination (``src/chatgpt_referee.py`` + ``src/discrimination.py``): the referee scores the teacher's and the
student's answers 1-10 in both orders, each answer's two scores are averaged, and an instruction is HARD when
teacher - student >= ``threshold`` (Lion: 1), else EASY; unparseable referee output leaves it unscored.
Generation (``src/generate_{hard,easy}_instruction.py``): one seed instruction per generator call, sampled at
random from the hard (or easy) list; a new instruction is rejected if it has fewer than ``min_words`` words
(Lion: <= 3), contains the word "instruction", or has ROUGE-L F1 > ``rouge_threshold`` (Lion: 0.7) against any
instruction of the pool or one accepted before it.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rouge_score import rouge_scorer

from alignpipe.config import LionSection
from alignpipe.utils.io import DataError, read_records
from alignpipe.world import load_instructions

REJECT_REASONS = ("unparseable", "too_short", "instruction_word", "rouge")


# ---- pools ---------------------------------------------------------------------------------------------------
def item(id_: str, instruction: str, record: dict | None = None, origin: str = "seed", parent: str | None = None,
         round_: int = 0) -> dict[str, Any]:
    return {"id": id_, "instruction": instruction, "record": record, "origin": origin, "parent": parent,
            "round": round_}


def load_world_pool(path: str | Path) -> list[dict[str, Any]]:
    """The world's instruction records (train.jsonl / eval.jsonl) as pool items."""
    return [item(r["id"], r["instruction"], r) for r in load_instructions(path)]


def load_instruction_file(path: str | Path) -> list[dict[str, Any]]:
    """A JSON list or JSONL file of Alpaca/Lion records ``{"instruction", "input"?}``; a bad record is named.

    As Lion's teacher prompt does, a non-empty ``input`` follows the instruction after a blank line.
    """
    out = []
    for i, (where, row) in enumerate(read_records(path, required={"instruction": str}), 1):
        if not row["instruction"].strip():
            raise DataError(f"{where}: field 'instruction' is empty; expected the instruction's text")
        if not isinstance(row.get("input") or "", str):
            raise DataError(f"{where}: field 'input' is {type(row['input']).__name__}, expected str (or none)")
        extra = (row.get("input") or "").strip()
        text = row["instruction"].strip() + (f"\n\n{extra}" if extra else "")
        out.append(item(f"input-{i:06d}", text))
    return out


def subset(items: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    """A seeded subset of ``n`` items in their original order (all when ``n`` is None or large)."""
    if n is None or n >= len(items):
        return list(items)
    keep = set(random.Random(seed).sample(range(len(items)), n))
    return [x for i, x in enumerate(items) if i in keep]


def sft_row(it: dict[str, Any], answer: str) -> dict[str, Any]:
    """The sft stage's prompt-completion record."""
    return {"id": it["id"], "prompt": [{"role": "user", "content": it["instruction"]}],
            "completion": [{"role": "assistant", "content": answer}]}


def chat_row(it: dict[str, Any], answer: str) -> dict[str, Any]:
    """The ``{prompt_id, messages}`` row shared with WebR."""
    return {"prompt_id": it["id"], "messages": [{"role": "user", "content": it["instruction"]},
                                                {"role": "assistant", "content": answer}]}


# ---- discrimination ------------------------------------------------------------------------------------------
def label(teacher: float, student: float, threshold: float) -> str:
    """Lion's split: HARD when the teacher beats the student by at least ``threshold``."""
    return "hard" if teacher - student >= threshold else "easy"


def score(referee, items: Sequence[dict], teacher: Sequence[str], student: Sequence[str],
          threshold: float) -> list[dict[str, Any]]:
    """Referee scores of (teacher, student) per item, both orders averaged; label hard / easy / unscored."""
    pairs = referee.compare_swapped([x["instruction"] for x in items], list(teacher), list(student),
                                    [x["record"] for x in items])
    rows = []
    for x, t, s, p in zip(items, teacher, student, pairs):
        row = {"id": x["id"], "instruction": x["instruction"], "teacher": t, "student": s,
               "teacher_score": None, "student_score": None, "label": "unscored"}
        if p is not None:
            row.update(teacher_score=p[0], student_score=p[1], label=label(p[0], p[1], threshold))
        rows.append(row)
    return rows


def split(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Ids of the hard and of the easy instructions."""
    return [r["id"] for r in rows if r["label"] == "hard"], [r["id"] for r in rows if r["label"] == "easy"]


def relative_score(rows: Sequence[dict[str, Any]]) -> float | None:
    """Lion's Table 1 measure: 100 x (sum of the student's scores) / (sum of the teacher's), over scored rows."""
    done = [r for r in rows if r["label"] != "unscored"]
    total = sum(r["teacher_score"] for r in done)
    return round(100 * sum(r["student_score"] for r in done) / total, 2) if total else None


def score_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts, hard ratio, mean referee scores and the relative score of one discrimination."""
    done = [r for r in rows if r["label"] != "unscored"]
    hard = sum(r["label"] == "hard" for r in done)
    mean = lambda k: round(statistics.fmean(r[k] for r in done), 4) if done else None  # noqa: E731
    return {"scored": len(done), "unscored": len(rows) - len(done), "hard": hard, "easy": len(done) - hard,
            "hard_ratio": round(hard / len(done), 4) if done else None, "mean_teacher_score": mean("teacher_score"),
            "mean_student_score": mean("student_score"), "relative_score": relative_score(rows)}


# ---- generation ----------------------------------------------------------------------------------------------
class RougeFilter:
    """ROUGE-L F1 of a candidate against every text seen so far (rouge-score's tokenizer and LCS).

    Texts are tokenized once when added; the LCS per pair is rouge-score's own ``_score_lcs`` (the same
    shortcut Alpaca's and Lion's generation scripts take, instead of re-tokenizing the pool per candidate).
    """

    def __init__(self, texts: Sequence[str] = ()):
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._pool: list[list[str]] = []
        for t in texts:
            self.add(t)

    def tokens(self, text: str) -> list[str]:
        return self._scorer._tokenizer.tokenize(text)

    def add(self, text: str) -> None:
        self._pool.append(self.tokens(text))

    def max_score(self, text: str) -> float:
        new = self.tokens(text)
        return max((rouge_scorer._score_lcs(old, new).fmeasure for old in self._pool), default=0.0)


def reject_reason(text: str | None, rouge: RougeFilter, cfg: LionSection) -> str | None:
    """Why a generated instruction is rejected (one of :data:`REJECT_REASONS`), or None to keep it."""
    if text is None:
        return "unparseable"
    if len(text.split()) < cfg.min_words:
        return "too_short"
    if "instruction" in text.lower():
        return "instruction_word"
    if rouge.max_score(text) > cfg.rouge_threshold:
        return "rouge"
    return None


def generate(generator, seeds: Sequence[dict[str, Any]], n: int, hard: bool, rouge: RougeFilter,
             cfg: LionSection, rng: random.Random, round_: int) -> tuple[list[dict], list[dict], dict[str, int]]:
    """Up to ``n`` accepted new instructions from randomly drawn ``seeds`` (one seed per generator call).

    Calls go out in batches of the missing count until ``n`` are accepted or ``max_attempts * n`` calls were
    made. Each call's key is (round, kind, attempt number), so a rerun asks exactly the same requests (and an
    hf/openai generator answers them from the disk cache). Accepted texts join ``rouge`` at once, so two new
    instructions are never near-copies of each other either.

    Returns:
        (accepted pool items, rejected ``{"text", "parent", "reason"}`` rows, counters).
    """
    kind = "hard" if hard else "easy"
    budget = int(cfg.max_attempts * n)
    accepted: list[dict] = []
    rejected: list[dict] = []
    attempts = 0
    while seeds and len(accepted) < n and attempts < budget:
        picks = [rng.choice(seeds) for _ in range(min(n - len(accepted), budget - attempts))]
        keys = [json.dumps(["lion", round_, kind, attempts + i]) for i in range(len(picks))]
        outs = generator.new_instructions([p["instruction"] for p in picks], hard=hard,
                                          records=[p["record"] for p in picks], keys=keys)
        attempts += len(picks)
        for p, g in zip(picks, outs):
            text = None if g is None else g.instruction
            reason = reject_reason(text, rouge, cfg)
            if reason is None:
                rouge.add(text)
                accepted.append(item(f"lion-r{round_}-{kind}-{len(accepted):05d}", text, g.record, kind, p["id"],
                                     round_))
            else:
                rejected.append({"text": text, "parent": p["id"], "reason": reason})
    counts = Counter(r["reason"] for r in rejected)
    stats = {"seeds": len(seeds), "wanted": n if seeds else 0, "calls": attempts, "accepted": len(accepted),
             **{f"rejected_{k}": counts.get(k, 0) for k in REJECT_REASONS}}
    return accepted, rejected, stats
