"""Format constraints: layout (lists, paragraphs, JSON), framing (title, quotes, end phrase) and length."""

from __future__ import annotations

import dataclasses
import json
import re

from alignpipe.world.constraints.base import ConstraintType, register, sentences, words

JSON_KEYS = (("name", "text"), ("topic", "answer"), ("title", "facts"), ("subject", "details"))
END_PHRASES = ("That is all.", "Thank you for reading.", "Is there anything else?", "Have a nice day.")
POSTSCRIPT = "P.S. Tell your friends about {name}."
PLACEHOLDERS = ("address", "date", "name", "phone")
PLACEHOLDER_LINE = "You can reach me at [{slot}]."
_TITLE = re.compile(r"<<[^<>\n]+>>")


def _body_lines(text: str) -> list[str]:
    """Non-empty lines inside optional wrapping quotes, without a title line on top (a list may have one)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[1:] if lines and _TITLE.fullmatch(lines[0]) else lines


@register
class BulletList(ConstraintType):
    """At least two lines, each starting with ``- `` (a title line on top is allowed)."""

    name, category, slots = "bullet_list", "format", ("layout",)

    def phrase(self, p):
        return "Write the answer as a list where every line starts with '- '."

    def verify(self, p, response):
        lines = _body_lines(response)
        return len(lines) >= 2 and all(ln.startswith("- ") for ln in lines)

    def realize(self, p, draft):
        draft.layout = ("bullets",)


@register
class NumberedList(ConstraintType):
    """At least two lines numbered ``1. ``, ``2. ``, ... in order (a title line on top is allowed)."""

    name, category, slots = "numbered_list", "format", ("layout",)

    def phrase(self, p):
        return "Write the answer as a numbered list: 1. 2. 3. and so on, one point per line."

    def verify(self, p, response):
        lines = _body_lines(response)
        return len(lines) >= 2 and all(ln.startswith(f"{i}. ") for i, ln in enumerate(lines, 1))

    def realize(self, p, draft):
        draft.layout = ("numbered",)


@register
class JsonKeys(ConstraintType):
    """The answer is one JSON object with the given keys (any case)."""

    name, category = "json_keys", "format"
    # A JSON answer fixes its first and last characters and has commas; keys are matched in any case.
    slots = ("layout", "start", "end", "commas")
    weight = 4.0

    def sample(self, rng, ctx):
        return {"keys": list(rng.choice(JSON_KEYS))}

    def phrase(self, p):
        k1, k2 = p["keys"]
        return f"Answer with a JSON object that has the keys '{k1}' and '{k2}'."

    def verify(self, p, response):
        try:
            obj = json.loads(response.strip())
        except ValueError:
            return False
        return isinstance(obj, dict) and {k.lower() for k in p["keys"]} <= {str(k).lower() for k in obj}

    def realize(self, p, draft):
        draft.layout = ("json", *p["keys"])


@register
class ExactSentences(ConstraintType):
    """Exactly ``n`` sentences (see the sentence rule in ``base``)."""

    name, category, slots = "exact_sentences", "format", ("count",)

    def sample(self, rng, ctx):
        have = len(sentences(ctx.answer))
        options = [n for n in (have - 1, have + 1, have + 2) if 1 <= n <= 8]
        return {"n": rng.choice(options)} if options else None

    def phrase(self, p):
        return f"Use exactly {p['n']} sentences." if p["n"] > 1 else "Use exactly one sentence."

    def verify(self, p, response):
        return len(sentences(response)) == p["n"]

    def violate(self, p, draft, rng):
        draft.extra_fillers += 1  # one sentence more than the oracle's plan


@register
class Title(ConstraintType):
    """The first line is a title in double angular brackets."""

    name, category, slots = "title", "format", ("start",)

    def phrase(self, p):
        return "Put a title in double angular brackets, like <<title>>, on the first line."

    def verify(self, p, response):
        lines = response.strip().splitlines()
        return bool(lines) and _TITLE.fullmatch(lines[0].strip()) is not None

    def realize(self, p, draft):
        draft.title = True


@register
class QuoteWrap(ConstraintType):
    """The answer starts and ends with a double quotation mark."""

    name, category, slots = "quote_wrap", "format", ("start", "end")
    weight = 2.0

    def phrase(self, p):
        return "Put your whole answer inside double quotation marks."

    def verify(self, p, response):
        s = response.strip()
        return len(s) >= 2 and s[0] == '"' and s[-1] == '"'

    def realize(self, p, draft):
        draft.quote = True


@register
class EndPhrase(ConstraintType):
    """The answer ends with an exact phrase (any case)."""

    name, category, slots = "end_phrase", "format", ("end", "terminal")

    def sample(self, rng, ctx):
        return {"phrase": rng.choice(END_PHRASES)}

    def phrase(self, p):
        return f"End your answer with the exact phrase '{p['phrase']}'"

    def verify(self, p, response):
        return response.strip().lower().endswith(p["phrase"].lower())

    def realize(self, p, draft):
        draft.tail.append(p["phrase"])


@register
class Paragraphs(ConstraintType):
    """Exactly ``n`` paragraphs separated by blank lines."""

    name, category, slots = "paragraphs", "format", ("layout",)

    def sample(self, rng, ctx):
        return {"n": rng.choice((2, 3))}

    def phrase(self, p):
        return f"Write {p['n']} paragraphs separated by a blank line."

    def verify(self, p, response):
        parts = [x for x in re.split(r"\n\s*\n", response.strip()) if x.strip()]
        return len(parts) == p["n"]

    def realize(self, p, draft):
        draft.layout = ("paragraphs", p["n"])


@register
class MaxWords(ConstraintType):
    """At most ``n`` whitespace-separated words (fewer than the current answer has)."""

    name, category, slots = "max_words", "format", ("words",)

    def sample(self, rng, ctx):
        have = len(words(ctx.answer))
        n = have - rng.randint(2, 8)  # below the current answer, so the limit bites
        return {"n": n} if n >= 5 else None

    def phrase(self, p):
        return f"Use at most {p['n']} words."

    def verify(self, p, response):
        return len(words(response)) <= p["n"]

    def violate(self, p, draft, rng):
        draft.extra_fillers += 3
        draft.plan = dataclasses.replace(draft.plan, n_extras=99)


@register
class Postscript(ConstraintType):
    """A line after the first starts with ``P.S.``."""

    name, category, slots = "postscript", "format", ("end",)

    def sample(self, rng, ctx):
        return {"name": ctx.name}

    def phrase(self, p):
        return "Add a postscript at the end on its own line, starting with 'P.S.'"

    def verify(self, p, response):
        lines = [re.sub(r"^(?:- |\d+\. )", "", ln.strip()) for ln in response.strip().splitlines()]
        return any(ln.upper().startswith("P.S.") for ln in lines[1:])

    def realize(self, p, draft):
        draft.lines.append(POSTSCRIPT.format(**p))


@register
class MinWords(ConstraintType):
    """At least ``n`` whitespace-separated words (more than the current answer has)."""

    name, category, slots = "min_words", "format", ("min_words",)

    def sample(self, rng, ctx):
        return {"n": len(words(ctx.answer)) + rng.randint(4, 12)}  # above the current answer

    def phrase(self, p):
        return f"Use at least {p['n']} words."

    def verify(self, p, response):
        return len(words(response)) >= p["n"]



@register
class Placeholder(ConstraintType):
    """A placeholder in square brackets, such as ``[address]``."""

    name, category, slots = "placeholder", "format", ("placeholder",)

    def sample(self, rng, ctx):
        return {"example": rng.choice(PLACEHOLDERS)}

    def phrase(self, p):
        return f"Include a placeholder in square brackets, like [{p['example']}]."

    def verify(self, p, response):
        return re.search(r"\[[^\[\]\n]+\]", response) is not None

    def realize(self, p, draft):
        draft.additions.append(("text", PLACEHOLDER_LINE.format(slot=p["example"])))


VOCAB = (JSON_KEYS, END_PHRASES, POSTSCRIPT, PLACEHOLDERS, PLACEHOLDER_LINE)
