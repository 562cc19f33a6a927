"""The noisy annotator of the SFT demonstrations: each kind of error is one the world's own rules see, and
nothing else changes."""

from __future__ import annotations

import random

import pytest

from alignpipe.config import WorldSection
from alignpipe.evaluate.metrics import error_rates
from alignpipe.world import build_world, verify
from alignpipe.world.noise import KINDS, NoisyAnnotator

SMALL = dict(n_entities=16, train_groups_per_category=4, eval_groups_per_category=2, corpus_paraphrases=2)


def test_no_noise_gives_the_oracles_answers():
    w = build_world(3, WorldSection(**SMALL))
    assert all(w.demos[r["id"]] == w.answers[r["id"]] for r in w.train)
    assert all(row["noise"] == [] for row in w.sft_rows())
    assert w.metrics()["demo_noise"]["clean"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_an_error_the_world_sees_and_changes_nothing_else(world, oracle, judge, kind):
    annotator = NoisyAnnotator(oracle, judge)
    records = world.train[::7][:120]
    made = 0
    for r in records:
        clean = world.answers[r["id"]]
        text, realized = annotator.answer(r, {kind}, random.Random(r["id"]), clean=clean)
        if not realized:
            assert text == clean
            continue
        assert realized == [kind]
        made += 1
        got, want = verify(r, text), verify(r, clean)
        if kind == "constraints":
            assert sum(g != w for g, w in zip(got, want)) == 1 and not all(got)
        else:
            assert got == want
        err, before = judge.errors(r, text), judge.errors(r, clean)
        assert not any(before.values())  # the oracle's answers hold no error of any kind
        if kind != "constraints":
            assert err[kind]
            if kind == "fluency":
                assert judge.score(r, text)["fluency"] < judge.score(r, clean)["fluency"]
    # Injection fails only where a kind cannot exist (a level-0 record has no constraint to ignore, an answer
    # template has no sentence to repeat): most records take every kind.
    assert made >= 0.6 * len(records), (kind, made, len(records))


def test_rates_are_drawn_per_record_and_reported(tmp_path):
    rates = {"fluency": 0.5, "coherence": 0.0, "factuality": 0.25, "constraints": 1.0}
    w = build_world(3, WorldSection(**SMALL, demo_noise=rates))
    noise = w.metrics()["demo_noise"]
    assert noise["rates"] == rates
    assert noise["realized"]["coherence"] == 0.0
    assert 0.3 < noise["realized"]["fluency"] < 0.6
    assert 0.1 < noise["realized"]["factuality"] < 0.35
    # every record with constraints ignores one; level-0 records have none to ignore
    with_constraints = [r for r in w.train if r["constraints"]]
    assert noise["realized"]["constraints"] >= 0.9 * len(with_constraints) / len(w.train)
    rows = {row["id"]: row for row in w.sft_rows()}
    for r in w.train:
        assert (rows[r["id"]]["completion"][0]["content"] == w.answers[r["id"]]) == (rows[r["id"]]["noise"] == [])
    # the pretraining dialogues are the demonstrations, and the world is still a function of (seed, cfg)
    first = next(r for r in w.train if rows[r["id"]]["noise"])
    assert rows[first["id"]]["completion"][0]["content"] in w.corpus or not w.cfg.corpus_instruction_copies
    again = build_world(3, WorldSection(**SMALL, demo_noise=rates))
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
