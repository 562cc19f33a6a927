"""The constraint-type interface, the registry, and the text rules every verifier shares.

Text rules (documented once, used by all verifiers):

- The response is stripped of surrounding whitespace first.
- Words, phrases and names are matched case-insensitively and as whole words; only the case constraints
  (``uppercase``, ``lowercase``, ``capitalize_words``, ``ex_upper``) look at letter case.
- A *sentence* is a piece of a line ending in ``.``, ``!`` or ``?`` (optionally followed by a closing quote)
  and then whitespace or the line's end; a line without end punctuation (a sign-off) is one sentence. List
  markers (``- ``, ``1. ``) are not part of it; a title line (``<<...>>``), a bare ``P.S.`` and pieces
  without letters are not sentences.
- A *word* is a whitespace-separated token.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from alignpipe.world.draft import Draft
from alignpipe.world.kb import KB

CONSTRAINT_CATEGORIES = ("content", "situation", "style", "format", "example")

_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"'])\s+")


_MARKER = re.compile(r"^(?:- |\d+\. )")
_NOT_SENTENCE = re.compile(r"<<[^<>]*>>|P\.S\.", re.IGNORECASE)


def sentences(text: str) -> list[str]:
    """Split text into sentences (see module docstring)."""
    out = []
    for line in text.strip().splitlines():
        for piece in _SPLIT.split(_MARKER.sub("", line.strip())):
            if re.search(r"[A-Za-z]", piece) and not _NOT_SENTENCE.fullmatch(piece.strip("\"' ")):
                out.append(piece)
    return out


def ending(sentence: str) -> str:
    """The sentence without closing quotes or brackets after its end mark (``...here!"}`` -> ``...here!``)."""
    return sentence.rstrip("\"')]}")


def words(text: str) -> list[str]:
    """Whitespace-separated tokens."""
    return text.split()


def has_phrase(text: str, phrase: str) -> bool:
    """Whole-word, case-insensitive occurrence of ``phrase`` (spaces match any whitespace)."""
    pattern = r"\s+".join(re.escape(p) for p in phrase.split())
    return re.search(rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def count_phrase(text: str, phrase: str) -> int:
    """Whole-word, case-insensitive occurrences of ``phrase``."""
    return len(re.findall(rf"(?<![A-Za-z0-9]){re.escape(phrase)}(?![A-Za-z0-9])", text, re.IGNORECASE))


def first_word(text: str) -> str:
    """The first run of letters (list markers, quotes and brackets before it are skipped)."""
    m = re.search(r"[A-Za-z]+", text)
    return m.group(0) if m else ""


def last_line(text: str) -> str:
    """The last non-empty line, stripped."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@dataclass
class Ctx:
    """What ``sample`` may look at: the task, the constraints so far, and the oracle's current answer."""

    kb: KB
    family: str
    entity_ids: list[str]
    task: dict[str, Any]
    constraints: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""

    @property
    def name(self) -> str:
        """Name of the task's (first) entity."""
        return self.kb.name(self.entity_ids[0])

    def params_of(self, type_name: str) -> list[dict[str, Any]]:
        """Params of the constraints so far of one type."""
        return [c["params"] for c in self.constraints if c["type"] == type_name]


class ConstraintType:
    """One kind of constraint. Subclasses set the class attributes and override the hooks.

    Attributes:
        name: registry key, stored as ``type`` in records.
        category: one of ``CONSTRAINT_CATEGORIES``.
        slots: parts of the response the constraint occupies; two constraints sharing a slot never meet in
            one instruction (uppercase + lowercase share ``case``, json + bullets share ``layout``).
        families: task families it applies to (None: all).
        weight: relative chance of being tried first when a level picks its constraint (types that clash
            with many others get more, so they are not starved).
    """

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()
    families: ClassVar[tuple[str, ...] | None] = None
    weight: ClassVar[float] = 1.0

    def slots_for(self, params: dict[str, Any]) -> set[str]:
        """Slots taken by these params (default: the class's ``slots`` plus the type name itself)."""
        return {*self.slots, f"type:{self.name}"}

    def sample(self, rng: random.Random, ctx: Ctx) -> dict[str, Any] | None:
        """Draw params for this task, or None when the type does not fit it."""
        return {}

    def phrase(self, params: dict[str, Any]) -> str:
        """The sentence appended to the instruction."""
        raise NotImplementedError

    def verify(self, params: dict[str, Any], response: str) -> bool:
        """A pure rule on the response text."""
        raise NotImplementedError

    def realize(self, params: dict[str, Any], draft: Draft) -> None:
        """Make the oracle's draft satisfy the constraint (default: nothing to add)."""

    def violate(self, params: dict[str, Any], draft: Draft, rng: random.Random) -> None:
        """Make the draft break the constraint; the default leaves the constraint's part out."""


REGISTRY: dict[str, ConstraintType] = {}


def register(cls: type[ConstraintType]) -> type[ConstraintType]:
    """Class decorator adding one instance of ``cls`` to :data:`REGISTRY`."""
    if cls.name in REGISTRY:
        raise ValueError(f"constraint type '{cls.name}' registered twice")
    if cls.category not in CONSTRAINT_CATEGORIES:
        raise ValueError(f"constraint type '{cls.name}': unknown category '{cls.category}'")
    REGISTRY[cls.name] = cls()
    return cls


def get_type(name: str) -> ConstraintType:
    """The registered type called ``name``; ValueError naming it when unknown."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown constraint type '{name}' (known: {sorted(REGISTRY)})") from None


def types_in(category: str) -> list[ConstraintType]:
    """Registered types of one category, in registration order."""
    return [t for t in REGISTRY.values() if t.category == category]
