"""The hf backend: batched chat generation with left padding, prompt truncation, caching."""

from __future__ import annotations

from alignpipe.config import validate_params
from alignpipe.llm import DiskCache, RoleClient, build_roles
from alignpipe.llm.hf_backend import HFBackend
from alignpipe.llm.roles import Teacher


def test_batched_greedy_equals_one_by_one_and_is_cached(tiny_model_dir, tmp_path):
    prompts = ["Describe Velmora.", "Describe Quenth near the harbor and the tower, please.", "Hi"]
    batched = Teacher("teacher", RoleClient("teacher", HFBackend(str(tiny_model_dir)), DiskCache(tmp_path / "a"),
                                            batch_size=3), 0.0, 12, seed=0)
    single = Teacher("teacher", RoleClient("teacher", HFBackend(str(tiny_model_dir)), DiskCache(tmp_path / "b"),
                                           batch_size=1), 0.0, 12, seed=0)
    comps_b = batched.complete("teacher_answer.v1", [{"instruction": p} for p in prompts])
    comps_s = single.complete("teacher_answer.v1", [{"instruction": p} for p in prompts])
    assert [c.text for c in comps_b] == [c.text for c in comps_s]  # left padding changes nothing
    assert all(0 < c.completion_tokens <= 12 for c in comps_b) and all(c.prompt_tokens > 5 for c in comps_b)
    assert batched.stats.requests == 3 and batched.stats.completion_tokens == sum(c.completion_tokens for c in comps_b)
    again = batched.complete("teacher_answer.v1", [{"instruction": p} for p in prompts])
    assert [c.text for c in again] == [c.text for c in comps_b] and batched.stats.cache_hits == 3


def test_long_prompts_keep_their_last_tokens_and_are_counted(tiny_model_dir, tmp_path):
    t = Teacher("teacher", RoleClient("teacher", HFBackend(str(tiny_model_dir), max_prompt_tokens=120),
                                      DiskCache(tmp_path)), 0.9, 4, seed=0)
    comps = t.complete("teacher_answer.v1", [{"instruction": "Velmora has a harbor. " * 100}, {"instruction": "Hi"}])
    assert comps[0].prompt_tokens == 120 and comps[0].truncated
    assert not comps[1].truncated and comps[1].prompt_tokens < 120
    assert t.stats.truncated_prompts == 1


def test_build_roles_shares_one_hf_backend(tiny_model_dir, tmp_path):
    spec = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4, "max_tokens": 16}
    roles = build_roles(validate_params({"roles": {"teacher": spec, "editor": spec}}).roles, seed=1,
                        cache_dir=tmp_path)
    assert roles.teacher.client.backend is roles.editor.client.backend
    assert roles.referee.client.backend is not roles.teacher.client.backend  # the oracle
    assert len(roles.teacher.answer(["Describe Arlis."])) == 1
