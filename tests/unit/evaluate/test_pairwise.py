"""Pairwise win/tie/loss counts against hand-counted cases."""

import pytest

from alignpipe.evaluate.pairwise import pairwise


def _row(i, f, fa, c):
    return {"id": f"r{i}", "judge": {"fluency": f, "factuality": fa, "coherence": c}}


def test_counts_by_dimension():
    a = [_row(0, 9, 5, 5), _row(1, 5, 5, 9), _row(2, 5, 5.2, 5), _row(3, 1, 1, 1)]
    b = [_row(0, 5, 5, 5), _row(1, 9, 5, 5), _row(2, 5, 5, 5)]  # r3 has no counterpart: ignored
    out = pairwise(a, b, tie_margin=0.5)
    assert out["fluency"] == {"win": 1, "tie": 1, "loss": 1, "n": 3}
    assert out["factuality"] == {"win": 0, "tie": 3, "loss": 0, "n": 3}
    assert out["coherence"] == {"win": 1, "tie": 2, "loss": 0, "n": 3}


def test_disjoint_sets_fail():
    with pytest.raises(ValueError, match="share no prompt"):
        pairwise([_row(0, 1, 1, 1)], [_row(1, 1, 1, 1)])
