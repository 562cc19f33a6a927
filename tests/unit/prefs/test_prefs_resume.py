"""Preference sampling resumes from its chunk cache: work done before a kill is not redone."""

import pytest

from alignpipe.config import validate_params
from alignpipe.utils.io import DataError
from alignpipe.stages import preferences as stage


def _records(n):
    return [{"id": f"r{i}", "instruction": f"Describe X{i}.", "level": 1} for i in range(n)]


def test_sampling_resumes_from_cached_chunks(tmp_path, monkeypatch):
    calls = []

    def fake_sample(model, tok, prompts, max_new_tokens, batch_size, **kw):
        calls.append((len(prompts), kw["seed"]))
        return [[f"{p[0]['content']} s{k}" for k in range(kw["num_return_sequences"])] for p in prompts]

    monkeypatch.setattr(stage, "sample", fake_sample)
    monkeypatch.setattr(stage, "load_model", lambda *a, **k: ("model", "tok"))
    params = validate_params({"preferences": {"num_samples": 2}})
    records = _records(stage.CHUNK * 2 + 5)  # 3 chunks

    first = stage.sample_candidates(params, records, tmp_path / "sft", tmp_path / "cache")
    assert len(calls) == 3 and len(first) == len(records)

    # A kill after chunk 1: chunk 2's cache file is gone; the rerun samples only that chunk, same result.
    (tmp_path / "cache" / "chunk-00002.json").unlink()
    calls.clear()
    again = stage.sample_candidates(params, records, tmp_path / "sft", tmp_path / "cache")
    assert calls == [(5, calls[0][1])] and again == first

    # Nothing left to do: zero model calls.
    calls.clear()
    assert stage.sample_candidates(params, records, tmp_path / "sft", tmp_path / "cache") == first and not calls


def test_subset_is_seeded_and_spans_the_pool(tmp_path, monkeypatch):
    pool = [{"id": f"c{i // 60}-{i}", "level": i % 6, "instruction": "q"} for i in range(360)]
    monkeypatch.setattr(stage, "load_instructions", lambda path: pool)
    params = validate_params({"preferences": {"max_prompts": 30, "levels": [0, 1, 2, 3, 4, 5]}})
    a = stage.load_prompts(params, tmp_path)
    assert len(a) == 30 and a == stage.load_prompts(params, tmp_path)
    assert len({r["id"].split("-")[0] for r in a}) >= 4  # not a prefix of the first category


def test_prompts_come_from_the_preference_pool_or_the_train_pool(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    params = validate_params({"preferences": {"prompts": "prefs"}})
    with pytest.raises(DataError, match=r"prefs.jsonl not found: preferences.prompts is 'prefs' but the world has "
                                         r"no preference pool \(set world.preference_groups_per_category > 0"):
        stage.load_prompts(params, tmp_path)
    assert stage.prompt_file(validate_params({}), tmp_path) == tmp_path / "train.jsonl"
    (tmp_path / "prefs.jsonl").write_text("")  # the world of a run without a pool writes it empty
    with pytest.raises(DataError, match=r"prefs.jsonl holds no prompts: preferences.prompts is 'prefs'"):
        stage.prompt_file(params, tmp_path)
    (tmp_path / "prefs.jsonl").write_text('{"id": "x"}\n')
    assert stage.prompt_file(params, tmp_path) == tmp_path / "prefs.jsonl"
