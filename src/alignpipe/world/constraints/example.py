"""Example constraints (FollowBench's "example" category): answer in the template shown by worked examples.

The task is a question about one attribute ("When was Velmora founded?"). Level 1 shows two worked
examples of a bare-value template (``Answer: 1203``); each later level adds ONE element to the template and
shows an example of the template so far: brackets around the value (``Answer: [1203]``), a suffix tag
(``Answer: [1203] #OK``), capital letters (``ANSWER: [1203] #OK``), a lead with the entity name and a
separator (``VELMORA | ANSWER: [1203] #OK``). ``params["template"]`` keeps the cumulative template with an
``{answer}`` placeholder, as FollowBench's targets do (replace it as a plain string, never with
``str.format``: brace brackets make ``{{answer}}``).

Verification follows FollowBench's rule (template -> regex, ``.*`` for free text, full match, ``.`` not
matching newlines, so a multi-line answer fails), applied per element: each verifier full-matches a regex
in which only its own element is fixed and everything else is ``.*``. All five hold exactly when the answer
has the template's elements, one line.
"""

from __future__ import annotations

import re
from typing import Any

from alignpipe.world.constraints.base import ConstraintType, Ctx, register
from alignpipe.world.draft import render_template
from alignpipe.world.kb import QUESTIONS

LABELS = ("Answer", "Result", "Reply", "Value")
BRACKETS = (("[", "]"), ("(", ")"), ("{", "}"), ("<", ">"))
TAGS = ("#OK", "#END", "#DONE", "#FACT")  # capitals and no brackets: compatible with every other element
SEPARATORS = (" | ", " -> ", " :: ")
_ELEMENT_KEYS = ("label", "open", "close", "tag", "upper", "sep")


def template_elements(constraints: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the template elements of a record's example constraints."""
    out: dict[str, Any] = {}
    for c in constraints:
        if c["type"].startswith("ex_"):
            out.update({k: v for k, v in c["params"].items() if k in _ELEMENT_KEYS})
    return out


class _Element(ConstraintType):
    """Shared sampling: add this element to the template so far and draw worked examples for it."""

    category, families = "example", ("ask",)
    n_examples = 1
    description = ""

    def element(self, rng, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def sample(self, rng, ctx):
        if self.name != "ex_label" and not ctx.params_of("ex_label"):
            return None  # the label opens every example group (level 1)
        elem = self.element(rng, ctx)
        t = {**template_elements(ctx.constraints), **elem}
        eid, attr = ctx.entity_ids[0], ctx.task["attribute"]
        etype = ctx.kb.get(eid).type
        others = [e for e in ctx.kb.of_type(etype) if e.id != eid] or [e for e in ctx.kb.entities if e.id != eid]
        examples = []
        for e in rng.sample(others, min(self.n_examples, len(others))):
            a = attr if attr in e.attributes else rng.choice(ctx.kb.attributes(e.id))
            examples.append({"question": QUESTIONS[a].format(name=e.name),
                             "answer": render_template(t, e.name, ctx.kb.value(e.id, a))})
        return {**elem, "template": render_template(t, ctx.name), "examples": examples}

    def phrase(self, p):
        shown = "; ".join(f"'{x['question']}' -> '{x['answer']}'" for x in p["examples"])
        return f"{self.description.format(**p)} Example{'s' if len(p['examples']) > 1 else ''}: {shown}."

    def realize(self, p, draft):
        draft.template.update({k: v for k, v in p.items() if k in _ELEMENT_KEYS})


def _full(pattern: str, response: str) -> bool:
    return re.fullmatch(pattern, response.strip(), re.IGNORECASE) is not None


@register
class ExLabel(_Element):
    """Level 1: the answer is ``Label: value`` (the label may follow a lead)."""

    name, n_examples = "ex_label", 2
    description = "Answer only with '{label}: ' and the value."

    def element(self, rng, ctx):
        return {"label": rng.choice(LABELS)}

    def verify(self, p, response):
        return _full(rf"(?:.*\s)?{re.escape(p['label'])}: .+", response)


@register
class ExBrackets(_Element):
    """The value sits between a bracket pair."""

    name = "ex_brackets"
    description = "Put the value between {open} and {close}."

    def element(self, rng, ctx):
        o, c = rng.choice(BRACKETS)
        return {"open": o, "close": c}

    def verify(self, p, response):
        o, c = re.escape(p["open"]), re.escape(p["close"])
        return _full(rf".*{o}[^{o}{c}]+{c}.*", response)


@register
class ExTag(_Element):
    """The answer ends with a tag after a space."""

    name = "ex_tag"
    description = "End with the tag {tag}."

    def element(self, rng, ctx):
        return {"tag": rng.choice(TAGS)}

    def verify(self, p, response):
        return _full(rf".+ {re.escape(p['tag'])}", response)


@register
class ExUpper(_Element):
    """The whole (one-line) answer is in capital letters."""

    name = "ex_upper"
    description = "Write it all in capital letters."

    def element(self, rng, ctx):
        return {"upper": True}

    def verify(self, p, response):
        s = response.strip()
        return "\n" not in s and bool(re.search(r"[A-Z]", s)) and not re.search(r"[a-z]", s)


@register
class ExLead(_Element):
    """The answer opens with the asked entity's name and a separator."""

    name = "ex_lead"
    description = "Start with the name of the one you are asked about, then '{sep_text}'."

    def element(self, rng, ctx):
        sep = rng.choice(SEPARATORS)
        return {"sep": sep, "name": ctx.name, "sep_text": sep.strip()}

    def verify(self, p, response):
        return _full(rf"{re.escape(p['name'])}{re.escape(p['sep'])}.+", response)


VOCAB = (LABELS, TAGS)
