"""One role's connection to its backend: disk cache, retries with backoff, bounded concurrency, counters.

    client = RoleClient("teacher", backend, cache=DiskCache(dir), concurrency=8, max_retries=5)
    completions = client.complete(requests)      # one Completion per request, in order

Cached answers are returned without a request, and a request that occurs twice in one call is sent once (the
copies count as ``cache_hits``), so ``calls == cache_hits + requests - retries`` when nothing failed. Misses go
to the backend: a batched backend (hf) gets chunks of ``batch_size``; a remote one (openai) gets one request per
call from a pool of ``concurrency`` threads. Each answer is cached the moment it arrives. A
:class:`TransientError` is retried after ``backoff_s * 2**attempt`` seconds (capped at ``backoff_max_s``, with
jitter, or the server's Retry-After), up to ``max_retries`` times; then the call fails with an :class:`LLMError`
naming the role, the backend and the last error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from alignpipe.llm.base import Backend, ChatRequest, Completion, LLMError, RoleStats, TransientError
from alignpipe.llm.cache import DiskCache, request_key

log = logging.getLogger(__name__)
# requests -> (index into requests, (completion | None, counts, error | None)) in the order answers arrive
Mapper = Callable[[list[ChatRequest]], Iterable[tuple[int, tuple[Completion | None, dict[str, int], str | None]]]]


class RoleClient:
    """Cache + retry + concurrency + counters around one backend (see module docstring)."""

    def __init__(self, role: str, backend: Backend, cache: DiskCache | None = None, *, concurrency: int = 4,
                 batch_size: int = 8, max_retries: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 60.0,
                 stats: RoleStats | None = None, sleep: Callable[[float], None] = time.sleep,
                 mapper: Mapper | None = None):
        self.role, self.backend = role, backend
        self.cache = cache if backend.remote else None  # the oracle is computed, not fetched: nothing to save
        self.concurrency, self.batch_size = concurrency, batch_size
        self.max_retries, self.backoff_s, self.backoff_max_s = max_retries, backoff_s, backoff_max_s
        self.stats = stats or RoleStats()
        self._sleep = sleep
        self._jitter = random.Random(0)  # jitter spreads retries; it never changes an answer
        self.mapper = mapper  # fans remote calls out through a task runner (alignpipe.llm.fanout); None: threads

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        """Answers to ``requests`` in order (cached ones without a request)."""
        self.stats.add(calls=len(requests))
        out: list[Completion | None] = [None] * len(requests)
        keys: list[str | None] = [None] * len(requests)
        todo: list[int] = []
        sent: dict[str, int] = {}  # request key -> the index whose request is sent for it
        same: list[tuple[int, int]] = []  # (index, index of the identical request sent): answered by that one
        identity = self.backend.identity() if self.cache is not None else None
        for i, req in enumerate(requests):
            if self.cache is not None:
                keys[i] = request_key(identity, req)  # type: ignore[arg-type]
                hit = self.cache.get(keys[i])
                if hit is not None:
                    out[i] = hit
                    continue
                if keys[i] in sent:  # the same request twice in one call: sent once (a rerun would hit the cache)
                    same.append((i, sent[keys[i]]))  # type: ignore[index]
                    continue
                sent[keys[i]] = i  # type: ignore[index]
            todo.append(i)
        self.stats.add(cache_hits=len(requests) - len(todo))
        if todo:
            log.info("%s: %d of %d requests not cached -> %s", self.role, len(todo), len(requests),
                     self.backend.describe())

        def done(i: int, completion: Completion) -> None:
            self.stats.add(prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                           truncated_prompts=int(completion.truncated))
            if self.cache is not None:
                self.cache.put(keys[i], requests[i], completion)  # type: ignore[arg-type]
            out[i] = completion

        if self.backend.batched:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                self.stats.add(requests=len(chunk))
                for i, c in zip(chunk, self.backend.complete_batch([requests[i] for i in chunk]), strict=True):
                    done(i, c)
        else:
            self._fan_out(todo, requests, done)
        for i, j in same:
            out[i] = replace(out[j], cached=True)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    def _fan_out(self, todo: list[int], requests: list[ChatRequest], done: Callable[[int, Completion], Any]) -> None:
        if not todo:
            return
        if self.mapper is not None:
            errors = []
            for k, (completion, counts, error) in self.mapper([requests[i] for i in todo]):
                self.stats.add(**counts)
                if error is None:
                    done(todo[k], completion)  # cached the moment it arrives, even if another call failed
                else:
                    errors.append(error)
            if errors:
                raise LLMError(errors[0])
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)),
                                thread_name_prefix=f"llm-{self.role}") as pool:
            futures = {pool.submit(self._with_retry, requests[i]): i for i in todo}
            finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in finished if f.exception() is not None]
            if failed:
                for f in pending:
                    f.cancel()
            for f in finished:
                if f.exception() is None:
                    done(futures[f], f.result())
            if failed:
                wait(pending)  # let started calls finish (their answers are cached below) before raising
                for f in pending:
                    if not f.cancelled() and f.exception() is None:
                        done(futures[f], f.result())
                raise failed[0].exception()  # type: ignore[misc]
            for f in pending:  # not reached: FIRST_EXCEPTION without an exception means all finished
                done(futures[f], f.result())

    def _with_retry(self, request: ChatRequest) -> Completion:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + self._jitter.random()
                if isinstance(last, TransientError) and last.retry_after is not None:
                    delay = min(self.backoff_max_s, max(delay, last.retry_after))
                self.stats.add(retries=1)
                log.warning("%s: retry %d/%d in %.1fs after: %s", self.role, attempt, self.max_retries, delay, last)
                self._sleep(delay)
            self.stats.add(requests=1)
            try:
                return self.backend.complete_one(request)
            except TransientError as err:
                last = err
            except LLMError:
                self.stats.add(failures=1)
                raise
        self.stats.add(failures=1)
        raise LLMError(f"role '{self.role}' ({self.backend.describe()}): gave up after {self.max_retries + 1} "
                       f"attempts; last error: {last}")
