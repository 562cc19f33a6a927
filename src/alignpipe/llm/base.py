"""The request/response types every backend speaks, the per-role counters, and the errors.

A role call is a :class:`ChatRequest`: the chat ``messages`` rendered from a versioned prompt template, the
sampling settings, a per-request ``seed``, and the template's name and ``fields`` (the values filled into it).
LLM backends read ``messages``; the oracle backend reads ``template`` + ``fields`` and answers in the format
the template asks for, so one parser serves every backend.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from alignpipe.config import UserError

Message = dict[str, str]


class LLMError(UserError, RuntimeError):
    """A role call failed for good (bad request, missing key, server down after the retry budget)."""


class TransientError(RuntimeError):
    """A call that may succeed when retried (connection error, timeout, rate limit, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ChatRequest:
    """One call of a role: what is sent, and what it was rendered from."""

    template: str  # "webr_persona.v1": prompt template name and version
    fields: dict[str, Any]  # values filled into the template (JSON-able; the oracle reads these)
    messages: list[Message]
    max_tokens: int
    temperature: float
    seed: int

    def wire(self) -> dict[str, Any]:
        """What an LLM backend's output depends on (the cache key's request part)."""
        return {"messages": self.messages, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "seed": self.seed}


@dataclass
class Completion:
    """A backend's answer. ``data`` carries structured extras only the oracle can give (e.g. a new record)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    data: dict[str, Any] | None = None
    truncated: bool = False  # the prompt was cut to fit the model's context (hf)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Completion":
        return cls(**{k: d[k] for k in ("text", "prompt_tokens", "completion_tokens", "finish_reason", "data",
                                     "truncated")},
                   cached=True)


COUNTERS = ("calls", "requests", "retries", "failures", "cache_hits", "prompt_tokens", "completion_tokens",
            "unparseable", "refusals", "truncated_prompts")
# The counters fixed by the work asked of a role, equal in every run with the same params and seed: the only ones
# a stage writes to metrics.json (hashed in dvc.lock). The rest depend on the run's history (a warm disk cache
# answers without a request, retries depend on the server) and go to the run record (alignpipe.utils.events, stored by alignpipe_ops.runlog).
WORK_COUNTERS = ("calls", "unparseable", "refusals")


@dataclass
class RoleStats:
    """Counters of one role, safe to update from worker threads.

    ``calls``: items asked of the role; ``requests``: attempts sent to the backend (retries included);
    ``cache_hits``: items answered without a request of their own (from the disk cache, or by an identical request
    in the same call); tokens: of fresh requests only (the cost);
    ``unparseable``: outputs the role's parser rejected, empty ones included (counted and skipped, never raised);
    ``refusals``: free-text outputs that open with a refusal ("I'm sorry", "I apologize"), counted, kept as text.
    """

    calls: int = 0
    requests: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unparseable: int = 0
    refusals: int = 0
    truncated_prompts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNTERS}

    def work(self) -> dict[str, int]:
        """The :data:`WORK_COUNTERS` (what ``metrics.json`` may hold)."""
        return {k: getattr(self, k) for k in WORK_COUNTERS}


class Backend(Protocol):
    """What a backend provides. ``remote`` backends are cached on disk and retried; the oracle is neither."""

    kind: str
    remote: bool
    batched: bool  # True: complete_batch() on chunks (hf, oracle); False: complete_one() in a thread pool

    def identity(self) -> dict[str, Any]:
        """What identifies the model behind the backend (part of the cache key; never a secret)."""
        ...

    def describe(self) -> str:
        """One line for logs and errors (never a secret)."""
        ...
