"""The built-in world as one object: knowledge base, instruction pools, oracle answers, corpus and pages.

Example::

    from alignpipe.config import WorldSection
    world = build_world(1234, WorldSection())
    world.save("data/world")       # kb.json train.jsonl eval.jsonl sft.jsonl corpus.txt pages.jsonl metrics.json
    records = load_instructions("data/world/eval.jsonl")

Everything is a function of ``(seed, WorldSection)``: the same inputs give byte-identical files.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.config import CATEGORIES, WorldSection
from alignpipe.utils.io import DataError, dumps, read_jsonl_numbered, write_jsonl
from alignpipe.world.constraints import REGISTRY
from alignpipe.world.corpus import build_corpus, build_pages
from alignpipe.world.instructions import LEVELS, base_keys, build_pool, split_keys
from alignpipe.utils.seed import derive_seed
from alignpipe.world.judge import Judge
from alignpipe.world.kb import KB, generate_kb
from alignpipe.world.noise import KINDS, Habits, NoisyAnnotator, demo_error_rates, draw_habits, noise_rates
from alignpipe.world.oracle import Oracle

REQUIRED = {"id": str, "group_id": str, "category": str, "level": int, "instruction": str, "constraints": list}


@dataclass
class World:
    """A built world; ``answers`` holds the oracle's answer to every train and eval record, by id; ``demos``
    the SFT demonstration of every train record (the answer itself unless ``cfg.demo_noise`` made errors in
    it) and ``noise`` the kinds of error each demonstration holds (``alignpipe.world.noise``); ``prefs`` the
    preference pool (``cfg.preference_groups_per_category``): prompts for the preferences stage that no SFT
    demonstration, pretraining dialogue or tokenizer text holds, so the pairs are about prompts the policy never
    trained on, as the evaluation's are."""

    seed: int
    cfg: WorldSection
    kb: KB
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    answers: dict[str, str]
    corpus: str
    pages: list[dict[str, Any]]
    demos: dict[str, str]
    noise: dict[str, list[str]]
    habits: Habits
    prefs: list[dict[str, Any]]

    def sft_rows(self) -> list[dict[str, Any]]:
        """TRL conversational prompt-completion rows: the demonstration of every train record (levels 0-5), and
        ``noise``, the kinds of error it holds (empty for the oracle's own answer)."""
        return [{"id": r["id"], "prompt": [{"role": "user", "content": r["instruction"]}],
                 "completion": [{"role": "assistant", "content": self.demos[r["id"]]}],
                 "noise": self.noise[r["id"]]} for r in self.train]

    def metrics(self) -> dict[str, Any]:
        """World statistics (counts only, no timings, so the file is reproducible)."""

        def pool_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
            by_cat: dict[str, dict[str, int]] = {}
            for r in records:
                by_cat.setdefault(r["category"], {}).setdefault(str(r["level"]), 0)
                by_cat[r["category"]][str(r["level"])] += 1
            last = [r for r in records if r["level"] == LEVELS]
            answer_words = [len(self.answers[r["id"]].split()) for r in records]
            prompt_words = [len(r["instruction"].split()) for r in records]
            return {"records": len(records), "groups": len({r["group_id"] for r in records}),
                    "by_category_level": by_cat,
                    "constraint_types": _counts(c["type"] for r in last for c in r["constraints"]),
                    "families": _counts(r["family"] for r in last),
                    "answer_words": {"mean": round(statistics.mean(answer_words), 2), "max": max(answer_words)},
                    "instruction_words": {"mean": round(statistics.mean(prompt_words), 2), "max": max(prompt_words)}}

        return {"seed": self.seed, "n_entities": len(self.kb),
                "entity_types": _counts(e.type for e in self.kb.entities),
                "constraint_types_registered": len(REGISTRY),
                "train": pool_stats(self.train), "eval": pool_stats(self.eval), "sft_rows": len(self.train),
                **({"prefs": pool_stats(self.prefs)} if self.prefs else {}),
                "corpus": {"chars": len(self.corpus), "words": len(self.corpus.split()),
                           "documents": len(self.kb) * (self.cfg.corpus_paraphrases + 1)
                           + self.cfg.corpus_instruction_copies * len(self.train)},
                "pages": len(self.pages),
                "demo_noise": self.noise_metrics()}

    def noise_metrics(self) -> dict[str, Any]:
        """The annotator's habits, the share of demonstrations each kind of habit acted in, and the share holding
        each kind of error by the world's judge and verifiers (``demos``), against the oracle's answers."""
        n = max(1, len(self.noise))
        out: dict[str, Any] = {"rates": noise_rates(self.cfg.demo_noise),
                               "acted": {k: round(sum(k in v for v in self.noise.values()) / n, 4) for k in KINDS},
                               "clean": round(sum(not v for v in self.noise.values()) / n, 4)}
        if any(out["rates"].values()):
            judge = Judge(self.kb)
            out["demo_errors"] = demo_error_rates(judge, self.train, self.demos)
            out["oracle_errors"] = demo_error_rates(judge, self.train, self.answers)
            out["habits"] = self.habits.summary(self.kb)
        return out

    def save(self, out_dir: str | Path) -> dict[str, Any]:
        """Write every world file into ``out_dir`` (created if needed); returns the metrics written."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "kb.json").write_text(dumps(self.kb.to_json()), encoding="utf-8")
        write_jsonl(out / "train.jsonl", self.train)
        write_jsonl(out / "eval.jsonl", self.eval)
        if self.prefs:
            write_jsonl(out / "prefs.jsonl", self.prefs)
        write_jsonl(out / "sft.jsonl", self.sft_rows())
        (out / "corpus.txt").write_text(self.corpus, encoding="utf-8")
        write_jsonl(out / "pages.jsonl", self.pages)
        metrics = self.metrics()
        (out / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        return metrics


def _counts(items) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def build_world(seed: int, cfg: WorldSection) -> World:
    """Generate the whole world from ``seed`` and ``cfg``."""
    kb = generate_kb(seed, cfg.n_entities)
    oracle = Oracle(kb)
    train_keys, eval_keys = split_keys(base_keys(kb, seed), seed, cfg.eval_groups_per_category)
    # Eval groups are numbered first so their ids stay put when the train pool is resized.
    eval_recs, answers = build_pool(kb, oracle, seed, "eval", eval_keys, cfg.categories,
                                    cfg.eval_groups_per_category, 0)
    train_recs, train_answers = build_pool(kb, oracle, seed, "train", train_keys, cfg.categories,
                                           cfg.train_groups_per_category, cfg.eval_groups_per_category)
    answers.update(train_answers)
    # The preference pool: more groups over the train pool's base tasks, numbered after them; never SFT data.
    prefs, pref_answers = build_pool(kb, oracle, seed, "prefs", train_keys, cfg.categories,
                                     cfg.preference_groups_per_category,
                                     cfg.eval_groups_per_category + cfg.train_groups_per_category) \
        if cfg.preference_groups_per_category else ([], {})
    seen = {r["instruction"] for r in train_recs}  # a level-0 task (no constraint) may repeat a train prompt
    prefs = [r for r in prefs if r["instruction"] not in seen]
    answers.update(pref_answers)
    demos, noise, habits = noisy_demos(kb, oracle, seed, train_recs, train_answers, cfg)
    dialogues = [(r["instruction"], demos[r["id"]]) for r in train_recs]
    corpus = build_corpus(kb, seed, cfg.corpus_paraphrases, dialogues, cfg.corpus_instruction_copies)
    return World(seed, cfg, kb, train_recs, eval_recs, answers, corpus, build_pages(kb, seed), demos, noise, habits,
                 prefs)


def noisy_demos(kb: KB, oracle: Oracle, seed: int, records: list[dict[str, Any]], answers: dict[str, str],
                cfg: WorldSection) -> tuple[dict[str, str], dict[str, list[str]], Habits]:
    """The SFT demonstration of each record, the kinds of habit that acted in it, and the habits drawn. Each
    record's coin flips come from its own seed (``derive_seed(seed, "world", "noise", id)``)."""
    rates = noise_rates(cfg.demo_noise)
    habits = Habits(consistency=cfg.demo_noise.consistency)
    if not any(rates.values()):
        return dict(answers), {r["id"]: [] for r in records}, habits
    judge = Judge(kb)
    habits = draw_habits(kb, oracle, judge, records, answers, rates, cfg.demo_noise.consistency,
                         random.Random(derive_seed(seed, "world", "habits")))
    annotator = NoisyAnnotator(oracle, judge, habits)
    demos, noise = {}, {}
    for r in records:
        rng = random.Random(derive_seed(seed, "world", "noise", r["id"]))
        demos[r["id"]], noise[r["id"]] = annotator.answer(r, rng, clean=answers[r["id"]])
    return demos, noise, habits


def load_instructions(path: str | Path) -> list[dict[str, Any]]:
    """Read ``train.jsonl`` / ``eval.jsonl``; every problem fails with ``file line N: what is wrong``."""
    path = Path(path)
    numbered = read_jsonl_numbered(path, required=REQUIRED)
    rows = [row for _, row in numbered]
    for n, row in numbered:
        where = f"{path} line {n}"
        level = row["level"]
        if isinstance(level, bool) or not 0 <= level <= LEVELS:
            raise DataError(f"{where}: level {level!r} not allowed: must be an integer 0..{LEVELS}")
        if row["category"] not in CATEGORIES:
            raise DataError(f"{where}: category '{row['category']}' not allowed: choose from {list(CATEGORIES)}")
        if len(row["constraints"]) != level:
            raise DataError(f"{where}: level {level} needs {level} constraints, found {len(row['constraints'])}")
        for c in row["constraints"]:
            if not isinstance(c, dict) or not isinstance(c.get("params"), dict) or "type" not in c:
                raise DataError(f"{where}: each constraint needs 'type' and a 'params' object, got {c!r}")
            if c["type"] not in REGISTRY:
                raise DataError(f"{where}: unknown constraint type '{c['type']}'")
    return rows
