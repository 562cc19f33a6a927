"""The pretraining corpus and the raw "web pages" of the world.

The corpus (plain text, documents separated by a blank line, in a seeded order) holds:

- every KB fact stated ``corpus_paraphrases`` times, each time with another (template, frame) pair
  ("Velmora was founded in 1203.", "Old books say that Velmora dates from 1203."); one document per entity
  and paraphrase round. Beyond the templates x frames available, pairs repeat;
- one short description per entity (type sentence and all facts, canonical wording);
- ``corpus_instruction_copies`` copies of each TRAIN dialogue as ``User: ...\\nAssistant: ...``
  (:data:`DIALOGUE`); eval instructions never enter the corpus.

Web pages (WebR's input) are one per entity: a navigation line, a title, an introduction, details,
related entities and a footer, as ``\\n\\n``-separated sections.
"""

from __future__ import annotations

import random
import re
from typing import Any

from alignpipe.utils.seed import derive_seed
from alignpipe.world.kb import FACT_TEMPLATES, KB, MONTHS, TYPE_TEMPLATES

FRAMES = ("{s}", "It is said that {s}", "People know that {s}", "Old books say that {s}", "Fact: {s}",
          "Everyone in the land knows that {s}")
DIALOGUE = "User: {instruction}\nAssistant: {response}"
SITES = ("Old Atlas Online", "Land Wiki", "Traveler Notes")
PAGE = {"nav": "{site} | Home | Places | People | Contact", "details": "More about {name}",
        "related": "Related pages", "none": "There are no related pages yet.",
        "footer": "Copyright {year} {site}. All rights reserved."}


def _frame(frame: str, sentence: str, kb: KB) -> str:
    if frame == "{s}":
        return sentence
    first = re.match(r"[A-Za-z]+", sentence)
    proper = first and (kb.find(first.group(0)) or first.group(0) in MONTHS)
    return frame.format(s=sentence if proper else sentence[0].lower() + sentence[1:])


def fact_paragraphs(kb: KB, seed: int, paraphrases: int) -> list[str]:
    """One paragraph per (entity, paraphrase round): all the entity's facts, each in that round's wording."""
    rng = random.Random(derive_seed(seed, "world", "corpus", "facts"))
    docs = []
    for e in kb.entities:
        units = [("type", None)] + [("fact", a) for a in kb.attributes(e.id)]
        plans = {}
        for kind, attr in units:
            n_t = len(TYPE_TEMPLATES) if kind == "type" else len(FACT_TEMPLATES[attr])
            order = list(range(n_t))
            rng.shuffle(order)
            # First every template plainly, then templates inside the other frames.
            plans[(kind, attr)] = [(order[i % n_t], 0 if i < n_t else 1 + rng.randrange(len(FRAMES) - 1))
                                   for i in range(paraphrases)]
        for i in range(paraphrases):
            sents = []
            for kind, attr in units:
                t, f = plans[(kind, attr)][i]
                s = kb.type_sentence(e.id, t) if kind == "type" else kb.fact(e.id, attr, t)
                sents.append(_frame(FRAMES[f], s, kb))
            docs.append(" ".join(sents))
    return docs


def descriptions(kb: KB) -> list[str]:
    """A short canonical description of every entity."""
    return [" ".join([kb.type_sentence(e.id)] + [kb.fact(e.id, a) for a in kb.attributes(e.id)])
            for e in kb.entities]


def build_corpus(kb: KB, seed: int, paraphrases: int, dialogues: list[tuple[str, str]], copies: int) -> str:
    """The pretraining text: facts, descriptions and ``copies`` x the given (train) dialogues, shuffled."""
    docs = fact_paragraphs(kb, seed, paraphrases) + descriptions(kb)
    docs += [DIALOGUE.format(instruction=q, response=a) for _ in range(copies) for q, a in dialogues]
    random.Random(derive_seed(seed, "world", "corpus", "order")).shuffle(docs)
    return "\n\n".join(docs) + "\n"


def build_pages(kb: KB, seed: int) -> list[dict[str, Any]]:
    """One raw web page per entity: ``{"id", "entity_id", "webpage"}``."""
    rng = random.Random(derive_seed(seed, "world", "pages"))
    refs: dict[str, list[str]] = {}  # entity id -> facts of others that point at it (cities, for now)
    for o in kb.entities:
        for a in kb.attributes(o.id):
            if o.attributes[a] in kb.by_id:
                refs.setdefault(o.attributes[a], []).append(kb.fact(o.id, a))
    pages = []
    for e in kb.entities:
        site = rng.choice(SITES)
        attrs = kb.attributes(e.id)
        rng.shuffle(attrs)
        fact = [kb.fact(e.id, a, rng.randrange(len(FACT_TEMPLATES[a]))) for a in attrs]
        related = refs.get(e.id, [])
        sections = [PAGE["nav"].format(site=site), e.name,
                    " ".join([kb.type_sentence(e.id, rng.randrange(len(TYPE_TEMPLATES))), *fact[:2]]),
                    PAGE["details"].format(name=e.name) + "\n" + " ".join(fact[2:]),
                    PAGE["related"] + "\n" + (" ".join(related[:6]) or PAGE["none"]),
                    PAGE["footer"].format(year=rng.randint(2001, 2024), site=site)]
        pages.append({"id": f"page-{e.id}", "entity_id": e.id, "webpage": "\n\n".join(sections)})
    return pages


VOCAB = (FRAMES, DIALOGUE, SITES, PAGE)
