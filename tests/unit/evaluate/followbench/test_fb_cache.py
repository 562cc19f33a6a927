"""The prompt-keyed output store: reuse, resume after a crash, torn lines."""

from __future__ import annotations

import pytest

from alignpipe.utils.cache import cached_map


def test_resume_after_a_crash(tmp_path):
    store = tmp_path / "out.jsonl"
    seen = []

    def upper(prompts):
        seen.append(list(prompts))
        if "boom" in prompts:
            raise KeyboardInterrupt
        return [p.upper() for p in prompts]

    prompts = ["a", "b", "c", "a", "boom", "d"]
    with pytest.raises(KeyboardInterrupt):
        cached_map(upper, prompts, store, chunk=2)
    assert seen == [["a", "b"], ["c", "boom"]]  # repeated prompts asked once; chunk 1 crashed
    seen.clear()
    with open(store, "a", encoding="utf-8") as fh:
        fh.write('{"key": "torn')  # an interrupted write

    def safe(prompts):
        seen.append(list(prompts))
        return [p.upper() for p in prompts]

    assert cached_map(safe, prompts, store, chunk=2) == ["A", "B", "C", "A", "BOOM", "D"]
    assert seen == [["c", "boom"], ["d"]]  # only what was not stored
    seen.clear()
    assert cached_map(safe, prompts, store, chunk=2) == ["A", "B", "C", "A", "BOOM", "D"] and seen == []
    assert cached_map(safe, ["x"], None) == ["X"]


def test_output_count_checked(tmp_path):
    with pytest.raises(RuntimeError, match="1 outputs for 2 prompts"):
        cached_map(lambda prompts: ["x"], ["a", "b"], tmp_path / "s.jsonl")
