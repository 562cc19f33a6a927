"""Errors in the SFT demonstrations: the world's annotator is not the oracle, and has habits.

Real instruction data is written by people and models with systematic flaws: a word always misspelt, a
misconception repeated in every answer that touches it, a habit of padding answers, a kind of instruction
always skimmed. Preference alignment exists to move a policy off the flaws it learned by imitation. The oracle
writes every train answer correctly; with ``world.demo_noise`` the demonstrations in ``sft.jsonl`` (and the
dialogues the base model pretrains on) come from an annotator with **habits**, one family per kind of error:

- **fluency** -- misspelt words: a set of the answers' words (5+ letters, never a name, a word of an
  attribute's value or of a fact sentence, which would read as a wrong fact or hide one), each with one fixed
  misspelling (two inner letters transposed, always a word outside the world's vocabulary); and **careless
  writing** (``world.demo_noise.careless``): for a set of entities, answers about them begin every sentence in
  lower case and put a space before each sentence's end mark (``the river runs east .``), a register the judge's
  fluency sees in every sentence, where one misspelt word in a long answer costs it little;
- **coherence** -- for a set of entities, a fixed padding habit in every answer about them: the first sentence
  said again at the end, or a (true) sentence about one fixed other entity the task does not concern;
- **factuality** -- misconceptions: a set of facts (entity, attribute), each believed with one fixed wrong
  value of the right kind (the KB and the pretraining corpus hold the truth);
- **constraints** -- a set of constraint types the annotator skims: their constraint is ignored.

``world.demo_noise.<kind>`` (and ``careless``) is the share of train demonstrations the kind's habits reach:
habits are drawn (in a seeded order) until the share of train records where one applies reaches the rate.
``consistency`` is the probability that a habit acts at each chance it has (a word's occurrence, a record), so for
consistency above 0.5 the error is the *most likely* continuation where the habit applies and a greedy SFT policy reproduces it;
errors at random places would average out under greedy decoding and never reach an evaluation.

Each error is written only where it is one by the world's own rules and changes nothing else: the verifiers'
verdicts stay the clean answer's (but for an ignored constraint), a misspelling is outside the judge's
vocabulary, and the plans that would hide a coherence error are skipped. Where a habit cannot act (an answer
template has no second sentence) the demonstration goes without it. The world's ``metrics.json`` reports the
habits drawn and, measured on the demonstrations by the world's judge (:meth:`alignpipe.world.Judge.errors`),
the share of demonstrations holding each kind of error. The evaluation pool and the oracle's answers (which the
preference stage offers as a candidate) stay clean.

Example::

    habits = draw_habits(kb, records, answers, judge, rates, consistency, random.Random(0))
    text, kinds = NoisyAnnotator(oracle, judge, habits).answer(record, random.Random(1), clean=answer)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from alignpipe.world.kb import ATTRIBUTES, FACT_TEMPLATES
from alignpipe.world.verify import verify

KINDS = ("fluency", "coherence", "factuality", "constraints")
_WORD = r"(?<![A-Za-z0-9{}_])%s(?![A-Za-z0-9{}_])"


@dataclass
class Habits:
    """What the annotator gets wrong, always the same way (see the module docstring)."""

    consistency: float = 0.8
    misspell: dict[str, str] = field(default_factory=dict)  # word -> its misspelling
    padding: dict[str, tuple] = field(default_factory=dict)  # entity id -> ("repeat",) | ("off_topic", eid, attr)
    misconceptions: dict[tuple[str, str], str] = field(default_factory=dict)  # (entity id, attribute) -> value
    skimmed: set[str] = field(default_factory=set)  # constraint types ignored
    careless: set[str] = field(default_factory=set)  # entity ids whose answers are written carelessly

    def summary(self, kb: Any) -> dict[str, Any]:
        """A JSON-able description for the world's metrics."""
        return {"consistency": self.consistency, "misspelt_words": dict(sorted(self.misspell.items())),
                "padded_entities": {kb.name(e): (h[0] if h[0] == "repeat" else f"off_topic: {kb.name(h[1])}")
                                    for e, h in sorted(self.padding.items())},
                "misconceptions": {f"{kb.name(e)}.{a}": v for (e, a), v in sorted(self.misconceptions.items())},
                "skimmed_constraint_types": sorted(self.skimmed),
                "careless_entities": sorted(kb.name(e) for e in self.careless)}


def _until(rate: float, candidates: list, reach: Callable[[Any], set[int]], n: int) -> list:
    """Candidates in order until the records they reach are at least ``rate`` of ``n``."""
    if rate <= 0:
        return []
    reached: set[int] = set()
    chosen = []
    for c in candidates:
        if len(reached) >= rate * n:
            break
        hit = reach(c)
        if hit - reached:
            chosen.append(c)
            reached |= hit
    return chosen


def draw_habits(kb: Any, oracle: Any, judge: Any, records: list[dict[str, Any]], answers: dict[str, str],
                rates: dict[str, float], consistency: float, rng: random.Random) -> Habits:
    """Habits reaching ``rates[kind]`` of ``records`` (by their clean ``answers``) each; seeded by ``rng``."""
    n = len(records)
    texts = [answers[r["id"]] for r in records]
    habits = Habits(consistency=consistency)
    # fluency: words of the answers, in a seeded order; a word reaches the answers it appears in
    # never a name, a word of an attribute's value or of a fact sentence's template: a misspelt value reads as a
    # wrong fact, a misspelt template word hides the claim from the judge (the kinds stay apart)
    names = {e.name.lower() for e in kb.entities} | {
        w.lower() for attrs in ATTRIBUTES.values() for spec in attrs.values() if spec[0] == "vocab"
        for v in spec[1] for w in re.findall(r"[A-Za-z]+", str(v))} | {
        w.lower() for ts in FACT_TEMPLATES.values() for t in ts for w in re.findall(r"[A-Za-z]+", t)}
    words: dict[str, set[int]] = {}
    for i, (r, t) in enumerate(zip(records, texts)):
        asked = str([c["params"] for c in r["constraints"]]).lower()  # a word a constraint asks for stays right
        for w in set(re.findall(r"(?<![A-Za-z0-9{}_])[a-z]{5,}(?![A-Za-z0-9{}_])", t)) - names:
            if w not in asked:
                words.setdefault(w, set()).add(i)
    order = sorted(words)
    rng.shuffle(order)
    for w in _until(rates.get("fluency", 0.0), order, lambda w: words[w], n):
        typo = _misspelling(w, judge.vocab, rng)
        if typo:
            habits.misspell[w] = typo
    # coherence: entities (the task's first), each with one padding habit
    by_entity: dict[str, set[int]] = {}
    for i, r in enumerate(records):
        if r.get("entity_ids"):
            by_entity.setdefault(r["entity_ids"][0], set()).add(i)
    ents = sorted(by_entity)
    rng.shuffle(ents)
    for eid in _until(rates.get("coherence", 0.0), ents, lambda e: by_entity[e], n):
        others = [e for e in kb.entities if e.type == kb.get(eid).type and e.id != eid]
        if others and rng.random() < 0.5:
            other = rng.choice(others)
            habits.padding[eid] = ("off_topic", other.id, rng.choice(kb.attributes(other.id)))
        else:
            habits.padding[eid] = ("repeat",)
    # factuality: facts stated in the answers (the judge reads them), each with one wrong value
    facts: dict[tuple[str, str], set[int]] = {}
    for i, (r, t) in enumerate(zip(records, texts)):
        for eid, attr, _, ok in judge.all_claims(r, t):
            if ok and attr != "type" and eid in r.get("entity_ids", []):
                facts.setdefault((eid, attr), set()).add(i)
    keys = sorted(facts)
    rng.shuffle(keys)
    for key in _until(rates.get("factuality", 0.0), keys, lambda k: facts[k], n):
        value = oracle.wrong_value(*key, rng)
        if value != kb.value(*key):
            habits.misconceptions[key] = value
    # constraints: types the annotator skims
    types: dict[str, set[int]] = {}
    for i, r in enumerate(records):
        for c in r["constraints"]:
            types.setdefault(c["type"], set()).add(i)
    tnames = sorted(types)
    rng.shuffle(tnames)
    habits.skimmed = set(_until(rates.get("constraints", 0.0), tnames, lambda t: types[t], n))
    # careless writing: entities (the task's first), drawn after every other habit so those stay as they were
    ents = sorted(by_entity)
    rng.shuffle(ents)
    habits.careless = set(_until(rates.get("careless", 0.0), ents, lambda e: by_entity[e], n))
    return habits


def _misspelling(word: str, vocab: set[str], rng: random.Random) -> str | None:
    spots = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
    rng.shuffle(spots)
    for i in spots:
        typo = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if typo not in vocab:
            return typo
    return None


class NoisyAnnotator:
    """Writes a demonstration with the annotator's habits, from the oracle's drafts (see module docstring)."""

    def __init__(self, oracle: Any, judge: Any, habits: Habits):
        self.oracle, self.judge, self.kb, self.habits = oracle, judge, oracle.kb, habits

    def answer(self, record: dict[str, Any], rng: random.Random,
               clean: str | None = None) -> tuple[str, list[str]]:
        """``(text, kinds of habit that acted, in KINDS order)``; the oracle's answer when none acted."""
        clean = clean if clean is not None else self.oracle.answer(record)
        h, c = self.habits, self.habits.consistency
        acts: dict[str, Any] = {}
        skip = [i for i, con in enumerate(record["constraints"]) if con["type"] in h.skimmed and rng.random() < c]
        if skip:
            acts["constraints"] = skip
        stated = {(e, a) for e, a, _, ok in self.judge.all_claims(record, clean) if ok} if h.misconceptions else set()
        wrong = {k: v for k, v in h.misconceptions.items() if k in stated and rng.random() < c}
        if wrong:
            acts["factuality"] = wrong
        eids = record.get("entity_ids") or []
        if eids and eids[0] in h.padding and rng.random() < c:
            acts["coherence"] = h.padding[eids[0]]
        typo_seed, draft_seed = rng.getrandbits(32), rng.getrandbits(32)
        careless = bool(eids) and eids[0] in h.careless and rng.random() < c
        text, realized = clean, []
        wanted = [k for k in KINDS if k in acts]
        for n in range(len(wanted), 0, -1):  # drop kinds, last first, until the oracle's plans can hold them
            got = self._draft(record, clean, {k: acts[k] for k in wanted[:n]}, draft_seed)
            if got is not None:
                text, realized = got, wanted[:n]
                break
        if h.misspell:
            sloppy = self._misspell(record, text, random.Random(typo_seed))
            if sloppy != text:
                text, realized = sloppy, ["fluency", *realized]
        if careless:
            sloppy = self._careless(record, text)
            if sloppy != text:
                text, realized = sloppy, ["fluency", *realized]
        return text, [k for k in KINDS if k in realized]

    def _draft(self, record: dict[str, Any], clean: str, acts: dict[str, Any], seed: int) -> str | None:
        n = len(record["constraints"])
        violate = acts.get("constraints", [])
        target = [i not in violate for i in range(n)]
        pad = acts.get("coherence")
        clean_coherence = self.judge.score(record, clean)["coherence"] if pad else None
        for plan in self.oracle.plans(record):
            d = self.oracle.draft(record, plan, frozenset(violate), random.Random(seed))
            if d.template is not None and pad:
                return None  # an answer template is one line: no sentence to repeat or add
            d.wrong_values.update(acts.get("factuality", {}))
            if pad and pad[0] == "off_topic":
                d.additions.append(("fact", pad[1], pad[2]))
            d.repeat_first = bool(pad) and pad[0] == "repeat"
            text = d.render()
            if text == clean or verify(record, text) != target:
                continue
            if "factuality" in acts and not self.judge.errors(record, text)["factuality"]:
                continue  # the misconception's sentence was planned out: this plan says no wrong fact
            if pad and self.judge.score(record, text)["coherence"] >= clean_coherence:
                continue
            return text
        return None

    def _careless(self, record: dict[str, Any], text: str) -> str:
        """``text`` with every sentence begun in lower case and a space before each sentence's end mark; the
        lower case alone is dropped where it would change a verdict or another judge dimension (a case
        constraint, a name the judge then misreads), and both where even the spaces would."""
        verdicts, before = verify(record, text), self.judge.score(record, text)
        spaced = re.sub(r"(?<=[A-Za-z0-9])([.!?])(?=[\s\"')\]}]|$)", r" \1", text)
        lowered = re.sub(r"(^|[.!?]\s+|\n)([A-Z])(?=[a-z])", lambda m: m.group(1) + m.group(2).lower(), spaced)
        for cand in (lowered, spaced):
            after = self.judge.score(record, cand)
            if (verify(record, cand) == verdicts and after["fluency"] < before["fluency"]
                    and all(after[k] == before[k] for k in ("factuality", "coherence"))):
                return cand
        return text

    def _misspell(self, record: dict[str, Any], text: str, rng: random.Random) -> str:
        verdicts = verify(record, text)
        for word, typo in self.habits.misspell.items():
            for m in reversed(list(re.finditer(_WORD % re.escape(word), text))):
                if rng.random() >= self.habits.consistency:
                    continue
                cand = text[: m.start()] + typo + text[m.end() :]
                if verify(record, cand) == verdicts:  # "use the word 'known'" keeps its word
                    text = cand
        return text


def noise_rates(section: Any) -> dict[str, float]:
    """``world.demo_noise`` as ``{kind: rate}``, with the careless writing's reach as ``careless``."""
    return {k: float(getattr(section, k)) for k in (*KINDS, "careless")}


def demo_error_rates(judge: Any, records: Iterable[dict[str, Any]], demos: dict[str, str]) -> dict[str, float]:
    """Share of demonstrations with each kind of error by the world's judge and verifiers."""
    flags = [(judge.errors(r, demos[r["id"]]), verify(r, demos[r["id"]])) for r in records]
    n = max(1, len(flags))
    out = {k: round(sum(e[k] for e, _ in flags) / n, 4) for k in ("fluency", "coherence", "factuality")}
    out["constraints"] = round(sum(not all(v) for _, v in flags) / n, 4)
    return out


__all__ = ["KINDS", "Habits", "NoisyAnnotator", "demo_error_rates", "draw_habits", "noise_rates"]
