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

A role's remote requests in one stage share one deadline, ``deadline_s`` seconds from its first request: no
attempt or retry wait runs past it (an attempt's timeout is cut to what is left), so a server that accepts
connections and never answers fails the stage with one :class:`LLMError` naming the role, the server and the
setting, instead of every queued request starting its own cycle of timeouts. The deadline is absolute wall time,
so the fanned-out calls of :mod:`alignpipe.llm.fanout` (threads, Dask or Ray workers) keep it too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from alignpipe.llm.base import Backend, ChatRequest, Completion, LLMError, RoleStats, TransientError
from alignpipe.llm.cache import DiskCache, request_key

log = logging.getLogger(__name__)
# (requests, deadline_at) -> (index into requests, (completion | None, counts, error | None)) as answers arrive
Mapper = Callable[[list[ChatRequest], float | None], Iterable[tuple[int, tuple[Completion | None, dict[str, int], str | None]]]]


class RoleClient:
    """Cache + retry + concurrency + counters around one backend (see module docstring)."""

    def __init__(self, role: str, backend: Backend, cache: DiskCache | None = None, *, concurrency: int = 4,
                 batch_size: int = 8, max_retries: int = 5, backoff_s: float = 1.0, backoff_max_s: float = 60.0,
                 stats: RoleStats | None = None, sleep: Callable[[float], None] = time.sleep,
                 mapper: Mapper | None = None, deadline_s: float | None = None,
                 deadline_at: float | None = None, clock: Callable[[], float] = time.time):
        self.role, self.backend = role, backend
        self.cache = cache if backend.remote else None  # the oracle is computed, not fetched: nothing to save
        self.concurrency, self.batch_size = concurrency, batch_size
        self.max_retries, self.backoff_s, self.backoff_max_s = max_retries, backoff_s, backoff_max_s
        self.stats = stats or RoleStats()
        self._sleep = sleep
        self._jitter = random.Random(0)  # jitter spreads retries; it never changes an answer
        self.mapper = mapper  # fans remote calls out through a task runner (alignpipe.llm.fanout); None: threads
        self.deadline_s, self._deadline_at, self._clock = deadline_s, deadline_at, clock
        self._deadline_lock = threading.Lock()
        self._last_error: Exception | None = None

    def deadline_at(self) -> float | None:
        """The absolute (wall-clock) deadline of this role's remote requests, fixed at the first one asked."""
        with self._deadline_lock:
            if self._deadline_at is None and self.deadline_s is not None:
                self._deadline_at = self._clock() + self.deadline_s
            return self._deadline_at

    def _past_deadline(self, last: Exception | None) -> LLMError:
        self.stats.add(failures=1)
        budget = f"{self.deadline_s:g} s" if self.deadline_s is not None else "its deadline"
        last = last if last is not None else self._last_error  # a queued request: what the others met
        why = f"; last error: {last}" if last is not None else ""
        return LLMError(f"role '{self.role}' ({self.backend.describe()}): no answer within the stage's deadline of "
                        f"{budget} (roles.{self.role}.deadline_s){why}; check that the server answers, or raise "
                        f"roles.{self.role}.deadline_s")

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
            for k, (completion, counts, error) in self.mapper([requests[i] for i in todo], self.deadline_at()):
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
        deadline = self.deadline_at()
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + self._jitter.random()
                if isinstance(last, TransientError) and last.retry_after is not None:
                    delay = min(self.backoff_max_s, max(delay, last.retry_after))
                if deadline is not None and self._clock() + delay >= deadline:
                    raise self._past_deadline(last)  # the wait alone would pass it: fail now, not later
                self.stats.add(retries=1)
                log.warning("%s: retry %d/%d in %.1fs after: %s", self.role, attempt, self.max_retries, delay, last)
                self._sleep(delay)
            left = None if deadline is None else deadline - self._clock()
            if left is not None and left <= 0:
                raise self._past_deadline(last)
            self.stats.add(requests=1)
            try:
                if left is None:
                    return self.backend.complete_one(request)
                return self.backend.complete_one(request, timeout=left)  # the attempt's timeout, cut to what is left
            except TransientError as err:
                last = self._last_error = err
            except LLMError:
                self.stats.add(failures=1)
                raise
        self.stats.add(failures=1)
        raise LLMError(f"role '{self.role}' ({self.backend.describe()}): gave up after {self.max_retries + 1} "
                       f"attempts; last error: {last}")
