"""Remote role calls as independent units of work, so a task runner (threads, a Dask cluster) can spread them.

    spec = call_spec("teacher", role_section)           # JSON-able: backend settings + retry budget, no secret
    completion, counts, error = call(spec, request, deadline_at)   # in any thread or worker process

The flows wrap :func:`call` in a Prefect task and map it over a role's uncached requests through the flow's task
runner (``roles.runner`` in params: a thread pool by default, or Dask); :class:`RoleClient` then caches each
answer and adds the counts in the calling process, so the cache and the counters stay where the stage runs.
A worker builds its backend from the spec once per process (the key is read from the worker's environment,
never shipped). Without a mapper, RoleClient fans out over its own thread pool, as before.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from alignpipe.config import RoleSection
from alignpipe.llm.backends import make_backend
from alignpipe.llm.base import ChatRequest, Completion, LLMError
from alignpipe.llm.client import RoleClient

_BACKENDS: dict[str, Any] = {}
_LOCK = threading.Lock()


def call_spec(role: str, cfg: RoleSection) -> dict[str, Any]:
    """What a worker needs to make one call of ``role``: its backend settings and its retry budget."""
    return {"role": role, "section": cfg.model_dump(mode="json"),
            "retry": {"max_retries": cfg.max_retries, "backoff_s": cfg.backoff_s, "backoff_max_s": cfg.backoff_max_s,
                      "deadline_s": cfg.deadline_s}}


def _backend(spec: dict[str, Any]):
    key = json.dumps(spec["section"], sort_keys=True)
    with _LOCK:
        if key not in _BACKENDS:
            _BACKENDS[key] = make_backend(RoleSection(**spec["section"]), role=spec["role"])
        return _BACKENDS[key]


def call(spec: dict[str, Any], request: ChatRequest, deadline_at: float | None = None,
         ) -> tuple[Completion | None, dict[str, int], str | None]:
    """One request with the role's retries: (completion or None, request/retry/failure counts, error or None).

    ``deadline_at``: the role's absolute deadline in the calling stage (:meth:`RoleClient.deadline_at`); a call
    queued past it fails at once without a request."""
    client = RoleClient(spec["role"], _backend(spec), cache=None, deadline_at=deadline_at, **spec["retry"])
    try:
        completion: Completion | None = client._with_retry(request)
        error = None
    except LLMError as err:
        completion, error = None, str(err)
    counts = {k: v for k, v in client.stats.as_dict().items() if k in ("requests", "retries", "failures")}
    return completion, counts, error
