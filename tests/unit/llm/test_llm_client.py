"""RoleClient: disk cache by request hash, retry with backoff, bounded concurrency, counters."""

from __future__ import annotations

import json

import pytest

from alignpipe.llm import ChatRequest, DiskCache, LLMError, RoleClient, request_key


def req(text: str, seed: int = 0, temperature: float = 0.7) -> ChatRequest:
    return ChatRequest("teacher_answer.v1", {"instruction": text},
                       [{"role": "user", "content": text}], max_tokens=16, temperature=temperature, seed=seed)


def test_request_key_is_stable_and_covers_what_is_sent():
    ident = {"kind": "openai", "base_url": "http://h/v1", "model": "m"}
    k = request_key(ident, req("a"))
    assert k == request_key(dict(reversed(list(ident.items()))), req("a"))  # key order does not matter
    assert len({k, request_key(ident, req("b")), request_key(ident, req("a", seed=1)),
                request_key(ident, req("a", temperature=0.0)), request_key({**ident, "model": "n"}, req("a"))}) == 5


def test_disk_cache_round_trip_and_damaged_entry_is_a_miss(tmp_path):
    from alignpipe.llm import Completion

    cache = DiskCache(tmp_path)
    cache.put("ab" + "0" * 62, req("x"), Completion("hello", 3, 1, data={"k": 1}))
    got = cache.get("ab" + "0" * 62)
    assert (got.text, got.prompt_tokens, got.completion_tokens) == ("hello", 3, 1)
    assert got.data == {"k": 1} and got.cached
    (tmp_path / "ab" / ("ab" + "0" * 62 + ".json")).write_text("{not json")
    assert cache.get("ab" + "0" * 62) is None and cache.get("cd" + "0" * 62) is None


def test_second_run_is_served_from_cache_with_zero_requests(tmp_path, scripted):
    backend = scripted()
    first = RoleClient("teacher", backend, DiskCache(tmp_path), concurrency=2)
    out = first.complete([req("a"), req("b"), req("a", seed=5)])
    assert [c.text for c in out] == ["echo a", "echo b", "echo a"]
    assert first.stats.as_dict()["requests"] == 3 and first.stats.cache_hits == 0
    assert first.stats.completion_tokens == 6  # two words per answer
    again = RoleClient("teacher", backend, DiskCache(tmp_path))  # a rerun: new process state, same disk
    out2 = again.complete([req("a"), req("b"), req("a", seed=5)])
    assert [c.text for c in out2] == ["echo a", "echo b", "echo a"] and all(c.cached for c in out2)
    assert (again.stats.requests, again.stats.cache_hits, again.stats.completion_tokens) == (0, 3, 0)
    assert backend.calls == 3


def test_crash_midway_keeps_answers_and_rerun_pays_only_the_rest(tmp_path, scripted):
    reqs = [req(f"q{i}") for i in range(6)]
    crashing = scripted(fatal_after=4)
    with pytest.raises(LLMError, match="HTTP 400"):
        RoleClient("teacher", crashing, DiskCache(tmp_path), concurrency=1).complete(reqs)
    assert len(DiskCache(tmp_path)) == 4
    healthy = scripted()
    client = RoleClient("teacher", healthy, DiskCache(tmp_path), concurrency=1)
    assert [c.text for c in client.complete(reqs)] == [f"echo q{i}" for i in range(6)]
    assert (client.stats.requests, client.stats.cache_hits, healthy.calls) == (2, 4, 2)


def test_transient_errors_are_retried_with_exponential_backoff(tmp_path, scripted):
    sleeps: list[float] = []
    backend = scripted(fail_first=3)
    client = RoleClient("referee", backend, DiskCache(tmp_path), concurrency=1, max_retries=5, backoff_s=2.0,
                        backoff_max_s=5.0, sleep=sleeps.append)
    assert client.complete([req("a")])[0].text == "echo a"
    s = client.stats.as_dict()
    assert (s["requests"], s["retries"], s["failures"]) == (4, 3, 0)
    # base 2, 4, 8 capped at 5, each times a jitter factor in [0.5, 1.5]
    for got, base in zip(sleeps, (2.0, 4.0, 5.0)):
        assert 0.5 * base <= got <= 1.5 * base
    assert sleeps[2] <= 5.0  # the cap holds after jitter


def test_retry_budget_exhausted_gives_a_clear_error(tmp_path, scripted):
    client = RoleClient("judge", scripted(fail_first=99), DiskCache(tmp_path), max_retries=2, backoff_s=0,
                        sleep=lambda s: None)
    with pytest.raises(LLMError, match=r"role 'judge' \(scripted backend\): gave up after 3 attempts; .*HTTP 503"):
        client.complete([req("a")])
    assert (client.stats.requests, client.stats.retries, client.stats.failures) == (3, 2, 1)


def test_fatal_errors_are_not_retried(tmp_path, scripted):
    client = RoleClient("judge", scripted(fatal_after=0), DiskCache(tmp_path), max_retries=5, sleep=lambda s: None)
    with pytest.raises(LLMError, match="HTTP 400"):
        client.complete([req("a")])
    assert (client.stats.requests, client.stats.retries) == (1, 0)


def test_concurrency_is_bounded(tmp_path, scripted):
    backend = scripted(delay=0.05)
    RoleClient("teacher", backend, DiskCache(tmp_path), concurrency=3).complete([req(f"q{i}") for i in range(12)])
    assert backend.max_in_flight == 3 and backend.calls == 12


def test_cache_files_hold_the_request_but_no_secret(tmp_path, scripted):
    RoleClient("teacher", scripted(), DiskCache(tmp_path)).complete([req("a")])
    (entry,) = tmp_path.glob("*/*.json")
    blob = json.loads(entry.read_text())
    assert blob["template"] == "teacher_answer.v1" and blob["request"]["messages"][0]["content"] == "a"
    assert set(blob) == {"template", "request", "completion"}


def test_the_same_request_twice_in_one_call_is_sent_once(tmp_path, scripted):
    backend = scripted(fail_first=1)
    client = RoleClient("teacher", backend, DiskCache(tmp_path), concurrency=4, backoff_s=0, sleep=lambda s: None)
    out = client.complete([req("a"), req("b"), req("a"), req("a"), req("a", seed=1)])
    assert [c.text for c in out] == ["echo a", "echo b", "echo a", "echo a", "echo a"]
    assert not out[0].cached and out[2].cached and out[3].cached
    s = client.stats.as_dict()
    # 3 distinct requests + 1 retry reach the backend; the two copies of "a" are answered by the first one
    assert backend.calls == 4 and (s["calls"], s["requests"], s["retries"], s["cache_hits"]) == (5, 4, 1, 2)
    assert s["calls"] == s["cache_hits"] + s["requests"] - s["retries"]
    assert len(DiskCache(tmp_path)) == 3


class _Silent:
    """A remote backend on a server that accepts every request and never answers: each attempt waits out its
    timeout (``timeout_s``, or what the caller says is left of the deadline), then fails as a timeout does."""

    kind, remote, batched = "openai", True, False

    def __init__(self, timeout_s: float = 30.0):
        import threading

        self.timeout_s, self.attempts, self._lock = timeout_s, [], threading.Lock()

    def identity(self):
        return {"kind": self.kind, "base_url": "http://127.0.0.1:1/v1", "model": "silent"}

    def describe(self):
        return "openai model 'silent' at http://127.0.0.1:1/v1"

    def complete_one(self, request, timeout=None):
        import time

        from alignpipe.llm.base import TransientError

        wait = self.timeout_s if timeout is None else min(self.timeout_s, timeout)
        with self._lock:
            self.attempts.append(wait)
        time.sleep(wait)
        raise TransientError("APITimeoutError: Request timed out.")


def test_a_server_that_never_answers_fails_the_role_at_its_deadline(tmp_path):
    """6 attempts x 30 s per request, 12 requests 3 at a time would wait minutes; the role's deadline of 0.6 s
    ends the whole call in about that, naming the role, the server and the setting, and no queued request starts
    a cycle of its own."""
    import time

    backend = _Silent(timeout_s=30.0)
    client = RoleClient("judge", backend, DiskCache(tmp_path), concurrency=3, max_retries=5, backoff_s=0.01,
                        deadline_s=0.6)
    start = time.monotonic()
    with pytest.raises(LLMError) as err:
        client.complete([req(f"q{i}") for i in range(12)])
    took = time.monotonic() - start
    assert 0.55 <= took < 3.0, took
    assert str(err.value).startswith("role 'judge' (openai model 'silent' at http://127.0.0.1:1/v1): no answer "
                                      "within the stage's deadline of 0.6 s (roles.judge.deadline_s); last error: "
                                      "APITimeoutError: Request timed out.; check that the server answers, or "
                                      "raise roles.judge.deadline_s")
    assert max(backend.attempts) <= 0.6 + 1e-6  # each attempt's timeout was cut to what was left
    assert len(backend.attempts) <= 3 + 3  # the 3 in flight, each at most once more; the 9 queued never sent


def test_the_deadline_is_shared_by_every_request_of_the_role_and_fixed_at_the_first(tmp_path, scripted):
    now = [100.0]
    client = RoleClient("teacher", scripted(), DiskCache(tmp_path), deadline_s=50.0, clock=lambda: now[0])
    assert client.deadline_s == 50.0
    now[0] = 120.0
    client.complete([req("a")])  # the first request fixes the deadline
    assert client.deadline_at() == 170.0
    now[0] = 171.0  # past it: the next request is not sent
    with pytest.raises(LLMError, match=r"^role 'teacher' \(.*\): no answer within the stage's deadline of 50 s "
                                       r"\(roles\.teacher\.deadline_s\); check"):
        client.complete([req("b")])
    assert client.stats.failures == 1


def test_no_deadline_leaves_the_attempts_alone(tmp_path, scripted):
    client = RoleClient("teacher", scripted(), DiskCache(tmp_path))
    assert client.deadline_at() is None
    assert [c.text for c in client.complete([req("a"), req("b")])]
