"""The oracle judge: fluency, factuality and coherence of a response, each on a 1-10 scale, by rules.

It stands in for an LLM judge on the built-in world and reads the same inputs (the instruction record and the
response). Each score starts at 10 and loses points per problem found, floored at 1:

- **fluency**: words outside the world's vocabulary and the instruction (up to -6), broken tokens such as ``fo2und`` or
  ``aaaa`` (-1 each), sentences not starting with a capital letter (-1 each, skipped when a case constraint
  or an answer template rules case), immediate repetitions of a word or a sentence (-1.5 each).
- **factuality**: fact claims are read from the response with regexes built from the KB's sentence
  templates (the ones the corpus teaches) and checked against the KB: ``1 + 9 * correct / (correct +
  wrong)``. For an "ask" task, a bare value (an answer template such as ``Answer: [1203]``) counts as a
  claim about the asked attribute. **No claim at all gives the neutral 5.0**: nothing checkable was said.
- **coherence**: one attribute given two values (-3 per extra value), repeated sentences (-2 each), looping
  text (repeated word 3-grams beyond 20%, up to -6), claims about entities the task does not concern (-2
  each), never naming the task's entity (-3), a truncated ending (-3), unbalanced brackets or quotes (-1).
"""

from __future__ import annotations

import json
import re
from typing import Any

from alignpipe.world.constraints import VOCAB as CONSTRAINT_VOCAB
from alignpipe.world.constraints import sentences
from alignpipe.world.corpus import VOCAB as CORPUS_VOCAB
from alignpipe.world.instructions import VOCAB as INSTRUCTION_VOCAB
from alignpipe.world.kb import ARTICLE, ATTR_TYPE, ATTRIBUTES, FACT_TEMPLATES, KB, TYPE_TEMPLATES
from alignpipe.world.oracle import VOCAB as ORACLE_VOCAB

NEUTRAL = 5.0
ERROR_KINDS = ("fluency", "coherence", "factuality")
_CASE_TYPES = {"uppercase", "lowercase", "capitalize_words"}
_REF_ATTRS = {a for attrs in ATTRIBUTES.values() for a, spec in attrs.items() if spec[0] == "ref"}


def _strings(obj: Any):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            yield from _strings(v)


def world_vocabulary(kb: KB) -> set[str]:
    """Every lowercase word the world's templates, vocabularies and entity names can produce."""
    sources = (CONSTRAINT_VOCAB, CORPUS_VOCAB, INSTRUCTION_VOCAB, ORACLE_VOCAB, FACT_TEMPLATES, TYPE_TEMPLATES,
               ARTICLE, [str(v) for attrs in ATTRIBUTES.values() for spec in attrs.values() if spec[0] == "vocab"
                         for v in spec[1]], [e.name for e in kb.entities])
    text = " ".join(re.sub(r"\{[a-z_]+\}", " ", s) for s in _strings(sources))
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


def _value_regex(attr: str, kb: KB, strict: bool = False) -> str:
    """Regex of the attribute's values; unless ``strict``, any word counts (an unknown value is wrong)."""
    kind, *spec = ATTRIBUTES[ATTR_TYPE[attr]][attr]
    if kind == "int" or all(isinstance(v, int) for v in spec[0]):
        return r"\d+"
    values = [e.name for e in kb.of_type(spec[0])] if kind == "ref" else [str(v) for v in spec[0]]
    alts = sorted((re.escape(v) for v in values), key=len, reverse=True)
    return "(?:" + "|".join(alts) + ("" if strict else r"|[A-Za-z]+") + ")"


def _template_regex(template: str, value_rx: str) -> re.Pattern:
    parts = re.split(r"(\{name\}|\{value\}|\{a_type\})", template.rstrip("."))
    rx = ""
    for part in parts:
        if part == "{name}":
            rx += r"(?P<name>[A-Za-z]+)"
        elif part in ("{value}", "{a_type}"):
            rx += rf"(?P<value>{value_rx})"
        else:
            rx += r"\s+".join(re.escape(w) for w in part.split(" "))
    return re.compile(rf"(?<![A-Za-z]){rx}(?![A-Za-z])", re.IGNORECASE)


class Judge:
    """Rule-based scores of a response; see the module docstring for every rule."""

    def __init__(self, kb: KB):
        self.kb = kb
        self.vocab = world_vocabulary(kb)
        self.patterns = [(attr, _template_regex(t, _value_regex(attr, kb)))
                         for attr, ts in FACT_TEMPLATES.items() for t in ts]
        types = "|".join(re.escape(a) for a in ARTICLE.values())
        self.patterns += [("type", _template_regex(t, types)) for t in TYPE_TEMPLATES]

    # ---- claims ----------------------------------------------------------------------------------------------
    def claims(self, text: str) -> list[tuple[str, str, str, bool]]:
        """``(entity_id, attribute, value, correct)`` for each distinct fact claim in ``text``."""
        clean = re.sub(r"[*<>]", " ", text)
        found: dict[tuple[str, str, str], bool] = {}
        for attr, rx in self.patterns:
            for m in rx.finditer(clean):
                e = self.kb.find(m.group("name"))
                if e is None:
                    continue
                value = re.sub(r"\s+", " ", m.group("value")).lower()
                if attr in _REF_ATTRS and self.kb.find(value) is None and value in self.vocab:
                    continue  # "was born in the year ...": a common word is no place name
                if attr == "type":
                    truth = ARTICLE[e.type]
                elif attr in e.attributes:
                    truth = self.kb.value(e.id, attr).lower()
                else:
                    truth = None  # the attribute of another type: wrong whatever the value
                found.setdefault((e.id, attr, value), value == (truth or "").lower())
        return [(eid, attr, v, ok) for (eid, attr, v), ok in found.items()]

    def _bare_answer(self, record: dict[str, Any], text: str, templated: bool) -> list[tuple[str, str, str, bool]]:
        """The asked value said without a fact sentence (``Answer: [1203]``): a claim about that attribute."""
        eid, attr = record["entity_ids"][0], record["task"]["attribute"]
        truth = self.kb.value(eid, attr)
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(truth)}(?![A-Za-z0-9])", text, re.IGNORECASE):
            return [(eid, attr, truth.lower(), True)]
        value_rx = _value_regex(attr, self.kb, strict=True)
        if value_rx == r"\d+" and not templated:
            return []  # in free text a number may be anything (a year asked for by another constraint)
        m = re.search(rf"(?<![A-Za-z0-9]){value_rx}(?![A-Za-z0-9])", re.sub(r"[*<>]", " ", text), re.IGNORECASE)
        return [(eid, attr, m.group(0).lower(), False)] if m else []

    def all_claims(self, record: dict[str, Any], text: str, templated: bool | None = None) -> list[tuple]:
        """The fact claims the factuality score counts: :meth:`claims`, plus for an "ask" task the asked value
        said bare (see :meth:`_bare_answer`)."""
        if templated is None:
            templated = any(c["type"].startswith("ex_") for c in record.get("constraints", []))
        claims = self.claims(text)
        if record.get("family") == "ask" and record.get("entity_ids") and (templated or not any(
                (c[0], c[1]) == (record["entity_ids"][0], record["task"]["attribute"]) for c in claims)):
            claims += [c for c in self._bare_answer(record, text, templated) if c[:3] not in {x[:3] for x in claims}]
        return claims

    # ---- scores ----------------------------------------------------------------------------------------------
    def errors(self, record: dict[str, Any], response: str) -> dict[str, bool]:
        """Whether ``response`` holds at least one error of each judged kind, by the same rules as :meth:`score`:
        ``fluency`` / ``coherence`` below 10 (some penalty applied), ``factuality`` a wrong fact claim (a
        response with no claim holds no factual error). An empty response is an error of every kind."""
        text = response.strip()
        scores = self.score(record, response)
        if not re.search(r"[A-Za-z0-9]", text):
            return dict.fromkeys(ERROR_KINDS, True)
        return {"fluency": scores["fluency"] < 10.0, "coherence": scores["coherence"] < 10.0,
                "factuality": any(not ok for *_, ok in self.all_claims(record, text))}

    def score(self, record: dict[str, Any], response: str) -> dict[str, float]:
        """``{"fluency", "factuality", "coherence"}``, each in [1, 10]."""
        text = response.strip()
        if not re.search(r"[A-Za-z0-9]", text):
            return {"fluency": 1.0, "factuality": 1.0, "coherence": 1.0}
        types = {c["type"] for c in record.get("constraints", [])}
        templated = any(t.startswith("ex_") for t in types)
        prose = self._prose(text)
        sents = sentences(prose)
        norm = [re.sub(r"[^a-z0-9 ]", "", s.lower()).strip() for s in sents]

        claims = self.all_claims(record, text, templated)
        # Words of the instruction itself are fair to use even where the world's templates never say them.
        vocab = self.vocab | {w.lower() for w in re.findall(r"[A-Za-z]+", record.get("instruction", ""))}
        return {"fluency": self._fluency(text, sents, norm, types, templated, vocab),
                "factuality": self._factuality(claims),
                "coherence": self._coherence(record, text, norm, claims, templated)}

    @staticmethod
    def _prose(text: str) -> str:
        """The sentences of a JSON answer are in its values; other answers are prose already."""
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                return text
            if isinstance(obj, dict):
                vals = [v for v in obj.values() if isinstance(v, str)]
                return " ".join(v for v in vals if re.search(r"[.!?]$", v)) or " ".join(vals)
        return text

    def _fluency(self, text, sents, norm, types, templated, vocab) -> float:
        words = re.findall(r"[A-Za-z]+", text)
        oov = sum(w.lower() not in vocab for w in words) / max(1, len(words))
        pen = min(6.0, 15.0 * oov)
        tokens = text.split()
        broken = [t for t in tokens if re.search(r"[A-Za-z]\d|\d[A-Za-z]", t)]
        broken += [t for t in tokens if re.search(r"([A-Za-z])\1\1", t) or re.search(r"[^\x00-\x7f]", t)]
        broken += re.findall(r"[,.;!?]{2,}|\s[,.;!?]", text)  # ":" is free: the "::" separator
        pen += min(4.0, 1.0 * len(broken))
        if not (types & _CASE_TYPES or templated):
            pen += min(3.0, sum(1 for s in sents if (m := re.search(r"[A-Za-z]", s)) and m.group(0).islower()))
        reps = len(re.findall(r"\b([A-Za-z]+)\s+\1\b", text, re.IGNORECASE))
        reps += sum(1 for a, b in zip(norm, norm[1:]) if a and a == b)
        pen += min(4.0, 1.5 * reps)
        return round(max(1.0, 10.0 - pen), 2)

    @staticmethod
    def _factuality(claims) -> float:
        if not claims:
            return NEUTRAL
        good = sum(ok for *_, ok in claims)
        return round(1.0 + 9.0 * good / len(claims), 2)

    def _coherence(self, record, text, norm, claims, templated) -> float:
        pen = 0.0
        values: dict[tuple[str, str], set[str]] = {}
        for eid, attr, v, _ in claims:
            values.setdefault((eid, attr), set()).add(v)
        pen += 3.0 * sum(len(v) - 1 for v in values.values())
        pen += min(6.0, 2.0 * (len(norm) - len(set(norm))))
        grams = list(zip(*(re.findall(r"[a-z0-9]+", text.lower())[i:] for i in range(3))))
        if len(grams) >= 6:
            pen += min(6.0, max(0.0, 1.0 - len(set(grams)) / len(grams) - 0.2) * 15.0)
        eids = [e for e in record.get("entity_ids", []) if e in self.kb.by_id]
        if eids:  # records from outside the world name no entity: no topic to stay on
            allowed = set(eids) | {
                v for c in record.get("constraints", []) for k, v in c["params"].items() if k == "entity_id"}
            pen += min(6.0, 2.0 * len({eid for eid, *_ in claims} - allowed))
            name = self.kb.name(eids[0])
            if not templated and not re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
                pen += 3.0
        if not templated and not self._ends_well(record, text):
            pen += 3.0
        pairs = (("(", ")"), ("[", "]"), ("{", "}"), ("<<", ">>"))
        if any(text.count(a) != text.count(b) for a, b in pairs) or text.count('"') % 2:
            pen += 1.0
        return round(max(1.0, 10.0 - pen), 2)

    @staticmethod
    def _ends_well(record, text) -> bool:
        if re.search(r"[.!?]$", text.rstrip("\"')]}>*")):
            return True
        last = re.sub(r"^[^A-Za-z]+", "", text.splitlines()[-1]).rstrip(".!").lower()
        return any(c["type"] == "sign_off" and c["params"]["line"].lower() == last
                   for c in record.get("constraints", []))
