"""The oracle satisfies every constraint; corruptions break exactly the chosen ones; wrong answers look wrong."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from alignpipe.world import Oracle, verify
from alignpipe.world.oracle import WRONG_KINDS


def test_oracle_passes_every_verifier_on_all_records(world, records):
    oracle = Oracle(world.kb)  # a fresh oracle, answering from the records alone
    assert len(records) >= 1000
    assert {(r["category"], r["level"]) for r in records} == {
        (c, lv) for c in ("content", "situation", "style", "format", "example", "mixed") for lv in range(6)}
    failures = [r["id"] for r in records if not all(verify(r, oracle.answer(r)))]
    assert failures == []


def test_oracle_matches_cached_answers_and_stays_short(world, records):
    oracle = Oracle(world.kb)
    for r in records[::37]:
        assert oracle.answer(r) == world.answers[r["id"]]
    lengths = [len(world.answers[r["id"]].split()) for r in records]
    assert max(lengths) <= 90 and 12 <= sum(lengths) / len(lengths) <= 40


def test_corrupt_violates_the_chosen_constraints(world, oracle, records):
    rng = random.Random(0)
    exact = total = 0
    for r in [r for r in records if r["level"] > 0][::3]:
        n = len(r["constraints"])
        violate = sorted(rng.sample(range(n), rng.randint(1, min(2, n))))
        got = verify(r, oracle.corrupt(r, violate, rng))
        assert not any(got[i] for i in violate), (r["id"], violate, got)
        total += 1
        exact += all(got[i] for i in range(n) if i not in violate)
    assert exact / total >= 0.9  # the others still hold, except where breaking one forces another


@pytest.mark.parametrize("category", ["content", "situation", "style", "format", "example", "mixed"])
def test_every_single_constraint_can_be_broken_alone(world, oracle, category):
    rng = random.Random(1)
    recs = [r for r in world.eval if r["category"] == category and r["level"] == 5]
    broken = Counter()
    for r in recs:
        for i in range(5):
            got = verify(r, oracle.corrupt(r, [i], rng))
            assert got[i] is False
            broken[sum(not g for g in got)] += 1
    assert broken[1] / sum(broken.values()) >= 0.85, broken


def test_corrupt_rejects_bad_indices(oracle, records):
    r = next(r for r in records if r["level"] == 2)
    with pytest.raises(ValueError, match="out of range"):
        oracle.corrupt(r, [2], random.Random(0))


@pytest.mark.parametrize("kind", WRONG_KINDS)
def test_wrong_answers_differ_from_the_oracle(world, oracle, kind):
    rng = random.Random(2)
    for r in world.eval[::17]:
        assert oracle.wrong(r, kind, rng) != world.answers[r["id"]]
    with pytest.raises(ValueError, match="unknown wrong-answer kind"):
        oracle.wrong(world.eval[0], "nonsense", rng)
