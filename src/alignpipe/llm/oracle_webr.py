"""The oracle's WebR behaviours: rule-based, extractive, on any page (the world's or real web text).

Each function gets the template's fields and returns text in the form the template asks for, so the WebR
pipeline parses oracle and LLM output alike. Random choices come from the request's seed.

- persona: "A writer who publishes web pages about <subject>." (the page's title line, else its first words);
- Web-as-Instruction requests ask for one of three rewrites (bulleted points, N plain sentences, N question /
  answer lines) of the whole text or of one named section, in the persona's voice, within the word limit;
  the response carries the request out on the text (extractive);
- Web-as-Response requests ask about the page's subject (or one section's topic); the rollout answers from
  the world's knowledge base when the request names a KB entity, else it admits it has no details; the
  refinement keeps the rollout's sentences that the page supports and adds the page's relevant sentences;
- with nothing to work from, the answer is a refusal ("I'm sorry, ..."), which the refusal filter drops.
"""

from __future__ import annotations

import random
import re
from typing import Any

from alignpipe.world.kb import KB

REFUSAL = "I'm sorry, but the text does not contain enough information for that."
NO_DETAILS = "I do not have detailed information about {topic}."
_STOP = {"what", "with", "that", "this", "from", "about", "tell", "give", "please", "your", "there", "their",
         "which", "text", "short", "overview", "sentences", "know", "particular", "have", "does", "into"}


def sentences(text: str) -> list[str]:
    """Sentences of prose lines (4+ words, with letters); navigation lines ("a | b | c") are skipped."""
    out = []
    for line in text.splitlines():
        if "|" in line:
            continue
        for s in re.split(r"(?<=[.!?])\s+", line.strip()):
            s = s.strip().lstrip("#*-• ").strip()
            if len(s.split()) >= 4 and re.search(r"[A-Za-z]", s):
                out.append(s if s[-1] in ".!?" else s + ".")
    return out


def subject(web: str) -> str:
    """The page's subject: its first title-like line (1-10 words, no period), else its first six words."""
    for section in web.split("\n\n")[:4]:
        for line in section.splitlines()[:1]:
            line = line.strip().lstrip("#").strip()
            if line and "|" not in line and 1 <= len(line.split()) <= 10 and not line.endswith("."):
                return line
    words = re.sub(r"\s+", " ", web).strip().split()
    return " ".join(words[:6]) or "this topic"


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 4 and w not in _STOP}


PERSONAS = ("A writer who publishes web pages about {s}.", "A local guide who likes to share facts about {s}.",
            "A student collecting notes on {s} for a class.", "A blogger who writes short posts about {s}.")


def persona(f: dict[str, Any], rng: random.Random) -> str:
    return rng.choice(PERSONAS).format(s=subject(f["web"]))


def _voice(author: str) -> str:
    a = author.strip().rstrip(".")
    return f"As {a[0].lower() + a[1:]}, I" if a else "I"


def _focus(web: str, rng: random.Random) -> str | None:
    """The first words of a seeded section that has prose (the 'specific part')."""
    sections = [s for s in web.split("\n\n") if sentences(s)]
    if len(sections) > 2:
        sections = sections[:-1]  # the last block is most often a footer
    if not sections:
        return None
    first = rng.choice(sections).strip().splitlines()[0].lstrip("#").strip()
    return " ".join(first.split()[:6])


def _fit(options: list[str], limit: int) -> str:
    """The first option within the word limit (options go from persona-voiced to plain)."""
    for text in options:
        if len(text.split()) <= limit:
            return text
    return " ".join(options[-1].split()[:limit])


def _scope(web: str, focus: str | None) -> str:
    """The section that begins with ``focus`` (the 'part'), else the whole text."""
    if focus:
        parts = [s for s in web.split("\n\n") if s.strip().lstrip("#").strip().startswith(focus)]
        if parts:
            return parts[0]
    return web


def wi_request(f: dict[str, Any], rng: random.Random, part: bool) -> str:
    focus = _focus(f["web"], rng) if part else None
    available = len(sentences(_scope(f["web"], focus)))
    n = rng.choice([k for k in (2, 3, 4) if k <= available] or [max(available, 1)])
    task = rng.choice(rng.choice((
        (f"need the main points of the text above as a bulleted list of exactly {n} points, one sentence each.",
         f"would like a bulleted list with exactly {n} short points taken from this text.",
         f"want exactly {n} bulleted facts drawn from the page, one per line."),
        (f"need the text above restated in exactly {n} plain sentences that keep its facts.",
         f"would like this page retold in exactly {n} simple sentences for my readers.",
         f"want a plain summary of exactly {n} sentences that keeps every fact it uses."),
        (f"need the text above turned into {n} questions with answers, as lines starting with 'Q:' and 'A:'.",
         f"would like {n} quiz questions with answers from this page, on lines starting with 'Q:' and 'A:'.",
         f"want a study sheet of {n} questions and answers, with lines starting with 'Q:' and 'A:'."),
    )))
    where = f' Use only the part that begins with "{focus}".' if focus else ""
    return _fit([f"{_voice(f['author'])} {task}{where}", f"I {task}{where}"], int(f["len_limit"]))


def wi_response(f: dict[str, Any], rng: random.Random) -> str:
    web, request = f["web"], f["request"]
    m = re.search(r'begins with "(.+?)"', request)
    scope = _scope(web, m.group(1) if m else None)
    n_match = re.search(r"exactly (\d+)|(\d+) (?:quiz )?questions", request)
    n = int(next(g for g in n_match.groups() if g)) if n_match else 3
    sents = sentences(scope)[:n]
    if not sents:
        return REFUSAL
    if "bullet" in request:
        return "\n".join(f"- {s}" for s in sents)
    if "'Q:'" in request:
        topic = subject(web)
        return "\n".join(f"Q: What is point {i} about {topic}?\nA: {s}" for i, s in enumerate(sents, 1))
    return " ".join(sents)


def wr_request(f: dict[str, Any], rng: random.Random, part: bool) -> str:
    topic = subject(f["web"])
    if part:
        scope = _scope(f["web"], _focus(f["web"], rng))
        seen = _words(topic)
        keys = [w for w in re.findall(r"[a-z]+", scope.lower()) if w in _words(w) and not (w in seen or seen.add(w))]
        if keys:
            listed = ", ".join(keys[:3]) if len(keys[:3]) < 3 else f"{keys[0]}, {keys[1]} and {keys[2]}"
            return _fit([f"What can you tell me about {topic}, especially about {listed}?"], int(f["len_limit"]))
    return _fit([f"What can you tell me about {topic}? Please give a short overview in a few sentences."],
                int(f["len_limit"]))


def wr_rollout(f: dict[str, Any], rng: random.Random, kb: KB | None) -> str:
    """An answer without the page: the KB's description of a named entity, else an admission of no details."""
    request = f["request"]
    if kb is not None:
        for e in kb.entities:
            if re.search(rf"\b{re.escape(e.name)}\b", request):
                attrs = kb.attributes(e.id)[:2]
                return " ".join([kb.type_sentence(e.id), *(kb.fact(e.id, a) for a in attrs)])
    m = re.search(r"about (.+?)(?:[?,]|$)", request)
    return NO_DETAILS.format(topic=m.group(1) if m else "that")


def wr_refine(f: dict[str, Any], rng: random.Random) -> str:
    info = sentences(f["web"])
    asked = _words(f["request"])
    relevant = [s for s in info if _words(s) & asked] or info[:3]
    supported = []
    for s in sentences(f["answer"]) or [f["answer"].strip()]:
        if s.startswith(NO_DETAILS.split("{")[0]):
            continue  # the rollout's admission is replaced by what the page says
        w = _words(s)
        if w and any(len(w & _words(i)) >= 0.6 * len(w) for i in info):
            supported.append(s)
    merged = supported + [s for s in relevant if s not in supported]
    return " ".join(merged[:5]) if merged else "I'm sorry, but the provided information does not answer the question."


def respond(name: str, f: dict[str, Any], rng: random.Random, kb: KB | None) -> str | None:
    """The WebR template ``name``'s answer, or None if ``name`` is not a WebR template."""
    if name.endswith("_nopersona"):  # the ablation's templates: the same behaviour with no author
        name, f = name.removesuffix("_nopersona"), {**f, "author": ""}
    table = {
        "webr_persona": lambda: persona(f, rng),
        "webr_wi_all": lambda: wi_request(f, rng, part=False),
        "webr_wi_part": lambda: wi_request(f, rng, part=True),
        "webr_wr_all": lambda: wr_request(f, rng, part=False),
        "webr_wr_part": lambda: wr_request(f, rng, part=True),
        "webr_wi_response": lambda: wi_response(f, rng),
        "webr_wr_rollout": lambda: wr_rollout(f, rng, kb),
        "webr_wr_refine": lambda: wr_refine(f, rng),
    }
    return table[name]() if name in table else None
