"""Preference labelling and pairing: hand-computed scores, margin filter, cap, identical texts."""

import pytest

from alignpipe.prefs.pairs import Candidate, PairStats, build_pairs, pair_row
from alignpipe.world.score import response_score

J10 = {"fluency": 10.0, "factuality": 10.0, "coherence": 10.0}
J1 = {"fluency": 1.0, "factuality": 1.0, "coherence": 1.0}


def test_response_score_hand_computed():
    # 2 of 4 constraints, judge mean 7 -> 0.7 * 0.5 + 0.3 * (7 - 1) / 9 = 0.35 + 0.2 = 0.55
    judge = {"fluency": 6.0, "factuality": 7.0, "coherence": 8.0}
    assert response_score([True, False, True, False], judge, 0.3) == pytest.approx(0.55)
    assert response_score([True], J10, 0.3) == pytest.approx(1.0)
    assert response_score([False], J1, 0.3) == pytest.approx(0.0)
    # level 0: the judge alone, rescaled
    assert response_score([], judge, 0.3) == pytest.approx(6 / 9, abs=1e-6)


def test_pairs_margin_cap_and_order():
    c = [Candidate("a", 0.9, "policy"), Candidate("b", 0.5, "policy"), Candidate("c", 0.48, "policy"),
         Candidate("d", 0.1, "oracle")]
    stats = PairStats()
    pairs = build_pairs(c, max_pairs=3, min_margin=0.05, stats=stats)
    got = [(a.text, b.text) for a, b in pairs]
    # margins: a-d .8, b-d .4, c-d .38, a-c .42, a-b .4 ; b-c .02 is below the margin
    assert got == [("a", "d"), ("a", "c"), ("a", "b")]
    assert stats.below_margin == 1 and stats.over_cap == 2


def test_identical_texts_never_pair():
    c = [Candidate("same", 0.9, "oracle"), Candidate(" same ", 0.2, "policy"), Candidate("other", 0.1, "policy")]
    stats = PairStats()
    pairs = build_pairs(c, max_pairs=5, min_margin=0.05, stats=stats)
    assert stats.identical == 1
    assert all(a.text.strip() != b.text.strip() for a, b in pairs)
    assert [(a.text, b.text) for a, b in pairs] == [("same", "other")]


def test_no_pair_when_all_equal():
    stats = PairStats()
    assert build_pairs([Candidate("x", 0.5, "p"), Candidate("y", 0.5, "p")], 5, 0.05, stats) == []
    assert stats.no_pair == 1


def test_pair_row_is_trl_conversational():
    rec = {"id": "content-0009-L2", "instruction": "Describe Velmora.", "category": "content", "level": 2}
    row = pair_row(rec, Candidate("good", 0.8, "oracle"), Candidate("bad", 0.2, "policy"), 0)
    assert row["prompt"] == [{"role": "user", "content": "Describe Velmora."}]
    assert row["chosen"] == [{"role": "assistant", "content": "good"}]
    assert row["rejected"] == [{"role": "assistant", "content": "bad"}]
    assert row["margin"] == pytest.approx(0.6) and row["id"] == "content-0009-L2-p0"
