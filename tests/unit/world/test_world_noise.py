"""The annotator's habits in the SFT demonstrations: each kind of error is one the world's own rules see, it is
systematic (the same error at each chance, so a greedy policy can learn it), and nothing else changes."""

from __future__ import annotations

import random
import re

import pytest

from alignpipe.config import WorldSection
from alignpipe.evaluate.metrics import error_rates
from alignpipe.world import build_world, verify
from alignpipe.world.noise import KINDS, NoisyAnnotator, draw_habits

SMALL = dict(n_entities=16, train_groups_per_category=4, eval_groups_per_category=2, corpus_paraphrases=2)


def test_no_noise_gives_the_oracles_answers():
    w = build_world(3, WorldSection(**SMALL))
    assert all(w.demos[r["id"]] == w.answers[r["id"]] for r in w.train)
    assert all(row["noise"] == [] for row in w.sft_rows())
    assert w.metrics()["demo_noise"]["clean"] == 1.0 and "habits" not in w.metrics()["demo_noise"]


@pytest.fixture(scope="module")
def sample(world):
    return world.train[::5][:200]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_an_error_the_world_sees_and_changes_nothing_else(world, oracle, judge, sample, kind):
    answers = {r["id"]: world.answers[r["id"]] for r in sample}
    habits = draw_habits(world.kb, oracle, judge, sample, answers, {kind: 0.5}, 1.0, random.Random(0))
    annotator = NoisyAnnotator(oracle, judge, habits)
    made = 0
    for r in sample:
        clean = answers[r["id"]]
        text, realized = annotator.answer(r, random.Random(r["id"]), clean=clean)
        if not realized:
            assert text == clean
            continue
        assert realized == [kind]
        made += 1
        got, want = verify(r, text), verify(r, clean)
        before, after = judge.errors(r, clean), judge.errors(r, text)
        assert not any(before.values())  # the oracle's answers hold no error of any kind
        if kind == "constraints":
            assert not all(got) and all(g for g, c in zip(got, r["constraints"]) if c["type"] not in habits.skimmed)
            assert not any(after.values())
        else:
            assert got == want
            assert after[kind] and not any(v for k, v in after.items() if k != kind)  # the kinds stay apart
    # a habit reaches half the records at consistency 1; it fails to act only where it cannot (an answer
    # template has no sentence to repeat, a "use the word" constraint keeps its word)
    assert 0.35 * len(sample) <= made <= 0.75 * len(sample), (kind, made, len(sample))


def test_careless_writing_is_a_fluency_error_in_every_sentence_and_changes_nothing_else(world, oracle, judge,
                                                                                       sample):
    answers = {r["id"]: world.answers[r["id"]] for r in sample}
    habits = draw_habits(world.kb, oracle, judge, sample, answers, {"careless": 0.5}, 1.0, random.Random(0))
    assert habits.careless and not (habits.misspell or habits.padding or habits.misconceptions or habits.skimmed)
    annotator = NoisyAnnotator(oracle, judge, habits)
    made = lowered = 0
    for r in sample:
        clean = answers[r["id"]]
        text, realized = annotator.answer(r, random.Random(r["id"]), clean=clean)
        careless = bool(r.get("entity_ids")) and r["entity_ids"][0] in habits.careless
        if not realized:
            assert text == clean
            continue
        assert careless and realized == ["fluency"]  # only answers about a careless entity, as a fluency error
        made += 1
        assert verify(r, text) == verify(r, clean)
        before, after = judge.score(r, clean), judge.score(r, text)
        assert after["factuality"] == before["factuality"] and after["coherence"] == before["coherence"]
        assert judge.errors(r, text) == {"fluency": True, "coherence": False, "factuality": False}
        # every sentence end has its space: the register is in every sentence, not in one word
        assert not re.search(r"[A-Za-z0-9][.!?](\s|$)", text), text
        assert before["fluency"] - after["fluency"] >= 1.0
        lowered += not re.search(r"(^|[.!?]\s+)[A-Z][a-z]", text)
    assert 0.25 * len(sample) <= made <= 0.75 * len(sample), (made, len(sample))
    # the lower case is dropped only where it would change a verdict or another dimension (a case constraint)
    assert lowered >= 0.6 * made, (lowered, made)


def test_habits_are_systematic(world, oracle, judge, sample):
    answers = {r["id"]: world.answers[r["id"]] for r in sample}
    habits = draw_habits(world.kb, oracle, judge, sample, answers, {"fluency": 0.4, "factuality": 0.4}, 1.0,
                         random.Random(0))
    annotator = NoisyAnnotator(oracle, judge, habits)
    made = [annotator.answer(r, random.Random(r["id"]), clean=answers[r["id"]]) for r in sample]
    demos = [d for d, _ in made]
    for word, typo in habits.misspell.items():  # at consistency 1 a misspelt word is never written right
        assert not any(re.search(rf"\b{word}\b", d) for d, r in zip(demos, sample)
                       if not any(word in str(c["params"]).lower() for c in r["constraints"]))
        assert typo not in judge.vocab
    # (a word may appear only where a constraint names it, and then it is kept: most typos are written)
    assert sum(any(t in d for d in demos) for t in habits.misspell.values()) >= 0.7 * len(habits.misspell)
    wrong = [(e, a, v) for (e, a), v in habits.misconceptions.items()]
    for (d, kinds), r in zip(made, sample):  # a misconception is the only value an answer gives for its fact
        if "factuality" not in kinds:
            continue  # no plan could state the fact wrongly and keep the verdicts: the demonstration is clean
        for eid, attr, value, ok in judge.claims(d):
            if (eid, attr) in habits.misconceptions:
                assert value == habits.misconceptions[(eid, attr)].lower() and not ok
    assert wrong


def test_rates_reach_the_demonstrations_and_are_reported():
    rates = {"fluency": 0.5, "coherence": 0.0, "factuality": 0.3, "constraints": 0.4, "careless": 0.2}
    cfg = WorldSection(**SMALL, demo_noise={**rates, "consistency": 0.8})
    w = build_world(3, cfg)
    noise = w.metrics()["demo_noise"]
    assert noise["rates"] == rates and noise["acted"]["coherence"] == 0.0
    for kind in ("fluency", "factuality", "constraints"):  # reach x consistency, within sampling noise
        assert 0.5 * rates[kind] * 0.8 <= noise["acted"][kind] <= 1.4 * rates[kind], (kind, noise)
        assert noise["demo_errors"][kind] >= 0.8 * noise["acted"][kind]
    assert noise["oracle_errors"] == {k: 0.0 for k in KINDS}
    assert set(noise["habits"]) == {"consistency", "misspelt_words", "padded_entities", "misconceptions",
                                    "skimmed_constraint_types", "careless_entities"}
    rows = {row["id"]: row for row in w.sft_rows()}
    for r in w.train:
        assert (rows[r["id"]]["completion"][0]["content"] == w.answers[r["id"]]) == (rows[r["id"]]["noise"] == [])
    again = build_world(3, cfg)  # still a function of (seed, cfg)
    assert again.demos == w.demos and again.noise == w.noise
    assert all(w.answers[r["id"]] == again.answers[r["id"]] for r in w.eval)


def test_error_rates_count_responses_with_an_error_of_each_kind():
    rows = [{"errors": {"fluency": True, "coherence": False, "factuality": False}, "verdicts": [True, False]},
            {"errors": {"fluency": False, "coherence": False, "factuality": True}, "verdicts": [True]},
            {"errors": {"fluency": True, "coherence": True, "factuality": False}, "verdicts": []},
            {"errors": {"fluency": False, "coherence": False, "factuality": False}, "verdicts": [True, True]}]
    est = error_rates(rows, n_resamples=200, seed=0)
    assert est["error_fluency"].point == 0.5 and est["error_coherence"].point == 0.25
    assert est["error_factuality"].point == 0.25 and est["error_constraints"].point == 0.25
    assert est["error_fluency"].lo <= 0.5 <= est["error_fluency"].hi


def test_judge_errors_of_an_empty_and_a_wrong_answer(world, oracle, judge):
    r = next(r for r in world.eval if r["family"] == "ask" and r["level"] == 1)
    assert all(judge.errors(r, "  ").values())
    wrong = oracle.wrong(r, "wrong_fact", random.Random(0))
    assert judge.errors(r, wrong)["factuality"]
    assert not judge.errors(r, world.answers[r["id"]])["factuality"]
