"""The oracle's response under construction, and how it becomes text.

A :class:`Draft` holds the *parts* of a response (content sentences by role, greeting, closing lines) and the
*form* requested by constraints (layout, title, quotes, case, punctuation). Constraint types fill it through
their ``realize`` hook (or leave their part out through ``violate``); :meth:`Draft.render` then composes, in an
order that keeps every verifier true: content -> additions -> situation framing -> start word -> sentence
punctuation -> layout -> title -> quotes -> comma removal -> case. Case comes last because every other
verifier compares text case-insensitively.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from alignpipe.world.kb import FACT_TEMPLATES, KB, MONTHS, PERSON_NAMES, TYPE_TEMPLATES

COMMA_LINE = "Yes, that is right."  # added only to break "no commas"
Unit = tuple  # ("fact", eid, attr) | ("type", eid) | ("mention", eid) | ("text", sentence)


@dataclass(frozen=True)
class Plan:
    """How much base content to use; the oracle searches plans until every verifier passes."""

    intro: bool = True
    n_core: int = 99
    n_extras: int = 0
    outro: bool = True
    n_pad: int = 0


@dataclass
class Draft:
    """Parts and form of one response (see module docstring)."""

    kb: KB
    entity_ids: list[str]
    intro: list[Unit] = field(default_factory=list)
    core: list[list[Unit]] = field(default_factory=list)
    extras: list[list[Unit]] = field(default_factory=list)
    outro: list[Unit] = field(default_factory=list)
    fillers: list[str] = field(default_factory=list)
    plan: Plan = field(default_factory=Plan)
    additions: list[Unit] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    avoid: set[str] = field(default_factory=set)
    start_word: str | None = None
    layout: tuple | None = None
    title: bool = False
    quote: bool = False
    case: str | None = None
    no_commas: bool = False
    exclaim: bool = False
    emphasis: str | None = None
    max_sentence_words: int | None = None
    template: dict[str, Any] | None = None  # answer-template mode (example constraints): its elements
    # Set only for corrupted and wrong answers:
    extra_fillers: int = 0
    force_comma: bool = False
    pronoun_after: int | None = None
    wrong_values: dict[tuple[str, str], str] = field(default_factory=dict)
    repeat_first: bool = False  # the noisy annotator's coherence error: the first sentence said again later

    # ---- content ---------------------------------------------------------------------------------------------
    def _ok(self, sentence: str) -> bool:
        if self.max_sentence_words is not None and len(sentence.split()) > self.max_sentence_words:
            return False
        low = sentence.lower()
        return not any(re.search(rf"\b{re.escape(w)}\b", low) for w in self.avoid)

    def _first_ok(self, options: Iterable[str]) -> str:
        # Falling back to the first option keeps the text well-formed; its verifier then fails, and the
        # oracle tries another plan (e.g. one that drops this sentence). Options are generated lazily.
        first = None
        for s in options:
            if self._ok(s):
                return s
            first = first or s
        return first

    def resolve(self, unit: Unit) -> str:
        """The sentence for one content unit, in the first wording that avoids banned words."""
        kind = unit[0]
        if kind == "text":
            return unit[1]
        if kind == "fact":
            eid, attr = unit[1], unit[2]
            wrong = self.wrong_values.get((eid, attr))
            n = len(FACT_TEMPLATES[attr])
            return self._first_ok(self.kb.fact(eid, attr, i, value=wrong) for i in range(n))
        if kind == "type":
            return self._first_ok(self.kb.type_sentence(unit[1], i) for i in range(len(TYPE_TEMPLATES)))
        if kind == "mention":
            eid = unit[1]
            facts = (self.kb.fact(eid, a, i) for a in self.kb.attributes(eid) for i in range(len(FACT_TEMPLATES[a])))
            return self._first_ok(chain((self.kb.type_sentence(eid, i) for i in range(len(TYPE_TEMPLATES))), facts))
        raise ValueError(f"unknown unit {unit!r}")

    def sentences(self) -> list[str]:
        """All sentences in answer order: greeting, content per plan, additions, fillers, outro, closing."""
        p = self.plan
        units = list(self.intro if p.intro else [])
        units += [u for grp in self.core[: max(1, p.n_core)] for u in grp]
        units += [u for grp in self.extras[: p.n_extras] for u in grp]
        units += self.additions
        out: list[str] = []
        for u in units:
            s = self.resolve(u)
            if s not in out:  # a fact asked for twice (extras + include_attribute) is stated once
                out.append(s)
        out += [f for f in self.fillers[: p.n_pad + self.extra_fillers] if f not in out]
        if self.repeat_first and len(out) >= 2:
            out.append(out[0])  # not next to itself: a repeated sentence, not a stutter
        if self.force_comma:
            out.append(COMMA_LINE)
        if p.outro:
            out += [self.resolve(u) for u in self.outro]
        out = self.head + out + self.tail
        if self.pronoun_after is not None:
            out = self._pronouns(out, self.pronoun_after)
        if self.emphasis:
            pat = re.compile(rf"\b{re.escape(self.emphasis)}\b")
            i = next((i for i, s in enumerate(out) if pat.search(s)), None)
            if i is not None:
                out[i] = pat.sub(f"*{self.emphasis}*", out[i], count=1)
        if self.start_word and out:
            out[0] = f"{self.start_word}, {self._decap(out[0])}"
        return out

    def _decap(self, s: str) -> str:
        first = re.match(r"[A-Za-z]+", s)
        proper = first and (self.kb.find(first.group(0)) or first.group(0) in PERSON_NAMES + MONTHS)
        return s if proper else s[:1].lower() + s[1:]

    def _pronouns(self, sents: list[str], keep: int) -> list[str]:
        name = self.kb.name(self.entity_ids[0])
        seen = 0

        def sub(m: re.Match) -> str:
            nonlocal seen
            seen += 1
            if seen <= keep:
                return m.group(0)
            return "It" if m.start() == 0 else "it"

        return [re.sub(rf"\b{re.escape(name)}\b", sub, s) for s in sents]

    # ---- form ------------------------------------------------------------------------------------------------
    def title_text(self) -> str:
        """The task's entity names ("Velmora" or "Velmora and Tarsk"): titles and JSON name fields."""
        return " and ".join(self.kb.name(e) for e in self.entity_ids)

    def render(self) -> str:
        """Compose the final response text."""
        if self.template is not None:
            return self._render_template()
        sents, lines = self.sentences(), list(self.lines)
        if self.exclaim:
            sents, lines = [_bang(s) for s in sents], [_bang(ln) for ln in lines]
        kind = self.layout[0] if self.layout else None
        if kind == "bullets":
            body = "\n".join("- " + s for s in sents + lines)
        elif kind == "numbered":
            body = "\n".join(f"{i}. {s}" for i, s in enumerate(sents + lines, 1))
        elif kind == "paragraphs":
            n = self.layout[1]
            base, extra = divmod(len(sents), n)
            chunks, i = [], 0
            for k in range(n):
                size = base + (1 if k < extra else 0)
                chunks.append(" ".join(sents[i : i + size]))
                i += size
            chunks = [c for c in chunks if c]
            if lines:
                chunks[-1] = "\n".join([chunks[-1], *lines]) if chunks else "\n".join(lines)
            body = "\n\n".join(chunks)
        elif kind == "json":
            body = json.dumps({self.layout[1]: self.title_text(), self.layout[2]: " ".join(sents + lines)},
                              ensure_ascii=False)
        else:
            body = " ".join(sents) + "".join("\n" + ln for ln in lines)
        if self.title:
            body = f"<<{self.title_text()}>>\n{body}"
        if self.quote:
            body = f'"{body}"'
        if self.no_commas:
            body = body.replace(", ", " ").replace(",", "")
        return apply_case(body, self.case)

    def _render_template(self) -> str:
        t, eid = self.template, self.entity_ids[0]
        value = self.wrong_values.get((eid, t["attribute"])) or self.kb.value(eid, t["attribute"])
        return render_template(t, self.kb.name(eid), value)


def render_template(t: dict[str, Any], name: str, value: str = "{answer}") -> str:
    """The answer ``value`` under answer-template elements ``t`` (label, open/close, tag, sep, upper).

    With the default ``value`` it gives the template itself, e.g. ``VELMORA | ANSWER: [{answer}] #OK``.
    """
    text = t["open"] + value + t["close"] if t.get("open") else value
    if t.get("label"):
        text = f"{t['label']}: {text}"
    if t.get("tag"):
        text += " " + t["tag"]
    if t.get("sep"):
        text = name + t["sep"] + text
    return text.upper().replace("{ANSWER}", "{answer}") if t.get("upper") else text


def _bang(s: str) -> str:
    return s[:-1] + "!" if s[-1:] in ".!?" else s + "!"


def apply_case(text: str, case: str | None) -> str:
    """Upper, lower or capitalise every word (``capitalize``); None leaves the text as it is."""
    if case == "upper":
        return text.upper()
    if case == "lower":
        return text.lower()
    if case == "capitalize":
        return re.sub(r"[A-Za-z]+", lambda m: m.group(0)[0].upper() + m.group(0)[1:], text)
    return text


__all__ = ["COMMA_LINE", "Draft", "Plan", "Unit", "apply_case", "render_template"]
