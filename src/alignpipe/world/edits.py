"""Counterfactual knowledge edits of the built-in KB, in KnowEdit's record shape (for LTE).

An edit replaces one fact ``(subject, relation, old object)`` of the KB by a new object. Each edit carries:

- ``prompt``: the canonical question about the fact (``QUESTIONS``), ``rephrase_prompt``: another wording;
- ``portability``: questions whose answer follows from the edit through a ``ref`` attribute (a river's
  ``flows_through``, an inventor's ``born_in``, a festival's ``held_in`` point at a city): after moving a river
  to another city, "In which region does the city that X flows through lie?" must be answered with the *new*
  city's region (KnowEdit's "Reasoning" portability);
- ``locality``: questions about facts that must not change: another attribute of the same subject
  (KnowEdit's ``Relation_Specificity``) and a fact of an unrelated entity (``Forgetfulness``).

Within one split no locality or portability fact is itself edited, so every stored edit can sit in the same
memory without changing another edit's expected answers. Example::

    edits = make_edits(kb, seed=1234, n_train=48, n_eval=120)
    edits["eval"][0]["fact"]          # 'Velmora lies in the south.'  (the new fact, in the KB's own sentence)
"""

from __future__ import annotations

import random
from typing import Any

from alignpipe.utils.seed import derive_seed
from alignpipe.world.kb import ATTR_TYPE, ATTRIBUTES, FACT_TEMPLATES, KB, QUESTIONS, _fill

# A second wording of every question (the edit's "rephrase_prompt"; QUESTIONS holds the first).
REPHRASES = {
    "region": "Which region is {name} in?", "founded": "In which year was {name} founded?",
    "known_for": "What is {name} famous for?", "population": "What size is the population of {name}?",
    "flows_through": "Through which city does {name} flow?", "length": "What is the length of {name}?",
    "source": "Where is the source of {name}?", "water": "Which color does the water of {name} have?",
    "born_in": "What is the hometown of {name}?", "invention": "What was invented by {name}?",
    "field": "What field did {name} work in?", "birth_year": "In which year was {name} born?",
    "habitat": "What is the home of {name}?", "diet": "What is the food of {name}?",
    "color": "What is the color of {name}?", "legs": "What number of legs does {name} have?",
    "held_in": "In which city is {name} held?", "month": "In which month does {name} take place?",
    "honors": "Whom or what does {name} honor?", "symbol": "What symbol does {name} have?",
}
# How a ref attribute names the city it points at (the subject of a two-hop portability question).
HOPS = {"flows_through": "the city that {name} flows through", "born_in": "the city where {name} was born",
        "held_in": "the city where {name} is held"}


def _new_value(kb: KB, eid: str, attr: str, rng: random.Random) -> Any:
    """A value of the attribute's domain that differs from the current one."""
    old = kb.get(eid).attributes[attr]
    spec = ATTRIBUTES[ATTR_TYPE[attr]][attr]
    if spec[0] == "int":
        choices: list[Any] = [v for v in (rng.randint(spec[1], spec[2]) for _ in range(8)) if v != old][:1]
        return choices[0] if choices else (old + 1 if old < spec[2] else old - 1)
    if spec[0] == "ref":
        return rng.choice([c.id for c in kb.of_type("city") if c.id not in (eid, old)])
    return rng.choice([v for v in spec[1] if v != old])


def _text(kb: KB, attr: str, raw: Any) -> str:
    return kb.name(raw) if ATTRIBUTES[ATTR_TYPE[attr]][attr][0] == "ref" else str(raw)


def _question(attr: str, name: str, answer: str, sentence: str) -> dict[str, Any]:
    return {"prompt": _fill(QUESTIONS[attr], name=name), "ground_truth": [answer], "answer": sentence}


def _portability(kb: KB, eid: str, attr: str, new: Any, edited: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Two-hop questions through a ref attribute: facts of the new city that differ from the old city's."""
    if attr not in HOPS:
        return []
    old = kb.get(eid).attributes[attr]
    desc = HOPS[attr].format(name=kb.name(eid))
    out = []
    for city_attr in kb.attributes(new):
        if (new, city_attr) in edited or kb.value(new, city_attr) == kb.value(old, city_attr):
            continue  # an edited hop fact would change the answer; an equal one would not test the edit
        value = kb.value(new, city_attr)
        sentence = _fill(FACT_TEMPLATES[city_attr][0], name=desc, value=value)
        out.append(_question(city_attr, desc, value, sentence))
    return out[:1]


def _locality(kb: KB, eid: str, attr: str, edited: set[tuple[str, str]], rng: random.Random, n: int
              ) -> dict[str, list[dict[str, Any]]]:
    """Facts that must keep their answer: another attribute of the subject, then facts of other entities."""
    same = [a for a in kb.attributes(eid) if a != attr and (eid, a) not in edited]
    other = [(e.id, a) for e in kb.entities if e.id != eid for a in kb.attributes(e.id) if (e.id, a) not in edited]
    picks = {"Relation_Specificity": [(eid, a) for a in rng.sample(same, min(len(same), 1))]}
    picks["Forgetfulness"] = rng.sample(other, min(len(other), max(0, n - len(picks["Relation_Specificity"]))))
    return {kind: [_question(a, kb.name(e), kb.value(e, a), kb.fact(e, a)) for e, a in facts]
            for kind, facts in picks.items() if facts}


def make_edit(kb: KB, eid: str, attr: str, new: Any, edited: set[tuple[str, str]], rng: random.Random,
              n_locality: int, edit_id: str) -> dict[str, Any]:
    """One edit record (KnowEdit's fields plus ``id``, ``relation``, ``fact`` and per-question ``answer``)."""
    name, new_text = kb.name(eid), _text(kb, attr, new)
    return {
        "id": edit_id, "subject": name, "relation": attr,
        "prompt": _fill(QUESTIONS[attr], name=name), "rephrase_prompt": _fill(REPHRASES[attr], name=name),
        "target_new": new_text, "ground_truth": [kb.value(eid, attr)],
        "fact": kb.fact(eid, attr, value=new_text), "answer": kb.fact(eid, attr, value=new_text),
        "portability": {"Reasoning": p} if (p := _portability(kb, eid, attr, new, edited)) else {},
        "locality": _locality(kb, eid, attr, edited, rng, n_locality),
    }


def make_edits(kb: KB, seed: int, n_train: int, n_eval: int, n_locality: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Seeded train and eval edits over disjoint KB facts (ref facts first, so portability is well covered).

    Raises:
        ValueError: the KB has fewer than ``n_train + n_eval`` facts.
    """
    rng = random.Random(derive_seed(seed, "edits"))
    facts = [(e.id, a) for e in kb.entities for a in kb.attributes(e.id)]
    if n_train + n_eval > len(facts):
        raise ValueError(f"{n_train} train + {n_eval} eval edits need as many KB facts; the KB has {len(facts)}")
    rng.shuffle(facts)
    # Ref facts (the ones with portability questions) first, shared between the splits in proportion to their
    # sizes, so both the alignment data and the evaluation get portability questions.
    refs, plain = [f for f in facts if f[1] in HOPS], [f for f in facts if f[1] not in HOPS]
    n_ref_eval = min(n_eval, round(len(refs) * n_eval / (n_eval + n_train)))
    n_ref_train = min(n_train, len(refs) - n_ref_eval)
    eval_facts = refs[:n_ref_eval] + plain[: n_eval - n_ref_eval]
    train_facts = refs[n_ref_eval : n_ref_eval + n_ref_train] + plain[n_eval - n_ref_eval :][: n_train - n_ref_train]
    chosen = {"eval": eval_facts, "train": train_facts}
    out: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "eval"):
        edited = set(chosen[split])
        news = {f: _new_value(kb, *f, rng) for f in chosen[split]}
        # A portability hop must not pass through a city fact that this split edits, so news are drawn first.
        records = [make_edit(kb, e, a, news[(e, a)], edited, rng, n_locality, f"{split}-{i:05d}")
                   for i, (e, a) in enumerate(chosen[split])]
        rng.shuffle(records)
        out[split] = records
    return out
