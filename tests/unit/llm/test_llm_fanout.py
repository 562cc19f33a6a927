"""Remote role calls fanned out as Prefect tasks through a flow's task runner (`roles.runner`): the thread pool and
a local Dask cluster of 2 workers, against a REAL `transformers serve` (the ``openai_server`` fixture). The answers
and counters match the role's own thread pool, the disk cache still spares a rerun every request, and a server
that is down fails with the role's error after its retry budget."""

from __future__ import annotations

import socket

import pytest

from alignpipe.config import ConfigError, validate_params
from alignpipe.llm import LLMError, build_roles

PROMPTS = [f"Describe {n}." for n in ("Velmora", "Quenth", "Arlis", "Dorvan", "Lysa", "Orin")]


def _params(base_url, model, runner=None, **extra):
    spec = {"backend": "openai", "base_url": base_url, "model": model, "max_tokens": 6, "temperature": 0.0,
            "concurrency": 3, **extra}
    # the tiny random model answers blank lines: counted, not a reason to stop (that guard has its own tests)
    return validate_params({"roles": {"teacher": spec, "runner": runner or {}, "max_unusable_fraction": 1.0}})


def _in_flow(params, cache_dir, prompts=PROMPTS):
    """The teacher's answers and counters from inside a flow whose task runner `roles.runner` names."""
    from prefect import flow

    from flows._common import fan_out, task_runner

    @flow(task_runner=task_runner(params), log_prints=False)
    def answer():
        roles = build_roles(params.roles, seed=5, cache_dir=cache_dir, fan_out=fan_out)
        return roles.teacher.answer(prompts), roles.metrics()["teacher"]

    return answer()


@pytest.mark.parametrize("runner", [{"kind": "thread"}, {"kind": "dask", "workers": 2}], ids=["threads", "dask"])
def test_fan_out_through_the_task_runner_matches_and_caches(openai_server, tmp_path, runner):
    base_url, model = openai_server
    params = _params(base_url, model, runner)
    plain = build_roles(params.roles, seed=5, cache_dir=tmp_path / "plain")  # the role's own thread pool
    expected = plain.teacher.answer(PROMPTS)
    answers, stats = _in_flow(params, tmp_path / "cache")
    assert answers == expected  # greedy: the same answers whichever runner made the calls
    assert (stats["calls"], stats["requests"], stats["cache_hits"], stats["failures"]) == (6, 6, 0, 0)
    assert stats["completion_tokens"] > 0
    again, stats2 = _in_flow(params, tmp_path / "cache")
    assert again == answers and (stats2["requests"], stats2["cache_hits"]) == (0, 6)


def test_fan_out_to_a_server_that_is_down_fails_after_the_retry_budget(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    params = _params(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_s=0.01, backoff_max_s=0.01,
                     timeout_s=2)
    with pytest.raises(LLMError, match=r"role 'teacher' \(openai model 'm' at .*\): gave up after 3 attempts"):
        _in_flow(params, tmp_path / "cache", PROMPTS[:2])


def test_runner_params_are_validated():
    with pytest.raises(ConfigError, match=r"roles.runner.kind = 'spark'"):  # ray: tests/unit/llm/test_runner_ray.py
        validate_params({"roles": {"runner": {"kind": "spark"}}})
    with pytest.raises(ConfigError, match=r"roles.runner = .*address needs kind: dask"):
        validate_params({"roles": {"runner": {"address": "tcp://127.0.0.1:8786"}}})


@pytest.fixture
def silent_server():
    """A server that accepts every connection and never answers (a hung upstream): its /v1 URL."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("fanned", [False, True], ids=["threads", "prefect-tasks"])
def test_a_server_that_never_answers_fails_at_the_roles_deadline(silent_server, tmp_path, fanned):
    """timeout_s 60 and 5 retries would hold each of the 6 requests for minutes; the role's deadline of 2 s ends
    the call in seconds, through the role's own threads and through Prefect tasks alike."""
    import time

    params = _params(silent_server, "m", max_retries=5, backoff_s=0.01, timeout_s=60, deadline_s=2, concurrency=2)
    start = time.monotonic()
    with pytest.raises(LLMError, match=r"^role 'teacher' \(openai model 'm' at http://127\.0\.0\.1:\d+/v1\): no "
                                       r"answer within the stage's deadline of 2 s \(roles\.teacher\.deadline_s\); "
                                       r"last error: APITimeoutError: Request timed out\.; check that the server "
                                       r"answers, or raise roles\.teacher\.deadline_s$"):
        if fanned:
            _in_flow(params, tmp_path / "cache")
        else:
            build_roles(params.roles, seed=5, cache_dir=tmp_path / "cache").teacher.answer(PROMPTS)
    assert time.monotonic() - start < 20
