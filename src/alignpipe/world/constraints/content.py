"""Content constraints: what the answer must (or must not) say."""

from __future__ import annotations

import random
import re

from alignpipe.world.constraints.base import ConstraintType, count_phrase, has_phrase, register
from alignpipe.world.draft import Draft
from alignpipe.world.kb import FACT_TEMPLATES, PERSON_NAMES, TYPE_TEMPLATES

# Consonant-initial so the oracle's "a {word}" is always grammatical; none is a word the KB templates use.
KEYWORDS = ("harbor", "lantern", "meadow", "mirror", "feather", "candle", "window", "ladder", "basket", "pebble")
SOURCES = ("the Old Atlas", "the Great Library", "the River Book", "the Town Records")
# Sentences the oracle adds for these constraints.
LINES = {"include_keyword": "It reminds me of a {word}.", "include_number": "My lucky number is {number}.",
         "cite_source": "This comes from {source}.", "exclude_word": "The word {word} fits here."}
# "Say ..." requests for one attribute (the content constraint asks for a fact the base answer leaves out).
SAY = {
    "region": "Say in which region {name} lies.", "founded": "Say when {name} was founded.",
    "known_for": "Say what {name} is known for.", "population": "Say how large the population of {name} is.",
    "flows_through": "Say which city {name} flows through.", "length": "Say how long {name} is.",
    "source": "Say where {name} starts.", "water": "Say what color the water of {name} is.",
    "born_in": "Say where {name} was born.", "invention": "Say what {name} invented.",
    "field": "Say in which field {name} worked.", "birth_year": "Say when {name} was born.",
    "habitat": "Say where {name} lives.", "diet": "Say what {name} eats.", "color": "Say what color {name} is.",
    "legs": "Say how many legs {name} has.", "held_in": "Say where {name} is held.",
    "month": "Say when {name} takes place.", "honors": "Say what {name} honors.",
    "symbol": "Say what the symbol of {name} is.",
}
# Words never offered for exclusion: too common to avoid, or needed by other constraints' sentences.
_KEEP = {"that", "this", "with", "from", "there", "about", "have", "into", "your", "will", "more", "know", "would"}


@register
class IncludeKeyword(ConstraintType):
    """The answer uses a given word (whole word, any case)."""

    name, category = "include_keyword", "content"

    def slots_for(self, params):
        return {f"type:{self.name}", f"word:{params['word']}"}

    def sample(self, rng, ctx):
        banned = {p["word"] for p in ctx.params_of("exclude_word")}
        options = [w for w in KEYWORDS if w not in banned and not has_phrase(ctx.answer, w)]
        return {"word": rng.choice(options)} if options else None

    def phrase(self, p):
        return f"Use the word '{p['word']}'."

    def verify(self, p, response):
        return has_phrase(response, p["word"])

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["include_keyword"].format(**p)))


@register
class IncludeAttribute(ConstraintType):
    """The answer states a fact the base answer leaves out: its value appears (whole words, any case)."""

    name, category = "include_attribute", "content"

    def sample(self, rng, ctx):
        options = [(e, a) for e in ctx.entity_ids for a in ctx.kb.attributes(e)
                   if not has_phrase(ctx.answer, ctx.kb.value(e, a))]
        if not options:
            return None
        eid, attr = rng.choice(options)
        return {"entity_id": eid, "name": ctx.kb.name(eid), "attribute": attr, "value": ctx.kb.value(eid, attr)}

    def phrase(self, p):
        return SAY[p["attribute"]].format(name=p["name"])

    def verify(self, p, response):
        return has_phrase(response, p["value"])

    def realize(self, p, draft):
        draft.additions.append(("fact", p["entity_id"], p["attribute"]))

    def violate(self, p, draft, rng):
        # Extras may state every fact; keep only those that do not give this value away.
        draft.extras = [g for g in draft.extras if ("fact", p["entity_id"], p["attribute"]) not in g]


@register
class ExcludeWord(ConstraintType):
    """A word of the current answer is banned (whole word, any case); the oracle rephrases around it."""

    name, category = "exclude_word", "content"

    def slots_for(self, params):
        return {f"type:{self.name}", f"word:{params['word']}"}

    def sample(self, rng, ctx):
        names = {e.name.lower() for e in ctx.kb.entities} | {n.lower() for n in PERSON_NAMES}
        values = {w.lower() for e in ctx.entity_ids for a in ctx.kb.attributes(e)
                  for w in re.findall(r"[A-Za-z]+", ctx.kb.value(e, a))}
        taken = {w.lower() for c in ctx.constraints for v in c["params"].values() if isinstance(v, str)
                 for w in re.findall(r"[A-Za-z]+", v)}
        options = sorted({w.lower() for w in re.findall(r"[A-Za-z]+", ctx.answer) if len(w) >= 4}
                         - names - values - taken - _KEEP)
        return {"word": rng.choice(options)} if options else None

    def phrase(self, p):
        return f"Do not use the word '{p['word']}'."

    def verify(self, p, response):
        return not has_phrase(response, p["word"])

    def realize(self, p, draft):
        draft.avoid.add(p["word"])

    def violate(self, p, draft, rng):
        # State something true that uses the word, so the violation reads naturally.
        for eid in draft.entity_ids:
            opts = [draft.kb.type_sentence(eid, i) for i in range(len(TYPE_TEMPLATES))]
            opts += [draft.kb.fact(eid, a, i) for a in draft.kb.attributes(eid) for i in range(len(FACT_TEMPLATES[a]))]
            hit = [s for s in opts if has_phrase(s, p["word"])]
            if hit:
                draft.additions.append(("text", rng.choice(hit)))
                return
        draft.additions.append(("text", LINES["exclude_word"].format(**p)))


@register
class MentionEntity(ConstraintType):
    """The answer names another entity of the KB."""

    name, category = "mention_entity", "content"

    def sample(self, rng, ctx):
        said = {w.lower() for w in re.findall(r"[A-Za-z]+", ctx.answer)}  # names are one word
        options = [e for e in ctx.kb.entities if e.id not in ctx.entity_ids and e.name.lower() not in said]
        if not options:
            return None
        e = rng.choice(options)
        return {"entity_id": e.id, "name": e.name}

    def phrase(self, p):
        return f"Also mention {p['name']}."

    def verify(self, p, response):
        return has_phrase(response, p["name"])

    def realize(self, p, draft):
        draft.additions.append(("mention", p["entity_id"]))


@register
class IncludeNumber(ConstraintType):
    """A given number appears (not as part of a longer number)."""

    name, category = "include_number", "content"

    def sample(self, rng, ctx):
        options = [n for n in range(11, 100) if str(n) not in ctx.answer]
        return {"number": rng.choice(options)}

    def phrase(self, p):
        return f"Include the number {p['number']}."

    def verify(self, p, response):
        return re.search(rf"(?<!\d){p['number']}(?!\d)", response) is not None

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["include_number"].format(**p)))


@register
class CiteSource(ConstraintType):
    """The answer names a (fictional) source."""

    name, category = "cite_source", "content"

    def sample(self, rng, ctx):
        return {"source": rng.choice(SOURCES)}

    def phrase(self, p):
        return f"Say that this comes from {p['source']}."

    def verify(self, p, response):
        return has_phrase(response, p["source"].removeprefix("the "))

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["cite_source"].format(**p)))


@register
class NameCount(ConstraintType):
    """The task's entity is named at least ``n`` times (more than the current answer does)."""

    name, category = "name_count", "content"

    def sample(self, rng, ctx):
        n = count_phrase(ctx.answer, ctx.name) + rng.choice((1, 2))
        return {"name": ctx.name, "n": n} if n <= 5 else None

    def phrase(self, p):
        return f"Use the name {p['name']} at least {p['n']} times."

    def verify(self, p, response):
        return count_phrase(response, p["name"]) >= p["n"]

    def violate(self, p, draft: Draft, rng: random.Random) -> None:
        draft.pronoun_after = p["n"] - 1  # later mentions become "it"


VOCAB = (KEYWORDS, SOURCES, LINES)
