"""LLM-as-judge of alignment quality (Hierarchical Alignment's fluency / factuality / coherence): pointwise scores
and swapped pairwise comparisons through roles.judge; parsing, the swap/tie rule, and parity of the oracle backend
with the world's Judge (so the default numbers do not move)."""

from __future__ import annotations

import pytest

from alignpipe.config import EvaluateSection, WorldSection, validate_params
from alignpipe.stages import evaluate as stage
from alignpipe.evaluate.pairwise import judged_pairwise, pairwise
from alignpipe.llm import RoleClient, build_roles
from alignpipe.llm.parse import pairwise_verdicts
from alignpipe.llm.roles import Judge, swap_outcome
from alignpipe.world import Judge as WorldJudge
from alignpipe.world import Oracle, build_world


@pytest.mark.parametrize("text, expected", [
    ("Fluency: A\nFactuality: B\nCoherence: TIE", {"fluency": "A", "factuality": "B", "coherence": "tie"}),
    ("Some reasoning first.\n**Coherence**: tie\nfluency: Response B\nFactuality: a.",
     {"fluency": "B", "factuality": "A", "coherence": "tie"}),
    ("Fluency: A\nFactuality: B\nCoherence: B\nFluency: B", {"fluency": "A", "factuality": "B", "coherence": "B"}),
])
def test_pairwise_verdicts_well_formed(text, expected):
    assert pairwise_verdicts(text) == expected


@pytest.mark.parametrize("text", [
    "", "Fluency: A\nFactuality: B", "Fluency: A\nFactuality: C\nCoherence: A", "A is better overall.",
    "Fluency: both\nFactuality: A\nCoherence: A",
])
def test_pairwise_verdicts_malformed(text):
    assert pairwise_verdicts(text) is None


@pytest.mark.parametrize("first, second, outcome", [
    ("A", "B", "win"),    # a preferred shown first, and preferred shown second
    ("B", "A", "loss"),   # b preferred in both orders
    ("A", "A", "tie"),    # the first position wins both times: position bias, no preference
    ("B", "B", "tie"),
    ("tie", "B", "tie"), ("A", "tie", "tie"), ("tie", "tie", "tie"),
])
def test_swap_outcome(first, second, outcome):
    assert swap_outcome(first, second) == outcome


def _judge(scripted, script) -> Judge:
    return Judge("judge", RoleClient("judge", scripted(script), None), 0.0, 64, seed=1)


def test_compare_swapped_position_bias_ties_and_unparseable(scripted):
    # A judge preferring "good" on fluency whatever its position, always picking position A on factuality,
    # and unable to answer about the pair whose instruction is "bad".
    def script(r):
        if r.fields["instruction"] == "bad":
            return "no idea"
        flu = "A" if r.fields["response_a"] == "good" else "B"
        return f"Fluency: {flu}\nFactuality: A\nCoherence: TIE"

    judge = _judge(scripted, script)
    out = judge.compare_swapped(["q1", "q2", "bad"], ["good", "meh", "good"], ["meh", "good", "meh"])
    assert out[0]["outcome"] == {"fluency": "win", "factuality": "tie", "coherence": "tie"}
    assert out[1]["outcome"] == {"fluency": "loss", "factuality": "tie", "coherence": "tie"}
    assert out[2]["outcome"] is None and out[2]["raw"] == ["no idea", "no idea"]
    assert judge.stats.unparseable == 2 and judge.stats.calls == 6

    counts, artifacts = judged_pairwise(judge, [{"id": i, "instruction": q, "response": a} for i, q, a in
                                                [(1, "q1", "good"), (2, "q2", "meh"), (3, "bad", "good")]],
                                        [{"id": i, "response": b} for i, b in [(1, "meh"), (2, "good"), (3, "meh")]])
    assert counts["fluency"] == {"win": 1, "tie": 0, "loss": 1, "n": 2, "unparseable": 1}
    assert counts["factuality"] == {"win": 0, "tie": 2, "loss": 0, "n": 2, "unparseable": 1}
    assert [a["id"] for a in artifacts] == [1, 2, 3] and artifacts[0]["raw"][0].startswith("Fluency: A")


@pytest.fixture(scope="module")
def world():
    return build_world(7, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1,
                                       corpus_paraphrases=1))


def _responses(world, recs):
    oracle = Oracle(world.kb)
    good = [oracle.answer(r) for r in recs]
    bare = [world.kb.name(r["entity_ids"][0]) for r in recs]  # a bare name: low scores
    return good, bare


def test_oracle_backend_gives_the_world_judges_numbers(world, tmp_path):
    recs = [r for r in world.eval if r["level"] >= 1][:8]
    good, bare = _responses(world, recs)
    roles = build_roles(validate_params({}).roles, seed=7, kb=world.kb, cache_dir=tmp_path)
    direct = stage.score(recs, good, world.kb) + stage.score(recs, bare, world.kb)
    through = stage.score(recs, good, world.kb, roles.judge) + stage.score(recs, bare, world.kb, roles.judge)
    assert [r["judge"] for r in through] == [r["judge"] for r in direct]
    assert all(r["judge_raw"].startswith("Fluency: ") for r in through) and "judge_raw" not in direct[0]
    world_judge = WorldJudge(world.kb)
    assert through[0]["judge"] == {k: world_judge.score(recs[0], good[0])[k] for k in ("fluency", "factuality",
                                                                                         "coherence")}
    cfg = EvaluateSection(levels=[1, 2, 3, 4, 5], bootstrap_samples=10)
    a, b = stage.summarize(direct[:8], cfg, 3), stage.summarize(through[:8], cfg, 3)
    # The error rates by kind are the world's own annotation (Judge.errors), kept only where the world judges;
    # every figure both carry is the same.
    errors = {k for k in a if k.startswith("error_")}
    assert errors and not any(k.startswith("error_") for k in b)
    assert {k: v for k, v in a.items() if k not in errors} == b and "judge_unparseable" not in b

    # Pairwise through the oracle = the comparison of the stored pointwise scores, with the same tie margin.
    rows_good, rows_bare = through[:8], through[8:]
    by_id = {r["id"]: r for r in recs}
    for margin in (0.5, 2.0):
        counts, artifacts = judged_pairwise(roles.judge, rows_good, rows_bare, by_id, tie_margin=margin)
        expected = pairwise(rows_good, rows_bare, tie_margin=margin)
        assert {d: {k: c[k] for k in ("win", "tie", "loss", "n")} for d, c in counts.items()} == expected
        assert all(c["unparseable"] == 0 for c in counts.values()) and len(artifacts) == 8
    assert counts["factuality"]["win"] > 0  # the teacher's answers beat bare names somewhere


def test_unparseable_pointwise_scores_are_counted_not_averaged(world, scripted):
    recs = [r for r in world.eval if r["level"] >= 1][:4]
    good, _ = _responses(world, recs)
    outputs = iter(["Fluency: 8\nFactuality: 6\nCoherence: 7", "I like it.",
                    "Fluency: 9\nFactuality: 11\nCoherence: 7", "**Fluency**: 6\nFactuality: 4\ncoherence: 9"])
    judge = _judge(scripted, lambda r: next(outputs))
    judge.client.concurrency = 1
    rows = stage.score(recs, good, world.kb, judge)
    assert [r["judge"] is None for r in rows] == [False, True, True, False]
    assert rows[1]["judge_raw"] == "I like it." and judge.stats.unparseable == 2
    metrics = stage.summarize(rows, EvaluateSection(levels=[1, 2, 3, 4, 5], bootstrap_samples=0), 3)
    assert metrics["fluency"] == 7.0 and metrics["factuality"] == 5.0 and metrics["coherence"] == 8.0
    assert metrics["judge_unparseable"] == 2 and metrics["n_instructions"] == 4


@pytest.mark.parametrize("section, key", [
    ({"evaluate": {"judge": "gpt4"}}, "evaluate.judge"),
    ({"report": {"pairwise_judge": "llm"}}, "report.pairwise_judge"),
    ({"evaluate": {"followbench": {"judge": {"backend": "gpt"}}}}, "evaluate.followbench.judge.backend"),
])
def test_judge_switches_are_validated(section, key):
    from alignpipe.config import ConfigError

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_params(section)
    ok = validate_params({"evaluate": {"judge": "roles", "followbench": {"judge": {"backend": "roles"}}},
                          "report": {"pairwise_judge": "roles"}})
    assert ok.evaluate.judge == "roles" and ok.report.pairwise_judge == "roles"
