"""Any OpenAI-compatible chat endpoint (vLLM, TGI, ``transformers serve``, hosted APIs) via the ``openai`` client.

    backend = OpenAIBackend(base_url="http://127.0.0.1:8000/v1", model="my-model", api_key_env="MY_API_KEY")

The key is read from the environment variable NAMED in params (``api_key_env``) when the backend is built; it
is never stored in the identity (the cache key), in logs or in errors. Error texts come from the server (the
client's message quotes the response body), and a server or proxy may echo the request's headers there: every
error text is redacted (the key, and its base64 form, replaced by ``[redacted]``) before it is raised, so the
retry warnings, the Prefect logs and the stage's final error never carry it. Local servers that need no key
take ``api_key_env: null`` (a placeholder key is sent). The client's own retries are off: :class:`RoleClient`
retries, so the retry budget and the counters are the pipeline's.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from alignpipe.llm.base import ChatRequest, Completion, LLMError, TransientError

_RETRY_STATUS = {408, 409, 425, 429}


class OpenAIBackend:
    kind, remote, batched = "openai", True, False

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 120.0,
                 role: str | None = None):
        import openai

        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                who = f"role '{role}' (roles.{role}.api_key_env): " if role else ""
                raise LLMError(f"{who}openai backend at {base_url}: the environment variable {api_key_env} "
                               "(named by api_key_env) is not set; export it before the run, or set api_key_env: "
                               "null for a server that takes no key")
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self._secrets = [key, base64.b64encode(key.encode()).decode()] if key else []
        self._openai = openai
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or "no-key", max_retries=0,
                                     timeout=timeout_s)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "base_url": self.base_url, "model": self.model}

    def describe(self) -> str:
        return f"openai model '{self.model}' at {self.base_url}"

    def redact(self, text: str) -> str:
        """``text`` with the key (plain or base64) replaced by ``[redacted]``."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return text

    def complete_one(self, request: ChatRequest, timeout: float | None = None) -> Completion:
        """One request; ``timeout`` (what is left of the stage's deadline) cuts ``timeout_s`` for this attempt."""
        oa = self._openai
        try:
            resp = self._client.chat.completions.create(
                model=self.model, messages=request.messages, max_tokens=request.max_tokens,
                temperature=request.temperature, seed=request.seed,
                timeout=self.timeout_s if timeout is None else max(0.001, min(self.timeout_s, timeout)),
            )  # fmt: skip
        except (oa.APIConnectionError, oa.RateLimitError, oa.InternalServerError) as err:  # timeouts included
            raise TransientError(self.redact(f"{type(err).__name__}: {err}"), _retry_after(err)) from None
        except oa.APIStatusError as err:
            if err.status_code in _RETRY_STATUS or err.status_code >= 500:
                raise TransientError(self.redact(f"HTTP {err.status_code}: {err}"), _retry_after(err)) from None
            raise LLMError(self.redact(f"{self.describe()}: HTTP {err.status_code}: {err}")) from None
        if not resp.choices:
            return Completion(text="", finish_reason="empty")
        choice = resp.choices[0]
        usage = resp.usage
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            finish_reason=str(choice.finish_reason or "stop"),
        )


def _retry_after(err: Exception) -> float | None:
    response = getattr(err, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
