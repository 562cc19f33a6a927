"""Roles over the oracle backend (the built-in world) and over a scripted backend; the roles params."""

from __future__ import annotations

import pytest

from alignpipe.config import ConfigError, WorldSection, validate_params
from alignpipe.llm import RoleClient, Roles, build_roles
from alignpipe.llm.roles import Referee, Teacher
from alignpipe.world import build_world, verify


@pytest.fixture(scope="module")
def world():
    return build_world(7, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1,
                                       corpus_paraphrases=1))


@pytest.fixture
def roles(world, tmp_path) -> Roles:
    return build_roles(validate_params({}).roles, seed=7, kb=world.kb, cache_dir=tmp_path)


def test_oracle_teacher_meets_every_constraint_and_referee_prefers_it(world, roles):
    recs = [r for r in world.train if r["level"] >= 2][:6]
    ins = [r["instruction"] for r in recs]
    answers = roles.teacher.answer(ins, recs)
    assert all(all(verify(r, a)) for r, a in zip(recs, answers))
    broken = [world.kb.name(r["entity_ids"][0]) for r in recs]  # a bare name meets almost nothing
    scores = roles.referee.compare_swapped(ins, answers, broken, recs)
    assert all(t > s for t, s in scores)
    assert roles.metrics()["referee"]["calls"] == 12  # both orders
    assert roles.metrics()["total"]["cache_hits"] == 0  # the oracle is computed, never cached


def test_oracle_generator_builds_new_records_in_the_same_category(world, roles):
    recs = [r for r in world.train if r["level"] == 3][:4]
    hard = roles.generator.new_instructions([r["instruction"] for r in recs], hard=True, records=recs)
    easy = roles.generator.new_instructions([r["instruction"] for r in recs], hard=False, records=recs)
    for r, h, e in zip(recs, hard, easy):
        assert h.record["category"] == r["category"] == e.record["category"]
        assert h.record["level"] == e.record["level"] == 3 and h.instruction == h.record["instruction"]
        assert h.record["family"] == r["family"]
        assert not set(h.record["entity_ids"]) & set(r["entity_ids"])
        if r["category"] != "example":
            assert e.record["family"] != r["family"]


def test_oracle_editor_and_judge(world, roles):
    rec = next(r for r in world.train if r["level"] == 2)
    good = roles.teacher.answer([rec["instruction"]], [rec])[0]
    bad = good.upper() if good != good.upper() else good.lower()
    (edited,) = roles.editor.edit([rec["instruction"]], [bad], [good], [rec])
    assert all(verify(rec, edited))
    (check,) = roles.judge.check([rec["instruction"]], [good], [["c1", "c2"]], [rec])
    assert check == [True, True]
    (scores,) = roles.judge.score([rec["instruction"]], [good], [rec])
    assert set(scores) == {"fluency", "factuality", "coherence"} and scores["factuality"] == 10.0


def test_swapped_referee_averages_both_orders_by_hand(tmp_path, scripted):
    # Order (a, b) -> a: 8, b: 6; order (b, a) -> b: 5, a: 9. Lion averages: a = (8 + 9) / 2, b = (6 + 5) / 2.
    def script(r):
        first = r.fields["answer_1"]
        return ("x\nScore of the Assistant 1: 8\nScore of the Assistant 2: 6" if first == "A"
                else "x\nScore of the Assistant 1: 5\nScore of the Assistant 2: 9")

    ref = Referee("referee", RoleClient("referee", scripted(script), None), 0.2, 64, seed=1)
    assert ref.compare_swapped(["q"], ["A"], ["B"]) == [(8.5, 5.5)]


def test_unparseable_output_is_counted_and_skipped(tmp_path, scripted):
    from alignpipe.llm import DiskCache

    outputs = {"q1": "Score of the Assistant 1: 7\nScore of the Assistant 2: 4", "q2": "I think both are fine.",
               "q3": "Score of the Assistant 1: N/A\nScore of the Assistant 2: 4"}
    ref = Referee("referee", RoleClient("referee", scripted(lambda r: outputs[r.fields["instruction"]]),
                                        DiskCache(tmp_path)), 0.2, 64, seed=1)
    assert ref.compare(["q1", "q2", "q3"], ["a"] * 3, ["b"] * 3) == [(7.0, 4.0), None, None]
    assert ref.stats.unparseable == 2
    teacher = Teacher("teacher", RoleClient("teacher", scripted(lambda r: "   "), DiskCache(tmp_path)), 0.7, 64, 1)
    assert teacher.answer(["x"]) == [None] and teacher.stats.unparseable == 1


def test_refusals_are_counted_and_too_many_unusable_outputs_stop_the_stage(tmp_path, scripted):
    from alignpipe.llm import LLMError

    outputs = {"a": "Velmora is a harbor town.", "b": "I'm sorry, but I cannot answer that.", "c": "",
               "d": "I apologize, I can't.", "e": "Quenth has a tower."}
    teacher = Teacher("teacher", RoleClient("teacher", scripted(lambda r: outputs[r.fields["instruction"]]), None),
                      0.7, 64, seed=1, max_unusable=0.5)
    # a refusal is kept as text (WebR's filter drops it later) but counted; empty output is unparseable
    assert teacher.answer(["a", "b"]) == [outputs["a"], outputs["b"]]  # 1 of 2 unusable: at the limit, not over
    assert teacher.stats.refusals == 1 and teacher.stats.unparseable == 0
    with pytest.raises(LLMError) as err:  # 3 of 4 (two refusals, one empty) > 0.5
        teacher.answer(["c", "d"])
    assert str(err.value) == (
        "role 'teacher' (scripted backend): 3 of 4 outputs unusable (1 unparseable or empty, 2 refusals), over "
        "roles.max_unusable_fraction = 0.5; e.g. \"I'm sorry, but I cannot answer that.\". Check the role's "
        "backend, model and prompt (or raise roles.max_unusable_fraction)")
    assert teacher.stats.as_dict()["refusals"] == 2 and teacher.stats.as_dict()["unparseable"] == 1
    strict = Referee("referee", RoleClient("referee", scripted(lambda r: "no score here " * 20), None), 0.2, 64,
                     seed=1, max_unusable=0.0)
    with pytest.raises(LLMError, match=r"role 'referee' .*: 1 of 1 outputs unusable .*= 0; e\.g\. "
                                       r"'(no score here ){8}no score\.\.\.'"):  # the example is cut at 120 chars
        strict.compare(["q"], ["a"], ["b"])


def test_build_roles_takes_the_limit_from_params(tmp_path):
    params = validate_params({"roles": {"max_unusable_fraction": 0.25}})
    assert build_roles(params.roles, seed=1, cache_dir=tmp_path).judge.max_unusable == 0.25
    assert validate_params({}).roles.max_unusable_fraction == 0.5
    with pytest.raises(ConfigError, match=r"roles.max_unusable_fraction = -0.1: .*greater than or equal to 0"):
        validate_params({"roles": {"max_unusable_fraction": -0.1}})


def test_request_seeds_are_stable_per_prompt_and_key(tmp_path, scripted):
    t = Teacher("teacher", RoleClient("teacher", scripted(), None), 0.7, 64, seed=3)
    a, b = t.request("teacher_answer.v1", {"instruction": "x"}), t.request("teacher_answer.v1", {"instruction": "x"})
    c = t.request("teacher_answer.v1", {"instruction": "x"}, key=1)
    assert a.seed == b.seed != c.seed


def test_roles_params_are_validated():
    roles = validate_params({"roles": {"judge": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1",
                                                 "model": "m", "api_key_env": "MY_KEY"}}}).roles
    assert roles.judge.api_key_env == "MY_KEY" and roles.teacher.backend == "oracle"
    bad = [
        ({"teacher": {"backend": "openai", "model": "m", "base_url": "http://x/v1", "api_key_env": "sk-123abc"}},
         r"roles.teacher.api_key_env = '<redacted>': must be the NAME of an environment variable"),
        ({"teacher": {"backend": "openai", "model": "m"}}, "backend 'openai' needs base_url and model"),
        ({"teacher": {"backend": "hf"}}, "backend 'hf' needs model"),
        ({"referee": {"backend": "oracle", "model": "x"}}, "backend 'oracle' takes no"),
        ({"referee": {"temperature": 3}}, r"roles.referee.temperature = 3: .*less than or equal to 2"),
        ({"editor": {"backend": "vllm"}}, r"roles.editor.backend = 'vllm'"),
        ({"judge": {"base_url": "ftp://x"}}, "must start with http"),
        ({"critic": {}}, "unknown key 'roles.critic'"),
    ]
    for raw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            validate_params({"roles": raw})
    with pytest.raises(ConfigError) as err:
        validate_params({"roles": {"teacher": {"api_key_env": "sk-live-SECRET"}}})
    assert "SECRET" not in str(err.value)
