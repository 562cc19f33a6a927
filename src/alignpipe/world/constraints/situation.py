"""Situation constraints: a role, a reader or a scenario that shapes how the answer opens, speaks and closes."""

from __future__ import annotations

import re

from alignpipe.world.constraints.base import ConstraintType, ending, has_phrase, last_line, register, sentences

# All fixed phrases are comma-free so that "no commas" never contradicts them.
GREETINGS = (("a tour guide", "Welcome to the tour!"), ("a teacher", "Good morning class!"),
             ("a storyteller", "Gather round my friends!"), ("a town crier", "Hear this news!"))
READERS = ("Mira", "Oskar", "Anya")
WRITERS = ("Tomas", "Lena", "Bruno")
SIGN_OFFS = ("Written by {w}", "With best wishes from {w}", "Sent by {w}")
WISHES = (("The reader is about to go on a trip.", "trip"), ("It is evening for the reader.", "evening"),
          ("The reader starts a new week today.", "week"), ("The reader has a weekend off.", "weekend"))
PLACES = ("a small boat", "a mountain hut", "a busy market", "an old library")
LINES = {"address_reader": "Thank you for asking, {reader}.", "assume_year": "It is now the year {year}.",
         "end_with_question": "Would you like to know more about {name}?", "wish": "Have a good {what}.",
         "writing_place": "I am writing this from {place}."}
# role -> (words the verifier looks for, the oracle's sentence)
ROLE_LINES = {"a sailor": ("at sea", "I learned this at sea."),
              "a knight": ("upon my honor", "I swear it upon my honor."),
              "a farmer": ("in my fields", "I heard this in my fields."),
              "a baker": ("in my bakery", "I tell this to everyone in my bakery.")}


def _letters_start(text: str) -> str:
    return re.sub(r"^[^A-Za-z]+", "", text.strip())


@register
class RoleGreeting(ConstraintType):
    """The speaker has a role and the answer opens with its greeting."""

    name, category, slots = "role_greeting", "situation", ("start", "role")

    def sample(self, rng, ctx):
        role, greeting = rng.choice(GREETINGS)
        return {"role": role, "greeting": greeting}

    def phrase(self, p):
        return f"You are {p['role']}. Begin with '{p['greeting']}'"

    def verify(self, p, response):
        # Leading list markers or quotes do not count: the greeting is the first text the reader sees.
        return _letters_start(response).lower().startswith(p["greeting"].lower())

    def realize(self, p, draft):
        draft.head.append(p["greeting"])


@register
class AddressReader(ConstraintType):
    """The answer thanks the reader by name."""

    name, category, slots = "address_reader", "situation", ("reader",)

    def sample(self, rng, ctx):
        return {"reader": rng.choice(READERS)}

    def phrase(self, p):
        return f"You are answering a letter from {p['reader']}. Thank {p['reader']} by name."

    def verify(self, p, response):
        return has_phrase(response, p["reader"]) and has_phrase(response, "thank")

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["address_reader"].format(**p)))


@register
class SignOff(ConstraintType):
    """The last line is a sign-off (list markers before it and ``.``/``!`` after it are allowed)."""

    name, category, slots = "sign_off", "situation", ("end",)

    def sample(self, rng, ctx):
        writer = rng.choice(WRITERS)
        return {"writer": writer, "line": rng.choice(SIGN_OFFS).format(w=writer)}

    def phrase(self, p):
        return f"You are {p['writer']}. Sign the answer with '{p['line']}' on its own last line."

    def verify(self, p, response):
        # List markers before it and end punctuation after it are allowed; the words must match exactly.
        line = _letters_start(last_line(response)).rstrip(".!")
        return line.lower() == p["line"].lower()

    def realize(self, p, draft):
        draft.lines.append(p["line"])


@register
class AssumeYear(ConstraintType):
    """A hypothetical year is stated."""

    name, category, slots = "assume_year", "situation", ("year",)

    def sample(self, rng, ctx):
        return {"year": rng.randint(2100, 2400)}

    def phrase(self, p):
        return f"Imagine that it is the year {p['year']}. Say which year it is."

    def verify(self, p, response):
        return re.search(rf"(?<!\d){p['year']}(?!\d)", response) is not None

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["assume_year"].format(**p)))


@register
class RolePhrase(ConstraintType):
    """The speaker has a role and uses its words."""

    name, category, slots = "role_phrase", "situation", ("role",)

    def sample(self, rng, ctx):
        role = rng.choice(sorted(ROLE_LINES))
        return {"role": role, "words": ROLE_LINES[role][0]}

    def phrase(self, p):
        return f"You are {p['role']}. Use the words '{p['words']}'."

    def verify(self, p, response):
        return has_phrase(response, p["words"])

    def realize(self, p, draft):
        draft.additions.append(("text", ROLE_LINES[p["role"]][1]))


@register
class EndWithQuestion(ConstraintType):
    """The last sentence is a question."""

    name, category, slots = "end_with_question", "situation", ("end", "terminal")

    def sample(self, rng, ctx):
        return {"name": ctx.name}

    def phrase(self, p):
        return "You are talking with a curious child. End your answer with a question to the child."

    def verify(self, p, response):
        sents = sentences(response)
        return bool(sents) and ending(sents[-1]).endswith("?")

    def realize(self, p, draft):
        draft.tail.append(LINES["end_with_question"].format(**p))



@register
class Wish(ConstraintType):
    """The answer wishes the reader a good trip, evening, week or weekend."""

    name, category, slots = "wish", "situation", ("wish",)

    def sample(self, rng, ctx):
        scene, what = rng.choice(WISHES)
        return {"scene": scene, "what": what}

    def phrase(self, p):
        return f"{p['scene']} Wish them a good {p['what']}."

    def verify(self, p, response):
        return has_phrase(response, f"good {p['what']}")

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["wish"].format(**p)))


@register
class WritingPlace(ConstraintType):
    """The answer says where the writer is."""

    name, category, slots = "writing_place", "situation", ("place",)

    def sample(self, rng, ctx):
        return {"place": rng.choice(PLACES)}

    def phrase(self, p):
        return f"You are writing from {p['place']}. Say where you are."

    def verify(self, p, response):
        return has_phrase(response, p["place"].split(" ", 1)[1])

    def realize(self, p, draft):
        draft.additions.append(("text", LINES["writing_place"].format(**p)))


VOCAB = (GREETINGS, READERS, WRITERS, SIGN_OFFS, ROLE_LINES, LINES, WISHES, PLACES)
