"""Errors in the SFT demonstrations: the world's annotator is not the oracle.

Real instruction data is written by people and models that make mistakes; preference alignment exists to move a
policy away from the mistakes it learned by imitation. The oracle writes every *train* answer correctly; with
``world.demo_noise`` the demonstrations in ``sft.jsonl`` (and the dialogues the base model pretrains on) come
from a noisy annotator instead, who makes each kind of error independently with its own probability:

- **fluency** -- a sloppy writer: 1 to 3 surface errors, each a transposed pair of letters inside a word
  (``famous`` -> ``fmaous``), a doubled word (``is is``) or a sentence started in lower case;
- **coherence** -- a sentence said again later in the answer (not next to itself), or a true sentence about
  another entity of the same kind that the task does not concern;
- **factuality** -- one fact the answer states, about one of the task's entities, with a wrong value of the
  right kind (the KB holds the truth);
- **constraints** -- one of the instruction's constraints ignored (its ``violate`` hook).

Each kind is injected only where it is an error by the world's own definitions and changes nothing else:
the verifiers' verdicts stay those of the clean answer (except the one constraint of ``constraints``), and
the world's judge must see the error in its dimension (fluency or coherence lower than for the clean
answer, a wrong claim for factuality). Where a kind cannot be injected under those rules (an answer
template has no second sentence to repeat), the demonstration goes without it; ``realized`` in the world's
``metrics.json`` gives the rates actually written. The evaluation pool and the oracle's answers (which the
preference stage offers as a candidate) stay clean.

Example::

    noisy, kinds = NoisyAnnotator(oracle, judge).answer(record, {"fluency", "factuality"}, random.Random(0))
"""

from __future__ import annotations

import random
import re
from typing import Any

from alignpipe.world.verify import verify

KINDS = ("fluency", "coherence", "factuality", "constraints")
_FLUENCY_OPS = ("transpose", "double", "lower_start")


class NoisyAnnotator:
    """Writes demonstrations with chosen kinds of error, from the oracle's drafts (see module docstring)."""

    def __init__(self, oracle: Any, judge: Any):
        self.oracle, self.judge, self.kb = oracle, judge, oracle.kb

    def pick_kinds(self, rates: dict[str, float], rng: random.Random) -> set[str]:
        """Each kind independently with its rate (one draw per kind, in ``KINDS`` order, always)."""
        draws = {k: rng.random() for k in KINDS}
        return {k for k in KINDS if draws[k] < rates.get(k, 0.0)}

    def answer(self, record: dict[str, Any], kinds: set[str], rng: random.Random,
               clean: str | None = None) -> tuple[str, list[str]]:
        """The demonstration for ``record`` with the ``kinds`` of error that could be injected; returns
        ``(text, realized kinds in KINDS order)``. With no kinds it is the oracle's answer (``clean``, when
        the caller has it already)."""
        clean = clean if clean is not None else self.oracle.answer(record)
        if not kinds:
            return clean, []
        sub = rng.getrandbits(32)  # every choice below from sub-seeds: retries never shift later records
        wanted = [k for k in KINDS if k in kinds and k != "fluency"]
        text, realized = clean, []
        # Draft-level kinds first (they need the oracle's plans); drop kinds, last first, until one fits.
        for n in range(len(wanted), 0, -1):
            got = self._draft_level(record, clean, wanted[:n], random.Random(sub))
            if got is not None:
                text, realized = got, wanted[:n]
                break
        if "fluency" in kinds:
            sloppy = self._sloppy(record, text, random.Random(sub ^ 0x5F5F))
            if sloppy is not None:
                text, realized = sloppy, ["fluency", *realized]
        return text, [k for k in KINDS if k in realized]

    # ---- draft-level errors ----------------------------------------------------------------------------------
    def _draft_level(self, record: dict[str, Any], clean: str, kinds: list[str], rng: random.Random) -> str | None:
        kb, eids = self.kb, list(record["entity_ids"])
        n = len(record["constraints"])
        if "constraints" in kinds and n == 0:
            return None
        violate = [rng.randrange(n)] if "constraints" in kinds else []
        target = [i not in violate for i in range(n)]
        wrong: dict[tuple[str, str], str] = {}
        if "factuality" in kinds:
            task = record["task"]
            attrs = [task["attribute"]] if "attribute" in task else list(task.get("attributes", []))
            eid = rng.choice(eids)
            attr = rng.choice([a for a in attrs if a in kb.get(eid).attributes] or kb.attributes(eid))
            wrong[(eid, attr)] = self.oracle.wrong_value(eid, attr, rng)
            if wrong[(eid, attr)] == kb.value(eid, attr):
                return None
        how = rng.choice(("repeat", "off_topic")) if "coherence" in kinds else None
        addition = None
        if how == "off_topic":
            etype = kb.get(eids[0]).type
            others = [e for e in kb.entities if e.type == etype and e.id not in eids]
            if not others:
                return None
            other = rng.choice(others)
            addition = ("fact", other.id, rng.choice(kb.attributes(other.id)))
        clean_coherence = self.judge.score(record, clean)["coherence"] if how else None
        sub = rng.getrandbits(32)
        for plan in self.oracle.plans(record):
            d = self.oracle.draft(record, plan, frozenset(violate), random.Random(sub))
            if d.template is not None and how:
                return None  # an answer template is one line: no sentence to repeat or add
            d.wrong_values.update(wrong)
            if addition:
                d.additions.append(addition)
            d.repeat_first = how == "repeat"
            text = d.render()
            if text == clean or verify(record, text) != target:
                continue
            if wrong and not any(not ok for *_, ok in self.judge.claims(text)) \
                    and not self._wrong_bare(record, text):
                continue
            if how and self.judge.score(record, text)["coherence"] >= clean_coherence:
                continue
            return text
        return None

    def _wrong_bare(self, record: dict[str, Any], text: str) -> bool:
        if record.get("family") != "ask":
            return False
        scores = self.judge.score(record, text)
        return scores["factuality"] < 10.0 and scores["factuality"] != 5.0

    # ---- surface errors --------------------------------------------------------------------------------------
    def _sloppy(self, record: dict[str, Any], text: str, rng: random.Random) -> str | None:
        """1-3 surface errors, each kept only if the verdicts stay and the judge's fluency drops."""
        verdicts = verify(record, text)
        fluency = self.judge.score(record, text)["fluency"]
        out, made = text, 0
        for _ in range(rng.randint(1, 3)):
            for _attempt in range(8):
                op = rng.choice(_FLUENCY_OPS)
                cand = getattr(self, f"_{op}")(out, rng)
                if cand is None or cand == out or verify(record, cand) != verdicts:
                    continue
                f = self.judge.score(record, cand)["fluency"]
                if f < fluency:
                    out, fluency, made = cand, f, made + 1
                    break
        return out if made else None

    def _words(self, text: str, min_len: int) -> list[re.Match]:
        names = {e.name.lower() for e in self.kb.entities}
        return [m for m in re.finditer(r"(?<![A-Za-z0-9{}_])[a-z]{%d,}(?![A-Za-z0-9{}_])" % min_len, text)
                if m.group(0) not in names]

    def _transpose(self, text: str, rng: random.Random) -> str | None:
        words = self._words(text, 5)
        if not words:
            return None
        m = rng.choice(words)
        w = m.group(0)
        i = rng.randrange(1, len(w) - 2)
        if w[i] == w[i + 1]:
            return None
        typo = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
        return text[: m.start()] + typo + text[m.end() :]

    def _double(self, text: str, rng: random.Random) -> str | None:
        words = self._words(text, 2)
        if not words:
            return None
        m = rng.choice(words)
        return text[: m.end()] + " " + m.group(0) + text[m.end() :]

    def _lower_start(self, text: str, rng: random.Random) -> str | None:
        starts = [m for m in re.finditer(r"(?:^|(?<=[.!?] ))([A-Z])(?=[a-z])", text)]
        if not starts:
            return None
        m = rng.choice(starts)
        return text[: m.start(1)] + m.group(1).lower() + text[m.end(1) :]


def noise_rates(section: Any) -> dict[str, float]:
    """``world.demo_noise`` as ``{kind: rate}``."""
    return {k: float(getattr(section, k)) for k in KINDS}


__all__ = ["KINDS", "NoisyAnnotator", "noise_rates"]
