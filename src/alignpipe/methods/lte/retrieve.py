"""The edit memory: stored edit facts retrieved by BM25 similarity to a query (LTE's inference phase).

LTE retrieves the top-k stored facts by sentence-embedding similarity (``all-MiniLM``/``paraphrase-MiniLM``
from the hub). Here the retriever is BM25 (``rank-bm25``'s ``BM25Plus``): it needs no weights, so the default
run stays offline, and it is the lexical retriever the issue allows. ``BM25Plus`` rather than ``BM25Okapi``
because Okapi's idf is zero or negative for a term in half the documents or more, which makes every score 0 on
the one- and two-fact stores that sequential editing starts from; BM25+'s idf ``log((N + 1) / df)`` is positive.

Usage::

    store = EditStore(["Velmora lies in the south.", "Drava flows through Kesk."])
    store.search("In which region does Velmora lie?", k=1)      # [0]
    store.search_many(queries, k=2)                              # one list of indices per query
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rank_bm25 import BM25Plus

_WORD = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore; any script)."""
    return _WORD.findall(text.lower())


class EditStore:
    """A fixed set of edit facts with a BM25+ index; ties are broken by store order (deterministic)."""

    def __init__(self, facts: Sequence[str]):
        if not facts:
            raise ValueError("an edit store needs at least one fact")
        self.facts = list(facts)
        # BM25Plus needs a non-empty token list per document; a fact without word characters gets a dummy one.
        self._bm25 = BM25Plus([tokenize(f) or ["<empty>"] for f in self.facts])

    def __len__(self) -> int:
        return len(self.facts)

    def scores(self, query: str) -> list[float]:
        """BM25+ score of every stored fact for ``query``."""
        return [float(s) for s in self._bm25.get_scores(tokenize(query))]

    def search(self, query: str, k: int = 1, exclude: set[int] | None = None) -> list[int]:
        """Indices of the ``k`` best facts for ``query``, best first (fewer when the store is smaller)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.scores(query)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [i for i in order if not exclude or i not in exclude][:k]

    def search_many(self, queries: Sequence[str], k: int = 1) -> list[list[int]]:
        """:meth:`search` for each query."""
        return [self.search(q, k) for q in queries]
