"""The rule-based judge: oracle answers score high; wrong facts, loops, repeats and truncation score lower."""

from __future__ import annotations

import random
import statistics

import pytest

from alignpipe.world.judge import NEUTRAL


def test_oracle_answers_score_at_least_8(world, judge, records):
    low = []
    for r in records:
        s = judge.score(r, world.answers[r["id"]])
        assert set(s) == {"fluency", "factuality", "coherence"}
        if min(s.values()) < 8:
            low.append((r["id"], s))
    assert low == []


def _mean_scores(world, judge, oracle, kind, step=7):
    rng = random.Random(3)
    recs = world.eval[::step]
    scores = [judge.score(r, oracle.wrong(r, kind, rng)) for r in recs]
    good = [judge.score(r, world.answers[r["id"]]) for r in recs]
    return ({k: statistics.mean(s[k] for s in scores) for k in scores[0]},
            {k: statistics.mean(s[k] for s in good) for k in good[0]})


def test_wrong_facts_lower_factuality(world, judge, oracle):
    bad, good = _mean_scores(world, judge, oracle, "wrong_fact")
    assert bad["factuality"] <= good["factuality"] - 3


def test_contradiction_lowers_coherence(world, judge, oracle):
    bad, good = _mean_scores(world, judge, oracle, "contradiction")
    assert bad["coherence"] <= good["coherence"] - 2 and bad["factuality"] < good["factuality"]


@pytest.mark.parametrize("kind", ["repeat", "loop"])
def test_repetition_lowers_coherence_and_fluency(world, judge, oracle, kind):
    bad, good = _mean_scores(world, judge, oracle, kind)
    assert bad["coherence"] <= good["coherence"] - 4
    if kind == "repeat":
        assert bad["fluency"] <= good["fluency"] - 2


@pytest.mark.parametrize("kind", ["off_topic", "truncate"])
def test_off_topic_and_truncated_lower_coherence(world, judge, oracle, kind):
    bad, good = _mean_scores(world, judge, oracle, kind)
    assert bad["coherence"] <= good["coherence"] - 2


def test_specific_cases(world, judge):
    kb = world.kb
    city = kb.of_type("city")[0]
    record = {"id": "t-L0", "family": "describe", "entity_ids": [city.id], "constraints": [],
              "task": {"attributes": ["founded", "region"]}}
    founded, region = kb.value(city.id, "founded"), kb.value(city.id, "region")
    true = f"{city.name} was founded in {founded}. {city.name} lies in the {region}."
    assert judge.score(record, true) == {"fluency": 10.0, "factuality": 10.0, "coherence": 10.0}
    wrong = true.replace(founded, "1")
    assert judge.score(record, wrong)["factuality"] == 5.5
    assert judge.score(record, f"I do not know about {city.name}.")["factuality"] == NEUTRAL  # no claim
    assert judge.score(record, "")["fluency"] == 1.0
    garbled = f"{city.name} wsa foundded founded in in 12o3."
    assert judge.score(record, garbled)["fluency"] <= 6
    assert judge.score(record, true.lower())["fluency"] < 10  # sentences should start with a capital
    both = true + f" {city.name} dates from 1."
    assert judge.score(record, both)["coherence"] <= 7
