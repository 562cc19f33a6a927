"""The oracle teacher, its controlled corruptions, and "plausible wrong" answers for the judge to catch.

The oracle writes each answer from the KB: base content for the task family (facts in canonical sentences),
then each constraint's ``realize`` hook, then :meth:`Draft.render`. How much base content to use is a
:class:`Plan`; the oracle tries plans from the closest to the family's default answer outwards and returns
the first text that passes every verifier, so counting constraints (exact sentences, word limits, name
counts, paragraphs) are met by adding or dropping facts rather than by special cases.

Example::

    oracle = Oracle(kb)
    text = oracle.answer(record)                         # verify(record, text) is all True
    bad = oracle.corrupt(record, [2], random.Random(0))  # constraint 2 fails, the others hold when possible
    wrong = oracle.wrong(record, "wrong_fact", random.Random(0))
"""

from __future__ import annotations

import random
import re
from typing import Any

from alignpipe.world.constraints import get_type, sentences
from alignpipe.world.draft import COMMA_LINE, Draft, Plan
from alignpipe.world.kb import ATTR_TYPE, ATTRIBUTES, KB, PLURAL
from alignpipe.world.verify import verify

FILLERS = ("There is more to learn about {name}.", "Many people talk about {name}.",
           "Some say that {name} is special.")
INTRO = {"compare": "Both {name} and {other} are {plural}.", "note": "Here is a short note about {name}."}
OUTRO = "I hope you can see it one day."
WRONG_KINDS = ("wrong_fact", "contradiction", "repeat", "loop", "off_topic", "truncate")


class OracleError(RuntimeError):
    """No plan satisfies every constraint of a record (the instruction builder then drops the constraint)."""


class Oracle:
    """Teacher, corrupter and wrong-answer generator over one knowledge base."""

    def __init__(self, kb: KB):
        self.kb = kb

    # ---- drafts ----------------------------------------------------------------------------------------------
    def base_draft(self, record: dict[str, Any], plan: Plan = Plan()) -> Draft:
        """The level-0 content of the record's task family, before any constraint."""
        kb, task, eids = self.kb, record["task"], list(record["entity_ids"])
        family, name = record["family"], kb.name(eids[0])
        d = Draft(kb, eids, plan=plan, fillers=[f.format(name=name) for f in FILLERS])
        if family == "compare":
            a = task["attribute"]
            d.intro = [("text", INTRO["compare"].format(name=name, other=kb.name(eids[1]),
                                                        plural=PLURAL[kb.get(eids[0]).type]))]
            d.core = [[("fact", e, a) for e in eids]]
            d.extras = [[("fact", e, b) for e in eids] for b in kb.attributes(eids[0]) if b != a]
            return d
        core = [task["attribute"]] if family == "ask" else list(task["attributes"])
        d.core = [[("fact", eids[0], a)] for a in core]
        d.extras = [[("fact", eids[0], a)] for a in kb.attributes(eids[0]) if a not in core]
        if family == "describe":
            d.intro = [("type", eids[0])]
        elif family == "note":
            d.intro = [("text", INTRO["note"].format(name=name))]
            d.outro = [("text", OUTRO)]
        if any(c["type"].startswith("ex_") for c in record["constraints"]):
            d.template = {"attribute": task["attribute"]}
        return d

    def draft(self, record: dict[str, Any], plan: Plan = Plan(), broken: frozenset[int] = frozenset(),
              rng: random.Random | None = None) -> Draft:
        """Base content plus every constraint's hook (``violate`` for indices in ``broken``)."""
        d = self.base_draft(record, plan)
        for i, c in enumerate(record["constraints"]):
            ctype = get_type(c["type"])
            if i in broken:
                ctype.violate(c["params"], d, rng or random.Random(0))
            else:
                ctype.realize(c["params"], d)
        return d

    def plans(self, record: dict[str, Any]) -> list[Plan]:
        """Content plans, cheapest change from the family's default answer first."""
        d = self.base_draft(record)
        intros = (True, False) if d.intro else (False,)
        outros = (True, False) if d.outro else (False,)
        out = []
        for intro in intros:
            for n_core in range(len(d.core), 0, -1):
                for n_extras in range(len(d.extras) + 1):
                    for outro in outros:
                        for pad in range(3):
                            cost = (bool(d.intro) and not intro) + (len(d.core) - n_core) + n_extras
                            cost += (bool(d.outro) and not outro) + 1.5 * pad
                            out.append((cost, Plan(intro, n_core, n_extras, outro, pad)))
        out.sort(key=lambda x: x[0])  # stable: ties keep the loop order above
        return [p for _, p in out]

    # ---- teacher ---------------------------------------------------------------------------------------------
    def answer(self, record: dict[str, Any]) -> str:
        """A response that satisfies every constraint of ``record``; OracleError if none exists."""
        seen: set[str] = set()
        for plan in self.plans(record):
            text = self.draft(record, plan).render()
            if text in seen:
                continue
            seen.add(text)
            if all(verify(record, text)):
                return text
        raise OracleError(f"record {record.get('id', '?')}: no answer satisfies every constraint")

    def corrupt(self, record: dict[str, Any], violate: list[int], rng: random.Random) -> str:
        """A response that violates the constraints at indices ``violate``.

        The chosen constraints always fail (every type has a ``violate`` hook that breaks it). The others
        hold whenever some plan allows it; when none does (e.g. breaking ``max_words`` by adding sentences
        also breaks ``exact_sentences``), the text violating the chosen ones with the most others true is
        returned. Call :func:`verify` for the exact verdicts.
        """
        n = len(record["constraints"])
        bad = [i for i in violate if not 0 <= i < n]
        if bad:
            raise ValueError(f"record {record.get('id', '?')}: constraint indices {bad} out of range 0..{n - 1}")
        target = [i not in violate for i in range(n)]
        sub_seed = rng.getrandbits(32)  # the same violation choices under every plan
        best, best_score = None, (-1, -1)
        for plan in self.plans(record):
            text = self.draft(record, plan, frozenset(violate), random.Random(sub_seed)).render()
            got = verify(record, text)
            if got == target:
                return text
            score = (all(not got[i] for i in violate), sum(g for g, t in zip(got, target) if t))
            if score > best_score:
                best, best_score = text, score
        return best  # type: ignore[return-value]

    # ---- plausible wrong answers -----------------------------------------------------------------------------
    def wrong_value(self, eid: str, attr: str, rng: random.Random) -> str:
        """A value of the right kind for ``attr`` that is not the true one."""
        kind, *spec = ATTRIBUTES[ATTR_TYPE[attr]][attr]
        true = self.kb.value(eid, attr)
        if kind == "int":
            lo, hi = spec
            return str(min(hi, max(lo, int(true) + rng.choice((-1, 1)) * rng.randint(5, 200)))) \
                if hi - lo > 10 else str(rng.choice([v for v in range(lo, hi + 1) if str(v) != true]))
        if kind == "ref":
            return rng.choice([e.name for e in self.kb.of_type(spec[0]) if e.name != true] or ["Nowhere"])
        return str(rng.choice([v for v in spec[0] if str(v) != true]))

    def wrong(self, record: dict[str, Any], kind: str, rng: random.Random) -> str:
        """A fluent-looking but wrong answer of ``kind`` (one of ``WRONG_KINDS``)."""
        good = self.answer(record)
        eids = record["entity_ids"]
        attr = record["task"].get("attribute") or record["task"]["attributes"][0]
        if kind in ("wrong_fact", "contradiction"):
            eid = rng.choice(eids)
            value = self.wrong_value(eid, attr, rng)
            if value == self.kb.value(eid, attr):  # a clamped number can land on the truth
                value = str(int(value) + 1)
            claim = self.kb.fact(eid, attr, 1, value=value)  # a paraphrase, as a second voice would say it
            for plan in self.plans(record):
                d = self.draft(record, plan)
                if kind == "wrong_fact":
                    d.wrong_values[(eid, attr)] = value
                else:
                    d.additions.append(("text", claim))
                text = d.render()
                if text != good:
                    return text
            return f"{good} {claim}"  # an answer template has no room for a second sentence: append it
        if kind == "repeat":
            sents = sentences(good)
            i = rng.randrange(len(sents))
            return " ".join(sents[: i + 1] + [sents[i]] * rng.randint(2, 3) + sents[i + 1 :])
        if kind == "loop":
            head = re.sub(r"[.!?]+$", "", sentences(good)[0]).split()[: rng.randint(3, 5)]
            return " ".join(head * rng.randint(6, 10))
        if kind == "off_topic":
            others = [e for e in self.kb.entities if e.type == self.kb.get(eids[0]).type and e.id not in eids]
            other = rng.choice(others or [e for e in self.kb.entities if e.id not in eids])
            swapped = {**record, "entity_ids": [other.id, *eids[1:]], "constraints": []}
            if record["family"] == "compare" or attr not in other.attributes:
                swapped.update(family="describe", entity_ids=[other.id],
                               task={"attributes": self.kb.attributes(other.id)[:2]})
            return self.draft(swapped, Plan()).render()
        if kind == "truncate":
            cut = rng.randint(len(good) // 3, max(len(good) // 3 + 1, 2 * len(good) // 3))
            while cut < len(good) - 1 and not good[cut - 1].isalpha():
                cut += 1  # cut inside a word, as a generation that hit its token budget does
            return good[:cut]
        raise ValueError(f"unknown wrong-answer kind '{kind}'; choose from {WRONG_KINDS}")


VOCAB = (FILLERS, INTRO, OUTRO, COMMA_LINE, PLURAL)
