"""Knowledge-editing metrics on generated answers: edit success, portability, locality, fluency.

- :func:`contains_answer`: an answer counts as correct when one of the gold answers occurs in it as a whole
  word sequence after normalization (lower case, punctuation to spaces). Edit success (``prompt``),
  generalization (``rephrase``) and portability use it against the new target / the portability answers.
- :func:`agreement`: locality compares the edited system's answer with the unedited model's answer to the
  same bare question, word by word (EasyEdit compares post- with pre-edit outputs token by token, not with the
  gold answer: a locality failure is a change the edit caused, not a fact the model never knew).
- :func:`ngram_entropy`: fluency as EasyEdit computes it (``compute_n_gram_entropy``): for n = 2 and 3 the
  entropy (bits) of the n-gram frequency distribution of one text, weighted 2/3 and 4/3, averaged over the
  two n; :func:`fluency` averages that over texts (``agg="arith"``). EasyEdit tokenizes with
  ``nltk.word_tokenize``; here words and punctuation marks are split by a regex (no nltk data offline).

EasyEdit scores KnowEdit by teacher-forced token accuracy; LTE's answers here are greedy generations, so the
generation-based checks above replace it (see docs/architecture.md, "LTE").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, every run of non-word characters to one space, stripped."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def contains_answer(response: str, answers: Sequence[str]) -> bool:
    """True when a (normalized) gold answer occurs in the (normalized) response on word boundaries."""
    padded = f" {normalize(response)} "
    return any(norm and f" {norm} " in padded for norm in (normalize(a) for a in answers))


def same_answer(response: str, reference: str) -> bool:
    """True when the two answers are equal after normalization."""
    return normalize(response) == normalize(reference)


def agreement(response: str, reference: str) -> float:
    """Share of word positions where the two (normalized) answers agree, over the longer one's length.

    EasyEdit's locality is the share of answer tokens on which the edited and the unedited model agree; this is
    the same comparison on the two greedy answers' words (1.0 = unchanged; both empty = unchanged).
    """
    a, b = normalize(response).split(), normalize(reference).split()
    if not a and not b:
        return 1.0
    return sum(x == y for x, y in zip(a, b)) / max(len(a), len(b))


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """EasyEdit's ``compute_n_gram_entropy`` of one text: mean over n of weight_n * H(n-gram distribution).

    A text shorter than n words contributes entropy 0 for that n (EasyEdit: an empty distribution).
    """
    tokens = _TOKEN.findall(text)
    values = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        values.append(w * h)
    return sum(values) / len(values)


def fluency(texts: Sequence[str]) -> float:
    """Mean n-gram entropy over ``texts`` (EasyEdit's ``n_gram_entropy(..., agg="arith")``); nan when none."""
    return sum(ngram_entropy(t) for t in texts) / len(texts) if texts else math.nan


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean, nan for an empty sequence (a metric with nothing to measure)."""
    return sum(values) / len(values) if values else math.nan
