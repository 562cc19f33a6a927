"""Style constraints: letter case, punctuation and the opening word, applied to the whole answer."""

from __future__ import annotations

import re

from alignpipe.world.constraints.base import ConstraintType, ending, first_word, register, sentences

START_WORDS = ("Indeed", "Well", "Listen", "Truly", "Friends", "So")
# tone -> (word the verifier looks for, the oracle's sentence)
TONES = {"polite": ("please", "Please enjoy these facts."), "cheerful": ("wonderful", "It is all quite wonderful."),
         "humble": ("humbly", "I humbly share what I know."), "excited": ("amazing", "It is truly amazing.")}


@register
class Uppercase(ConstraintType):
    """No lowercase letter (and at least one letter)."""

    name, category, slots = "uppercase", "style", ("case",)

    def phrase(self, p):
        return "Write your whole answer in capital letters."

    def verify(self, p, response):
        return bool(re.search(r"[A-Z]", response)) and not re.search(r"[a-z]", response)

    def realize(self, p, draft):
        draft.case = "upper"


@register
class Lowercase(ConstraintType):
    """No uppercase letter (and at least one letter)."""

    name, category, slots = "lowercase", "style", ("case",)

    def phrase(self, p):
        return "Write your whole answer in lowercase letters."

    def verify(self, p, response):
        return bool(re.search(r"[a-z]", response)) and not re.search(r"[A-Z]", response)

    def realize(self, p, draft):
        draft.case = "lower"


@register
class CapitalizeWords(ConstraintType):
    """Every word (run of letters) starts with a capital letter."""

    name, category, slots = "capitalize_words", "style", ("case",)

    def phrase(self, p):
        return "Start every word with a capital letter."

    def verify(self, p, response):
        found = re.findall(r"[A-Za-z]+", response)
        return bool(found) and all(w[0].isupper() for w in found)

    def realize(self, p, draft):
        draft.case = "capitalize"


@register
class NoCommas(ConstraintType):
    """No comma anywhere."""

    name, category, slots = "no_commas", "style", ("commas",)

    def phrase(self, p):
        return "Do not use any commas."

    def verify(self, p, response):
        return "," not in response

    def realize(self, p, draft):
        draft.no_commas = True

    def violate(self, p, draft, rng):
        draft.force_comma = True  # the plain answer may have no comma to leave in


@register
class Exclaim(ConstraintType):
    """Every sentence ends with ``!`` (closing quotes and brackets after it are allowed)."""

    name, category, slots = "exclaim", "style", ("terminal",)

    def phrase(self, p):
        return "End every sentence with an exclamation mark."

    def verify(self, p, response):
        sents = sentences(response)
        return bool(sents) and all(ending(s).endswith("!") for s in sents)

    def realize(self, p, draft):
        draft.exclaim = True


@register
class StartWord(ConstraintType):
    """The first word (list markers and quotes are not words) is a given word, any case."""

    name, category, slots = "start_word", "style", ("start",)

    def sample(self, rng, ctx):
        return {"word": rng.choice(START_WORDS)}

    def phrase(self, p):
        return f"Start your answer with the word '{p['word']}'."

    def verify(self, p, response):
        # The first *word*: list markers and quotes before it are not words.
        return first_word(response).lower() == p["word"].lower()

    def realize(self, p, draft):
        draft.start_word = p["word"]



@register
class Emphasis(ConstraintType):
    """The entity's name appears once between asterisks, like ``*Velmora*``."""

    name, category, slots = "emphasis", "style", ("emphasis",)

    def sample(self, rng, ctx):
        return {"name": ctx.name}

    def phrase(self, p):
        return f"Highlight the name {p['name']} once with asterisks, like *{p['name']}*."

    def verify(self, p, response):
        return re.search(rf"\*{re.escape(p['name'])}\*", response, re.IGNORECASE) is not None

    def realize(self, p, draft):
        draft.emphasis = p["name"]


@register
class Tone(ConstraintType):
    """A tone, checked by one word that carries it."""

    name, category, slots = "tone", "style", ("tone",)

    def sample(self, rng, ctx):
        tone = rng.choice(sorted(TONES))
        return {"tone": tone, "word": TONES[tone][0]}

    def phrase(self, p):
        return f"Use a {p['tone']} tone with the word '{p['word']}'."

    def verify(self, p, response):
        return re.search(rf"\b{p['word']}\b", response, re.IGNORECASE) is not None

    def realize(self, p, draft):
        draft.additions.append(("text", TONES[p["tone"]][1]))


@register
class ShortSentences(ConstraintType):
    """No sentence has more than ``n`` words (fewer than the current answer's longest)."""

    name, category, slots = "short_sentences", "style", ("sentence_length",)

    def sample(self, rng, ctx):
        longest = max((len(s.split()) for s in sentences(ctx.answer)), default=0)
        return {"n": longest - 1} if longest > 4 else None  # just under the longest, so it bites

    def phrase(self, p):
        return f"Keep every sentence to at most {p['n']} words."

    def verify(self, p, response):
        sents = sentences(response)
        return bool(sents) and all(len(s.split()) <= p["n"] for s in sents)

    def realize(self, p, draft):
        draft.max_sentence_words = p["n"]  # the oracle picks short paraphrases of facts


VOCAB = (START_WORDS, TONES)
