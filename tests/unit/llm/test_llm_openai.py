"""The openai backend against a REAL OpenAI-compatible server: `transformers serve` on 127.0.0.1 with a tiny
local model (started and stopped by the ``openai_server`` fixture in conftest.py). No mocked client."""

from __future__ import annotations

import logging
import socket
import time

import pytest

import faultproxy  # tests/reliability/faultproxy.py (pyproject: pytest pythonpath)

from alignpipe.config import validate_params
from alignpipe.llm import DiskCache, LLMError, RoleClient, build_roles
from alignpipe.llm.openai_backend import OpenAIBackend
from alignpipe.llm.roles import Judge, Teacher

SECRET = "sk-test-DO-NOT-LEAK-4242"


def _roles(base_url, model, cache_dir, **extra):
    spec = {"backend": "openai", "base_url": base_url, "model": model, "max_tokens": 8, "temperature": 0.0,
            "concurrency": 3, **extra}
    # max_unusable_fraction 1: the tiny random model's blank answers are counted here, the guard is tested apart
    return build_roles(validate_params({"roles": {"teacher": spec, "judge": spec, "max_unusable_fraction": 1.0}}).roles,
                       seed=5, cache_dir=cache_dir)


def test_answers_tokens_and_a_rerun_from_cache(openai_server, tmp_path, monkeypatch):
    base_url, model = openai_server
    monkeypatch.setenv("ALIGNPIPE_TEST_KEY", SECRET)
    prompts = [f"Describe {n}." for n in ("Velmora", "Quenth", "Arlis", "Dorvan", "Lysa")]
    roles = _roles(base_url, model, tmp_path / "cache", api_key_env="ALIGNPIPE_TEST_KEY")
    first = roles.teacher.answer(prompts)
    s = roles.metrics()["teacher"]
    assert len(first) == 5 and s["requests"] == 5 and s["cache_hits"] == 0 and s["failures"] == 0
    assert s["prompt_tokens"] > 5 * 10 and 5 <= s["completion_tokens"] <= 5 * 8
    assert s["unparseable"] == sum(a is None for a in first)
    # A rerun (new roles, same cache) pays nothing: zero requests, every answer identical.
    again = _roles(base_url, model, tmp_path / "cache", api_key_env="ALIGNPIPE_TEST_KEY")
    assert again.teacher.answer(prompts) == first
    s2 = again.metrics()["teacher"]
    assert (s2["requests"], s2["cache_hits"], s2["completion_tokens"]) == (0, 5, 0)
    # The key is in no cache file and not in the backend identity (the cache key).
    blobs = [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
    assert len(blobs) == 5 and not any(SECRET in b for b in blobs)
    assert SECRET not in repr(roles.teacher.client.backend.identity())
    assert SECRET not in roles.teacher.client.backend.describe()


def test_unparseable_judge_output_is_counted_not_raised(openai_server, tmp_path):
    base_url, model = openai_server
    # The tiny random model cannot write "Fluency: <n>" lines: every answer is unparseable, and nothing crashes.
    judge: Judge = _roles(base_url, model, tmp_path, max_tokens=6).judge
    out = judge.score(["Describe Velmora.", "Describe Quenth."], ["Velmora is old.", "Quenth."])
    assert out == [None, None] and judge.stats.unparseable == 2 and judge.stats.requests == 2


def test_sampling_with_seeds_through_the_server(openai_server, tmp_path):
    base_url, model = openai_server
    backend = OpenAIBackend(base_url, model)
    t = Teacher("teacher", RoleClient("teacher", backend, DiskCache(tmp_path), concurrency=2), 1.0, 6, seed=9)
    comps = t.complete("teacher_answer.v1", [{"instruction": "Describe Arlis."}] * 2, keys=[0, 1])
    assert len({c.text for c in comps}) >= 1 and t.stats.requests == 2
    assert len(list(tmp_path.rglob("*.json"))) == 2  # two keys, two seeds, two cache entries


def test_missing_key_variable_is_a_clear_error(openai_server, monkeypatch):
    monkeypatch.delenv("ALIGNPIPE_ABSENT_KEY", raising=False)
    with pytest.raises(LLMError, match="environment variable ALIGNPIPE_ABSENT_KEY .* is not set"):
        OpenAIBackend(openai_server[0], openai_server[1], api_key_env="ALIGNPIPE_ABSENT_KEY")


def test_server_down_fails_after_the_retry_budget_not_a_hang(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5)
    client = RoleClient("teacher", backend, DiskCache(tmp_path), max_retries=2, backoff_s=0.05, backoff_max_s=0.1)
    t0 = time.time()
    with pytest.raises(LLMError, match=r"gave up after 3 attempts; last error: APIConnectionError"):
        Teacher("teacher", client, 0.0, 4, seed=0).answer(["Hi"])
    assert time.time() - t0 < 10
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (3, 2, 1)
    assert not list(tmp_path.rglob("*.json"))  # nothing cached for a failed call


def test_a_key_echoed_back_by_the_server_is_redacted_from_errors_and_logs(tmp_path, monkeypatch, caplog):
    """A server (or proxy) that quotes the request's headers in its error body: the openai client's error text then
    holds the key. The retry warnings and the final error must not (they reach stderr and the Prefect logs)."""
    import base64

    proxy = faultproxy.FaultProxy("http://127.0.0.1:9", down_fault="echo500").start()  # upstream never reached
    proxy.mode = "down"
    try:
        monkeypatch.setenv("ALIGNPIPE_TEST_KEY", SECRET)
        backend = OpenAIBackend(f"{proxy.url}/v1", "m", api_key_env="ALIGNPIPE_TEST_KEY", timeout_s=5)
        client = RoleClient("teacher", backend, DiskCache(tmp_path), max_retries=1, backoff_s=0.01)
        with caplog.at_level(logging.WARNING, logger="alignpipe.llm"), pytest.raises(LLMError) as info:
            Teacher("teacher", client, 0.0, 4, seed=0).answer(["Hi"])
    finally:
        proxy.stop()
    assert [r.authorization for r in proxy.records] == [f"Bearer {SECRET}"] * 2  # sent, and echoed back twice
    message = str(info.value)
    assert "gave up after 2 attempts" in message and "request_headers" in message and "[redacted]" in message
    assert "retry 1/1" in caplog.text and "[redacted]" in caplog.text
    for text in (message, caplog.text):
        assert SECRET not in text and base64.b64encode(SECRET.encode()).decode() not in text
    assert backend.redact(f"Basic {base64.b64encode(SECRET.encode()).decode()}") == "Basic [redacted]"


def test_followbench_judge_through_roles_on_a_real_server(openai_server, shared_data, tmp_path, monkeypatch):
    """FollowBench's LLM-judged groups through roles.judge (openai backend) against `transformers serve`: the tiny
    random model cannot write a YES/NO list, so every judged output is retried once, then counted as unparseable and
    reported apart; the rule-scored part is still scored, and every raw output is kept in generations.jsonl."""
    import json

    from alignpipe.evaluate.followbench import bench as fb_stage
    from alignpipe.evaluate.followbench.judge import parse_output
    from alignpipe.stages.evaluate import write
    from alignpipe_ops import runlog
    from alignpipe.utils.io import read_jsonl

    fb_dir = shared_data / "followbench"
    if not fb_dir.is_dir():
        pytest.skip(f"FollowBench sample not found at {fb_dir}")
    base_url, model = openai_server
    params = validate_params({
        "seed": 3,
        "evaluate": {"benchmark": "followbench", "levels": [1, 2], "bootstrap_samples": 0,
                     "followbench": {"source": str(fb_dir), "categories": ["content", "example"],
                                     "max_groups_per_category": 1,
                                     "judge": {"backend": "roles", "max_new_tokens": 6, "retries": 1}}},
        "roles": {"judge": {"backend": "openai", "base_url": base_url, "model": model, "concurrency": 2},
                  "cache_dir": str(tmp_path / "llm"), "max_unusable_fraction": 1.0},  # count them, do not stop
    })
    monkeypatch.setenv("DVC_STAGE", "evaluate@fb")
    records, todo = fb_stage.load(params)
    responses = [r.get("target") or r["instruction"] for r in todo]
    out = tmp_path / "fb"
    rows, metrics = fb_stage.score_responses(params, "unused", records, todo, responses)
    write(out, rows, metrics, fb_stage.stage_config(params, "fb", "unused"))

    rows = read_jsonl(out / "generations.jsonl")
    judged = [r for r in rows if r["category"] == "content"]
    assert len(rows) == 4 and len(judged) == 2 and all(r["method"] == "rule" for r in rows if r not in judged)
    for row in judged:  # raw outputs kept: one per attempt; verdicts only where the last one parsed
        assert row["method"] in ("judge", "unparseable") and 1 <= len(row["judge_raw"]) <= 2
        if row["method"] == "unparseable":
            assert len(row["judge_raw"]) == 2 and row["verdicts"] is None
        else:
            assert row["verdicts"] == parse_output(row["judge_raw"][-1], row["level"])
    n_bad = sum(r["method"] == "unparseable" for r in rows)
    assert metrics["unparseable"]["n"] == n_bad and metrics["n_instructions"] == 4 - n_bad
    # metrics.json: calls, unparseable outputs, refusals; requests and failures (they depend on the cache): the run
    # record. A verdict list is never a refusal.
    assert metrics["judge_calls"] == {"calls": sum(len(r["judge_raw"]) for r in judged), "unparseable": n_bad,
                                      "refusals": 0}
    (calls,) = [r["judge"] for r in runlog.read("evaluate@fb") if r["event"] == "roles"]
    assert calls["requests"] == sum(len(r["judge_raw"]) for r in judged) and calls["failures"] == 0
    assert calls["unparseable"] == n_bad
    config = json.loads((out / "config.json").read_text())
    assert config["judge"].startswith(f"roles.judge (openai {model} at {base_url})")
