"""The knowledge base: fictional entities with typed attributes, and the sentences that state their facts.

Every fact is an ``(entity, attribute, value)`` triple stated through one of a few sentence templates
(``FACT_TEMPLATES``); the first template of each attribute is the canonical one the oracle uses, the others
are paraphrases for the pretraining corpus. The judge turns the same templates into regexes, so whatever the
corpus teaches can be checked against the KB.

Example::

    kb = generate_kb(seed=1234, n_entities=48)
    e = kb.entities[0]
    kb.fact(e.id, kb.attributes(e.id)[0])     # 'Velmora was founded in 1203.'
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.utils.io import DataError, read_json
from alignpipe.utils.seed import derive_seed

TYPES = ("city", "river", "inventor", "creature", "festival")
ARTICLE = {"city": "a city", "river": "a river", "inventor": "an inventor", "creature": "a creature",
           "festival": "a festival"}
PLURAL = {"city": "cities", "river": "rivers", "inventor": "inventors", "creature": "creatures",
          "festival": "festivals"}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# attribute -> ("int", lo, hi) | ("ref", "city") | ("vocab", values); attribute names are unique across types.
ATTRIBUTES: dict[str, dict[str, tuple]] = {
    "city": {
        "region": ("vocab", ("north", "south", "east", "west", "highlands", "lowlands")),
        "founded": ("int", 800, 1899),
        "known_for": ("vocab", ("glass", "bridges", "silk", "music", "markets", "towers", "boats", "gardens")),
        "population": ("vocab", ("small", "medium", "large")),
    },
    "river": {
        "flows_through": ("ref", "city"),
        "length": ("int", 20, 900),
        "source": ("vocab", ("mountains", "hills", "lakes", "springs", "marshes")),
        "water": ("vocab", ("green", "brown", "clear", "blue", "gray")),
    },
    "inventor": {
        "born_in": ("ref", "city"),
        "invention": ("vocab", ("lamp", "clock", "compass", "loom", "telescope", "kettle", "bell", "pump")),
        "field": ("vocab", ("optics", "mechanics", "chemistry", "music", "farming", "medicine")),
        "birth_year": ("int", 1000, 1899),
    },
    "creature": {
        "habitat": ("vocab", ("forest", "swamp", "desert", "caves", "mountains", "sea")),
        "diet": ("vocab", ("berries", "fish", "insects", "roots", "grass", "seeds")),
        "color": ("vocab", ("green", "brown", "gray", "red", "golden", "white")),
        "legs": ("vocab", (2, 4, 6, 8)),
    },
    "festival": {
        "held_in": ("ref", "city"),
        "month": ("vocab", MONTHS),
        "honors": ("vocab", ("the harvest", "the moon", "the sea", "the first snow", "old sailors", "the sun")),
        "symbol": ("vocab", ("lanterns", "masks", "drums", "ribbons", "bread", "bells")),
    },
}
ATTR_TYPE = {attr: t for t, attrs in ATTRIBUTES.items() for attr in attrs}

# Comma-free on purpose: the no-commas constraint must never fight a fact sentence.
FACT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "region": ("{name} lies in the {value}.", "{name} is in the {value}.", "You can find {name} in the {value}.",
               "The region of {name} is the {value}."),
    "founded": ("{name} was founded in {value}.", "{name} dates from {value}.", "People founded {name} in {value}.",
                "The founding year of {name} is {value}."),
    "known_for": ("{name} is known for its {value}.", "People know {name} for its {value}.",
                  "The pride of {name} is its {value}.", "Travelers visit {name} for its {value}."),
    "population": ("{name} has a {value} population.", "The population of {name} is {value}.",
                   "{name} is home to a {value} population."),
    "flows_through": ("{name} flows through {value}.", "{name} runs through {value}.",
                      "The waters of {name} pass through {value}."),
    "length": ("{name} is {value} kilometers long.", "The length of {name} is {value} kilometers.",
               "{name} runs for {value} kilometers."),
    "source": ("{name} starts in the {value}.", "{name} begins in the {value}.",
               "The source of {name} is in the {value}."),
    "water": ("{name} has {value} water.", "The water of {name} is {value}.", "{name} carries {value} water."),
    "born_in": ("{name} was born in {value}.", "{name} came from {value}.", "The hometown of {name} is {value}."),
    "invention": ("{name} invented the {value}.", "{name} made the first {value}.",
                  "The {value} was invented by {name}."),
    "field": ("{name} worked in {value}.", "{name} studied {value}.", "The field of {name} was {value}."),
    "birth_year": ("{name} was born in the year {value}.", "The birth year of {name} is {value}.",
                   "{name} came into the world in {value}."),
    "habitat": ("{name} lives in the {value}.", "The home of {name} is the {value}.",
                "You can meet {name} in the {value}."),
    "diet": ("{name} eats {value}.", "{name} feeds on {value}.", "The food of {name} is {value}."),
    "color": ("{name} is {value} in color.", "The color of {name} is {value}.", "{name} has a {value} coat."),
    "legs": ("{name} has {value} legs.", "{name} walks on {value} legs.", "The number of legs of {name} is {value}."),
    "held_in": ("{name} is held in {value}.", "People celebrate {name} in {value}.", "{value} hosts {name}."),
    "month": ("{name} takes place in {value}.", "{name} comes every {value}.", "The month of {name} is {value}."),
    "honors": ("{name} honors {value}.", "{name} is a feast for {value}.", "People hold {name} to honor {value}."),
    "symbol": ("The symbol of {name} is {value}.", "{name} is celebrated with {value}.",
               "At {name} people carry {value}."),
}
# One question per attribute: the "ask" task family and the example constraints' worked examples.
QUESTIONS = {
    "region": "In which region does {name} lie?", "founded": "When was {name} founded?",
    "known_for": "What is {name} known for?", "population": "How large is the population of {name}?",
    "flows_through": "Which city does {name} flow through?", "length": "How long is {name}?",
    "source": "Where does {name} start?", "water": "What color is the water of {name}?",
    "born_in": "Where was {name} born?", "invention": "What did {name} invent?",
    "field": "In which field did {name} work?", "birth_year": "When was {name} born?",
    "habitat": "Where does {name} live?", "diet": "What does {name} eat?", "color": "What color is {name}?",
    "legs": "How many legs does {name} have?", "held_in": "Where is {name} held?",
    "month": "When does {name} take place?", "honors": "What does {name} honor?",
    "symbol": "What is the symbol of {name}?",
}
TYPE_TEMPLATES = ("{name} is {a_type}.", "{name} is the name of {a_type}.", "There is {a_type} called {name}.")

# People named by constraints (readers, writers); generated entity names must never collide with them.
PERSON_NAMES = ("Mira", "Oskar", "Anya", "Tomas", "Lena", "Bruno")

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br", "dr", "tr", "kr", "st")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "io")
_CODAS = ("", "", "", "n", "r", "s", "l", "th", "k", "m", "rn", "sk")


@dataclass(frozen=True)
class Entity:
    """One fictional entity: ``attributes`` maps attribute -> int, vocabulary string or entity id (refs)."""

    id: str
    name: str
    type: str
    attributes: dict[str, Any] = field(default_factory=dict)


def _make_name(rng: random.Random) -> str:
    n_syll = rng.choice((2, 2, 2, 3))
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n_syll)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


def _reserved_words() -> set[str]:
    text = " ".join([*TYPE_TEMPLATES, *(t for ts in FACT_TEMPLATES.values() for t in ts), *PERSON_NAMES])
    for attrs in ATTRIBUTES.values():
        for spec in attrs.values():
            if spec[0] == "vocab":
                text += " " + " ".join(map(str, spec[1]))
    return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}


class KB:
    """Lookup over entities by id or (case-insensitive) name, and the sentences stating their facts."""

    def __init__(self, entities: list[Entity]):
        self.entities = list(entities)
        self.by_id = {e.id: e for e in self.entities}
        self.by_name = {e.name.lower(): e for e in self.entities}
        if len(self.by_id) != len(self.entities) or len(self.by_name) != len(self.entities):
            raise ValueError("entity ids and names must be unique")

    def __len__(self) -> int:
        return len(self.entities)

    def get(self, eid: str) -> Entity:
        """The entity with id ``eid`` (KeyError if none)."""
        return self.by_id[eid]

    def find(self, name: str) -> Entity | None:
        """The entity called ``name`` (any case), or None."""
        return self.by_name.get(name.lower())

    def name(self, eid: str) -> str:
        """The entity's name."""
        return self.by_id[eid].name

    def of_type(self, etype: str) -> list[Entity]:
        """Entities of one type, in KB order."""
        return [e for e in self.entities if e.type == etype]

    def attributes(self, eid: str) -> list[str]:
        """The attribute names of the entity's type, in a fixed order."""
        return list(ATTRIBUTES[self.by_id[eid].type])

    def value(self, eid: str, attr: str) -> str:
        """The attribute's value as it appears in text (references become entity names)."""
        raw = self.by_id[eid].attributes[attr]
        return self.by_id[raw].name if ATTRIBUTES[ATTR_TYPE[attr]][attr][0] == "ref" else str(raw)

    def fact(self, eid: str, attr: str, template: int = 0, value: str | None = None) -> str:
        """State one fact with template number ``template`` (0 = canonical); ``value`` overrides the truth."""
        text = FACT_TEMPLATES[attr][template % len(FACT_TEMPLATES[attr])]
        return _fill(text, name=self.name(eid), value=self.value(eid, attr) if value is None else value)

    def type_sentence(self, eid: str, template: int = 0) -> str:
        """Say what kind of entity it is ("Velmora is a city.") with template number ``template``."""
        e = self.by_id[eid]
        return _fill(TYPE_TEMPLATES[template % len(TYPE_TEMPLATES)], name=e.name, a_type=ARTICLE[e.type])

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``kb.json``); :meth:`from_json` reads it back."""
        return {"entities": [{"id": e.id, "name": e.name, "type": e.type, "attributes": dict(e.attributes)}
                             for e in self.entities]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "KB":
        """The KB stored by :meth:`to_json`."""
        return cls([Entity(d["id"], d["name"], d["type"], dict(d["attributes"])) for d in obj["entities"]])


def _fill(template: str, **slots: str) -> str:
    out = template.format(**slots)
    return out[0].upper() + out[1:]  # templates starting with {value} ('the harvest ...') still open a sentence


def generate_kb(seed: int, n_entities: int) -> KB:
    """Generate ``n_entities`` entities, types dealt round-robin so every type (and a city) always exists."""
    rng = random.Random(derive_seed(seed, "world", "kb"))
    reserved = _reserved_words()
    names: list[str] = []
    while len(names) < n_entities:
        name = _make_name(rng)
        if 4 <= len(name) <= 9 and name.lower() not in reserved and name not in names:
            names.append(name)
    order = list(TYPES)
    rng.shuffle(order)
    types = [order[i % len(order)] for i in range(n_entities)]
    ids = [f"e{i:03d}" if n_entities <= 1000 else f"e{i:06d}" for i in range(n_entities)]
    cities = [i for i, t in zip(ids, types) if t == "city"]
    entities = []
    for eid, name, etype in zip(ids, names, types):
        attrs: dict[str, Any] = {}
        for attr, spec in ATTRIBUTES[etype].items():
            if spec[0] == "int":
                attrs[attr] = rng.randint(spec[1], spec[2])
            elif spec[0] == "ref":
                attrs[attr] = rng.choice([c for c in cities if c != eid])
            else:
                attrs[attr] = rng.choice(spec[1])
        entities.append(Entity(eid, name, etype, attrs))
    return KB(entities)


def load_kb(path: str | Path) -> KB:
    """Read ``kb.json`` written by :meth:`World.save`; errors name the file."""
    obj = read_json(path)
    try:
        return KB.from_json(obj)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: not a knowledge base ({type(err).__name__}: {err})") from None
